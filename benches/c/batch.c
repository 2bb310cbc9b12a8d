/* Batches: N mallocs of SIZE..SIZE+15 bytes, then N frees, ITERS times;
 * prints ns per operation. What glibc-simple does, alone.
 * gcc -O2 -o batch benches/c/batch.c; LD_PRELOAD=... ./batch 400 32 20000
 * (README, "The C door's tables without the GOT".) */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 400;
    size_t size = argc > 2 ? (size_t)atol(argv[2]) : 32;
    long iters = argc > 3 ? atol(argv[3]) : 20000;
    void **p = malloc(n * sizeof *p);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < iters; i++) {
        for (int k = 0; k < n; k++)
            p[k] = malloc(size + (k & 15));
        for (int k = 0; k < n; k++)
            free(p[k]);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("%.3f\n", ns / (2.0 * n * iters));
    free(p);
    return 0;
}
