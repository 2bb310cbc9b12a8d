/* Threads under LD_PRELOAD: per-thread random malloc/calloc/realloc/free
 * with content checks, blocks handed to other threads and freed there
 * (cross-thread frees through a shared mailbox), and thread churn (short
 * threads that allocate, keep blocks in their caches and exit, their
 * blocks freed by whoever comes next). Prints a summary, exits 0. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NTHREADS 8
#define ROUNDS 60000
#define SLOTS 256
#define MAILBOX 1024

static void fail(const char *what, int line) {
    fprintf(stderr, "threads.c:%d: %s\n", line, what);
    abort();
}
#define CHECK(c) do { if (!(c)) fail(#c, __LINE__); } while (0)

struct block { unsigned char *p; size_t n; unsigned char tag; };

static pthread_mutex_t mbox_lock = PTHREAD_MUTEX_INITIALIZER;
static struct block mbox[MAILBOX];
static int mbox_len;
static long cross_frees;

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s;
}

static size_t pick_size(uint64_t *s) {
    uint64_t r = rnd(s);
    switch (r % 16) {
    case 0: return r % 100000 + 1;       /* some large blocks */
    case 1: case 2: return r % 4096;    /* medium */
    default: return r % 256;            /* mostly small, 0 included */
    }
}

static void check_block(struct block *b) {
    for (size_t i = 0; i < b->n; i++)
        if (b->p[i] != (unsigned char)(b->tag + i)) fail("block contents changed", __LINE__);
}

static void fill_block(struct block *b) {
    for (size_t i = 0; i < b->n; i++) b->p[i] = (unsigned char)(b->tag + i);
}

/* Post a block for another thread; take one posted by anyone. */
static void exchange(struct block *b) {
    struct block got = {0};
    pthread_mutex_lock(&mbox_lock);
    if (mbox_len == MAILBOX || (mbox_len > 0 && (b->tag & 1))) {
        got = mbox[--mbox_len];
        cross_frees++;
    }
    if (mbox_len < MAILBOX) { mbox[mbox_len++] = *b; b->p = NULL; }
    pthread_mutex_unlock(&mbox_lock);
    if (got.p) { check_block(&got); free(got.p); }
    if (b->p) { check_block(b); free(b->p); b->p = NULL; }
}

static void *worker(void *arg) {
    uint64_t seed = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    struct block slots[SLOTS] = {{0}};
    for (int r = 0; r < ROUNDS; r++) {
        struct block *b = &slots[rnd(&seed) % SLOTS];
        uint64_t op = rnd(&seed) % 10;
        if (b->p) {
            check_block(b);
            if (op < 4) { free(b->p); b->p = NULL; }
            else if (op < 7) {
                size_t n = pick_size(&seed);
                unsigned char *q = realloc(b->p, n);
                if (n == 0) { CHECK(q == NULL); b->p = NULL; continue; }
                CHECK(q);
                size_t keep = b->n < n ? b->n : n;
                for (size_t i = 0; i < keep; i++) CHECK(q[i] == (unsigned char)(b->tag + i));
                b->p = q; b->n = n; fill_block(b);
            } else exchange(b);
        } else {
            b->n = pick_size(&seed);
            b->tag = (unsigned char)rnd(&seed);
            if (op < 2) {
                b->p = calloc(1, b->n);
                CHECK(b->p || b->n == 0);
                for (size_t i = 0; i < b->n; i++) CHECK(b->p[i] == 0);
            } else if (op < 3) {
                void *p = NULL;
                CHECK(posix_memalign(&p, 64, b->n) == 0 && ((uintptr_t)p & 63) == 0);
                b->p = p;
            } else b->p = malloc(b->n);
            CHECK(b->p);
            CHECK(malloc_usable_size(b->p) >= b->n);
            fill_block(b);
        }
    }
    for (int i = 0; i < SLOTS; i++)
        if (slots[i].p) { check_block(&slots[i]); free(slots[i].p); }
    return NULL;
}

/* Short-lived threads: allocate, leave some for others to free, exit. */
static void *churn(void *arg) {
    uint64_t seed = (uintptr_t)arg + 77;
    void *keep[64];
    for (int i = 0; i < 64; i++) { keep[i] = malloc(pick_size(&seed)); CHECK(keep[i]); }
    for (int i = 0; i < 64; i += 2) free(keep[i]);
    struct block b = { malloc(100), 100, (unsigned char)(uintptr_t)arg };
    fill_block(&b);
    exchange(&b);
    for (int i = 1; i < 64; i += 2) free(keep[i]);
    return NULL;
}

int main(void) {
    pthread_t t[NTHREADS];
    for (long i = 0; i < NTHREADS; i++) CHECK(pthread_create(&t[i], NULL, worker, (void *)(i + 1)) == 0);
    /* Thread churn alongside the workers, some detached. */
    for (long i = 0; i < 400; i++) {
        pthread_t c;
        CHECK(pthread_create(&c, NULL, churn, (void *)i) == 0);
        if (i % 3 == 0) pthread_detach(c); else pthread_join(c, NULL);
    }
    for (int i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < mbox_len; i++) { check_block(&mbox[i]); free(mbox[i].p); }
    printf("threads: %d workers x %d rounds, 400 short threads, %ld cross-thread frees\n",
           NTHREADS, ROUNDS, cross_frees);
    return 0;
}
