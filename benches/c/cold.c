/* Cold frees: N replacements at random in a pool of P blocks of 8-1000 bytes (P = 100000: ~50 MB, the freed block is rarely in cache). ./cold N P. The double-free key's read of the block on free costs here (README, 'Heap errors'). */
#include <stdlib.h>
#include <stdio.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]); long P = atol(argv[2]);
    void **pool = calloc(P, sizeof(void *));
    unsigned long long x = 88172645463325252ull;
    for (long i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        long k = x % P;
        size_t s = 8 + (x >> 20) % 993;
        free(pool[k]);
        pool[k] = malloc(s);
        *(char *)pool[k] = 1;
    }
    return 0;
}
