/* pthread_atfork handlers of the program that allocate, registered before
 * the program's first malloc (so before anything has built the allocator
 * lazily), and with -DWITH_LIB those of a linked library (atfork_lib.c)
 * registered by its constructor, before libbsdalloc.so's constructor has
 * run; while a worker thread allocates without pause and the main
 * thread forks. The prepare handler runs in the forking thread; if kmem's
 * prepare handler ran before it (holding every allocator lock), its
 * malloc would wait forever. The parent and child handlers free what
 * prepare allocated; the child also allocates in every size range. A
 * child or parent stuck on a lock is killed by alarm() and fails the
 * test. Prints a summary, exits 0. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FORKS 50

static void *held[3];
static atomic_int prepared, in_parent, in_child;

static void prepare(void) {
    /* Small, medium, large: every path that takes a lock. */
    size_t sizes[3] = {100, 5000, 300000};
    for (int i = 0; i < 3; i++) {
        held[i] = malloc(sizes[i]);
        if (!held[i]) abort();
        memset(held[i], 0x5a, sizes[i]);
    }
    atomic_fetch_add(&prepared, 1);
}

static void release(void) {
    for (int i = 0; i < 3; i++) {
        if (((unsigned char *)held[i])[0] != 0x5a) abort();
        free(held[i]);
        held[i] = NULL;
    }
}

static void parent(void) { release(); atomic_fetch_add(&in_parent, 1); }
static void child_handler(void) { release(); atomic_fetch_add(&in_child, 1); }

static atomic_int stop;

static void *worker(void *arg) {
    uint64_t s = (uintptr_t)arg * 2654435761u + 1;
    void *mine[16] = {0};
    while (!atomic_load(&stop)) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        int i = s % 16;
        free(mine[i]);
        mine[i] = malloc((s % 32 == 0) ? s % 200000 : s % 1500);
        if (!mine[i]) abort();
    }
    for (int i = 0; i < 16; i++) free(mine[i]);
    return NULL;
}

#ifdef WITH_LIB
int atfork_lib_calls(void); /* atfork_lib.c: its handlers ran this often */
#endif

int main(void) {
    alarm(30);
    /* First thing in main: no malloc of ours has run yet. */
    if (pthread_atfork(prepare, parent, child_handler) != 0) return 2;
    pthread_t t;
    if (pthread_create(&t, NULL, worker, (void *)1)) return 2;
    for (int f = 0; f < FORKS; f++) {
        pid_t c = fork();
        if (c < 0) return 4;
        if (c == 0) {
            alarm(5);
            if (atomic_load(&in_child) != 1) _exit(5);
            for (size_t n = 1; n < (1 << 20); n = n * 3 + 1) {
                void *volatile p = malloc(n);
                if (!p) _exit(3);
                memset(p, 1, n);
                free(p);
            }
            _exit(0);
        }
        int st;
        if (waitpid(c, &st, 0) != c) return 4;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "child %d failed: status %#x\n", f, st);
            return 1;
        }
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    if (atomic_load(&prepared) != FORKS || atomic_load(&in_parent) != FORKS) return 6;
#ifdef WITH_LIB
    if (atfork_lib_calls() != FORKS) return 7;
#endif
    printf("atfork: %d forks, handlers allocated in prepare and freed after\n", FORKS);
    return 0;
}
