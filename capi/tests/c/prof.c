/* The heap profiler under LD_PRELOAD (BSDALLOC_PROF=leaks,heap): known
 * amounts from known functions, one thread that leaks. Prints the truths;
 * dumps a profile on demand while everything is live, then frees all but
 * the leak and exits (the leak report and the exit profile follow). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MIB (1u << 20)
#define EACH (128u * MIB)

static uint64_t rng = 0x1234567;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Pointer arrays come from mmap: they are no block of the heap. */
static void **table(size_t n) {
    void *p = mmap(0, n * sizeof(void *), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    return p;
}

__attribute__((noinline)) size_t small_from_here(void ***out, size_t *count) {
    size_t n = EACH / 264, truth = 0;
    void **v = table(n);
    for (size_t i = 0; i < n; i++) {
        size_t s = 16 + next() % 497;
        v[i] = malloc(s);
        memset(v[i], 1, s);
        truth += s;
    }
    *out = v;
    *count = n;
    return truth;
}

__attribute__((noinline)) size_t large_from_here(void ***out, size_t *count) {
    size_t truth = 0, n = 0;
    void **v = table(4096);
    while (truth < EACH) {
        size_t s = (64u << 10) + next() % (960u << 10);
        v[n] = malloc(s);
        memset(v[n], 2, s);
        truth += s;
        n++;
    }
    *out = v;
    *count = n;
    return truth;
}

static size_t leaked;

__attribute__((noinline)) void *leak_from_here(void *arg) {
    (void)arg;
    size_t truth = 0;
    while (truth < 96u * MIB) {
        void *volatile p = malloc(200);
        memset(p, 3, 200);
        truth += 200;
    }
    leaked = truth;
    return 0;
}

__attribute__((noinline)) void churn(void) {
    void *keep[64] = {0};
    for (int i = 0; i < (1 << 22); i++) {
        free(keep[i % 64]);
        keep[i % 64] = malloc(16 + next() % 496);
    }
    for (int i = 0; i < 64; i++) free(keep[i]);
}

int main(int argc, char **argv) {
    void **small, **large;
    size_t ns, nl;
    size_t ts = small_from_here(&small, &ns);
    size_t tl = large_from_here(&large, &nl);
    pthread_t t;
    pthread_create(&t, 0, leak_from_here, 0);
    pthread_join(t, 0);
    churn();
    printf("truth small_from_here %zu\n", ts);
    printf("truth large_from_here %zu\n", tl);
    printf("truth leak_from_here %zu\n", leaked);
    int (*dump)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT, "bsdalloc_prof_dump");
    if (!dump) {
        printf("no bsdalloc_prof_dump\n");
        return 1;
    }
    if (argc > 1 && dump(argv[1]) != 0) {
        perror("bsdalloc_prof_dump");
        return 1;
    }
    for (size_t i = 0; i < ns; i++) free(small[i]);
    for (size_t i = 0; i < nl; i++) free(large[i]);
    return 0;
}
