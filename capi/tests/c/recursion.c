/* Recursion into the allocator from the C library: this program interposes
 * pthread_setspecific (link with -rdynamic), which the allocator calls when
 * it registers a thread's caches, and allocates inside it, as glibc's own
 * pthread_setspecific does for key indexes >= 32. Those nested calls must
 * be served (from the bootstrap area) without deadlock or endless
 * recursion, and the blocks must work with free, realloc and
 * malloc_usable_size afterwards. Prints a summary, exits 0. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXN 256
static _Atomic(unsigned char *) nested[MAXN];
static atomic_int nnested;

int pthread_setspecific(pthread_key_t key, const void *value) {
    static int (*real)(pthread_key_t, const void *);
    if (!real) real = (int (*)(pthread_key_t, const void *))dlsym(RTLD_NEXT, "pthread_setspecific");
    /* Allocations from inside the allocator. */
    unsigned char *p = malloc(200);
    unsigned char *z = calloc(10, 10);
    if (!p || !z) abort();
    for (int i = 0; i < 100; i++) if (z[i]) abort();
    memset(p, 0x5c, 200);
    free(z);
    int i = atomic_fetch_add(&nnested, 1);
    if (i < MAXN) atomic_store(&nested[i], p);
    return real(key, value);
}

static void *thread(void *arg) {
    void *volatile p = malloc(64);
    free(p);
    return arg;
}

int main(void) {
    pthread_t t[16];
    for (int i = 0; i < 16; i++) pthread_create(&t[i], NULL, thread, NULL);
    for (int i = 0; i < 16; i++) pthread_join(t[i], NULL);
    int n = atomic_load(&nnested);
    if (n > MAXN) n = MAXN;
    int moved = 0;
    for (int i = 0; i < n; i++) {
        unsigned char *p = atomic_load(&nested[i]);
        if (malloc_usable_size(p) < 200) { fprintf(stderr, "usable size %zu\n", malloc_usable_size(p)); return 1; }
        for (int k = 0; k < 200; k++) if (p[k] != 0x5c) { fprintf(stderr, "contents\n"); return 1; }
        unsigned char *q = realloc(p, 5000);
        if (!q) return 1;
        for (int k = 0; k < 200; k++) if (q[k] != 0x5c) { fprintf(stderr, "realloc contents\n"); return 1; }
        moved += q != p;
        free(q);
    }
    printf("recursion: %d nested allocations from pthread_setspecific, %d moved by realloc\n", n, moved);
    /* At least the 16 threads registered caches with nested allocations. */
    return n >= 16 ? 0 : 1;
}
