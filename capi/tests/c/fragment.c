/* Seed 000 through the C ABI (capi/tests/fragment.rs runs it under
 * LD_PRELOAD): fill the heap with small blocks, free them all, call
 * malloc_trim(0), then ask for 1 MiB blocks again.
 *
 *   fragment SIZE N LIMIT_MIB rlimit|env
 *
 * With "rlimit" the program limits its own address space to what it
 * uses now plus LIMIT_MIB (what `ulimit -v` does); with "env" the limit
 * is BSDALLOC_LIMIT, set by the caller. It prints one line:
 *
 *   before B0 filled F after B1 trim T1 T2
 *
 * B0 and B1: 1 MiB blocks obtained (at most 4 * LIMIT_MIB) before the
 * fill and after the trim; F: small blocks the fill got (it stops at the
 * first NULL); T1: malloc_trim's result after the frees; T2: its result
 * when called again right away (nothing left to give back).
 *
 * After the first probe and after the second it also writes
 * malloc_stats() to stderr, after a line "== fill" and a line "== end":
 * the test reads from them the address space the page metadata reserved
 * meanwhile and the leaves the OS refused (under RLIMIT_AS: chunks the
 * kernel placed in another 4 GiB of address space take a new 8 MiB leaf
 * of the limit, or come back when it does not fit; where ASLR puts the
 * mappings decides it, about one run in sixty here).
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static size_t vm_size(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kib = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %zu kB", &kib) == 1)
            break;
    fclose(f);
    return kib * 1024;
}

/* Allocates 1 MiB blocks until NULL or `max`, frees them, returns how many. */
static long probe(long max) {
    void **head = NULL;
    long n = 0;
    while (n < max) {
        void **p = malloc(1 << 20);
        if (!p)
            break;
        *p = head;
        head = p;
        n++;
    }
    while (head) {
        void **next = *head;
        free(head);
        head = next;
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: fragment SIZE N LIMIT_MIB rlimit|env\n");
        return 2;
    }
    size_t size = strtoul(argv[1], NULL, 10);
    long n = strtol(argv[2], NULL, 10);
    long limit_mib = strtol(argv[3], NULL, 10);
    if (size < sizeof(void *))
        size = sizeof(void *);
    if (strcmp(argv[4], "rlimit") == 0) {
        /* stdio's buffer first, so it is inside the limit's base. */
        printf("%s", "");
        struct rlimit rl;
        rl.rlim_cur = rl.rlim_max = vm_size() + ((size_t)limit_mib << 20);
        if (setrlimit(RLIMIT_AS, &rl) != 0) {
            perror("setrlimit");
            return 2;
        }
    }
    long max = 4 * limit_mib;
    long before = probe(max);
    malloc_trim(0);
    fprintf(stderr, "== fill\n");
    malloc_stats();

    void **head = NULL;
    long filled = 0;
    while (filled < n) {
        void **p = malloc(size);
        if (!p)
            break;
        *p = head;
        head = p;
        filled++;
    }
    while (head) {
        void **next = *head;
        free(head);
        head = next;
    }
    int t1 = malloc_trim(0);
    int t2 = malloc_trim(0);
    long after = probe(max);
    fprintf(stderr, "== end\n");
    malloc_stats();
    printf("before %ld filled %ld after %ld trim %d %d\n", before, filled, after, t1, t2);
    return 0;
}
