/* Dynamic TLS next to the allocator's static TLS: under LD_PRELOAD, worker
 * threads allocate without pause while the main thread dlopens argv[2]
 * libraries argv[1]/libtlsN.so (N = 1..argv[2]), each with a __thread
 * array, touches their TLS from every thread (dynamic TLS blocks are
 * allocated with malloc inside __tls_get_addr, and the DTV grows past its
 * initial surplus), closes them all and does it again. Prints "tlsmods:
 * ok", exits 0. Built with -pthread -ldl; the modules with
 *   gcc -shared -fPIC: __thread char tlsbufN[256]; void *tlsN(void);  */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXMODS 64
static atomic_int stop;
static atomic_int nmods;
static void *(*getters[MAXMODS])(void);
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* arg < 1000: until stop; else 2000 rounds. */
static void *worker(void *arg) {
    unsigned long n = (unsigned long)arg, end = n >= 1000 ? n + 2000 : (unsigned long)-1;
    while (!atomic_load(&stop) && n < end) {
        unsigned char *volatile p = malloc(16 + n % 3000);
        memset(p, (int)n, 16);
        pthread_mutex_lock(&lock);
        int k = atomic_load(&nmods);
        if (k) memset(getters[n % k](), (int)n, 256);
        pthread_mutex_unlock(&lock);
        free(p);
        n++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int mods = atoi(argv[2]);
    if (mods > MAXMODS) mods = MAXMODS;
    pthread_t t[3];
    for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    void *h[MAXMODS];
    char name[4096];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < mods; i++) {
            snprintf(name, sizeof name, "%s/libtls%d.so", argv[1], i + 1);
            h[i] = dlopen(name, RTLD_NOW | RTLD_LOCAL);
            if (!h[i]) { fprintf(stderr, "%s\n", dlerror()); return 1; }
            snprintf(name, sizeof name, "tls%d", i + 1);
            void *(*g)(void) = (void *(*)(void))dlsym(h[i], name);
            if (!g) return 1;
            memset(g(), 1, 256);
            void *volatile p = malloc(1000);
            free(p);
            pthread_mutex_lock(&lock);
            getters[i] = g;
            atomic_store(&nmods, i + 1);
            pthread_mutex_unlock(&lock);
        }
        /* A short-lived thread sees all of them at once. */
        pthread_t s;
        pthread_create(&s, NULL, worker, (void *)1000);
        pthread_join(s, NULL);
        pthread_mutex_lock(&lock);
        atomic_store(&nmods, 0);
        pthread_mutex_unlock(&lock);
        for (int i = mods - 1; i >= 0; i--) dlclose(h[i]);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    printf("tlsmods: ok (%d modules, 3 rounds)\n", mods);
    return 0;
}
