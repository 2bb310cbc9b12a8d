/* malloc_stats and malloc_trim under LD_PRELOAD: a burst of frees, then
 * malloc_trim(0) must report that memory went back (1); malloc_stats
 * writes kmem's statistics to stderr after 200 ms of ordinary work. Prints
 * "trim: N", exits 0. With BSDALLOC_STATS=1 the statistics are written
 * again at exit. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 20000

int main(void) {
    static void *v[N];
    for (int i = 0; i < N; i++) {
        v[i] = malloc(1000);
        if (!v[i]) return 2;
        memset(v[i], i, 1000);
    }
    for (int i = 0; i < N; i++) free(v[i]);
    int t = malloc_trim(0);
    printf("trim: %d\n", t);
    fflush(stdout);
    /* A while of ordinary work (bucket trades: the lazy timeout's ticks). */
    struct timespec s, e;
    clock_gettime(CLOCK_MONOTONIC, &s);
    do {
        for (int i = 0; i < 2000; i++) v[i] = malloc(48);
        for (int i = 0; i < 2000; i++) free(v[i]);
        clock_gettime(CLOCK_MONOTONIC, &e);
    } while ((e.tv_sec - s.tv_sec) * 1000 + (e.tv_nsec - s.tv_nsec) / 1000000 < 200);
    malloc_stats();
    /* Still a working allocator afterwards. */
    for (int i = 0; i < N; i++) {
        v[i] = malloc(1000);
        if (!v[i]) return 3;
    }
    for (int i = 0; i < N; i++) free(v[i]);
    return t == 1 ? 0 : 1;
}
