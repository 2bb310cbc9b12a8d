// N buffers grown round-robin by STEP bytes at a time to MAX bytes each,
// each new part written, then all freed; ROUNDS times: a program that
// appends to many strings or buffers at once (README, "Buffers grown in
// turn", stop 45).
// usage: multigrow [N=64] [MAX=8388608] [STEP=4096] [ROUNDS=1]
//   gcc -O2 -o multigrow benches/c/multigrow.c
//   LD_PRELOAD=target/release/libbsdalloc.so /usr/bin/time ./multigrow 4000 65536 64 2
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
int main(int argc, char **argv) {
    int n = atoi(argc > 1 ? argv[1] : "64");
    size_t max = (size_t)atol(argc > 2 ? argv[2] : "8388608");
    size_t step = (size_t)atol(argc > 3 ? argv[3] : "4096");
    int rounds = argc > 4 ? atoi(argv[4]) : 1;
    char **p = calloc(n, sizeof *p);
    struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
    size_t total = 0;
    for (int r = 0; r < rounds; r++) {
        for (size_t len = 0; len < max; len += step)
            for (int i = 0; i < n; i++) {
                p[i] = realloc(p[i], len + step);
                if (!p[i]) { perror("realloc"); return 1; }
                memset(p[i] + len, i, step);
            }
        for (int i = 0; i < n; i++) { total += p[i][max - 1]; free(p[i]); p[i] = NULL; }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.3f s (%zu)\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9, total);
    return 0;
}
