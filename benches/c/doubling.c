// N buffers doubled in turn from 64 B to MAX, as `Vec`s grow (README,
// "Buffers grown in turn", stop 45).
//   gcc -O2 -o doubling benches/c/doubling.c; ./doubling 1000 262144 3
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
// N buffers doubled in turn (as Rust's Vec grows) from 64 B to MAX, each new half written; ROUNDS times.
int main(int argc, char **argv) {
    int n = atoi(argv[1]); size_t max = atol(argv[2]); int rounds = atoi(argv[3]);
    char **p = calloc(n, sizeof *p); size_t t = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < n; i++) { p[i] = malloc(64); memset(p[i], 1, 64); }
        for (size_t len = 64; len < max; len *= 2)
            for (int i = 0; i < n; i++) { p[i] = realloc(p[i], 2 * len); memset(p[i] + len, i, len); }
        for (int i = 0; i < n; i++) { t += p[i][max - 1]; free(p[i]); }
    }
    printf("%zu\n", t); return 0;
}
