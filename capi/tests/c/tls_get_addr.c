/* The allocator never calls __tls_get_addr once it is running. Under
 * LD_PRELOAD that call is a hazard, not only a cost: right after a dlopen
 * of a module with TLS, glibc's __tls_get_addr updates the calling
 * thread's DTV, which may wait for the loader's TLS lock, held by a
 * dlopen that calls malloc; a thread that made the call while holding one
 * of the allocator's locks deadlocked with it (a boundary-tag refill under
 * the kernel arena's lock, 2026-12-06).
 *
 * This program defines __tls_get_addr itself (linked -rdynamic, so it
 * comes first in the global scope), counts the calls whose return address
 * lies in libbsdalloc.so once main has started, and forwards every call
 * to the loader's. Meanwhile 4 threads churn small, large (which refills
 * boundary tags), calloc'ed, realloc'ed and aligned blocks and 8 threads
 * are born and die, while main dlopens argv[2] modules argv[1]/libtlsN.so
 * (each with a __thread array: new DTV generations), touches their TLS and
 * closes them, argv[3] times (with TGA_DUMP set, it also writes a heap
 * profile there, for a run with BSDALLOC_PROF=heap). Prints "tls_get_addr: ok (N calls in all)"
 * and exits 0 when none came from the allocator; else prints the count and
 * exits 1. Built with -pthread -ldl -rdynamic. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    unsigned long module, offset;
} tls_index;

typedef void *(*tga_fn)(tls_index *);
static _Atomic(tga_fn) real_tga;
static uintptr_t lo, hi; /* libbsdalloc.so's mapped range */
static atomic_int armed;
static atomic_long ours, total;

__attribute__((force_align_arg_pointer)) void *__tls_get_addr(tls_index *ti) {
    if (atomic_load_explicit(&armed, memory_order_relaxed)) {
        uintptr_t ra = (uintptr_t)__builtin_return_address(0);
        atomic_fetch_add_explicit(&total, 1, memory_order_relaxed);
        if (ra >= lo && ra < hi) atomic_fetch_add_explicit(&ours, 1, memory_order_relaxed);
    }
    tga_fn f = atomic_load_explicit(&real_tga, memory_order_acquire);
    if (!f) {
        f = (tga_fn)dlvsym(RTLD_NEXT, "__tls_get_addr", "GLIBC_2.3");
        if (!f) abort();
        atomic_store_explicit(&real_tga, f, memory_order_release);
    }
    return f(ti);
}

static int find_lib(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    (void)data;
    if (!strstr(info->dlpi_name, "libbsdalloc")) return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr, b = a + ph->p_memsz;
        if (!lo || a < lo) lo = a;
        if (b > hi) hi = b;
    }
    return 1;
}

static atomic_int stop;

static void *churn(void *arg) {
    unsigned long n = (unsigned long)arg * 7919;
    void *keep[64] = {0};
    while (!atomic_load(&stop)) {
        unsigned i = n % 64;
        free(keep[i]);
        size_t sz = n % 3 == 0 ? 40000 + (n * 4099) % 900000 : 16 + n % 5000;
        switch (n % 5) {
        case 0: keep[i] = calloc(1, sz); break;
        case 1: keep[i] = realloc(malloc(sz / 2 + 1), sz); break;
        case 2: if (posix_memalign(&keep[i], 4096, sz)) keep[i] = NULL; break;
        default: keep[i] = malloc(sz);
        }
        if (keep[i]) memset(keep[i], 1, 16);
        n++;
    }
    for (int i = 0; i < 64; i++) free(keep[i]);
    return NULL;
}

static void *brief(void *arg) {
    void *p = malloc(100 + (size_t)arg), *q = malloc(70000);
    free(p);
    free(q);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int mods = atoi(argv[2]), rounds = atoi(argv[3]);
    if (mods > 64) mods = 64;
    free(malloc(1));
    dl_iterate_phdr(find_lib, NULL);
    if (!lo) {
        fprintf(stderr, "tls_get_addr: libbsdalloc.so is not loaded\n");
        return 1;
    }
    atomic_store(&armed, 1);
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, churn, (void *)i);
    void *h[64];
    char name[4096];
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < mods; i++) {
            snprintf(name, sizeof name, "%s/libtls%d.so", argv[1], i + 1);
            h[i] = dlopen(name, RTLD_NOW | RTLD_LOCAL);
            if (!h[i]) {
                fprintf(stderr, "%s\n", dlerror());
                return 1;
            }
            snprintf(name, sizeof name, "tls%d", i + 1);
            void *(*g)(void) = (void *(*)(void))dlsym(h[i], name);
            if (!g) return 1;
            memset(g(), 1, 256);
        }
        if (r % 8 == 0) {
            pthread_t b[8];
            for (long i = 0; i < 8; i++) pthread_create(&b[i], NULL, brief, (void *)i);
            for (int i = 0; i < 8; i++) pthread_join(b[i], NULL);
        }
        for (int i = mods - 1; i >= 0; i--) dlclose(h[i]);
    }
    /* With TGA_DUMP=prefix, a heap profile is written while counting
     * (run with BSDALLOC_PROF=heap: the profiler's roads too). */
    const char *dump = getenv("TGA_DUMP");
    if (dump) {
        int (*prof_dump)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT, "bsdalloc_prof_dump");
        if (!prof_dump || prof_dump(dump) != 0) {
            fprintf(stderr, "tls_get_addr: bsdalloc_prof_dump failed\n");
            return 1;
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    atomic_store(&armed, 0);
    long n = atomic_load(&ours), all = atomic_load(&total);
    if (!all) {
        /* The modules' own TLS accesses come through here: none counted
         * means the interposition did not take, and the test proves
         * nothing. */
        printf("tls_get_addr: the interposed __tls_get_addr was never called\n");
        return 1;
    }
    if (n) {
        printf("tls_get_addr: %ld calls from the allocator (%ld in all)\n", n, all);
        return 1;
    }
    printf("tls_get_addr: ok (%ld calls in all, none from the allocator)\n", all);
    return 0;
}
