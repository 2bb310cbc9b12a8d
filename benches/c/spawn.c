/* Process start-up and fork under preload libraries, interleaved.
 *
 *   spawn PROG LIB... [-- ARG...]
 *                       posix_spawn PROG ARG... (with LD_PRELOAD=LIB in
 *                       its environment only; "none" for no preload; its
 *                       output to /dev/null) 100 times a round, 15 rounds,
 *                       the libraries in turn; prints the median (and
 *                       minimum) microseconds per process.
 *   spawn --fork        this process forks 400 times (its children only
 *                       call _exit) after allocating 3,000 blocks; prints
 *                       microseconds per fork (run it under LD_PRELOAD).
 *
 * A shell script pays both for each of its processes (see README,
 * "Start-up: zones built on first use"). */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int forks(void) {
    enum { N = 400, KEEP = 3000 };
    static void *keep[KEEP];
    for (int i = 0; i < KEEP; i++) {
        keep[i] = malloc(16 + (i * 37) % 2000);
        if (!keep[i]) return 1;
        memset(keep[i], 1, 16);
    }
    for (int i = 0; i < KEEP; i += 3) free(keep[i]);
    double t0 = now();
    for (int i = 0; i < N; i++) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        if (p < 0) return 1;
        waitpid(p, 0, 0);
    }
    printf("%.1f us per fork\n", (now() - t0) / N * 1e6);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--fork")) return forks();
    int nl = 0;
    while (2 + nl < argc && strcmp(argv[2 + nl], "--")) nl++;
    if (argc < 3 || nl < 1 || nl > 16 || argc - nl > 64) {
        fprintf(stderr, "usage: %s PROG LIB... [-- ARG...] | %s --fork\n", argv[0], argv[0]);
        return 2;
    }
    enum { R = 15, N = 100 };
    static double t[16][R];
    char *av[64] = {argv[1]};
    for (int i = 3 + nl; i < argc; i++) av[i - 2 - nl] = argv[i];
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    for (int r = 0; r < R; r++) {
        for (int k = 0; k < nl; k++) {
            char env[4096];
            const char *lib = argv[2 + k];
            snprintf(env, sizeof env, "LD_PRELOAD=%s", strcmp(lib, "none") ? lib : "");
            char *ev[] = {env, 0};
            double t0 = now();
            for (int i = 0; i < N; i++) {
                pid_t p;
                if (posix_spawn(&p, argv[1], &fa, 0, av, ev)) return 1;
                waitpid(p, 0, 0);
            }
            t[k][r] = (now() - t0) / N * 1e6;
        }
    }
    for (int k = 0; k < nl; k++) {
        qsort(t[k], R, sizeof(double), cmp);
        printf("%-50s median %6.0f us per process (min %.0f)\n", argv[2 + k], t[k][R / 2], t[k][0]);
    }
    return 0;
}
