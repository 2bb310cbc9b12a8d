/* One heap error per run (argv[1]), for BSDALLOC_DEBUG=all: "overflow1",
 * "overflow32", "underflow1", "underflow32" (checked on free),
 * "usable" (overflow checked by malloc_usable_size), "uaf" (a write after
 * free, checked when the block comes back), "double", "large" (a 1 MiB
 * overrun of a large block: faults at the guard page), "largeuaf" (a write
 * to a freed large block: faults), "clean" (no error). Prints
 * "bad pointer 0x..." first, "survived" at the end. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "clean";
    size_t n = strncmp(what, "large", 5) == 0 ? (size_t)300000 : 40;
    char *p = malloc(n);
    printf("bad pointer %p\n", (void *)p);
    fflush(stdout);
    memset(p, 1, n);
    if (!strcmp(what, "overflow1")) p[n] = 2;
    else if (!strcmp(what, "overflow32")) p[n + 31] = 2;
    else if (!strcmp(what, "underflow1")) p[-1] = 2;
    else if (!strcmp(what, "underflow32")) p[-32] = 2;
    else if (!strcmp(what, "usable")) { p[n + 3] = 2; printf("usable %zu\n", malloc_usable_size(p)); }
    else if (!strcmp(what, "uaf")) {
        free(p);
        p[10] = 3;
        p = malloc(n); /* the same block: its freed pattern is checked */
    } else if (!strcmp(what, "double")) free(p);
    else if (!strcmp(what, "large")) { for (size_t i = 0; i < n + (1 << 20); i++) ((volatile char *)p)[i] = 4; }
    else if (!strcmp(what, "largeuaf")) { free(p); ((volatile char *)p)[0] = 5; p = malloc(16); }
    free(p);
    printf("survived\n");
    return 0;
}
