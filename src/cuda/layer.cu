/* layer.cu: norms, activations, embedding, the fused classifier and AdamW. */
#include "common.cuh"

#include <math.h>

/* ------------------------------------------------------------------ norms */

/* One warp per row, each lane V consecutive columns at a time (V = 4 when
 * the rows allow 16-byte accesses: a quarter of the load instructions, and
 * four times the bytes in flight, which the memory needs to stream): the
 * residual added in (with add), mean (LayerNorm only), 1/sqrt(var + eps),
 * then the row. Each lane reads back only what it wrote itself; the later
 * passes read the row from the cache. */
template <typename T, int V>
__global__ void norm_forward_kernel(T *out, float *mean, float *rstd, float *inp, const float *add,
                                    const float *w, const float *b, int N, int C, float eps) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    float *x = inp + (size_t)row * C;
    T *o = out + (size_t)row * C;
    float m = 0.0f;
    if (add || mean) {
        float s = 0.0f;
        for (int i = lane * V; i < C; i += 32 * V) {
            float xv[V];
            load_vec<V>(xv, x + i);
            if (add) {
                float a[V];
                load_vec<V>(a, add + (size_t)row * C + i);
#pragma unroll
                for (int k = 0; k < V; k++) xv[k] += a[k];
                store_vec<V>(x + i, xv);
            }
#pragma unroll
            for (int k = 0; k < V; k++) s += xv[k];
        }
        if (mean) m = warp_sum(s) / C;
    }
    float v = 0.0f;
    for (int i = lane * V; i < C; i += 32 * V) {
        float xv[V];
        load_vec<V>(xv, x + i);
#pragma unroll
        for (int k = 0; k < V; k++) v += (xv[k] - m) * (xv[k] - m);
    }
    const float r = 1.0f / sqrtf(warp_sum(v) / C + eps);
    for (int i = lane * V; i < C; i += 32 * V) {
        float xv[V], wv[V], bv[V] = {}, ov[V];
        load_vec<V>(xv, x + i);
        load_vec<V>(wv, w + i);
        if (mean && b) load_vec<V>(bv, b + i);
#pragma unroll
        for (int k = 0; k < V; k++) ov[k] = (xv[k] - m) * r * wv[k] + bv[k];
        store_vec<V>(o + i, ov);
    }
    if (lane == 0) {
        if (mean) mean[row] = m;
        rstd[row] = r;
    }
}

/* Warps walk rows, lanes V columns at a time as the forward; dw and db
 * gather in shared memory per block (column i + k of a lane's group at
 * k * C/V + i/V, so that the 32 lanes of an atomic hit 32 banks), then one
 * atomic per element and block. LayerNorm: dx = r (d w - mean(d w) - xhat
 * mean(d w xhat)); RMSNorm drops the mean(d w) term. */
template <int V>
__global__ void norm_backward_kernel(float *dinp, __nv_bfloat16 *dinp16, float *dw, float *db,
                                     const __nv_bfloat16 *dout, const float *inp, const float *w,
                                     const float *mean, const float *rstd, int N, int C) {
    GPU_DYNAMIC_SHARED(float, sh);
    float *sdw = sh, *sdb = sh + C;
    const int CV = C / V;
    for (int i = threadIdx.x; i < 2 * C; i += blockDim.x) sh[i] = 0.0f;
    __syncthreads();
    const int warps = blockDim.x / 32, lane = threadIdx.x % 32;
    for (int row = blockIdx.x * warps + threadIdx.x / 32; row < N; row += gridDim.x * warps) {
        const float *x = inp + (size_t)row * C;
        const __nv_bfloat16 *d = dout + (size_t)row * C;
        float *dx = dinp + (size_t)row * C;
        const float m = mean ? mean[row] : 0.0f, r = rstd[row];
        float dsum = 0.0f, dxsum = 0.0f;
        for (int i = lane * V; i < C; i += 32 * V) {
            float dv[V], xv[V], wv[V];
            load_vec<V>(dv, d + i);
            load_vec<V>(xv, x + i);
            load_vec<V>(wv, w + i);
#pragma unroll
            for (int k = 0; k < V; k++) {
                const float dn = dv[k] * wv[k];
                dsum += dn;
                dxsum += dn * (xv[k] - m) * r;
            }
        }
        dsum = mean ? warp_sum(dsum) / C : 0.0f;
        dxsum = warp_sum(dxsum) / C;
        for (int i = lane * V; i < C; i += 32 * V) {
            float dv[V], xv[V], wv[V], nx[V];
            load_vec<V>(dv, d + i);
            load_vec<V>(xv, x + i);
            load_vec<V>(wv, w + i);
            load_vec<V>(nx, dx + i);
#pragma unroll
            for (int k = 0; k < V; k++) {
                const float xh = (xv[k] - m) * r;
                nx[k] += r * (dv[k] * wv[k] - dsum - xh * dxsum);
                atomicAdd(&sdw[k * CV + i / V], dv[k] * xh);
                if (db) atomicAdd(&sdb[k * CV + i / V], dv[k]);
            }
            store_vec<V>(dx + i, nx);
            if (dinp16) store_vec<V>(dinp16 + (size_t)row * C + i, nx);
        }
    }
    __syncthreads();
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        const int i = j % CV * V + j / CV; /* the column of slot j */
        atomicAdd(&dw[i], sdw[j]);
        if (db) atomicAdd(&db[i], sdb[j]);
    }
}

extern "C" void gpu_norm_forward(float *out, gpu_bf16 *out16, float *mean, float *rstd,
                                 float *inp, const float *add, const float *w, const float *b,
                                 int N, int C, float eps) {
    typedef __nv_bfloat16 bf16;
    const bool v4 = C % 4 == 0 && vec_ok(out, 16) && vec_ok(out16, 8) && vec_ok(inp, 16) &&
                    vec_ok(add, 16) && vec_ok(w, 16) && vec_ok(b, 16);
    const unsigned blocks = cdiv(N, 8);
    if (out16 && v4)
        GPU_LAUNCH((norm_forward_kernel<bf16, 4>), blocks, 256, 0)((bf16 *)out16, mean, rstd, inp,
                                                                   add, w, b, N, C, eps);
    else if (out16)
        GPU_LAUNCH((norm_forward_kernel<bf16, 1>), blocks, 256, 0)((bf16 *)out16, mean, rstd, inp,
                                                                   add, w, b, N, C, eps);
    else if (v4)
        GPU_LAUNCH((norm_forward_kernel<float, 4>), blocks, 256, 0)(out, mean, rstd, inp, add, w,
                                                                    b, N, C, eps);
    else
        GPU_LAUNCH((norm_forward_kernel<float, 1>), blocks, 256, 0)(out, mean, rstd, inp, add, w,
                                                                    b, N, C, eps);
}

template <int V>
static void norm_backward(float *dinp, __nv_bfloat16 *dinp16, float *dw, float *db,
                          const __nv_bfloat16 *dout, const float *inp, const float *w,
                          const float *mean, const float *rstd, int N, int C, int sms) {
    const size_t shmem = 2 * (size_t)C * sizeof(float);
    if (shmem > 48 * 1024)
        cudaFuncSetAttribute(norm_backward_kernel<V>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)shmem);
    /* Four blocks of 8 warps an SM: enough loads in flight, and few
     * enough blocks that their final atomics stay cheap. */
    unsigned blocks = cdiv(N, 8);
    if (blocks > 4u * (unsigned)sms) blocks = 4u * (unsigned)sms;
    GPU_LAUNCH(norm_backward_kernel<V>, blocks, 256, shmem)(dinp, dinp16, dw, db, dout, inp, w,
                                                            mean, rstd, N, C);
}

extern "C" void gpu_norm_backward(float *dinp, gpu_bf16 *dinp16, float *dw, float *db,
                                  const gpu_bf16 *dout, const float *inp, const float *w,
                                  const float *mean, const float *rstd, int N, int C) {
    const int sms = sm_count();
    typedef __nv_bfloat16 bf16;
    if (!mean) db = NULL;
    if (C % 4 == 0 && vec_ok(dinp, 16) && vec_ok(dinp16, 8) && vec_ok(dout, 8) &&
        vec_ok(inp, 16) && vec_ok(w, 16))
        norm_backward<4>(dinp, (bf16 *)dinp16, dw, db, (const bf16 *)dout, inp, w, mean, rstd, N,
                         C, sms);
    else
        norm_backward<1>(dinp, (bf16 *)dinp16, dw, db, (const bf16 *)dout, inp, w, mean, rstd, N,
                         C, sms);
}

/* ------------------------------------------------------------ activations */

/* Each thread V consecutive elements (V = 8 for bf16 in a training step
 * when n, or F, and the pointers allow 16-byte accesses, as the norms do;
 * else 1). */
template <typename T, int V>
__global__ void gelu_forward_kernel(T *out, const T *inp, size_t n) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (i >= n) return;
    float x[V], y[V];
    load_vec<V>(x, inp + i);
#pragma unroll
    for (int k = 0; k < V; k++) y[k] = gelu(x[k]);
    store_vec<V>(out + i, y);
}

template <int V>
__global__ void gelu_backward_kernel(__nv_bfloat16 *dinp, const __nv_bfloat16 *dout,
                                     const __nv_bfloat16 *inp, size_t n) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (i >= n) return;
    float x[V], d[V], y[V];
    load_vec<V>(x, inp + i);
    load_vec<V>(d, dout + i);
#pragma unroll
    for (int k = 0; k < V; k++) {
        const float th = tanhf(GELU_K * (x[k] + 0.044715f * x[k] * x[k] * x[k]));
        const float dth = (1.0f - th * th) * GELU_K * (1.0f + 3.0f * 0.044715f * x[k] * x[k]);
        y[k] = d[k] * (0.5f * (1.0f + th) + 0.5f * x[k] * dth);
    }
    store_vec<V>(dinp + i, y);
}

/* V divides F: a thread's elements share their row. */
template <typename T, int V>
__global__ void swiglu_forward_kernel(T *out, const T *gu, int N, int F) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (i >= (size_t)N * F) return;
    const size_t n = i / F, f = i % F;
    float g[V], u[V], y[V];
    load_vec<V>(g, gu + n * 2 * F + f);
    load_vec<V>(u, gu + n * 2 * F + F + f);
#pragma unroll
    for (int k = 0; k < V; k++) y[k] = swiglu(g[k], u[k]);
    store_vec<V>(out + i, y);
}

template <int V>
__global__ void swiglu_backward_kernel(__nv_bfloat16 *dgu, const __nv_bfloat16 *dout,
                                       const __nv_bfloat16 *gu, int N, int F) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (i >= (size_t)N * F) return;
    const size_t n = i / F, f = i % F;
    float g[V], u[V], d[V], dg[V], du[V];
    load_vec<V>(g, gu + n * 2 * F + f);
    load_vec<V>(u, gu + n * 2 * F + F + f);
    load_vec<V>(d, dout + i);
#pragma unroll
    for (int k = 0; k < V; k++) {
        const float sg = 1.0f / (1.0f + expf(-g[k]));
        du[k] = d[k] * g[k] * sg;
        dg[k] = d[k] * u[k] * sg * (1.0f + g[k] * (1.0f - sg));
    }
    store_vec<V>(dgu + n * 2 * F + F + f, du);
    store_vec<V>(dgu + n * 2 * F + f, dg);
}

/* Whether bf16 arrays of rows of `row` elements take 8 at a time. */
static bool by8(size_t row, const void *a, const void *b, const void *c) {
    return row % 8 == 0 && vec_ok(a, 16) && vec_ok(b, 16) && vec_ok(c, 16);
}

/* fp32 in and out, or bf16 in and out: the callers pass one pair. */
extern "C" void gpu_gelu_forward(float *out, gpu_bf16 *out16, const float *inp,
                                 const gpu_bf16 *inp16, size_t n) {
    typedef __nv_bfloat16 bf16;
    if (out16 && by8(n, out16, inp16, NULL))
        GPU_LAUNCH((gelu_forward_kernel<bf16, 8>), cdiv(n / 8, 256), 256, 0)(
            (bf16 *)out16, (const bf16 *)inp16, n);
    else if (out16)
        GPU_LAUNCH((gelu_forward_kernel<bf16, 1>), cdiv(n, 256), 256, 0)((bf16 *)out16,
                                                                         (const bf16 *)inp16, n);
    else
        GPU_LAUNCH((gelu_forward_kernel<float, 1>), cdiv(n, 256), 256, 0)(out, inp, n);
}
extern "C" void gpu_gelu_backward(gpu_bf16 *dinp, const gpu_bf16 *dout, const gpu_bf16 *inp,
                                  size_t n) {
    typedef __nv_bfloat16 bf16;
    if (by8(n, dinp, dout, inp))
        GPU_LAUNCH(gelu_backward_kernel<8>, cdiv(n / 8, 256), 256, 0)(
            (bf16 *)dinp, (const bf16 *)dout, (const bf16 *)inp, n);
    else
        GPU_LAUNCH(gelu_backward_kernel<1>, cdiv(n, 256), 256, 0)(
            (bf16 *)dinp, (const bf16 *)dout, (const bf16 *)inp, n);
}
extern "C" void gpu_swiglu_forward(float *out, gpu_bf16 *out16, const float *gu,
                                   const gpu_bf16 *gu16, int N, int F) {
    typedef __nv_bfloat16 bf16;
    const size_t n = (size_t)N * F;
    if (out16 && by8((size_t)F, out16, gu16, NULL))
        GPU_LAUNCH((swiglu_forward_kernel<bf16, 8>), cdiv(n / 8, 256), 256, 0)(
            (bf16 *)out16, (const bf16 *)gu16, N, F);
    else if (out16)
        GPU_LAUNCH((swiglu_forward_kernel<bf16, 1>), cdiv(n, 256), 256, 0)(
            (bf16 *)out16, (const bf16 *)gu16, N, F);
    else
        GPU_LAUNCH((swiglu_forward_kernel<float, 1>), cdiv(n, 256), 256, 0)(out, gu, N, F);
}
extern "C" void gpu_swiglu_backward(gpu_bf16 *dgu, const gpu_bf16 *dout, const gpu_bf16 *gu,
                                    int N, int F) {
    typedef __nv_bfloat16 bf16;
    const size_t n = (size_t)N * F;
    if (by8((size_t)F, dgu, dout, gu))
        GPU_LAUNCH(swiglu_backward_kernel<8>, cdiv(n / 8, 256), 256, 0)(
            (bf16 *)dgu, (const bf16 *)dout, (const bf16 *)gu, N, F);
    else
        GPU_LAUNCH(swiglu_backward_kernel<1>, cdiv(n, 256), 256, 0)(
            (bf16 *)dgu, (const bf16 *)dout, (const bf16 *)gu, N, F);
}

/* -------------------------------------------------------------- embedding */

__global__ void embed_forward_kernel(float *out, const int *tokens, const float *tok_emb,
                                     const float *pos, const int *start, int N, int T, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * C) return;
    const size_t n = i / C, c = i % C;
    float x = tok_emb[(size_t)tokens[n] * C + c];
    if (pos) x += pos[((start ? (size_t)*start : 0) + n % T) * C + c];
    out[i] = x;
}

__global__ void embed_backward_kernel(float *dtok, float *dpos, const float *dout,
                                      const int *tokens, int N, int T, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * C) return;
    const size_t n = i / C, c = i % C;
    atomicAdd(&dtok[(size_t)tokens[n] * C + c], dout[i]);
    if (dpos) atomicAdd(&dpos[(n % T) * C + c], dout[i]);
}

extern "C" void gpu_embed_forward(float *out, const int *tokens, const float *tok_emb,
                                  const float *pos, const int *start, int N, int T, int C) {
    GPU_LAUNCH(embed_forward_kernel, cdiv((size_t)N * C, 256), 256, 0)(out, tokens, tok_emb, pos,
                                                                       start, N, T, C);
}
extern "C" void gpu_embed_backward(float *dtok, float *dpos, const float *dout, const int *tokens,
                                   int N, int T, int C) {
    GPU_LAUNCH(embed_backward_kernel, cdiv((size_t)N * C, 256), 256, 0)(dtok, dpos, dout, tokens, N,
                                                                        T, C);
}

/* ------------------------------------------------------------- classifier */

/* (max, sum of exp(x - max)) pairs combine without a second pass. */
__device__ __forceinline__ void lse_merge(float &m, float &s, float m2, float s2) {
    const float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return;
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

#define CE_THREADS 512
/* W consecutive logits a thread at a time (8 bf16 or 4 fp32 in 16 bytes
 * where V and the rows allow, else 1): one merge of the running (max, sum)
 * per W values, so W + 1 exponentials instead of 2 W. */
template <typename T, int W>
__global__ void __launch_bounds__(CE_THREADS)
    crossentropy_kernel(T *logits, float *lse, float *losses, const int *targets, int V,
                        float dscale) {
    __shared__ float sm[CE_THREADS / 32], ss[CE_THREADS / 32];
    __shared__ float row_lse;
    const size_t n = blockIdx.x;
    T *z = logits + n * V;
    /* Pass 1: online max and sum per thread, then per warp, then per block. */
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x * W; i < V; i += CE_THREADS * W) {
        float x[W], mx = -INFINITY, sx = 0.0f;
        load_vec<W>(x, z + i);
#pragma unroll
        for (int k = 0; k < W; k++) mx = fmaxf(mx, x[k]);
        if (mx == -INFINITY) continue; /* all -inf: nothing to add (and no inf - inf) */
#pragma unroll
        for (int k = 0; k < W; k++) sx += expf(x[k] - mx);
        lse_merge(m, s, mx, sx);
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        lse_merge(m, s, m2, s2);
    }
    if (threadIdx.x % 32 == 0) sm[threadIdx.x / 32] = m, ss[threadIdx.x / 32] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        float bm = sm[0], bs = ss[0];
        for (int w = 1; w < CE_THREADS / 32; w++) lse_merge(bm, bs, sm[w], ss[w]);
        const float l = bm + logf(bs);
        row_lse = l;
        lse[n] = l;
        losses[n] = l - get(&z[targets[n]]);
    }
    __syncthreads();
    if (dscale == 0.0f) return;
    /* Pass 2: the gradient in place. */
    const float l = row_lse;
    const int tg = targets[n];
    for (int i = threadIdx.x * W; i < V; i += CE_THREADS * W) {
        float x[W];
        load_vec<W>(x, z + i);
#pragma unroll
        for (int k = 0; k < W; k++) x[k] = (expf(x[k] - l) - (i + k == tg ? 1.0f : 0.0f)) * dscale;
        store_vec<W>(z + i, x);
    }
}

extern "C" void gpu_crossentropy(float *logits, gpu_bf16 *logits16, float *lse, float *losses,
                                 const int *targets, int N, int V, float dscale) {
    typedef __nv_bfloat16 bf16;
    if (logits16 && V % 8 == 0 && vec_ok(logits16, 16))
        GPU_LAUNCH((crossentropy_kernel<bf16, 8>), N, CE_THREADS, 0)(
            (bf16 *)logits16, lse, losses, targets, V, dscale);
    else if (logits16)
        GPU_LAUNCH((crossentropy_kernel<bf16, 1>), N, CE_THREADS, 0)(
            (bf16 *)logits16, lse, losses, targets, V, dscale);
    else if (V % 4 == 0 && vec_ok(logits, 16))
        GPU_LAUNCH((crossentropy_kernel<float, 4>), N, CE_THREADS, 0)(logits, lse, losses, targets,
                                                                      V, dscale);
    else
        GPU_LAUNCH((crossentropy_kernel<float, 1>), N, CE_THREADS, 0)(logits, lse, losses, targets,
                                                                      V, dscale);
}

/* ------------------------------------------------------------------ AdamW */

__global__ void adamw_kernel(float *p, __nv_bfloat16 *p16, const float *g, float *m, float *v,
                             size_t n, float beta1, float beta2, float eps, float decay,
                             float step_size, float bc2_sqrt, float gscale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float gi = g[i] * gscale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float pi = p[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    p[i] = pi;
    p16[i] = __float2bfloat16(pi);
}

extern "C" void gpu_adamw(float *p, gpu_bf16 *p16, const float *g, float *m, float *v, size_t n,
                          float beta1, float beta2, float eps, float decay, float step_size,
                          float bc2_sqrt, float gscale) {
    GPU_LAUNCH(adamw_kernel, cdiv(n, 256), 256, 0)(p, (__nv_bfloat16 *)p16, g, m, v, n, beta1,
                                                   beta2, eps, decay, step_size, bc2_sqrt, gscale);
}

/* A block a GPU_NORM_BLOCK floats: four values an access over the first
 * n4 * 4 of them (x 16-byte aligned, else n4 = 0), then one at a time, then
 * a fixed tree: the same sums every run. */
__global__ void sumsq_blocks_kernel(double *part, const float *x, size_t n, int vec) {
    __shared__ double sh[256];
    const size_t base = (size_t)blockIdx.x * GPU_NORM_BLOCK;
    const size_t len = n - base < GPU_NORM_BLOCK ? n - base : GPU_NORM_BLOCK;
    const size_t n4 = vec ? len / 4 : 0;
    const float *xb = x + base;
    double s = 0.0;
    for (size_t i = threadIdx.x; i < n4; i += blockDim.x) {
        float v[4];
        load_vec<4>(v, xb + 4 * i);
        s += (double)v[0] * v[0] + (double)v[1] * v[1] + (double)v[2] * v[2] +
             (double)v[3] * v[3];
    }
    for (size_t i = 4 * n4 + threadIdx.x; i < len; i += blockDim.x) s += (double)xb[i] * xb[i];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = 128; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}

extern "C" void gpu_sumsq_blocks(double *part, const float *x, size_t n) {
    if (n)
        GPU_LAUNCH(sumsq_blocks_kernel, cdiv(n, GPU_NORM_BLOCK), 256, 0)(part, x, n,
                                                                       vec_ok(x, 16));
}
