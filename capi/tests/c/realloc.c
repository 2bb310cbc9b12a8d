/* realloc patterns: ./realloc MODE [N]
 *   grow:  64 buffers, each grown from 0 by 1-4 KiB steps to 4 MiB, touching the new end
 *   vec:   64 buffers, each grown by doubling from 16 B to 64 MiB / 64 (Vec-like)
 *   many:  a pool of 256 blocks, each realloc'd to a random size in 1 B .. 1 MiB (log-uniform),
 *          the first byte and (when it grew) the old last byte checked after every call
 * Exit status 0 if every kept byte was kept. capi's preload test runs each mode with and without the library.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long long x = 88172645463325252ull;
static unsigned long long rnd(void) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x; }

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "grow";
    long n = argc > 2 ? atol(argv[2]) : 1;
    unsigned long sum = 0;
    if (!strcmp(mode, "grow")) {
        for (long r = 0; r < n; r++)
            for (int b = 0; b < 64; b++) {
                char *p = NULL;
                size_t s = 0;
                while (s < (4u << 20)) {
                    size_t t = s + 1024 + rnd() % 3072;
                    p = realloc(p, t);
                    if (!p) return 1;
                    memset(p + s, (int)b, t - s);
                    s = t;
                }
                sum += (unsigned char)p[s / 2];
                free(p);
            }
    } else if (!strcmp(mode, "vec")) {
        for (long r = 0; r < n; r++)
            for (int b = 0; b < 64; b++) {
                char *p = NULL;
                size_t s = 0;
                for (size_t t = 16; t <= (1u << 20); t *= 2) {
                    p = realloc(p, t);
                    if (!p) return 1;
                    memset(p + s, (int)b, t - s);
                    s = t;
                }
                sum += (unsigned char)p[s / 2];
                free(p);
            }
    } else {
        static char *pool[256];
        static size_t sz[256];
        for (long i = 0; i < n * 200000; i++) {
            int k = rnd() % 256;
            size_t t = (size_t)1 << (rnd() % 20);
            t += rnd() % t;
            char *p = realloc(pool[k], t);
            if (!p) return 1;
            /* Kept: the first byte, and the old last byte when it grew. */
            if (sz[k] && (p[0] != (char)k || (sz[k] <= t && p[sz[k] - 1] != (char)k))) return 2;
            p[0] = (char)k;
            p[t - 1] = (char)k;
            pool[k] = p;
            sz[k] = t;
        }
        for (int k = 0; k < 256; k++) free(pool[k]);
    }
    printf("%s %lu\n", mode, sum);
    return 0;
}
