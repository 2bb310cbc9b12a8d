/* Every exported function and its glibc edge cases, under LD_PRELOAD of
 * libbsdalloc.so. Prints "api: N checks passed" and exits 0, or names the
 * first failed check and exits 1. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int checks;

#define CHECK(cond)                                                           \
    do {                                                                      \
        checks++;                                                             \
        if (!(cond)) {                                                        \
            fprintf(stderr, "api.c:%d: check failed: %s (errno %d)\n",        \
                    __LINE__, #cond, errno);                                  \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

#define ALIGNED(p, a) (((uintptr_t)(p) & ((uintptr_t)(a) - 1)) == 0)

/* Keeps the compiler from folding malloc/free pairs or sizes. */
static volatile size_t opaque_zero;
static size_t v(size_t n) { return n + opaque_zero; }

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 31 + seed);
}
static int same(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 31 + seed)) return 0;
    return 1;
}
static int zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

static void test_ours(void) {
    Dl_info info;
    void *(*m)(size_t) = malloc;
    CHECK(dladdr((void *)m, &info) != 0);
    CHECK(info.dli_fname && strstr(info.dli_fname, "libbsdalloc"));
    void (*f)(void *) = free;
    CHECK(dladdr((void *)f, &info) != 0 && strstr(info.dli_fname, "libbsdalloc"));
}

static void test_malloc(void) {
    /* malloc(0): unique, freeable pointers. */
    void *a = malloc(v(0)), *b = malloc(v(0));
    CHECK(a && b && a != b);
    CHECK(malloc_usable_size(a) >= 1);
    free(a);
    free(b);
    free(NULL);

    /* Every size up to 70000 in steps, 16-aligned, usable >= size. */
    static void *blocks[2000];
    size_t nb = 0;
    for (size_t n = 1; n < 70000; n += 1 + n / 8) {
        unsigned char *p = malloc(v(n));
        CHECK(p != NULL);
        CHECK(ALIGNED(p, 16));
        CHECK(malloc_usable_size(p) >= n);
        fill(p, malloc_usable_size(p), (unsigned)n);
        blocks[nb++] = p;
    }
    nb = 0;
    for (size_t n = 1; n < 70000; n += 1 + n / 8) {
        unsigned char *p = blocks[nb++];
        CHECK(same(p, malloc_usable_size(p), (unsigned)n));
        free(p);
    }

    /* Large, then huge requests: NULL and ENOMEM, never an abort. */
    unsigned char *big = malloc(v(64 << 20));
    CHECK(big && ALIGNED(big, 16));
    big[0] = 1;
    big[(64 << 20) - 1] = 2;
    free(big);
    errno = 0;
    CHECK(malloc(v((size_t)1 << 60)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(v(SIZE_MAX)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(v(SIZE_MAX - 4095)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(v(PTRDIFF_MAX)) == NULL && errno == ENOMEM);
}

static void test_calloc(void) {
    /* Dirty some memory, free it, and calloc the same sizes: zeroes. */
    for (size_t n = 8; n <= (1 << 20); n *= 2) {
        unsigned char *p = malloc(v(n));
        CHECK(p);
        memset(p, 0xa5, n);
        free(p);
        unsigned char *q = calloc(v(1), n);
        CHECK(q && ALIGNED(q, 16) && zero(q, n));
        memset(q, 0x5a, n);
        free(q);
        q = calloc(v(n), 1);
        CHECK(q && zero(q, n));
        free(q);
    }
    void *z = calloc(v(0), 5);
    CHECK(z != NULL);
    free(z);
    z = calloc(v(5), 0);
    CHECK(z != NULL);
    free(z);
    errno = 0;
    CHECK(calloc(v(SIZE_MAX / 2 + 2), 2) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(v((size_t)1 << 32), (size_t)1 << 32) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(v((size_t)1 << 30), (size_t)1 << 30) == NULL && errno == ENOMEM);
}

static void test_realloc(void) {
    /* realloc(NULL, n) is malloc(n). */
    unsigned char *p = realloc(NULL, v(10));
    CHECK(p && ALIGNED(p, 16));
    fill(p, 10, 7);
    /* Grow through classes into large blocks and back, contents kept. */
    size_t have = 10;
    size_t sizes[] = {11, 17, 100, 1000, 4096, 5000, 33000, 200000, 3 << 20,
                      100000, 40000, 32768, 1000, 24, 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        unsigned char *q = realloc(p, v(n));
        CHECK(q && ALIGNED(q, 16));
        size_t keep = have < n ? have : n;
        CHECK(same(q, keep, 7));
        fill(q, n, 7);
        have = n;
        p = q;
    }
    /* Failure leaves the block valid and untouched. */
    errno = 0;
    CHECK(realloc(p, v((size_t)1 << 60)) == NULL && errno == ENOMEM);
    CHECK(same(p, have, 7));
    errno = 0;
    CHECK(realloc(p, v(SIZE_MAX)) == NULL && errno == ENOMEM);
    CHECK(same(p, have, 7));
    /* realloc(p, 0): glibc frees p and returns NULL. */
    CHECK(realloc(p, v(0)) == NULL);
    /* In-place growth within the usable size. */
    p = malloc(v(20));
    size_t u = malloc_usable_size(p);
    unsigned char *q = realloc(p, v(u));
    CHECK(q == p);
    free(q);
    /* And for a large block, grown a few bytes at a time (not in debug
     * mode, whose tail redzone needs room past the size too). */
    if (!getenv("BSDALLOC_DEBUG")) {
        p = malloc(v(100000));
        u = malloc_usable_size(p);
        for (size_t n = 100000; n <= u; n += 7) CHECK(realloc(p, v(n)) == p);
        free(p);
    }
}

static void test_reallocarray(void) {
    int *a = reallocarray(NULL, v(10), sizeof(int));
    CHECK(a);
    for (int i = 0; i < 10; i++) a[i] = i;
    int *b = reallocarray(a, v(1000), sizeof(int));
    CHECK(b);
    for (int i = 0; i < 10; i++) CHECK(b[i] == i);
    errno = 0;
    CHECK(reallocarray(b, v(SIZE_MAX / 2), 4) == NULL && errno == ENOMEM);
    for (int i = 0; i < 10; i++) CHECK(b[i] == i);
    CHECK(reallocarray(b, v(0), 4) == NULL); /* freed, as realloc(b, 0) */
}

static void test_posix_memalign(void) {
    void *p = (void *)0x1;
    /* Bad alignments: EINVAL, *out untouched, errno unchanged. */
    size_t bad[] = {0, 1, 2, 3, 4, 6, 12, 24, 48, 100, 4097, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 1234;
        CHECK(posix_memalign(&p, bad[i], 64) == EINVAL);
        CHECK(p == (void *)0x1 && errno == 1234);
    }
    for (size_t a = sizeof(void *); a <= ((size_t)1 << 22); a *= 2) {
        size_t sizes[] = {0, 1, a / 2 + 1, a, a + 1, 3 * a, 70000};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            errno = 1234;
            CHECK(posix_memalign(&p, a, v(sizes[i])) == 0);
            CHECK(p && ALIGNED(p, a) && errno == 1234);
            CHECK(malloc_usable_size(p) >= sizes[i]);
            memset(p, 0x77, sizes[i]);
            free(p);
        }
    }
    p = (void *)0x1;
    CHECK(posix_memalign(&p, 64, v((size_t)1 << 60)) == ENOMEM && p == (void *)0x1);
    CHECK(posix_memalign(&p, (size_t)1 << 62, v(16)) == ENOMEM && p == (void *)0x1);
}

static void test_aligned(void) {
    for (size_t a = 1; a <= ((size_t)1 << 21); a *= 2) {
        void *p = aligned_alloc(a, v(a * 3));
        CHECK(p && ALIGNED(p, a) && ALIGNED(p, 16));
        memset(p, 1, a * 3);
        free(p);
        p = memalign(a, v(100));
        CHECK(p && ALIGNED(p, a));
        free(p);
    }
    if (!getenv("API_GLIBC")) {
        /* glibc >= 2.38 and C17; glibc 2.36 accepts these. */
        errno = 0;
        CHECK(aligned_alloc(v(3), 64) == NULL && errno == EINVAL);
        errno = 0;
        CHECK(aligned_alloc(v(0), 64) == NULL && errno == EINVAL);
    }
    errno = 0;
    CHECK(aligned_alloc(64, v((size_t)1 << 60)) == NULL && errno == ENOMEM);
    /* memalign rounds a non-power of two up (glibc). */
    void *p = memalign(v(48), 10);
    CHECK(p && ALIGNED(p, 64));
    free(p);
    p = memalign(v(0), 10);
    CHECK(p && ALIGNED(p, 16));
    free(p);
    errno = 0;
    CHECK(memalign(v(SIZE_MAX / 2 + 2), 10) == NULL && errno == EINVAL);

    long page = sysconf(_SC_PAGESIZE);
    p = valloc(v(1));
    CHECK(p && ALIGNED(p, page));
    free(p);
    p = valloc(v(3 * page + 1));
    CHECK(p && ALIGNED(p, page) && malloc_usable_size(p) >= (size_t)(3 * page + 1));
    free(p);
    int glibc = getenv("API_GLIBC") != NULL;
    p = pvalloc(v(0));
    /* One page (glibc 2.36 gives a minimal block here). */
    CHECK(p && ALIGNED(p, page) && (glibc || malloc_usable_size(p) >= (size_t)page));
    free(p);
    p = pvalloc(v(page + 1));
    CHECK(p && ALIGNED(p, page) && malloc_usable_size(p) >= (size_t)(2 * page));
    memset(p, 3, 2 * page);
    free(p);
    errno = 0;
    CHECK(pvalloc(v(SIZE_MAX - 10)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(valloc(v(SIZE_MAX - 10)) == NULL && errno == ENOMEM);
}

static void test_usable_size(void) {
    CHECK(malloc_usable_size(NULL) == 0);
    for (size_t n = 1; n < 100000; n = n * 3 + 1) {
        unsigned char *p = malloc(v(n));
        size_t u = malloc_usable_size(p);
        CHECK(u >= n);
        memset(p, 0xee, u); /* all of it is usable */
        free(p);
    }
}

static void test_libc_users(void) {
    /* C library functions that allocate with malloc and expect free. */
    char *s = strdup("hello, bsdalloc");
    CHECK(s && strcmp(s, "hello, bsdalloc") == 0);
    free(s);
    char *t = NULL;
    CHECK(asprintf(&t, "%d %s %f", 42, "x", 1.5) > 0 && t);
    free(t);
    FILE *f = tmpfile();
    CHECK(f);
    for (int i = 0; i < 1000; i++) fprintf(f, "line %d of the file\n", i);
    rewind(f);
    char *line = NULL;
    size_t cap = 0;
    int lines = 0;
    while (getline(&line, &cap, f) > 0) lines++;
    CHECK(lines == 1000);
    free(line);
    fclose(f);
}

int main(void) {
    /* API_GLIBC=1: run against the C library's malloc (to check the test). */
    if (!getenv("API_GLIBC")) test_ours();
    test_malloc();
    test_calloc();
    test_realloc();
    test_reallocarray();
    test_posix_memalign();
    test_aligned();
    test_usable_size();
    test_libc_users();
    printf("api: %d checks passed\n", checks);
    return 0;
}
