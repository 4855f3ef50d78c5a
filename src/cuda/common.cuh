/* common.cuh: what the .cu files share (internal). */
#ifndef ROTARY_CUDA_COMMON_CUH
#define ROTARY_CUDA_COMMON_CUH

#include "kernels.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

static inline unsigned cdiv(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

/* The SM count of the device in use (1 if it cannot be read), asked once:
 * launches size their grids by it. A process uses one device (a rank's,
 * cuda_device_use), chosen before its first launch. */
static inline int sm_count(void) {
    static int sms;
    int dev = 0;
    if (!sms && (cudaGetDevice(&dev) != cudaSuccess ||
                 cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess))
        sms = 1;
    return sms;
}

/* kernel<<<grid, block, shmem>>>, and a kernel's dynamic shared memory
 * (T name[], 128-byte aligned), spelled so that the CPU emulation of
 * tests/cuda/emu can run the kernels written this way (it defines its own). */
#ifndef GPU_LAUNCH
#define GPU_LAUNCH(kernel, grid, block, shmem) kernel<<<grid, block, shmem>>>
#define GPU_DYNAMIC_SHARED(T, name) extern __shared__ __align__(128) T name[]
#endif

/* F<HD>(...) for the smallest of HD = 16, 32, 64, 128 that holds hd: the
 * tensor-core tile kernels pad a head with zeros to HD. */
#define BY_TILE_HD(F, hd, ...)                                                                  \
    ((hd) <= 16   ? F<16>(__VA_ARGS__)                                                          \
     : (hd) <= 32 ? F<32>(__VA_ARGS__)                                                          \
     : (hd) <= 64 ? F<64>(__VA_ARGS__)                                                          \
                  : F<128>(__VA_ARGS__))

/* A value stored as float or as bf16, and read back as float. */
__device__ __forceinline__ void put(float *p, float x) { *p = x; }
__device__ __forceinline__ void put(__nv_bfloat16 *p, float x) { *p = __float2bfloat16(x); }
__device__ __forceinline__ float get(const float *p) { return *p; }
__device__ __forceinline__ float get(const __nv_bfloat16 *p) { return __bfloat162float(*p); }

/* V consecutive values at p, read or written as float in one access of
 * V * sizeof(T) bytes (up to 16): p must be aligned to that, which the
 * callers check (vec_ok) before they choose V > 1. */
template <typename T, int V>
struct alignas(sizeof(T) * V) vec_pack {
    T v[V];
};
#ifdef ROTARY_CUDA_EMU /* the emulation checks the alignment a GPU requires */
#define VEC_ACCESS(p, bytes) (bytes > sizeof(*(p)) ? emu_vec_access(p, bytes) : (void)0)
#else
#define VEC_ACCESS(p, bytes) ((void)0)
#endif
template <int V, typename T>
__device__ __forceinline__ void load_vec(float (&r)[V], const T *p) {
    VEC_ACCESS(p, sizeof(vec_pack<T, V>));
    const vec_pack<T, V> k = *reinterpret_cast<const vec_pack<T, V> *>(p);
#pragma unroll
    for (int i = 0; i < V; i++) r[i] = get(&k.v[i]);
}
template <int V, typename T>
__device__ __forceinline__ void store_vec(T *p, const float (&r)[V]) {
    VEC_ACCESS(p, sizeof(vec_pack<T, V>));
    vec_pack<T, V> k;
#pragma unroll
    for (int i = 0; i < V; i++) put(&k.v[i], r[i]);
    *reinterpret_cast<vec_pack<T, V> *>(p) = k;
}
/* Whether p (NULL passes) is aligned to bytes. */
static inline bool vec_ok(const void *p, size_t bytes) { return (size_t)p % bytes == 0; }

/* The two coordinates of pair i of a head (hd/2 pairs): the first rd/2
 * pairs rotate as rotary_rope pairs them (half_pairs: i with i + rd/2,
 * else 2i with 2i+1); the rest are the consecutive pairs after rd. Returns
 * whether the pair is among the rotated ones. */
__device__ __forceinline__ int rope_pair(int i, int rd, int half_pairs, int *e0, int *e1) {
    const int r2 = rd / 2;
    if (i < r2) {
        *e0 = half_pairs ? i : 2 * i;
        *e1 = half_pairs ? i + r2 : 2 * i + 1;
        return 1;
    }
    *e0 = rd + 2 * (i - r2);
    *e1 = *e0 + 1;
    return 0;
}

/* What a score adds for distance n = i - j >= 0: ALiBi's -slope n and a T5
 * table's entry (tb: one head's row, or NULL). */
__device__ __forceinline__ float score_bias(float slope, const float *tb, int n) {
    return -slope * (float)n + (tb ? tb[n] : 0.0f);
}

/* The MLP activations' forward, as ops.c's: GELU's tanh approximation and
 * SwiGLU's silu(gate) * up (layer.cu for training, decode.cu fused into a
 * product). */
#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
__device__ __forceinline__ float gelu(float x) {
    return 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float swiglu(float g, float u) {
    return g / (1.0f + expf(-g)) * u;
}

/* elu(x) + 1, linear attention's feature map. */
__device__ __forceinline__ float elu1(float x) { return x > 0 ? x + 1.0f : expf(x); }

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

#endif
