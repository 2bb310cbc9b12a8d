/* Frees a pointer the allocator did not hand out: argv[1] says which
 * ("stack", "interior", "global", "realloc", "usable", or "high": the
 * block's own address with bit 60 set, not canonical). Prints the pointer
 * on stdout first ("bad pointer 0x..."), so the test can check the report
 * names it, then "survived" if the process is still alive afterwards. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char global_buf[64];

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "stack";
    char stack_buf[64];
    char *block = malloc(1000);
    memset(block, 1, 1000);
    void *bad = stack_buf;
    if (strcmp(what, "interior") == 0 || strcmp(what, "realloc") == 0 ||
        strcmp(what, "usable") == 0)
        bad = block + 16;
    else if (strcmp(what, "global") == 0)
        bad = global_buf;
    else if (strcmp(what, "high") == 0)
        bad = (void *)((uintptr_t)block | (UINT64_C(1) << 60));
    printf("bad pointer %p\n", bad);
    fflush(stdout);
    if (strcmp(what, "realloc") == 0) {
        void *r = realloc(bad, 5000);
        printf("realloc returned %s\n", r ? "non-null" : "null");
    } else if (strcmp(what, "usable") == 0) {
        printf("usable %zu\n", malloc_usable_size(bad));
    } else {
        free(bad);
    }
    /* The allocator still works, and the real block is intact. */
    for (int i = 0; i < 1000; i++)
        if (block[i] != 1) return 2;
    free(block);
    void *volatile p = malloc(100);
    free(p);
    printf("survived\n");
    return 0;
}
