/* A double free in one of several patterns (argv[1]) and sizes (argv[2]):
 * "twice" free(p); free(p); "between" free(p); free(q); free(p);
 * "thread" the first free in another thread; "realloc" realloc of a freed
 * block; "later" other allocations of the size between the frees. Prints
 * "bad pointer 0x..." first, then, if the process survives (a policy that
 * carries on), checks that the block is not handed out twice and prints
 * "survived". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *freer(void *p) {
    free(p);
    return NULL;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "twice";
    size_t size = argc > 2 ? (size_t)atol(argv[2]) : 32;
    char *p = malloc(size);
    char *q = malloc(size);
    memset(p, 7, size);
    printf("bad pointer %p\n", (void *)p);
    fflush(stdout);
    if (strcmp(what, "thread") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, freer, p);
        pthread_join(t, NULL);
        free(p);
    } else if (strcmp(what, "between") == 0) {
        free(p);
        free(q);
        q = NULL;
        free(p);
    } else if (strcmp(what, "realloc") == 0) {
        free(p);
        void *r = realloc(p, size * 2 + 100);
        printf("realloc returned %s\n", r ? "non-null" : "null");
    } else if (strcmp(what, "later") == 0) {
        free(p);
        void *keep[10];
        for (int i = 0; i < 10; i++) keep[i] = malloc(size + i);
        for (int i = 0; i < 10; i++) free(keep[i]);
        free(p);
    } else {
        free(p);
        free(p);
    }
    /* Never the same block twice. */
    char *a[50];
    for (int i = 0; i < 50; i++) {
        a[i] = malloc(size);
        for (int j = 0; j < i; j++)
            if (a[i] == a[j]) {
                printf("aliased %p\n", (void *)a[i]);
                return 3;
            }
    }
    for (int i = 0; i < 50; i++) free(a[i]);
    free(q);
    printf("survived\n");
    return 0;
}
