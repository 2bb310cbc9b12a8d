#include <stdlib.h>
#include <stdio.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 4000000;
    int K = argc > 2 ? atoi(argv[2]) : 200000;
    void **pool = calloc(K, sizeof *pool);
    size_t *sz = calloc(K, sizeof *sz);
    unsigned long long x = 88172645463325252ull;
    size_t live = 0;
    for (long i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int k = x % K;
        size_t s = 8 + (x >> 20) % 993;
        free(pool[k]); live -= sz[k];
        pool[k] = malloc(s); sz[k] = s; live += s;
        *(char *)pool[k] = 1;
    }
    fprintf(stderr, "truth live %zu\n", live);
    return 0;  /* the pool stays live: the leak report's total */
}
