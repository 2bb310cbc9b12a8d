/* A library whose constructor registers pthread_atfork handlers that
 * allocate (prepare allocates a large block, parent and child free it).
 * A program linked against it initializes it before the preloaded
 * libbsdalloc.so (preloaded libraries are initialized last), so these
 * handlers are registered before the program's first malloc. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void *held;
static int calls;

static void prepare(void) {
    held = malloc(300000);
    if (!held) abort();
    memset(held, 1, 300000);
}

static void release(void) {
    free(held);
    held = NULL;
    calls++;
}

__attribute__((constructor)) static void init(void) {
    if (pthread_atfork(prepare, release, release) != 0) abort();
}

int atfork_lib_calls(void) { return calls; }
