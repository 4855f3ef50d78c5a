/* cuda_emu.h: enough of the CUDA execution model to run a kernel source on
 * the CPU (tests/cuda/emu/, docs/performance.md): a block's threads are
 * fibers of the calling thread (ucontext), each running until it waits at a
 * barrier, or under ThreadSanitizer POSIX threads (which it needs to see
 * races); __syncthreads is a barrier of the block, __shfl_xor_sync, ldmatrix
 * and mma.sync m16n8k16 exchanges through the warp's slots between two
 * barriers of its 32 threads, and dynamic shared memory one array that the
 * blocks, run one after another in an order that changes from launch to
 * launch, reuse. Included by a test before the kernel's .cu file, which then
 * builds with the host compiler (g++) and ROTARY_CUDA_EMU defined; it gives
 * the kernels' own code, index arithmetic, barriers and memory accesses to
 * ASan and ThreadSanitizer, none of which a GPU-less machine can otherwise
 * run. Not emulated: timing, the memory model beyond barriers,
 * and anything the kernels here do not use. */
#ifndef ROTARY_CUDA_EMU_H
#define ROTARY_CUDA_EMU_H

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <semaphore.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define EMU_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
/* ASan follows the switches between stacks (fibers below). */
#define EMU_SWITCH_START(save, bottom, size) __sanitizer_start_switch_fiber(save, bottom, size)
#define EMU_SWITCH_DONE(save, bottom, size) __sanitizer_finish_switch_fiber(save, bottom, size)
#else
#define EMU_POISON(p, n) ((void)(p), (void)(n))
#define EMU_UNPOISON(p, n) ((void)(p), (void)(n))
#define EMU_SWITCH_START(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#define EMU_SWITCH_DONE(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#endif

/* Fibers switch in user space, where a barrier of POSIX threads goes
 * through the kernel (test_cuda_model_emu --quick: 26 s of one core against
 * 52 s of two); ThreadSanitizer needs the threads. */
#if defined(__SANITIZE_THREAD__)
#define EMU_FIBERS 0
#else
#define EMU_FIBERS 1
#include <sys/mman.h>
#include <ucontext.h>
#endif

#define __launch_bounds__(...)
/* A kernel's __shared__ arrays become function statics, one set per
 * kernel, which the blocks (run one after another) share as the threads of
 * one block do; its dynamic shared memory (GPU_DYNAMIC_SHARED) is
 * emu::shared_mem. */
#undef __shared__
#define __shared__ static

namespace emu {

constexpr int MAX_THREADS = 1024;
constexpr size_t SMEM_MAX = 227 * 1024; /* an H100's opt-in maximum a block */
constexpr size_t SMEM_DEFAULT = 48 * 1024; /* the most a launch gets without opting in */
/* The dynamic shared memory each kernel opted in to (cudaFuncSetAttribute). */
inline std::map<void *, int> &smem_opt_in() {
    static std::map<void *, int> m;
    return m;
}

/* A barrier of count threads: a POSIX one, or between fibers a count and a
 * generation that the last to arrive moves on. */
struct barrier {
#if EMU_FIBERS
    unsigned count = 0, arrived = 0, generation = 0;
#else
    pthread_barrier_t b;
#endif
};
inline void fiber_yield();
inline unsigned long &fiber_progress();
inline void barrier_init(barrier &b, unsigned count) {
#if EMU_FIBERS
    b.count = count, b.arrived = 0;
#else
    pthread_barrier_init(&b.b, NULL, count);
#endif
}
inline void barrier_wait(barrier &b) {
#if EMU_FIBERS
    const unsigned gen = b.generation;
    fiber_progress()++;
    if (++b.arrived == b.count) {
        b.arrived = 0, b.generation++;
        return;
    }
    while (b.generation == gen) fiber_yield();
#else
    pthread_barrier_wait(&b.b);
#endif
}
inline void barrier_destroy(barrier &b) {
#if EMU_FIBERS
    (void)b;
#else
    pthread_barrier_destroy(&b.b);
#endif
}

struct warp_slots {
    barrier bar;
    uint32_t x[32];
    uint32_t a[32][4], b[32][2];
    const void *row[32];
    float tile[256];
};

inline dim3 grid_dim, block_dim;
inline thread_local dim3 thread_idx, block_idx;
inline barrier block_bar;
inline warp_slots warps[MAX_THREADS / 32];
alignas(128) inline unsigned char shared_mem[SMEM_MAX];

/* While a stream captures (runtime.cc): the operations recorded so far. */
inline std::vector<std::function<void()>> *capturing;

/* A thread's cp.async copies: committed groups not yet waited for, and the
 * copies since the last commit (emu_cp_async16). */
struct async_copy {
    void *dst;
    const void *src;
    bool full;
};
inline thread_local std::vector<std::vector<async_copy>> async_groups;
inline thread_local std::vector<async_copy> async_open;

/* The thread's rank in its block: threads x first, then y, then z. */
inline unsigned linear_tid() {
    return thread_idx.x + block_dim.x * (thread_idx.y + block_dim.y * thread_idx.z);
}
inline warp_slots &my_warp() { return warps[linear_tid() / 32]; }
inline int my_lane() { return (int)(linear_tid() % 32); }
inline void warp_sync() { barrier_wait(my_warp().bar); }

inline float bf16_lo(uint32_t r) {
    uint32_t u = r << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline float bf16_hi(uint32_t r) {
    uint32_t u = r & 0xffff0000u;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* c += a b, m16n8k16, bf16 in, fp32 accumulate; each lane brings its
 * fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16") and leaves with
 * its part of c: rows g and g + 8, columns 2t and 2t + 1 (lane = 4 g + t). */
inline void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    warp_slots &w = my_warp();
    const int lane = my_lane(), g = lane / 4, t = lane % 4;
    memcpy(w.a[lane], a, sizeof w.a[lane]);
    w.b[lane][0] = b0, w.b[lane][1] = b1;
    warp_sync();
    /* A (r, k): lane 4 (r % 8) + (k % 8) / 2, register r / 8 + 2 (k / 8),
     * low half for even k. B (k, n): lane 4 n + (k % 8) / 2, register k / 8. */
    auto A = [&](int r, int k) {
        const uint32_t v = w.a[4 * (r % 8) + (k % 8) / 2][r / 8 + 2 * (k / 8)];
        return k % 2 ? bf16_hi(v) : bf16_lo(v);
    };
    auto B = [&](int k, int n) {
        const uint32_t v = w.b[4 * n + (k % 8) / 2][k / 8];
        return k % 2 ? bf16_hi(v) : bf16_lo(v);
    };
    float out[4];
    for (int e = 0; e < 4; e++) {
        const int r = g + 8 * (e / 2), n = 2 * t + e % 2;
        float s = c[e];
        for (int k = 0; k < 16; k++) s += A(r, k) * B(k, n);
        out[e] = s;
    }
    warp_sync();
    memcpy(c, out, sizeof out);
}

/* ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lane l gives the
 * address of row l % 8 (16 bytes, 16-byte aligned) of matrix l / 8, and
 * leaves with r[i] = matrix i's elements (g, 2t) and (g, 2t + 1), or with
 * trans (2t, g) and (2t + 1, g), the first in the low half. */
inline void ldmatrix_x4(uint32_t r[4], const void *row, bool trans) {
    if ((uintptr_t)row % 16) {
        fprintf(stderr, "cuda_emu: ldmatrix row address %p not 16-byte aligned\n", row);
        abort();
    }
    warp_slots &w = my_warp();
    const int lane = my_lane(), g = lane / 4, t = lane % 4;
    w.row[lane] = row;
    warp_sync();
    auto at = [&](int m, int i, int j) { /* element (i, j) of matrix m */
        uint16_t x;
        memcpy(&x, (const unsigned char *)w.row[8 * m + i] + 2 * j, 2);
        return (uint32_t)x;
    };
    uint32_t out[4];
    for (int m = 0; m < 4; m++)
        out[m] = trans ? at(m, 2 * t, g) | at(m, 2 * t + 1, g) << 16
                       : at(m, g, 2 * t) | at(m, g, 2 * t + 1) << 16;
    warp_sync();
    memcpy(r, out, sizeof out);
}

template <typename T> T shfl_xor(T v, int mask) {
    static_assert(sizeof(T) == 4, "32-bit shuffles only");
    warp_slots &w = my_warp();
    const int lane = my_lane();
    memcpy(&w.x[lane], &v, 4);
    warp_sync();
    T r;
    memcpy(&r, &w.x[lane ^ mask], 4);
    warp_sync();
    return r;
}

#if EMU_FIBERS
/* run_threads(n, job): job(0) .. job(n-1) as fibers of the calling thread,
 * taken in turn, each until it waits at a barrier (then yields) or ends;
 * threadIdx, blockIdx and the cp.async queues are switched with them. A
 * pass in which no fiber arrives anywhere or ends is a deadlock (a barrier
 * that some threads never reach, as in a divergent __syncthreads). */
constexpr size_t FIBER_STACK = 64 * 1024;
struct fiber {
    ucontext_t ctx;
    unsigned char *stack = nullptr; /* FIBER_STACK bytes above a guard page */
    dim3 tidx, bidx;
    std::vector<std::vector<async_copy>> groups;
    std::vector<async_copy> open;
    void *fake = nullptr; /* ASan's */
    bool done = false;
};
struct fiber_set {
    std::vector<std::unique_ptr<fiber>> f;
    ucontext_t sched;
    unsigned cur = 0;
    unsigned long progress = 0;
    std::function<void(unsigned)> job;
    const void *sched_bottom = nullptr; /* the calling thread's stack, for ASan */
    size_t sched_size = 0;
    void *sched_fake = nullptr;
};
inline fiber_set &fibers() {
    static fiber_set F;
    return F;
}
inline unsigned long &fiber_progress() { return fibers().progress; }
inline void fiber_yield() {
    fiber_set &F = fibers();
    fiber &me = *F.f[F.cur];
    EMU_SWITCH_START(&me.fake, F.sched_bottom, F.sched_size);
    swapcontext(&me.ctx, &F.sched);
    EMU_SWITCH_DONE(me.fake, nullptr, nullptr);
}
inline void fiber_entry() {
    fiber_set &F = fibers();
    EMU_SWITCH_DONE(nullptr, &F.sched_bottom, &F.sched_size);
    F.job(F.cur);
    F.f[F.cur]->done = true;
    F.progress++;
    EMU_SWITCH_START(nullptr, F.sched_bottom, F.sched_size); /* this stack ends */
}
inline void run_threads(unsigned n, std::function<void(unsigned)> job) {
    fiber_set &F = fibers();
    while (F.f.size() < n) {
        auto f = std::make_unique<fiber>();
        const size_t page = 4096;
        void *m = mmap(nullptr, FIBER_STACK + page, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED || mprotect(m, page, PROT_NONE)) {
            fprintf(stderr, "cuda_emu: no memory for a fiber's stack\n");
            abort();
        }
        f->stack = (unsigned char *)m + page;
        F.f.push_back(std::move(f));
    }
    F.job = std::move(job);
    for (unsigned t = 0; t < n; t++) {
        fiber &f = *F.f[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = FIBER_STACK;
        f.ctx.uc_link = &F.sched;
        makecontext(&f.ctx, fiber_entry, 0);
        f.done = false, f.tidx = f.bidx = dim3(0, 0, 0);
        f.groups.clear(), f.open.clear();
    }
    for (unsigned left = n; left;) {
        const unsigned long before = F.progress;
        for (unsigned t = 0; t < n; t++) {
            fiber &f = *F.f[t];
            if (f.done) continue;
            F.cur = t;
            thread_idx = f.tidx, block_idx = f.bidx;
            async_groups.swap(f.groups), async_open.swap(f.open);
            EMU_SWITCH_START(&F.sched_fake, f.stack, FIBER_STACK);
            swapcontext(&F.sched, &f.ctx);
            EMU_SWITCH_DONE(F.sched_fake, nullptr, nullptr);
            f.tidx = thread_idx, f.bidx = block_idx;
            async_groups.swap(f.groups), async_open.swap(f.open);
            left -= f.done;
        }
        if (left && F.progress == before) {
            fprintf(stderr, "cuda_emu: threads wait at a barrier that the others of their block "
                            "or warp never reach\n");
            abort();
        }
    }
    F.job = nullptr;
}
#else
/* Threads started once and reused by every launch (a test launches
 * thousands of kernels): run(n, job) wakes threads 0..n-1 only, each calls
 * job(t), and it returns when all n have. */
struct pool {
    std::vector<std::thread> threads;
    std::vector<sem_t> go;
    sem_t done;
    std::atomic<unsigned> left{0};
    std::function<void(unsigned)> job;
    bool quit = false;
    explicit pool(unsigned n) : go(n) {
        sem_init(&done, 0, 0);
        for (auto &g : go) sem_init(&g, 0, 0);
        for (unsigned t = 0; t < n; t++)
            threads.emplace_back([this, t] {
                for (;;) {
                    sem_wait(&go[t]);
                    if (quit) return;
                    job(t);
                    if (left.fetch_sub(1) == 1) sem_post(&done);
                }
            });
    }
    ~pool() {
        quit = true;
        for (auto &g : go) sem_post(&g);
        for (auto &t : threads) t.join();
        for (auto &g : go) sem_destroy(&g);
        sem_destroy(&done);
    }
    void run(unsigned n, std::function<void(unsigned)> f) {
        job = std::move(f);
        left = n;
        for (unsigned t = 0; t < n; t++) sem_post(&go[t]);
        sem_wait(&done);
    }
};
/* A pool of at least n threads: the one there, or a larger one. */
inline pool &workers(unsigned n) {
    static std::unique_ptr<pool> p;
    if (!p || p->threads.size() < n) {
        p.reset();
        p.reset(new pool(n));
    }
    return *p;
}
inline void run_threads(unsigned n, std::function<void(unsigned)> job) {
    workers(n).run(n, std::move(job));
}
#endif

/* The order a launch's blocks run in. A GPU promises none, so each launch
 * takes a permutation of its own (the same ones in every run of a test;
 * EMU_BLOCK_ORDER=grid keeps grid order): a kernel that counts on a block
 * running before another, or a test that wants the same bits from two runs
 * of float atomics, fails here rather than now and then on a GPU. */
inline std::vector<unsigned> block_order(unsigned n) {
    static const char *env = getenv("EMU_BLOCK_ORDER");
    static const bool grid = env && !strcmp(env, "grid");
    static uint64_t state = 0x853c49e6748fea9bull;
    std::vector<unsigned> o(n);
    for (unsigned i = 0; i < n; i++) o[i] = i;
    for (unsigned i = n; i > 1 && !grid; i--) { /* Fisher-Yates on splitmix64 */
        uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        std::swap(o[i - 1], o[(z ^ (z >> 31)) % i]);
    }
    return o;
}

/* kernel<<<grid, block, shmem>>>(args...): each block in turn (in
 * block_order), its threads at once; the shared memory past shmem is
 * poisoned under ASan. */
template <typename... P> struct launcher {
    void (*kernel)(P...);
    dim3 grid, block;
    size_t shmem;
    void operator()(P... args) const {
        if (capturing) { /* a graph replays it later, with these arguments */
            const launcher self = *this;
            capturing->push_back([=] {
                std::vector<std::function<void()>> *c = capturing;
                capturing = nullptr;
                self(args...);
                capturing = c;
            });
            return;
        }
        const unsigned nt = block.x * block.y * block.z;
        if (nt > MAX_THREADS || nt % 32 || shmem > SMEM_MAX) {
            fprintf(stderr, "cuda_emu: unsupported launch (%u threads, %zu bytes)\n", nt, shmem);
            exit(2);
        }
        if (shmem > SMEM_DEFAULT && shmem > (size_t)smem_opt_in()[(void *)kernel]) {
            fprintf(stderr, "cuda_emu: a launch with %zu bytes of dynamic shared memory, more "
                            "than %zu, without cudaFuncSetAttribute for that many (it fails on "
                            "a GPU)\n", shmem, SMEM_DEFAULT);
            abort();
        }
        grid_dim = grid, block_dim = block;
        barrier_init(block_bar, nt);
        for (unsigned w = 0; w < nt / 32; w++) barrier_init(warps[w].bar, 32);
        EMU_UNPOISON(shared_mem, SMEM_MAX);
        memset(shared_mem, 0xff, SMEM_MAX); /* NaN in floats, garbage in bf16 */
        EMU_POISON(shared_mem + shmem, SMEM_MAX - shmem);
        /* One thread per thread of a block, walking the blocks; all of a
         * block's threads end it before the next begins. */
        const std::vector<unsigned> order = block_order(grid.x * grid.y * grid.z);
        run_threads(nt, [&](unsigned t) {
            thread_idx = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
            for (unsigned b : order) {
                block_idx = dim3(b % grid.x, b / grid.x % grid.y, b / (grid.x * grid.y));
                kernel(args...);
                if (!async_groups.empty() || !async_open.empty()) {
                    fprintf(stderr, "cuda_emu: a thread ended with cp.async copies not "
                                    "waited for\n");
                    abort();
                }
                barrier_wait(block_bar);
            }
        });
        EMU_UNPOISON(shared_mem, SMEM_MAX);
        for (unsigned w = 0; w < nt / 32; w++) barrier_destroy(warps[w].bar);
        barrier_destroy(block_bar);
    }
};
template <typename... P>
launcher<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t shmem) {
    return launcher<P...>{kernel, grid, block, shmem};
}

} /* namespace emu */

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define GPU_LAUNCH(kernel, grid, block, shmem) emu::launch(kernel, grid, block, shmem)
#define GPU_DYNAMIC_SHARED(T, name) T *name = reinterpret_cast<T *>(emu::shared_mem)
inline void __syncthreads() { emu::barrier_wait(emu::block_bar); }
template <typename T> T __shfl_xor_sync(unsigned, T v, int mask) { return emu::shfl_xor(v, mask); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
/* *p += v as one indivisible step (a compare-and-swap loop on the bits). */
inline float atomicAdd(float *p, float v) {
    uint32_t old = __atomic_load_n((uint32_t *)p, __ATOMIC_RELAXED), nw;
    float f;
    do {
        memcpy(&f, &old, 4);
        const float sum = f + v;
        memcpy(&nw, &sum, 4);
    } while (!__atomic_compare_exchange_n((uint32_t *)p, &old, nw, false, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    return f;
}
inline unsigned atomicAdd(unsigned *p, unsigned v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
/* Blocks run one after another, and a block's barriers order its threads:
 * a fence has nothing left to order, and every load sees L2. */
inline void __threadfence() {}
template <typename T> T __ldcg(const T *p) { return *p; }
/* A kernel launched with more than 48 KiB of dynamic shared memory must
 * have opted in to at least that much, as on a GPU. */
template <typename... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
    if (value < 0 || (size_t)value > emu::SMEM_MAX) return cudaErrorInvalidValue;
    emu::smem_opt_in()[(void *)kernel] = value;
    return cudaSuccess;
}
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_sync(); }

/* WMMA (mma.h, which defines nothing for a host compiler) for the 16 x 16 x
 * 16 shapes the kernels use. A fragment's layout is opaque to CUDA code, so
 * any layout the operations agree on is a faithful one; here every lane
 * holds the whole tile (element r * 16 + c), a product is computed a 32nd
 * by each lane and shared, and a store writes the elements of its lane
 * number mod 32, so that no two lanes write the same address. Neither a
 * load nor a store orders the lanes' accesses (the kernels' __syncwarp
 * does, as on the GPU, and ThreadSanitizer sees where one is missing).
 * Loads and stores check the alignment CUDA requires (256 bits, ldm a
 * multiple of 16 bytes). */
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "m16n16k16 only");
    static constexpr int num_elements = 256;
    T x[256];
};

inline void check_ptr(const void *p, unsigned ldm, size_t elem) {
    if ((uintptr_t)p % 32 || ldm * elem % 16) {
        fprintf(stderr, "cuda_emu: wmma pointer %p or ldm %u misaligned\n", p, ldm);
        abort();
    }
}

/* x (element r * 16 + c) = the 16 x 16 tile at p, row- or column-major. */
template <typename T> void load_tile(T *x, const T *p, unsigned ldm, bool col) {
    check_ptr(p, ldm, sizeof(T));
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) x[r * 16 + c] = col ? p[c * ldm + r] : p[r * ldm + c];
}
/* A (16 x 16) row-major, B (16 x 16, element k * 16 + n) row- or
 * column-major in memory; an accumulator as `l` says. */
template <typename Use, typename T, typename L>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L> &f, const T *p, unsigned ldm) {
    load_tile(f.x, p, ldm, std::is_same<L, col_major>::value);
}
template <typename T>
void load_matrix_sync(fragment<accumulator, 16, 16, 16, T> &f, const T *p, unsigned ldm,
                      layout_t l) {
    load_tile(f.x, p, ldm, l == mem_col_major);
}
template <typename T>
void store_matrix_sync(T *p, const fragment<accumulator, 16, 16, 16, T> &f, unsigned ldm,
                       layout_t l) {
    check_ptr(p, ldm, sizeof(T));
    for (int i = emu::my_lane(); i < 256; i += 32) {
        const int r = i / 16, c = i % 16;
        (l == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.x[i];
    }
}
template <typename Use, typename T, typename L, typename V>
void fill_fragment(fragment<Use, 16, 16, 16, T, L> &f, V v) {
    for (auto &e : f.x) e = T(v);
}
/* d = a b + c, fp32 accumulation of bf16 products (d may be c). */
template <typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float> &d,
              const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA> &a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB> &b,
              const fragment<accumulator, 16, 16, 16, float> &c) {
    /* Each lane computes every 32nd element, and all take the whole. */
    emu::warp_slots &w = emu::my_warp();
    for (int i = emu::my_lane(); i < 256; i += 32) {
        const int r = i / 16, n = i % 16;
        float s = c.x[i];
        for (int k = 0; k < 16; k++)
            s += __bfloat162float(a.x[r * 16 + k]) * __bfloat162float(b.x[k * 16 + n]);
        w.tile[i] = s;
    }
    emu::warp_sync();
    memcpy(d.x, w.tile, sizeof d.x);
    emu::warp_sync();
}
} /* namespace wmma */
} /* namespace nvcuda */

/* A vector access of `bytes` (8 or 16) at p, as load_vec and store_vec in
 * common.cuh make: a GPU faults on a misaligned one, so this aborts. */
inline void emu_vec_access(const void *p, size_t bytes) {
    if ((uintptr_t)p % bytes) {
        fprintf(stderr, "cuda_emu: %zu-byte vector access at %p misaligned\n", bytes, p);
        abort();
    }
}

/* cp.async.cg (16 bytes, zero-filled when !full), commit_group and
 * wait_group: a thread's copies wait in its own queue until a wait_group
 * that covers their group. The copy may land any time between the two on a
 * GPU, so the destination turns to NaN at once (all ones: NaN in fp32 and
 * bf16) and takes the data only at the wait: a kernel that reads a tile
 * before waiting for it, or that still reads the old tile of a buffer a copy
 * is refilling, reads NaN and fails its test (and the early write shows the
 * missing barrier to ThreadSanitizer in the _tsan tests). */
inline void emu_cp_async16(void *dst, const void *src, bool full) {
    if ((uintptr_t)dst % 16 || (full && (uintptr_t)src % 16)) {
        fprintf(stderr, "cuda_emu: cp.async addresses %p, %p not 16-byte aligned\n", dst, src);
        abort();
    }
    memset(dst, 0xff, 16);
    emu::async_open.push_back({dst, src, full});
}
inline void emu_cp_async_commit() {
    emu::async_groups.push_back(std::move(emu::async_open));
    emu::async_open.clear();
}
inline void emu_cp_async_wait(int pending) {
    auto &g = emu::async_groups;
    const size_t done = g.size() > (size_t)pending ? g.size() - pending : 0;
    for (size_t i = 0; i < done; i++)
        for (const auto &c : g[i]) {
            if (c.full) memcpy(c.dst, c.src, 16);
            else memset(c.dst, 0, 16);
        }
    g.erase(g.begin(), g.begin() + done);
}

inline void emu_ldmatrix_x4(uint32_t r[4], const void *row, bool trans) {
    emu::ldmatrix_x4(r, row, trans);
}
inline void emu_mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    emu::mma16816(c, a, b0, b1);
}

#endif
