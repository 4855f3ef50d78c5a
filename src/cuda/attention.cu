/* attention.cu: the qkv split with RoPE fused in, and causal attention with
 * an online softmax in the manner of FlashAttention (Dao et al. 2022): the
 * forward keeps one query row per thread and streams key/value tiles through
 * shared memory, saving only the log-sum-exp of each row; the backward
 * recomputes the probabilities from it, one kernel per key row (dk, dv) and
 * one per query row (dq), so every gradient element has a single writer and
 * no T x T matrix exists. Rows are fp32 and head sizes are padded up to a
 * compile-time HD (32, 64 or 128) with zeros, which leave dot products
 * unchanged. Head sizes that are multiples of 16 go to the tensor-core
 * kernels of flash_fwd.cu and flash_bwd.cu instead; these fp32 kernels serve
 * the rest and are the reference the others were checked against. */
#include "common.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------- split and RoPE */

/* The G pairs of a head row p that a thread moves: x their first
 * coordinates, y their second. G = 4: four consecutive pairs, which lie as
 * one run of 8 values (interleaved pairs and the unrotated rest) or as two
 * runs of 4 (split: RoPE's half pairing), read and written 4 at a time. */
template <typename T>
__device__ __forceinline__ void gather_pairs(float (&x)[1], float (&y)[1], const T *p,
                                             const int (&e0)[1], const int (&e1)[1], bool) {
    x[0] = get(&p[e0[0]]);
    y[0] = get(&p[e1[0]]);
}
template <typename T>
__device__ __forceinline__ void scatter_pairs(T *p, const float (&x)[1], const float (&y)[1],
                                              const int (&e0)[1], const int (&e1)[1], bool) {
    put(&p[e0[0]], x[0]);
    put(&p[e1[0]], y[0]);
}
/* G = 4: two runs a, b of 4 values; pair k's two values are a[k], b[k]
 * when split, else the 2k-th and (2k+1)-th of a then b. */
template <typename T>
__device__ __forceinline__ void gather_pairs(float (&x)[4], float (&y)[4], const T *p,
                                             const int (&e0)[4], const int (&e1)[4], bool split) {
    float a[4], b[4];
    load_vec<4>(a, p + e0[0]);
    load_vec<4>(b, p + (split ? e1[0] : e0[0] + 4));
#pragma unroll
    for (int k = 0; k < 4; k++) {
        x[k] = split ? a[k] : k < 2 ? a[2 * k] : b[2 * k - 4];
        y[k] = split ? b[k] : k < 2 ? a[2 * k + 1] : b[2 * k - 3];
    }
}
template <typename T>
__device__ __forceinline__ void scatter_pairs(T *p, const float (&x)[4], const float (&y)[4],
                                              const int (&e0)[4], const int (&e1)[4], bool split) {
    float a[4], b[4];
#pragma unroll
    for (int j = 0; j < 4; j++) { /* the inverse: value j of each run */
        a[j] = split ? x[j] : j % 2 ? y[j / 2] : x[j / 2];
        b[j] = split ? y[j] : j % 2 ? y[2 + j / 2] : x[2 + j / 2];
    }
    store_vec<4>(p + e0[0], a);
    store_vec<4>(p + (split ? e1[0] : e0[0] + 4), b);
}

/* One thread per G coordinate pairs of one head of one token (G = 4 when
 * hd and rd are multiples of 8, so that a thread's pairs are all rotated or
 * all not, and the arrays are 16-byte aligned; else 1). Rotated pairs turn
 * in q and k heads only; the rest of the head, and v, are copied pairwise.
 * Forward: token-major qkv (bf16, the projection's output) -> per-head q,
 * k, v rotated by theta (TH: bf16 for the tensor cores, else fp32);
 * backward: per-head gradients (TH: bf16 or fp32, as the attention
 * backward wrote them) -> token-major dqkv (bf16, the input of the
 * projection's backward GEMM) rotated by -theta. */
template <typename TM, typename TH, int G>
__global__ void split_rope_kernel(TH *q, TH *k, TH *v, TM *qkv, const float *cs,
                                  const float *sn, int B, int T, int nh, int nkv, int hd, int rd,
                                  int half_pairs, int backward) {
    const int groups = hd / 2 / G, S = nh + 2 * nkv;
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * S * groups) return;
    const int i0 = (int)(idx % groups) * G, s = (int)(idx / groups % S);
    const size_t n = idx / groups / S;
    const int t = (int)(n % T), b = (int)(n / T), r2 = rd / 2;
    int e0[G], e1[G], in_rd = 0;
#pragma unroll
    for (int j = 0; j < G; j++) in_rd = rope_pair(i0 + j, rd, half_pairs, &e0[j], &e1[j]);
    const int rot = in_rd && cs && s < nh + nkv;
    const bool split = in_rd && half_pairs;
    TH *dst;
    int head, heads;
    if (s < nh) dst = q, head = s, heads = nh;
    else if (s < nh + nkv) dst = k, head = s - nh, heads = nkv;
    else dst = v, head = s - nh - nkv, heads = nkv;
    TH *hm = dst + (((size_t)b * heads + head) * T + t) * hd;
    TM *tm = qkv + n * (size_t)S * hd + (size_t)s * hd;
    float c[G], si[G], x[G], y[G], xr[G], yr[G];
#pragma unroll
    for (int j = 0; j < G; j++) {
        c[j] = rot ? cs[(size_t)t * r2 + i0 + j] : 1.0f;
        si[j] = rot ? sn[(size_t)t * r2 + i0 + j] : 0.0f;
    }
    if (!backward) {
        gather_pairs(x, y, tm, e0, e1, split);
#pragma unroll
        for (int j = 0; j < G; j++) {
            xr[j] = x[j] * c[j] - y[j] * si[j];
            yr[j] = x[j] * si[j] + y[j] * c[j];
        }
        scatter_pairs(hm, xr, yr, e0, e1, split);
    } else {
        gather_pairs(x, y, hm, e0, e1, split);
#pragma unroll
        for (int j = 0; j < G; j++) {
            xr[j] = x[j] * c[j] + y[j] * si[j];
            yr[j] = y[j] * c[j] - x[j] * si[j];
        }
        scatter_pairs(tm, xr, yr, e0, e1, split);
    }
}

/* Both directions: G = 4 where the shapes and pointers allow it. */
template <typename TM, typename TH>
static void split_rope(TH *q, TH *k, TH *v, TM *qkv, const float *cos, const float *sin, int B,
                       int T, int nh, int nkv, int hd, int rd, int pairing, int backward) {
    if (!cos) rd = 0;
    const size_t pairs = (size_t)B * T * (nh + 2 * nkv) * (hd / 2);
    if (hd % 8 == 0 && rd % 8 == 0 && vec_ok(q, 16) && vec_ok(k, 16) && vec_ok(v, 16) &&
        vec_ok(qkv, 16))
        GPU_LAUNCH((split_rope_kernel<TM, TH, 4>), cdiv(pairs / 4, 256), 256, 0)(
            q, k, v, qkv, cos, sin, B, T, nh, nkv, hd, rd, pairing == 1, backward);
    else
        GPU_LAUNCH((split_rope_kernel<TM, TH, 1>), cdiv(pairs, 256), 256, 0)(
            q, k, v, qkv, cos, sin, B, T, nh, nkv, hd, rd, pairing == 1, backward);
}

extern "C" void gpu_qkv_split_rope(void *q, void *k, void *v, const gpu_bf16 *qkv, const float *cos,
                                   const float *sin, int B, int T, int nh, int nkv, int hd, int rd,
                                   int pairing, int bf16_heads) {
    typedef __nv_bfloat16 bf16;
    bf16 *tm = (bf16 *)qkv;
    if (bf16_heads)
        split_rope(static_cast<bf16 *>(q), static_cast<bf16 *>(k), static_cast<bf16 *>(v), tm, cos,
                   sin, B, T, nh, nkv, hd, rd, pairing, 0);
    else
        split_rope(static_cast<float *>(q), static_cast<float *>(k), static_cast<float *>(v), tm,
                   cos, sin, B, T, nh, nkv, hd, rd, pairing, 0);
}

extern "C" void gpu_qkv_merge_rope_backward(gpu_bf16 *dqkv, const void *dq, const void *dk,
                                            const void *dv, const float *cos, const float *sin,
                                            int B, int T, int nh, int nkv, int hd, int rd,
                                            int pairing, int bf16_grads) {
    typedef __nv_bfloat16 bf16;
    bf16 *tm = (bf16 *)dqkv;
    if (bf16_grads)
        split_rope((bf16 *)dq, (bf16 *)dk, (bf16 *)dv, tm, cos, sin, B, T, nh, nkv, hd, rd,
                   pairing, 1);
    else
        split_rope((float *)dq, (float *)dk, (float *)dv, tm, cos, sin, B, T, nh, nkv, hd, rd,
                   pairing, 1);
}

/* ---------------------------------------------------------- forward pass */

enum { FWD_BR = 64, FWD_BC = 32, BWD_BR = 64, BWD_BC = 32, BWD_BK = 32, BWD_BQ = 32 };

/* grid (T / FWD_BR, B*nh), one query row per thread. */
template <int HD>
__global__ void __launch_bounds__(FWD_BR)
    flash_forward_kernel(__nv_bfloat16 *out, float *lse, const float *q, const float *k,
                         const float *v, const float *alibi, const float *t5, int T, int nh,
                         int nkv, int hd, float scale) {
    __shared__ float Ks[FWD_BC][HD], Vs[FWD_BC][HD];
    const int bh = blockIdx.y, b = bh / nh, h = bh % nh, g = h / (nh / nkv);
    const int i = blockIdx.x * FWD_BR + threadIdx.x, valid = i < T;
    const float *qh = q + (size_t)bh * T * hd;
    const float *kh = k + ((size_t)b * nkv + g) * T * hd, *vh = v + ((size_t)b * nkv + g) * T * hd;
    const float slope = alibi ? alibi[h] : 0.0f, *tb = t5 ? t5 + (size_t)h * T : NULL;
    float qr[HD], o[HD];
#pragma unroll
    for (int d = 0; d < HD; d++) {
        qr[d] = valid && d < hd ? qh[(size_t)i * hd + d] * scale : 0.0f;
        o[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const int last = min(T - 1, (int)blockIdx.x * FWD_BR + FWD_BR - 1);
    for (int j0 = 0; j0 <= last; j0 += FWD_BC) {
        __syncthreads();
        for (int e = threadIdx.x; e < FWD_BC * HD; e += FWD_BR) {
            const int jj = e / HD, d = e % HD, j = j0 + jj, ok = j < T && d < hd;
            Ks[jj][d] = ok ? kh[(size_t)j * hd + d] : 0.0f;
            Vs[jj][d] = ok ? vh[(size_t)j * hd + d] : 0.0f;
        }
        __syncthreads();
        if (!valid || j0 > i) continue;
        /* Scores of the tile, then one rescale of the running sums. */
        float s[FWD_BC], mt = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < FWD_BC; jj++) {
            const int j = j0 + jj;
            float x = -INFINITY;
            if (j <= i) {
                float dot = 0.0f;
#pragma unroll
                for (int d = 0; d < HD; d++) dot += qr[d] * Ks[jj][d];
                x = dot + score_bias(slope, tb, i - j);
            }
            s[jj] = x;
            mt = fmaxf(mt, x);
        }
        const float mn = fmaxf(m, mt), corr = expf(m - mn);
        l *= corr;
#pragma unroll
        for (int d = 0; d < HD; d++) o[d] *= corr;
#pragma unroll
        for (int jj = 0; jj < FWD_BC; jj++) {
            const float p = expf(s[jj] - mn);
            l += p;
#pragma unroll
            for (int d = 0; d < HD; d++) o[d] += p * Vs[jj][d];
        }
        m = mn;
    }
    if (!valid) return;
    __nv_bfloat16 *orow = out + (((size_t)b * T + i) * nh + h) * hd;
    const float inv = 1.0f / l;
#pragma unroll
    for (int d = 0; d < HD; d++)
        if (d < hd) orow[d] = __float2bfloat16(o[d] * inv);
    lse[(size_t)bh * T + i] = m + logf(l);
}

/* --------------------------------------------------------- backward pass */

/* dsum (B, nh, T) = rowsum(dout * out): the D of the softmax backward. */
__global__ void dsum_kernel(float *dsum, const __nv_bfloat16 *dout, const __nv_bfloat16 *out,
                            int B, int T, int nh, int hd) {
    const size_t r = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= (size_t)B * nh * T) return;
    const int t = (int)(r % T), h = (int)(r / T % nh);
    const size_t b = r / T / nh, at = ((b * T + t) * nh + h) * hd;
    float s = 0.0f;
    for (int d = threadIdx.x % 32; d < hd; d += 32)
        s += __bfloat162float(dout[at + d]) * __bfloat162float(out[at + d]);
    s = warp_sum(s);
    if (threadIdx.x % 32 == 0) dsum[r] = s;
}

/* dq: grid (T / BWD_BR, B*nh), one query row per thread, key tiles streamed. */
template <int HD>
__global__ void __launch_bounds__(BWD_BR)
    flash_backward_q_kernel(float *dq, float *dt5, const __nv_bfloat16 *dout, const float *q,
                            const float *k, const float *v, const float *lse, const float *dsum,
                            const float *alibi, const float *t5, int T, int nh, int nkv, int hd,
                            float scale) {
    __shared__ float Ks[BWD_BC][HD], Vs[BWD_BC][HD];
    const int bh = blockIdx.y, b = bh / nh, h = bh % nh, g = h / (nh / nkv);
    const int i = blockIdx.x * BWD_BR + threadIdx.x, valid = i < T;
    const float *kh = k + ((size_t)b * nkv + g) * T * hd, *vh = v + ((size_t)b * nkv + g) * T * hd;
    const __nv_bfloat16 *dorow = dout + (((size_t)b * T + (valid ? i : 0)) * nh + h) * hd;
    const float slope = alibi ? alibi[h] : 0.0f, *tb = t5 ? t5 + (size_t)h * T : NULL;
    float *dtb = dt5 ? dt5 + (size_t)bh * T : NULL;
    float qr[HD], dor[HD], dqr[HD];
#pragma unroll
    for (int d = 0; d < HD; d++) {
        qr[d] = valid && d < hd ? q[((size_t)bh * T + i) * hd + d] * scale : 0.0f;
        dor[d] = valid && d < hd ? get(&dorow[d]) : 0.0f;
        dqr[d] = 0.0f;
    }
    const float li = valid ? lse[(size_t)bh * T + i] : 0.0f;
    const float Di = valid ? dsum[(size_t)bh * T + i] : 0.0f;
    const int last = min(T - 1, (int)blockIdx.x * BWD_BR + BWD_BR - 1);
    for (int j0 = 0; j0 <= last; j0 += BWD_BC) {
        __syncthreads();
        for (int e = threadIdx.x; e < BWD_BC * HD; e += BWD_BR) {
            const int jj = e / HD, d = e % HD, j = j0 + jj, ok = j < T && d < hd;
            Ks[jj][d] = ok ? kh[(size_t)j * hd + d] : 0.0f;
            Vs[jj][d] = ok ? vh[(size_t)j * hd + d] : 0.0f;
        }
        __syncthreads();
        if (!valid) continue;
        for (int jj = 0; jj < BWD_BC && j0 + jj <= i; jj++) {
            const int j = j0 + jj;
            float sc = 0.0f, dp = 0.0f;
#pragma unroll
            for (int d = 0; d < HD; d++) {
                sc += qr[d] * Ks[jj][d];
                dp += dor[d] * Vs[jj][d];
            }
            const float p = expf(sc + score_bias(slope, tb, i - j) - li), ds = p * (dp - Di);
            /* the rows of a warp add to distinct distances i - j */
            if (dtb) atomicAdd(&dtb[i - j], ds);
#pragma unroll
            for (int d = 0; d < HD; d++) dqr[d] += ds * Ks[jj][d];
        }
    }
    if (!valid) return;
#pragma unroll
    for (int d = 0; d < HD; d++)
        if (d < hd) dq[((size_t)bh * T + i) * hd + d] = dqr[d] * scale;
}

/* dk, dv: grid (T / BWD_BK, B*nkv), one key row per thread, summing over the
 * query heads of its group and the query tiles at or after it. The thread's
 * own k and v rows sit in shared memory (rows padded to HD+1 floats: no bank
 * conflicts), the query tile is read by all threads at once (broadcast). */
template <int HD>
__global__ void __launch_bounds__(BWD_BK)
    flash_backward_kv_kernel(float *dk, float *dv, const __nv_bfloat16 *dout, const float *q,
                             const float *k, const float *v, const float *lse, const float *dsum,
                             const float *alibi, const float *t5, int T, int nh, int nkv, int hd,
                             float scale) {
    GPU_DYNAMIC_SHARED(float, sh);
    float *Kt = sh, *Vt = Kt + BWD_BK * (HD + 1), *Qs = Vt + BWD_BK * (HD + 1);
    float *dOs = Qs + BWD_BQ * HD, *ls = dOs + BWD_BQ * HD, *Ds = ls + BWD_BQ;
    const int bg = blockIdx.y, b = bg / nkv, g = bg % nkv, group = nh / nkv;
    const int jb = blockIdx.x * BWD_BK, j = jb + threadIdx.x, tid = threadIdx.x;
    const float *kh = k + (size_t)bg * T * hd, *vh = v + (size_t)bg * T * hd;
    for (int e = tid; e < BWD_BK * HD; e += BWD_BK) {
        const int jj = e / HD, d = e % HD, ok = jb + jj < T && d < hd;
        Kt[jj * (HD + 1) + d] = ok ? kh[(size_t)(jb + jj) * hd + d] : 0.0f;
        Vt[jj * (HD + 1) + d] = ok ? vh[(size_t)(jb + jj) * hd + d] : 0.0f;
    }
    float dkr[HD], dvr[HD];
#pragma unroll
    for (int d = 0; d < HD; d++) dkr[d] = dvr[d] = 0.0f;
    const float *kr = Kt + tid * (HD + 1), *vr = Vt + tid * (HD + 1);
    for (int hh = 0; hh < group; hh++) {
        const int h = g * group + hh;
        const size_t bh = (size_t)b * nh + h;
        const float slope = alibi ? alibi[h] : 0.0f, *tb = t5 ? t5 + (size_t)h * T : NULL;
        for (int i0 = jb; i0 < T; i0 += BWD_BQ) {
            __syncthreads();
            for (int e = tid; e < BWD_BQ * HD; e += BWD_BK) {
                const int r = e / HD, d = e % HD, i = i0 + r, ok = i < T && d < hd;
                Qs[e] = ok ? q[(bh * T + i) * hd + d] : 0.0f;
                dOs[e] = ok ? get(&dout[(((size_t)b * T + i) * nh + h) * hd + d]) : 0.0f;
            }
            if (tid < BWD_BQ) {
                const int i = i0 + tid;
                ls[tid] = i < T ? lse[bh * T + i] : 0.0f;
                Ds[tid] = i < T ? dsum[bh * T + i] : 0.0f;
            }
            __syncthreads();
            if (j >= T) continue;
            for (int r = 0; r < BWD_BQ && i0 + r < T; r++) {
                const int i = i0 + r;
                if (i < j) continue;
                const float *qs = Qs + r * HD, *dos = dOs + r * HD;
                float sc = 0.0f, dp = 0.0f;
#pragma unroll
                for (int d = 0; d < HD; d++) {
                    sc += qs[d] * kr[d];
                    dp += dos[d] * vr[d];
                }
                const float p = expf(sc * scale + score_bias(slope, tb, i - j) - ls[r]);
                const float ds = p * (dp - Ds[r]);
#pragma unroll
                for (int d = 0; d < HD; d++) {
                    dvr[d] += p * dos[d];
                    dkr[d] += ds * qs[d];
                }
            }
        }
    }
    if (j >= T) return;
#pragma unroll
    for (int d = 0; d < HD; d++)
        if (d < hd) {
            dk[((size_t)bg * T + j) * hd + d] = dkr[d] * scale;
            dv[((size_t)bg * T + j) * hd + d] = dvr[d];
        }
}

template <int HD>
static void forward_hd(__nv_bfloat16 *out, float *lse, const float *q, const float *k,
                       const float *v, const float *alibi, const float *t5, int B, int T, int nh,
                       int nkv, int hd) {
    dim3 grid(cdiv(T, FWD_BR), B * nh);
    GPU_LAUNCH(flash_forward_kernel<HD>, grid, FWD_BR, 0)(out, lse, q, k, v, alibi, t5, T, nh, nkv,
                                                          hd, 1.0f / sqrtf((float)hd));
}

template <int HD>
static void backward_hd(float *dq, float *dk, float *dv, float *dt5, const float *dsum,
                        const __nv_bfloat16 *dout, const float *q, const float *k, const float *v,
                        const float *lse, const float *alibi, const float *t5, int B, int T,
                        int nh, int nkv, int hd) {
    const float scale = 1.0f / sqrtf((float)hd);
    GPU_LAUNCH(flash_backward_q_kernel<HD>, dim3(cdiv(T, BWD_BR), B * nh), BWD_BR, 0)(
        dq, dt5, dout, q, k, v, lse, dsum, alibi, t5, T, nh, nkv, hd, scale);
    const size_t shmem = (2 * BWD_BK * (HD + 1) + 2 * BWD_BQ * HD + 2 * BWD_BQ) * sizeof(float);
    if (shmem > 48 * 1024)
        cudaFuncSetAttribute(flash_backward_kv_kernel<HD>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shmem);
    GPU_LAUNCH(flash_backward_kv_kernel<HD>, dim3(cdiv(T, BWD_BK), B * nkv), BWD_BK, shmem)(
        dk, dv, dout, q, k, v, lse, dsum, alibi, t5, T, nh, nkv, hd, scale);
}

/* The tensor-core kernels in use: -1 until the first call reads
 * ROTARY_CUDA_ATTN, or gpu_attention_use sets it. */
static int attn_kernel = -1;

extern "C" void gpu_attention_use(int kernel) { attn_kernel = kernel; }

static int kernel_set(void) {
    if (attn_kernel < 0) {
        const char *e = getenv("ROTARY_CUDA_ATTN");
        attn_kernel = !e || !*e || !strcmp(e, "wmma") ? GPU_ATTN_WMMA
                      : !strcmp(e, "mma")              ? GPU_ATTN_MMA
                      : !strcmp(e, "mma-atomic")       ? GPU_ATTN_MMA_ATOMIC
                                                       : -1;
        if (attn_kernel < 0) {
            fprintf(stderr, "rotary: ROTARY_CUDA_ATTN=%s: not wmma, mma or mma-atomic; using wmma\n",
                    e);
            attn_kernel = GPU_ATTN_WMMA;
        }
    }
    return attn_kernel;
}

static int use_mma(void) { return kernel_set() != GPU_ATTN_WMMA; }

extern "C" void gpu_attention_forward(gpu_bf16 *out, float *lse, const void *q, const void *k,
                                      const void *v, const float *alibi, const float *t5, int B,
                                      int T, int nh, int nkv, int hd) {
    const gpu_bf16 *q16 = (const gpu_bf16 *)q, *k16 = (const gpu_bf16 *)k;
    const gpu_bf16 *v16 = (const gpu_bf16 *)v;
    const float *qf = (const float *)q, *kf = (const float *)k, *vf = (const float *)v;
    __nv_bfloat16 *o16 = (__nv_bfloat16 *)out;
    const int tc = GPU_ATTN_TC(hd);
    if (tc && !t5 && use_mma())
        gpu_flash_forward_mma(out, lse, q16, k16, v16, alibi, B, T, nh, nkv, hd);
    else if (tc) gpu_flash_forward_tc(out, lse, q16, k16, v16, alibi, t5, B, T, nh, nkv, hd);
    else if (hd <= 32) forward_hd<32>(o16, lse, qf, kf, vf, alibi, t5, B, T, nh, nkv, hd);
    else if (hd <= 64) forward_hd<64>(o16, lse, qf, kf, vf, alibi, t5, B, T, nh, nkv, hd);
    else forward_hd<128>(o16, lse, qf, kf, vf, alibi, t5, B, T, nh, nkv, hd);
}

/* the mma.sync kernels take no T5 table */
static int mma_backward(int hd, int t5) { return GPU_ATTN_MMA_BWD(hd) && !t5 && use_mma(); }

extern "C" int gpu_attention_grads_bf16(int hd, int t5) {
    return GPU_ATTN_TC(hd) && !(mma_backward(hd, t5) && kernel_set() == GPU_ATTN_MMA_ATOMIC);
}

extern "C" void gpu_attention_backward(void *dq, void *dk, void *dv, float *dsum,
                                       const gpu_bf16 *dout, const gpu_bf16 *out,
                                       const void *q, const void *k, const void *v,
                                       const float *lse, const float *alibi, const float *t5,
                                       float *dt5, int B, int T, int nh, int nkv, int hd) {
    const size_t rows = (size_t)B * nh * T;
    const int tc = GPU_ATTN_TC(hd);
    if (dt5) cudaMemsetAsync(dt5, 0, rows * sizeof(float), cudaStreamPerThread);
    const __nv_bfloat16 *d16 = (const __nv_bfloat16 *)dout;
    GPU_LAUNCH(dsum_kernel, cdiv(rows, 8), 256, 0)(dsum, d16, (const __nv_bfloat16 *)out, B, T, nh,
                                                   hd);
    const gpu_bf16 *q16 = (const gpu_bf16 *)q, *k16 = (const gpu_bf16 *)k;
    const gpu_bf16 *v16 = (const gpu_bf16 *)v;
    const float *qf = (const float *)q, *kf = (const float *)k, *vf = (const float *)v;
    float *dqf = (float *)dq, *dkf = (float *)dk, *dvf = (float *)dv;
    if (tc && mma_backward(hd, t5 != NULL))
        gpu_flash_backward_mma(dq, dk, dv, dsum, dout, q16, k16, v16, lse, alibi, B, T, nh, nkv,
                               hd, kernel_set() == GPU_ATTN_MMA_ATOMIC);
    else if (tc)
        gpu_flash_backward_tc((gpu_bf16 *)dq, (gpu_bf16 *)dk, (gpu_bf16 *)dv, dsum, dout, q16, k16,
                              v16, lse, alibi, t5, dt5, B, T, nh, nkv, hd);
    else if (hd <= 32)
        backward_hd<32>(dqf, dkf, dvf, dt5, dsum, d16, qf, kf, vf, lse, alibi, t5, B, T, nh, nkv,
                        hd);
    else if (hd <= 64)
        backward_hd<64>(dqf, dkf, dvf, dt5, dsum, d16, qf, kf, vf, lse, alibi, t5, B, T, nh, nkv,
                        hd);
    else
        backward_hd<128>(dqf, dkf, dvf, dt5, dsum, d16, qf, kf, vf, lse, alibi, t5, B, T, nh, nkv,
                         hd);
}

/* ------------------------------------------------------------ T5's table */

__global__ void t5_table_kernel(float *tab, const float *rel, const int *bucket, int nh, int T) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)nh * T) return;
    const int h = (int)(idx / T), n = (int)(idx % T);
    tab[idx] = rel[(size_t)bucket[n] * nh + h];
}

extern "C" void gpu_t5_table(float *tab, const float *rel, const int *bucket, int nh, int T) {
    GPU_LAUNCH(t5_table_kernel, cdiv((size_t)nh * T, 256), 256, 0)(tab, rel, bucket, nh, T);
}

/* One thread per (bucket, head): the distances of its bucket in order, each
 * summed over the batch. */
__global__ void t5_table_backward_kernel(float *drel, const float *dtab, const int *bucket, int B,
                                         int nh, int T, int n_buckets) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n_buckets * nh) return;
    const int bk = idx / nh, h = idx % nh;
    float acc = 0.0f;
    for (int n = 0; n < T; n++) {
        if (bucket[n] != bk) continue;
        for (int b = 0; b < B; b++) acc += dtab[((size_t)b * nh + h) * T + n];
    }
    drel[idx] += acc;
}

extern "C" void gpu_t5_table_backward(float *drel, const float *dtab, const int *bucket, int B,
                                      int nh, int T, int n_buckets) {
    GPU_LAUNCH(t5_table_backward_kernel, cdiv(n_buckets * nh, 128), 128, 0)(drel, dtab, bucket, B,
                                                                           nh, T, n_buckets);
}

/* ------------------------------------------------------ linear attention */

/* S rows padded to hd+1 floats: thread c walks a column, thread a a row,
 * both without bank conflicts. */
#define LIN_THREADS 128

/* Token n's key into kv head g's state, as every thread of the block calls
 * it: rk, fk, v staged in shared rows, then S += rk v^T (thread c a column)
 * and z += fk. */
__device__ __forceinline__ void lin_add_key(float *Sm, float *z, float *rk, float *fk, float *v,
                                            const float *feat, const float *rfeat,
                                            const float *qkv, size_t n, int g, int nh, int nkv,
                                            int hd) {
    const int ld = hd + 1, S3 = (nh + 2 * nkv) * hd, Fs = (nh + nkv) * hd, c = threadIdx.x;
    __syncthreads();
    if (c < hd) {
        rk[c] = rfeat[n * Fs + (nh + g) * hd + c];
        fk[c] = feat[n * Fs + (nh + g) * hd + c];
        v[c] = qkv[n * S3 + (nh + nkv + g) * hd + c];
    }
    __syncthreads();
    if (c < hd) {
        for (int a = 0; a < hd; a++) Sm[a * ld + c] += rk[a] * v[c];
        z[c] += fk[c];
    }
}

/* Query head h of token n in the backward: dO and O staged (dOs, os), dn =
 * dO / den, and, with rq, its features (rq, fq); returns -dO.O / den, the
 * gradient of the denominator (threads c < hd; every thread calls it). */
__device__ __forceinline__ float lin_load_dout(float *dOs, float *os, float *dn, float *rq,
                                               float *fq, const float *dout, const float *out,
                                               const float *feat, const float *rfeat, float den,
                                               size_t n, int h, int nh, int nkv, int hd) {
    const int Fs = (nh + nkv) * hd, c = threadIdx.x;
    __syncthreads();
    if (c < hd) {
        dOs[c] = dout[n * nh * hd + h * hd + c];
        os[c] = out[n * nh * hd + h * hd + c];
        dn[c] = dOs[c] / den;
        if (rq) {
            rq[c] = rfeat[n * Fs + h * hd + c];
            fq[c] = feat[n * Fs + h * hd + c];
        }
    }
    __syncthreads();
    float dot = 0.0f;
    if (c < hd)
        for (int a = 0; a < hd; a++) dot += dOs[a] * os[a];
    return -dot / den;
}

__global__ void __launch_bounds__(LIN_THREADS)
    linear_forward_kernel(float *out, float *den, const float *feat, const float *rfeat,
                          const float *qkv, int T, int nh, int nkv, int hd) {
    GPU_DYNAMIC_SHARED(float, sh);
    const int ld = hd + 1, b = blockIdx.x / nkv, g = blockIdx.x % nkv, group = nh / nkv;
    const int Fs = (nh + nkv) * hd, c = threadIdx.x, on = c < hd;
    float *Sm = sh, *z = Sm + (size_t)hd * ld, *rk = z + hd, *fk = rk + hd, *v = fk + hd;
    float *rq = v + hd, *fq = rq + hd;
    for (int i = c; i < hd * ld + hd; i += blockDim.x) Sm[i] = 0.0f; /* S and z */
    for (int t = 0; t < T; t++) {
        const size_t n = (size_t)b * T + t;
        lin_add_key(Sm, z, rk, fk, v, feat, rfeat, qkv, n, g, nh, nkv, hd);
        for (int h = g * group; h < (g + 1) * group; h++) {
            __syncthreads();
            if (on) {
                rq[c] = rfeat[n * Fs + h * hd + c];
                fq[c] = feat[n * Fs + h * hd + c];
            }
            __syncthreads();
            if (!on) continue;
            float num = 0.0f, d = 0.0f;
            for (int a = 0; a < hd; a++) {
                num += rq[a] * Sm[a * ld + c];
                d += fq[a] * z[a];
            }
            out[n * nh * hd + h * hd + c] = num / d;
            if (c == 0) den[n * nh + h] = d;
        }
    }
}

/* Query side forward in time (S, z recomputed): drq = S dnum, dfq = dden z;
 * key side backward in time: U = sum_{i>=t} rq_i dnum_i^T, w = sum dden_i fq_i,
 * drk = U v, dv = U^T rk, dfk = w (attention.c explains). */
__global__ void __launch_bounds__(LIN_THREADS)
    linear_backward_kernel(float *dfeat, float *drfeat, float *dqkv, const float *dout,
                           const float *feat, const float *rfeat, const float *qkv,
                           const float *out, const float *den, int T, int nh, int nkv, int hd) {
    GPU_DYNAMIC_SHARED(float, sh);
    const int ld = hd + 1, b = blockIdx.x / nkv, g = blockIdx.x % nkv, group = nh / nkv;
    const int S3 = (nh + 2 * nkv) * hd, Fs = (nh + nkv) * hd, c = threadIdx.x, on = c < hd;
    float *M = sh, *z = M + (size_t)hd * ld, *rk = z + hd, *fk = rk + hd, *v = fk + hd;
    float *dn = v + hd, *rq = dn + hd, *fq = rq + hd, *dOs = fq + hd, *os = dOs + hd;
    for (int i = c; i < hd * ld + hd; i += blockDim.x) M[i] = 0.0f;
    for (int t = 0; t < T; t++) {
        const size_t n = (size_t)b * T + t;
        lin_add_key(M, z, rk, fk, v, feat, rfeat, qkv, n, g, nh, nkv, hd);
        for (int h = g * group; h < (g + 1) * group; h++) {
            const float dd = lin_load_dout(dOs, os, dn, NULL, NULL, dout, out, feat, rfeat,
                                           den[n * nh + h], n, h, nh, nkv, hd);
            if (!on) continue;
            float s = 0.0f;
            for (int cc = 0; cc < hd; cc++) s += M[c * ld + cc] * dn[cc]; /* row c of S */
            drfeat[n * Fs + h * hd + c] = s;
            dfeat[n * Fs + h * hd + c] = dd * z[c];
        }
    }
    __syncthreads();
    for (int i = c; i < hd * ld + hd; i += blockDim.x) M[i] = 0.0f; /* now U and w */
    for (int t = T - 1; t >= 0; t--) {
        const size_t n = (size_t)b * T + t;
        for (int h = g * group; h < (g + 1) * group; h++) {
            const float dd = lin_load_dout(dOs, os, dn, rq, fq, dout, out, feat, rfeat,
                                           den[n * nh + h], n, h, nh, nkv, hd);
            if (!on) continue;
            for (int a = 0; a < hd; a++) M[a * ld + c] += rq[a] * dn[c];
            z[c] += dd * fq[c];
        }
        __syncthreads();
        if (on) {
            rk[c] = rfeat[n * Fs + (nh + g) * hd + c];
            v[c] = qkv[n * S3 + (nh + nkv + g) * hd + c];
        }
        __syncthreads();
        if (!on) continue;
        float drk = 0.0f, dv = 0.0f;
        for (int cc = 0; cc < hd; cc++) drk += M[c * ld + cc] * v[cc]; /* row c of U */
        for (int a = 0; a < hd; a++) dv += M[a * ld + c] * rk[a];      /* column c */
        drfeat[n * Fs + (nh + g) * hd + c] = drk;
        dfeat[n * Fs + (nh + g) * hd + c] = z[c];
        dqkv[n * S3 + (nh + nkv + g) * hd + c] = dv;
    }
}

static size_t linear_shmem(int hd) { return ((size_t)hd * (hd + 1) + 10 * (size_t)hd) * sizeof(float); }

extern "C" void gpu_linear_attention_forward(float *out, float *den, const float *feat,
                                             const float *rfeat, const float *qkv, int B, int T,
                                             int nh, int nkv, int hd) {
    const size_t shmem = linear_shmem(hd);
    if (shmem > 48 * 1024)
        cudaFuncSetAttribute(linear_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)shmem);
    GPU_LAUNCH(linear_forward_kernel, B * nkv, LIN_THREADS, shmem)(out, den, feat, rfeat, qkv, T,
                                                                   nh, nkv, hd);
}

extern "C" void gpu_linear_attention_backward(float *dfeat, float *drfeat, float *dqkv,
                                              const float *dout, const float *feat,
                                              const float *rfeat, const float *qkv,
                                              const float *out, const float *den, int B, int T,
                                              int nh, int nkv, int hd) {
    const size_t shmem = linear_shmem(hd);
    if (shmem > 48 * 1024)
        cudaFuncSetAttribute(linear_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)shmem);
    GPU_LAUNCH(linear_backward_kernel, B * nkv, LIN_THREADS, shmem)(
        dfeat, drfeat, dqkv, dout, feat, rfeat, qkv, out, den, T, nh, nkv, hd);
}

__global__ void elu1_kernel(float *out, const float *inp, const float *dout, int N, int C,
                            int ldi, int backward) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * C) return;
    const size_t n = i / C, k = i % C;
    const float x = inp[n * ldi + k];
    if (!backward) out[i] = elu1(x);
    else out[n * ldi + k] = x > 0 ? dout[i] : dout[i] * expf(x);
}

extern "C" void gpu_elu1_forward(float *out, const float *inp, int N, int C, int ldi) {
    GPU_LAUNCH(elu1_kernel, cdiv((size_t)N * C, 256), 256, 0)(out, inp, NULL, N, C, ldi, 0);
}

extern "C" void gpu_elu1_backward(float *dinp, const float *dout, const float *inp, int N, int C,
                                  int ldi) {
    GPU_LAUNCH(elu1_kernel, cdiv((size_t)N * C, 256), 256, 0)(dinp, inp, dout, N, C, ldi, 1);
}

__global__ void rope_rows_kernel(float *x, const float *cs, const float *sn, int BT, int T,
                                 int heads, int hd, int rd, int half_pairs, int ld, float sg) {
    const int r2 = rd / 2;
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)BT * heads * r2) return;
    const int i = (int)(idx % r2), h = (int)(idx / r2 % heads);
    const size_t n = idx / r2 / heads;
    const int t = (int)(n % T);
    float *xh = x + n * ld + (size_t)h * hd;
    int e0, e1;
    rope_pair(i, rd, half_pairs, &e0, &e1);
    const float c = cs[(size_t)t * r2 + i], s = sg * sn[(size_t)t * r2 + i];
    const float a = xh[e0], b = xh[e1];
    xh[e0] = a * c - b * s;
    xh[e1] = a * s + b * c;
}

extern "C" void gpu_rope_rows(float *x, const float *cos, const float *sin, int B, int T,
                              int heads, int hd, int rd, int pairing, int ld, float sign) {
    const size_t n = (size_t)B * T * heads * (rd / 2);
    GPU_LAUNCH(rope_rows_kernel, cdiv(n, 256), 256, 0)(x, cos, sin, B * T, T, heads, hd, rd,
                                                       pairing == 1, ld, sign);
}

__global__ void add_kernel(float *y, const float *x, size_t n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += x[i];
}

extern "C" void gpu_add(float *y, const float *x, size_t n) {
    GPU_LAUNCH(add_kernel, cdiv(n, 256), 256, 0)(y, x, n);
}
