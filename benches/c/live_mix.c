// Blocks of 4 KiB-1 MiB at random, LIVE of them live (default 2000),
// COUNT in all (default 100000), each written whole: a program holding
// many medium and large buffers. Prints seconds.
// gcc -O2 -o live_mix live_mix.c; LD_PRELOAD=... ./live_mix [COUNT [LIVE]]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv) {
    int count = argc > 1 ? atoi(argv[1]) : 100000;
    int nlive = argc > 2 ? atoi(argv[2]) : 2000;
    char **live = calloc(nlive, sizeof *live);
    unsigned x = 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < count; i++) {
        x = x * 1103515245 + 12345;
        int k = x % nlive;
        free(live[k]);
        size_t n = 4096 + (x >> 8) % (1u << 20);
        live[k] = malloc(n);
        if (!live[k]) { perror("malloc"); return 1; }
        memset(live[k], i, n);
    }
    for (int k = 0; k < nlive; k++) free(live[k]);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.3f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    return 0;
}
