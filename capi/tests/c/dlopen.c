/* dlopen of libbsdalloc.so (argv[1]) into a process that runs on the C
 * library's malloc: the library loads (its thread-locals are then dynamic
 * TLS, allocated by the C library's malloc), its functions work through
 * dlsym from several threads, and the process's own malloc is not
 * replaced. Prints "dlopen: ok", exits 0. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *(*b_malloc)(size_t);
static void (*b_free)(void *);
static void *(*b_calloc)(size_t, size_t);
static void *(*b_realloc)(void *, size_t);
static int (*b_posix_memalign)(void **, size_t, size_t);
static size_t (*b_usable)(void *);

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "dlopen.c:%d: %s\n", __LINE__, #c); exit(1); } } while (0)

static void *work(void *arg) {
    void *keep[100];
    for (int r = 0; r < 50; r++) {
        for (int i = 0; i < 100; i++) {
            keep[i] = b_malloc((size_t)(i * 37 + r));
            CHECK(keep[i]);
            memset(keep[i], i, (size_t)(i * 37 + r));
        }
        for (int i = 0; i < 100; i++) {
            unsigned char *p = b_realloc(keep[i], (size_t)(i * 50 + 1));
            CHECK(p);
            b_free(p);
        }
    }
    unsigned char *z = b_calloc(1000, 10);
    for (int i = 0; i < 10000; i++) CHECK(z[i] == 0);
    b_free(z);
    void *a = NULL;
    CHECK(b_posix_memalign(&a, 4096, 100) == 0 && ((uintptr_t)a & 4095) == 0);
    CHECK(b_usable(a) >= 100);
    b_free(a);
    return arg;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
    b_malloc = (void *(*)(size_t))dlsym(h, "malloc");
    b_free = (void (*)(void *))dlsym(h, "free");
    b_calloc = (void *(*)(size_t, size_t))dlsym(h, "calloc");
    b_realloc = (void *(*)(void *, size_t))dlsym(h, "realloc");
    b_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(h, "posix_memalign");
    b_usable = (size_t (*)(void *))dlsym(h, "malloc_usable_size");
    CHECK(b_malloc && b_free && b_calloc && b_realloc && b_posix_memalign && b_usable);
    CHECK((void *)b_malloc != (void *)malloc); /* the process keeps its malloc */
    work(NULL);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, work, NULL) == 0);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    /* The process's own malloc and the library's do not mix, and both work. */
    void *mine = malloc(100), *theirs = b_malloc(100);
    CHECK(mine && theirs);
    free(mine);
    b_free(theirs);
    CHECK(dlclose(h) == 0);
    /* -z nodelete: still mapped, still usable after dlclose. */
    void *p = b_malloc(10);
    CHECK(p);
    b_free(p);
    printf("dlopen: ok\n");
    return 0;
}
