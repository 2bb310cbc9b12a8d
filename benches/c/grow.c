// One buffer grown to MAX bytes by STEP bytes at a time (or by half its
// size at a time with "g"), each new part written, ROUNDS times: a
// program reading its input into a buffer it reallocs as it goes.
// usage: grow [MAX=536870912] [STEP=65536] [a|g] [ROUNDS=1]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
// grow one buffer by STEP bytes at a time to MAX, writing the new part (like reading a file into a growing buffer)
int main(int argc, char **argv) {
    size_t max = (size_t)atol(argc > 1 ? argv[1] : "536870912");
    size_t step = (size_t)atol(argc > 2 ? argv[2] : "65536");
    int geometric = argc > 3 && argv[3][0] == 'g';
    int rounds = argc > 4 ? atoi(argv[4]) : 1;
    struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
    size_t total = 0;
    for (int r = 0; r < rounds; r++) {
        char *p = NULL; size_t n = 0, cap = 0;
        while (n < max) {
            size_t want = n + step;
            if (want > cap) {
                cap = geometric ? (cap ? cap * 3 / 2 : step) : want;
                if (cap < want) cap = want;
                p = realloc(p, cap);
                if (!p) { perror("realloc"); return 1; }
            }
            memset(p + n, (int)(n >> 12), step);
            n += step;
        }
        total += p[max / 2];
        free(p);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.3f s (%zu)\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9, total);
    return 0;
}
