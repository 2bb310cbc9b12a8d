/* The hot malloc(32) + free pair through the C ABI, for
 * `valgrind --tool=callgrind` under LD_PRELOAD (benches/callgrind.sh):
 * (Ir at 2N pairs - Ir at N pairs) / N = instructions per pair, the loop
 * and the PLT calls included. The pointer goes through a volatile so the
 * compiler keeps both calls. */
#include <stdlib.h>

static void *volatile sink;

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    size_t size = argc > 2 ? (size_t)atol(argv[2]) : 32;
    for (long i = 0; i < n; i++) {
        sink = malloc(size);
        free(sink);
    }
    return 0;
}
