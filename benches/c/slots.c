/* larson-like, deterministic: N replacements in a pool of 1000 blocks of 8-1000 bytes. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    static void *pool[1000];
    unsigned long long x = 88172645463325252ull;
    for (long i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int k = x % 1000;
        size_t s = 8 + (x >> 20) % 993;
        free(pool[k]);
        pool[k] = malloc(s);
        *(char *)pool[k] = 1;
    }
    for (int k = 0; k < 1000; k++) free(pool[k]);
    return 0;
}
