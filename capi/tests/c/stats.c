/* malloc_stats and malloc_trim under LD_PRELOAD: a burst of frees, then
 * malloc_trim(0) must report that memory went back (1); malloc_stats
 * writes kmem's statistics to stderr. Prints "trim: N", exits 0. With
 * BSDALLOC_STATS=1 the statistics are written again at exit. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    malloc_stats();
    /* Still a working allocator afterwards. */
    for (int i = 0; i < N; i++) {
        v[i] = malloc(1000);
        if (!v[i]) return 3;
    }
    for (int i = 0; i < N; i++) free(v[i]);
    return t == 1 ? 0 : 1;
}
