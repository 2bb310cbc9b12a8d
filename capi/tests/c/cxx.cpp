// C++ operator new and delete under LD_PRELOAD: every form is the
// library's own (not the C++ runtime's wrapper), blocks are usable and
// aligned, a sized delete with a wrong size frees the right block, and
// failure keeps C++ semantics (nothrow gives nullptr; the throwing forms
// run the new-handler, then throw std::bad_alloc). Prints "cxx: ok".
#include <dlfcn.h>
#include <malloc.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

#define CHECK(c) do { if (!(c)) { std::fprintf(stderr, "cxx.cpp:%d: %s\n", __LINE__, #c); std::exit(1); } } while (0)

static bool ours(void *fn) {
    Dl_info i;
    return dladdr(fn, &i) && i.dli_fname && std::strstr(i.dli_fname, "libbsdalloc");
}

struct alignas(64) Line { char b[64]; };
struct alignas(4096) Page { char b[100]; };

static int handler_calls;
static void handler() {
    handler_calls++;
    std::set_new_handler(nullptr);  // next failure throws
}

int main() {
    // Every operator resolves to the library.
    CHECK(ours((void *)static_cast<void *(*)(std::size_t)>(&::operator new)));
    CHECK(ours((void *)static_cast<void *(*)(std::size_t)>(&::operator new[])));
    CHECK(ours((void *)static_cast<void (*)(void *) noexcept>(&::operator delete)));
    CHECK(ours((void *)static_cast<void (*)(void *, std::size_t) noexcept>(&::operator delete)));
    CHECK(ours((void *)static_cast<void *(*)(std::size_t, std::align_val_t)>(&::operator new)));
    CHECK(ours((void *)static_cast<void *(*)(std::size_t, const std::nothrow_t &) noexcept>(&::operator new)));

    // Plain, array, sized, nothrow, aligned.
    for (int r = 0; r < 1000; r++) {
        int *a = new int(r);
        CHECK(*a == r);
        delete a;
        char *s = new char[r + 1];
        std::memset(s, 'x', r + 1);
        CHECK(malloc_usable_size(s) >= (std::size_t)r + 1);
        delete[] s;
        double *d = new (std::nothrow) double[r % 50 + 1];
        CHECK(d);
        delete[] d;
        Line *l = new Line;
        CHECK(((std::uintptr_t)l & 63) == 0);
        delete l;
        Page *p = new Page[2];
        CHECK(((std::uintptr_t)p & 4095) == 0);
        delete[] p;
        void *v = ::operator new(r * 3 + 1, std::align_val_t(256), std::nothrow);
        CHECK(v && ((std::uintptr_t)v & 255) == 0);
        ::operator delete(v, std::align_val_t(256), std::nothrow);
        void *w = ::operator new(r * 8 + 8);
        ::operator delete(w, (std::size_t)(r * 8 + 8));
    }

    // A sized delete with the wrong size (as `new[]` then `delete`, or a
    // base class without a virtual destructor would pass) frees the right
    // block: later blocks of both sizes never overlap.
    for (int r = 0; r < 100; r++) {
        void *big = ::operator new(1000);
        ::operator delete(big, (std::size_t)16);
    }
    std::vector<unsigned char *> v;
    for (int i = 0; i < 2000; i++) {
        std::size_t n = i % 2 ? 16 : 1000;
        unsigned char *p = (unsigned char *)::operator new(n);
        std::memset(p, i & 255, n);
        v.push_back(p);
    }
    for (int i = 0; i < 2000; i++) {
        std::size_t n = i % 2 ? 16 : 1000;
        for (std::size_t k = 0; k < n; k++) CHECK(v[i][k] == (unsigned char)(i & 255));
        ::operator delete(v[i], n);
    }

    // Failure: nothrow gives nullptr; the throwing forms run the handler,
    // then throw std::bad_alloc.
    const std::size_t huge = (std::size_t)1 << 50;
    CHECK(::operator new(huge, std::nothrow) == nullptr);
    CHECK(::operator new[](huge, std::nothrow) == nullptr);
    CHECK(::operator new(huge, std::align_val_t(64), std::nothrow) == nullptr);
    bool threw = false;
    std::set_new_handler(handler);
    try {
        char *p = new char[huge];
        p[0] = 1;
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw && handler_calls == 1);
    threw = false;
    try {
        void *p = ::operator new(huge, std::align_val_t(128));
        std::printf("%p\n", p);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw);

    // Threads: objects made in one thread, deleted in another.
    std::vector<int *> shared(10000);
    std::thread t1([&] { for (auto &p : shared) p = new int(7); });
    t1.join();
    std::thread t2([&] { for (auto p : shared) { CHECK(*p == 7); delete p; } });
    t2.join();

    std::printf("cxx: ok\n");
    return 0;
}
