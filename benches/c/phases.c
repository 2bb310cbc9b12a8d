/*
 * phases: a program whose size classes come back. Each turn fills N
 * blocks of one size (48, 200, 700, 3000 bytes in turn, the first 32
 * bytes of each written), reads a few back, then frees them all; with
 * N = 200,000 the largest turn holds 600 MB. What the lazy timeout's
 * growth pass costs (README, "Trim before growing"): the trims of the
 * first turns, while the heap grows, and the slabs built again after.
 *
 *   gcc -O2 -o phases benches/c/phases.c
 *   LD_PRELOAD=target/release/libbsdalloc.so /usr/bin/time ./phases 200000 40
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 200000;
    int rounds = argc > 2 ? atoi(argv[2]) : 40;
    size_t sizes[4] = {48, 200, 700, 3000};
    void **v = malloc(n * sizeof(void *));
    if (!v)
        return 1;
    long t = 0;
    for (int r = 0; r < rounds; r++) {
        size_t sz = sizes[r % 4];
        for (long i = 0; i < n; i++) {
            v[i] = malloc(sz);
            if (!v[i])
                return 1;
            memset(v[i], r, 32);
        }
        for (long i = 0; i < n; i += 997)
            t += ((char *)v[i])[1];
        for (long i = 0; i < n; i++)
            free(v[i]);
    }
    free(v);
    printf("%ld\n", t);
    return 0;
}
