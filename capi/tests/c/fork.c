/* fork from a one-thread parent, then from a threaded parent under
 * LD_PRELOAD. First the main thread alone forks a few times (the handlers
 * take no lock then: see kmem/src/fork.rs). Then worker threads allocate
 * and free (small, medium, large blocks, cross-thread) without pause while
 * the main thread forks repeatedly. Each child allocates and frees in every
 * size range, starts a thread of its own, forks a grandchild, and exits; a
 * child stuck on a lock some parent thread held at fork time is killed by
 * alarm() and fails the test. Prints a summary, exits 0. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NWORKERS 4
#define FORKS 60

static atomic_int stop;
static int threaded;
static _Atomic(void *) shared[64];

static void *worker(void *arg) {
    uint64_t s = (uintptr_t)arg * 2654435761u + 1;
    void *mine[32] = {0};
    while (!atomic_load(&stop)) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        size_t n = (s % 64 == 0) ? s % 100000 : s % 2000;
        int i = s % 32;
        free(mine[i]);
        mine[i] = malloc(n);
        if (!mine[i]) abort();
        memset(mine[i], (int)s, n < 64 ? n : 64);
        /* Cross-thread: swap a block with the shared table. */
        void *old = atomic_exchange(&shared[(s >> 8) % 64], malloc(s % 512));
        free(old);
    }
    for (int i = 0; i < 32; i++) free(mine[i]);
    return NULL;
}

static void *child_thread(void *arg) {
    for (int i = 0; i < 1000; i++) {
        void *volatile p = malloc(i * 7);
        free(p);
    }
    return arg;
}

static int child(void) {
    alarm(5);
    void *keep[250];
    for (int i = 0; i < 250; i++) {
        size_t n = i < 200 ? (size_t)i * 13 : (size_t)(i - 199) * 4000;
        keep[i] = malloc(n);
        if (!keep[i]) return 3;
        memset(keep[i], i, n);
    }
    for (int i = 0; i < 250; i++) free(keep[i]);
    /* Blocks the parent's threads owned at fork time are the child's too. */
    for (int i = 0; i < 64; i++) free(atomic_exchange(&shared[i], NULL));
    pthread_t t;
    if (pthread_create(&t, NULL, child_thread, NULL) != 0) return 4;
    pthread_join(t, NULL);
    pid_t g = fork();
    if (g == 0) {
        void *volatile a = malloc(100), *volatile b = malloc(100000);
        free(a);
        free(b);
        _exit(a && b ? 0 : 6);
    }
    int st;
    if (g < 0 || waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 5;
    return 0;
}

/* Forks `n` children that run child(); returns how many failed. */
static int fork_children(int n, int *done) {
    for (*done = 0; *done < n; (*done)++) {
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); exit(1); }
        if (pid == 0) _exit(child());
        int st;
        if (waitpid(pid, &st, 0) != pid) { perror("waitpid"); exit(1); }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            if (WIFSIGNALED(st))
                fprintf(stderr, "fork %d: child killed by signal %d%s\n", *done, WTERMSIG(st),
                        WTERMSIG(st) == SIGALRM ? " (deadlocked)" : "");
            else
                fprintf(stderr, "fork %d: child exited %d\n", *done, WEXITSTATUS(st));
            return 1; /* one stuck child is enough (each costs the alarm) */
        }
        if (threaded) usleep(2000);
    }
    return 0;
}

int main(void) {
    /* The parent's blocks, live across the one-thread forks. */
    void *mine[100];
    for (int i = 0; i < 100; i++) mine[i] = malloc(i * 100 + 1);
    int solo;
    int bad = fork_children(10, &solo);
    for (int i = 0; i < 100; i++) free(mine[i]);
    if (bad) return 1;
    threaded = 1;
    pthread_t t[NWORKERS];
    for (long i = 0; i < NWORKERS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)(i + 1)) != 0) return 1;
    int f;
    usleep(2000);
    bad = fork_children(FORKS, &f);
    atomic_store(&stop, 1);
    for (int i = 0; i < NWORKERS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 64; i++) free(atomic_exchange(&shared[i], NULL));
    printf("fork: %d forks from one thread, %d from %d busy threads, %d failed\n", solo, f,
           NWORKERS, bad);
    return bad != 0;
}
