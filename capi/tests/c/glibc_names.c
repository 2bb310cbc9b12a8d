/* glibc's other names for its allocator and its introspection calls:
 * blocks from __libc_malloc & co. are freed with free and the other way
 * round, as a program that hooks malloc does; mallinfo2 and mallinfo see
 * a large block come and go; mallopt answers as glibc's does; C23's
 * free_sized and free_aligned_sized free (EXPECT_SIZED_FREES: they must
 * be there). The same checks pass over glibc's own malloc. Prints "checks passed", exits 0;
 * a failed check prints its line and exits 1. */
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);
extern struct mallinfo __libc_mallinfo(void);
extern int __libc_mallopt(int, int);

#define CHECK(c)                                                   \
    do {                                                           \
        if (!(c)) {                                                \
            printf("check failed, line %d: %s\n", __LINE__, #c);   \
            return 1;                                              \
        }                                                          \
    } while (0)

int main(void) {
    /* Mixed names, both ways, many sizes. */
    for (size_t n = 1; n <= (1 << 20); n = n * 3 + 1) {
        char *p = __libc_malloc(n);
        CHECK(p != NULL);
        memset(p, 0xa5, n);
        CHECK(malloc_usable_size(p) >= n);
        p = __libc_realloc(p, n * 2);
        CHECK(p != NULL && (unsigned char)p[n - 1] == 0xa5);
        free(p);

        p = malloc(n);
        CHECK(p != NULL);
        memset(p, 0x5a, n);
        p = realloc(p, n + 7);
        CHECK(p != NULL && (unsigned char)p[n - 1] == 0x5a);
        __libc_free(p);

        unsigned char *z = __libc_calloc(n, 1);
        CHECK(z != NULL);
        for (size_t i = 0; i < n; i += 61) CHECK(z[i] == 0);
        free(z);
    }
    for (size_t a = 16; a <= 65536; a *= 4) {
        void *p = __libc_memalign(a, 100);
        CHECK(p != NULL && (uintptr_t)p % a == 0);
        free(p);
    }
    void *v = __libc_valloc(10);
    CHECK(v != NULL && (uintptr_t)v % 4096 == 0);
    __libc_free(v);
    v = __libc_pvalloc(10);
    CHECK(v != NULL && (uintptr_t)v % 4096 == 0 && malloc_usable_size(v) >= 4096);
    __libc_free(v);
    v = __libc_realloc(NULL, 10);
    CHECK(v != NULL);
    __libc_free(v);
    __libc_free(NULL);

    /* mallinfo2 sees 64 MiB come and go. */
    struct mallinfo2 before = mallinfo2();
    size_t big = 64u << 20;
    char *b = malloc(big);
    CHECK(b != NULL);
    memset(b, 1, big);
    struct mallinfo2 during = mallinfo2();
    CHECK(during.uordblks + during.hblkhd >= before.uordblks + before.hblkhd + big);
    CHECK(during.arena + during.hblkhd >= during.uordblks);
    free(b);
    struct mallinfo2 after = mallinfo2();
    CHECK(after.uordblks + after.hblkhd + big / 2 <= during.uordblks + during.hblkhd);
    struct mallinfo old = mallinfo();
    CHECK(old.uordblks >= 0 && old.arena >= 0);
    struct mallinfo old2 = __libc_mallinfo();
    CHECK(old2.arena >= 0);

    /* mallopt: accepted (1), M_MXFAST above its limit refused (0). */
    CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1);
    CHECK(mallopt(M_ARENA_MAX, 2) == 1);
    CHECK(mallopt(M_MXFAST, 64) == 1);
    CHECK(mallopt(M_MXFAST, 100000) == 0);
    CHECK(__libc_mallopt(M_TRIM_THRESHOLD, 1 << 20) == 1);
    /* C23's sized frees, where the C library or the preload has them
     * (glibc 2.36 has not: looked up, not linked). */
    void (*fs)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    void (*fas)(void *, size_t, size_t) =
        (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
    if (getenv("EXPECT_SIZED_FREES")) CHECK(fs != NULL && fas != NULL);
    for (int i = 0; fs && i < 1000; i++) fs(malloc(i * 37), i * 37);
    for (int i = 0; fas && i < 100; i++) fas(aligned_alloc(64, 64 * (i + 1)), 64, 64 * (i + 1));
    printf("checks passed\n");
    return 0;
}
