/* Buffers grown through many sizes with realloc: NBUF buffers (default
 * 4), each appended chunks of random length (up to half its length) in
 * random turns until MAX bytes (default 16 MiB), every byte written, then
 * freed; ROUNDS times (default 40). Prints seconds.
 * gcc -O2 -o realloc_sizes realloc_sizes.c; LD_PRELOAD=... ./realloc_sizes [ROUNDS [NBUF [MAX]]]
 * (README, "Rust allocation patterns": `buffers` is the same in Rust.) */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 40;
    int nbuf = argc > 2 ? atoi(argv[2]) : 4;
    size_t maxsz = argc > 3 ? strtoul(argv[3], 0, 10) : (16u << 20);
    unsigned long long x = 88172645463325252ull;
    struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
    unsigned long sum = 0;
    for (int r = 0; r < rounds; r++) {
        char *buf[64] = {0}; size_t len[64] = {0};
        int done = 0;
        while (done < nbuf) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            int i = x % nbuf;
            if (len[i] >= maxsz) continue;
            size_t step = 1 + (x >> 20) % (len[i] / 2 + 4096);
            size_t n = len[i] + step;
            char *p = realloc(buf[i], n);
            if (!p) { perror("realloc"); return 1; }
            memset(p + len[i], (int)r, step);
            buf[i] = p; len[i] = n;
            if (n >= maxsz) done++;
        }
        for (int i = 0; i < nbuf; i++) { sum += (unsigned char)buf[i][len[i] / 2]; free(buf[i]); }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.3f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9 + 0 * sum);
    return 0;
}
