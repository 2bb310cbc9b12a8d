/* The heap profiler under churn: a pool of 512K blocks of 8-1000 bytes
 * (about 256 MB) replaced at random 4M times, then left live for the
 * leak report at exit. Frees and allocations of each size class balance,
 * so its cache's bucket seldom runs empty or full and the countdown
 * rarely sees the picked allocation come: the test checks that such
 * samples are taken late rather than lost. Prints the live bytes. */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    const int K = 512 * 1024;
    const long N = 4000000;
    void **pool = calloc(K, sizeof *pool);
    size_t *sz = calloc(K, sizeof *sz);
    unsigned long long x = 88172645463325252ull;
    size_t live = 0;
    if (!pool || !sz)
        return 1;
    for (long i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int k = x % K;
        size_t s = 8 + (x >> 20) % 993;
        free(pool[k]);
        live -= sz[k];
        pool[k] = malloc(s);
        if (!pool[k])
            return 1;
        sz[k] = s;
        live += s;
        *(char *)pool[k] = 1;
    }
    printf("truth churned %zu\n", live);
    return 0; /* the pool stays live: the leak report's total */
}
