/* Churn: K live blocks (LO bytes at first), each step frees one at random
 * and allocates LO..HI bytes in its place (one byte written); prints ns
 * per step. With K = 100000 the freed block is rarely in cache.
 * gcc -O2 -o churn benches/c/churn.c; LD_PRELOAD=... ./churn 5000 8 1000 10000000
 * (README, "The C door's tables without the GOT".) */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    int k_live = argc > 1 ? atoi(argv[1]) : 5000;
    size_t lo = argc > 2 ? (size_t)atol(argv[2]) : 8;
    size_t hi = argc > 3 ? (size_t)atol(argv[3]) : 1000;
    long steps = argc > 4 ? atol(argv[4]) : 10000000;
    void **p = calloc(k_live, sizeof *p);
    unsigned long long x = 88172645463325252ull;
    for (int k = 0; k < k_live; k++)
        p[k] = malloc(lo);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < steps; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int k = x % k_live;
        size_t s = lo + (x >> 20) % (hi - lo + 1);
        free(p[k]);
        p[k] = malloc(s);
        *(char *)p[k] = 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("%.3f\n", ns / (double)steps);
    return 0;
}
