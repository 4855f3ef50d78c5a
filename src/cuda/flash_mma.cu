/* flash_mma.cu: causal attention forward and backward on the tensor cores
 * with mma.sync (PTX m16n8k16, bf16 inputs, fp32 accumulators), the layout
 * of FlashAttention-2 (Dao 2023): the scores, the probabilities and the
 * output rows stay in registers for the whole pass, so unlike flash_fwd.cu
 * (WMMA, whose fragments are opaque) nothing goes through shared memory but
 * the K and V tiles. Same arguments, results and precision as
 * gpu_flash_forward_tc and gpu_flash_backward_tc; chosen by
 * gpu_attention_use(GPU_ATTN_MMA). The backward is further down.
 *
 * Forward: a block of 4 warps owns 64 query rows of one head, 16 rows a warp, and
 * streams 64-key tiles: K as rows (HD + 8 bf16 apart) and V transposed
 * (64 + 8 bf16 apart), which makes every operand of both products one
 * 32-bit shared load per register, without bank conflicts.
 *
 * The m16n8k16 fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16"),
 * lane = 4 g + t: A (16 x 16, row-major) holds rows g and g + 8 at columns
 * 2t, 2t+1 and 2t+8, 2t+9, in the register order (g, 2t) (g+8, 2t)
 * (g, 2t+8) (g+8, 2t+8); B (16 x 8) holds column g at rows 2t, 2t+1 and
 * 2t+8, 2t+9; C (16 x 8, fp32) holds rows g and g + 8 at columns 2t, 2t+1.
 * The C fragments of two adjacent 8-key tiles of S are exactly the A
 * fragment of P for the 16 keys they cover, which is why P never leaves the
 * registers. The softmax runs in base 2 (scores times log2 e). */
#include "common.cuh"

#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

namespace {

enum { ROWS = 64, KEYS = 64, WARPS = 4, THREADS = 32 * WARPS };
constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;

template <int HD> struct mma_smem {
    static constexpr int LDK = HD + 8;   /* K and Q rows, bf16 */
    static constexpr int LDV = KEYS + 8; /* V^T rows, bf16 */
    static constexpr size_t q_off = 0;
    static constexpr size_t k_off = q_off + (size_t)ROWS * LDK * sizeof(bf16);
    static constexpr size_t v_off = k_off + (size_t)KEYS * LDK * sizeof(bf16);
    static constexpr size_t bytes = v_off + (size_t)HD * LDV * sizeof(bf16);
};

__device__ __forceinline__ uint32_t ld32(const bf16 *p) {
    return *reinterpret_cast<const uint32_t *>(p);
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x = lo: the lower address */
    return *reinterpret_cast<uint32_t *>(&v);
}

/* c += a b for one m16n8k16 tile. */
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0,
                                         uint32_t b1) {
#ifdef ROTARY_CUDA_EMU /* the CPU emulation (tests/cuda/emu) */
    emu_mma16816(c, a, b0, b1);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* R rows of hd floats at src (rows `stride` floats apart; rows at or past
 * `valid` and columns past hd read as zero) -> bf16, row-major (ld) or
 * transposed (dst[d * ld + r]). */
template <int HD, int R, bool TRANSPOSE>
__device__ void load_tile(bf16 *dst, int ld, const float *src, size_t stride, int valid, int hd) {
    for (int e = threadIdx.x; e < R * HD; e += THREADS) {
        const int r = e / HD, d = e % HD;
        const float x = r < valid && d < hd ? src[(size_t)r * stride + d] : 0.0f;
        dst[TRANSPOSE ? d * ld + r : r * ld + d] = __float2bfloat16(x);
    }
}

/* a = the A fragment of rows r0.. (16) and columns c0.. (16) of a
 * row-major bf16 array (ld); mma_bt: c += a B, B (k = 16, n = 8) the
 * transpose of rows n0.. (8), columns c0.. (16) of a row-major array. */
__device__ __forceinline__ void frag_a(uint32_t a[4], const bf16 *m, int ld, int r0, int c0) {
    const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    const bf16 *p = m + (r0 + g) * ld + c0 + 2 * t;
    a[0] = ld32(p), a[1] = ld32(p + 8 * ld), a[2] = ld32(p + 8), a[3] = ld32(p + 8 * ld + 8);
}

__device__ __forceinline__ void mma_bt(float c[4], const uint32_t a[4], const bf16 *m, int ld,
                                       int n0, int c0) {
    const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    const bf16 *p = m + (n0 + g) * ld + c0 + 2 * t;
    mma16816(c, a, ld32(p), ld32(p + 8));
}

/* The A fragment, 16 columns kk*16.., of a 16-row fp32 product held as
 * C fragments of 8-column tiles (x[2kk], x[2kk+1]), rounded to bf16. */
__device__ __forceinline__ void c_to_a(uint32_t a[4], const float (*x)[4], int kk) {
    a[0] = pack_bf16(x[2 * kk][0], x[2 * kk][1]);
    a[1] = pack_bf16(x[2 * kk][2], x[2 * kk][3]);
    a[2] = pack_bf16(x[2 * kk + 1][0], x[2 * kk + 1][1]);
    a[3] = pack_bf16(x[2 * kk + 1][2], x[2 * kk + 1][3]);
}

/* s (16 x 64, 8 tiles of 8 columns) = A B^T: A the warp's 16 rows as
 * fragments (a[kk]: columns 16kk..), B 64 rows of a row-major bf16 tile. */
template <int HD>
__device__ __forceinline__ void scores(float (&s)[KEYS / 8][4], const uint32_t (&a)[HD / 16][4],
                                       const bf16 *m, int ld) {
#pragma unroll
    for (int nt = 0; nt < KEYS / 8; nt++) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) mma_bt(s[nt], a[kk], m, ld, nt * 8, kk * 16);
    }
}

template <int HD>
__global__ void __launch_bounds__(THREADS)
    flash_fwd_mma_kernel(float *out, float *lse, const float *q, const float *k, const float *v,
                         const float *alibi, int T, int nh, int nkv, int hd, float scale2) {
    typedef mma_smem<HD> L;
    GPU_DYNAMIC_SHARED(unsigned char, smem);
    bf16 *Qs = (bf16 *)(smem + L::q_off), *Ks = (bf16 *)(smem + L::k_off);
    bf16 *Vt = (bf16 *)(smem + L::v_off);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;

    const int bh = blockIdx.y, b = bh / nh, h = bh % nh, kvh = h / (nh / nkv);
    const int q0 = blockIdx.x * ROWS, w0 = q0 + warp * 16;
    const float *kh = k + ((size_t)b * nkv + kvh) * T * hd;
    const float *vh = v + ((size_t)b * nkv + kvh) * T * hd;
    const float slope2 = alibi ? alibi[h] * LOG2E : 0.0f;
    load_tile<HD, ROWS, false>(Qs, L::LDK, q + ((size_t)bh * T + q0) * hd, hd, T - q0, hd);
    __syncthreads();

    /* The warp's 16 rows of Q as A fragments, one per 16 columns. */
    uint32_t qa[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) frag_a(qa[kk], Qs, L::LDK, warp * 16, kk * 16);

    /* This lane's rows: row[0] = w0 + g, row[1] = w0 + g + 8; their running max
     * (base 2) and sum, and their output columns nd * 8 + 2t, +1. */
    const int row[2] = {w0 + g, w0 + g + 8};
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float o[HD / 8][4];
#pragma unroll
    for (int nd = 0; nd < HD / 8; nd++) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;

    const int last = min(T - 1, q0 + ROWS - 1);
    for (int j0 = 0; j0 <= last; j0 += KEYS) {
        __syncthreads(); /* the previous tile is no longer read */
        load_tile<HD, KEYS, false>(Ks, L::LDK, kh + (size_t)j0 * hd, hd, T - j0, hd);
        load_tile<HD, KEYS, true>(Vt, L::LDV, vh + (size_t)j0 * hd, hd, T - j0, hd);
        __syncthreads();
        if (w0 + 15 < j0) continue; /* every row of the warp is before the tile */

        /* S (16 x 64) = Q_w K^T: 8 tiles of 8 keys. */
        float s[KEYS / 8][4];
        scores<HD>(s, qa, Ks, L::LDK);

        /* Mask, scale, ALiBi (base 2), and the online softmax of both rows;
         * the 4 lanes of a row (same g) combine by shuffles. Row w0 + g has
         * key 0 in the first tile, so m is finite from then on. */
        float corr[2];
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            float mt = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < KEYS / 8; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int j = j0 + nt * 8 + 2 * t + e;
                    float x = -INFINITY;
                    if (j <= row[hr] && j < T)
                        x = s[nt][2 * hr + e] * scale2 - slope2 * (float)(row[hr] - j);
                    s[nt][2 * hr + e] = x;
                    mt = fmaxf(mt, x);
                }
            mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
            mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
            const float mn = fmaxf(m[hr], mt);
            corr[hr] = exp2f(m[hr] - mn);
            float sum = 0.0f;
#pragma unroll
            for (int nt = 0; nt < KEYS / 8; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float p = exp2f(s[nt][2 * hr + e] - mn); /* 0 where masked */
                    s[nt][2 * hr + e] = p;
                    sum += p;
                }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            l[hr] = l[hr] * corr[hr] + sum;
            m[hr] = mn;
        }
#pragma unroll
        for (int nd = 0; nd < HD / 8; nd++) {
            o[nd][0] *= corr[0], o[nd][1] *= corr[0];
            o[nd][2] *= corr[1], o[nd][3] *= corr[1];
        }

        /* O (16 x HD) += P V: P's A fragments straight from s, 16 keys at
         * a time; V's B fragments from V^T. */
#pragma unroll
        for (int kk = 0; kk < KEYS / 16; kk++) {
            uint32_t pa[4];
            c_to_a(pa, s, kk);
#pragma unroll
            for (int nd = 0; nd < HD / 8; nd++) mma_bt(o[nd], pa, Vt, L::LDV, nd * 8, kk * 16);
        }
    }

#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        const int i = row[hr];
        if (i >= T) continue;
        const float inv = 1.0f / l[hr];
        float *orow = out + (((size_t)b * T + i) * nh + h) * hd;
#pragma unroll
        for (int nd = 0; nd < HD / 8; nd++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int col = nd * 8 + 2 * t + e;
                if (col < hd) orow[col] = o[nd][2 * hr + e] * inv;
            }
        /* natural log-sum-exp of the scaled scores, as the other kernels */
        if (t == 0) lse[(size_t)bh * T + i] = (m[hr] + log2f(l[hr])) * LN2;
    }
}

template <int HD>
void forward(float *out, float *lse, const float *q, const float *k, const float *v,
             const float *alibi, int B, int T, int nh, int nkv, int hd) {
    const size_t bytes = mma_smem<HD>::bytes;
    if (bytes > 48 * 1024)
        cudaFuncSetAttribute(flash_fwd_mma_kernel<HD>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    GPU_LAUNCH(flash_fwd_mma_kernel<HD>, dim3(cdiv(T, ROWS), B * nh), THREADS, bytes)(
        out, lse, q, k, v, alibi, T, nh, nkv, hd, LOG2E / sqrtf((float)hd));
}

/* ---------------------------------------------------------------- backward */

/* The backward as flash_bwd.cu's (two kernels, each recomputing P and dS
 * from lse so that every gradient element has one writer), with the
 * products of this file: the score-like tiles (S, dP and their transposes,
 * 16 x 64 a warp) stay in registers and become the A operand of the next
 * product directly. The B operands that are a tile's columns (dO, Q, K for
 * dV, dK, dQ) come from a transposed copy of the tile in shared memory.
 * Head sizes up to 64 (at 128 the kv kernel's four 16 x HD accumulators
 * and two score tiles would not fit in registers). */
template <int HD> struct bwd_smem {
    static constexpr int LDK = HD + 8, LDT = ROWS + 8;
    static constexpr size_t row_tile = (size_t)ROWS * LDK * sizeof(bf16);
    static constexpr size_t t_tile = (size_t)HD * LDT * sizeof(bf16);
    /* four row-major tiles, two transposed ones, lse and dsum of 64 rows */
    static constexpr size_t bytes = 4 * row_tile + 2 * t_tile + 2 * ROWS * sizeof(float);
};

/* dk, dv: grid (ceil(T/64), B*nkv). The block's 64 keys (K, V row-major,
 * each warp 16 of them as A fragments) against every query tile at or
 * after them, of every query head of the group (Q, dO row-major for S^T and
 * dP^T, transposed for dK and dV). */
template <int HD>
__global__ void __launch_bounds__(THREADS)
    flash_bwd_kv_mma(float *dk, float *dv, const float *dout, const float *q, const float *k,
                     const float *v, const float *lse, const float *dsum, const float *alibi,
                     int T, int nh, int nkv, float scale2) {
    typedef bwd_smem<HD> L;
    GPU_DYNAMIC_SHARED(unsigned char, smem);
    bf16 *Ks = (bf16 *)smem, *Vs = Ks + ROWS * L::LDK, *Qs = Vs + ROWS * L::LDK;
    bf16 *dOs = Qs + ROWS * L::LDK, *Qt = dOs + ROWS * L::LDK, *dOt = Qt + HD * L::LDT;
    float *ls = (float *)(dOt + HD * L::LDT), *Ds = ls + ROWS;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int bg = blockIdx.y, b = bg / nkv, kvh = bg % nkv, group = nh / nkv;
    const int j0 = blockIdx.x * ROWS;
    const size_t kv0 = ((size_t)bg * T + j0) * HD;
    load_tile<HD, ROWS, false>(Ks, L::LDK, k + kv0, HD, T - j0, HD);
    load_tile<HD, ROWS, false>(Vs, L::LDK, v + kv0, HD, T - j0, HD);
    __syncthreads();
    uint32_t ka[HD / 16][4], va[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        frag_a(ka[kk], Ks, L::LDK, warp * 16, kk * 16);
        frag_a(va[kk], Vs, L::LDK, warp * 16, kk * 16);
    }
    float dK[HD / 8][4], dV[HD / 8][4];
#pragma unroll
    for (int nd = 0; nd < HD / 8; nd++)
#pragma unroll
        for (int e = 0; e < 4; e++) dK[nd][e] = dV[nd][e] = 0.0f;
    /* this lane's keys: j0 + 16 warp + g and + 8 */
    const int key[2] = {j0 + warp * 16 + g, j0 + warp * 16 + g + 8};

    for (int hh = 0; hh < group; hh++) {
        const int h = kvh * group + hh;
        const size_t bh = (size_t)b * nh + h;
        const float slope2 = alibi ? alibi[h] * LOG2E : 0.0f;
        for (int i0 = j0; i0 < T; i0 += ROWS) {
            __syncthreads(); /* the last tile's readers are done */
            const float *qsrc = q + (bh * T + i0) * HD;
            const float *dsrc = dout + (((size_t)b * T + i0) * nh + h) * HD;
            load_tile<HD, ROWS, false>(Qs, L::LDK, qsrc, HD, T - i0, HD);
            load_tile<HD, ROWS, true>(Qt, L::LDT, qsrc, HD, T - i0, HD);
            load_tile<HD, ROWS, false>(dOs, L::LDK, dsrc, (size_t)nh * HD, T - i0, HD);
            load_tile<HD, ROWS, true>(dOt, L::LDT, dsrc, (size_t)nh * HD, T - i0, HD);
            if (threadIdx.x < ROWS) {
                const int i = i0 + threadIdx.x;
                ls[threadIdx.x] = i < T ? lse[bh * T + i] * LOG2E : 0.0f;
                Ds[threadIdx.x] = i < T ? dsum[bh * T + i] : 0.0f;
            }
            __syncthreads();
            if (i0 + ROWS - 1 < j0 + warp * 16) continue; /* every query before the warp's keys */

            /* S^T and dP^T (16 keys x 64 queries), 8 tiles of 8 queries. */
            float sT[ROWS / 8][4], dpT[ROWS / 8][4];
            scores<HD>(sT, ka, Qs, L::LDK);
            scores<HD>(dpT, va, dOs, L::LDK);
            /* P^T into sT, dS^T into dpT (0 where masked) */
#pragma unroll
            for (int nt = 0; nt < ROWS / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int c = nt * 8 + 2 * t + (e & 1), i = i0 + c, j = key[e >> 1];
                    float p = 0.0f;
                    if (i < T && j <= i)
                        p = exp2f(sT[nt][e] * scale2 - slope2 * (float)(i - j) - ls[c]);
                    sT[nt][e] = p;
                    dpT[nt][e] = p * (dpT[nt][e] - Ds[c]);
                }
            /* dV += P^T dO, dK += dS^T Q (16 queries a step) */
#pragma unroll
            for (int kq = 0; kq < ROWS / 16; kq++) {
                uint32_t pa[4], dsa[4];
                c_to_a(pa, sT, kq);
                c_to_a(dsa, dpT, kq);
#pragma unroll
                for (int nd = 0; nd < HD / 8; nd++) {
                    mma_bt(dV[nd], pa, dOt, L::LDT, nd * 8, kq * 16);
                    mma_bt(dK[nd], dsa, Qt, L::LDT, nd * 8, kq * 16);
                }
            }
        }
    }
    /* dk = scale dS^T Q (scale2 / log2 e is the softmax scale), dv = P^T dO */
    const float scale = scale2 * LN2;
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        if (key[hr] >= T) continue;
        float *dkr = dk + ((size_t)bg * T + key[hr]) * HD, *dvr = dv + ((size_t)bg * T + key[hr]) * HD;
#pragma unroll
        for (int nd = 0; nd < HD / 8; nd++) {
            const int col = nd * 8 + 2 * t;
            *reinterpret_cast<float2 *>(dkr + col) =
                make_float2(dK[nd][2 * hr] * scale, dK[nd][2 * hr + 1] * scale);
            *reinterpret_cast<float2 *>(dvr + col) = make_float2(dV[nd][2 * hr], dV[nd][2 * hr + 1]);
        }
    }
}

/* dq: grid (ceil(T/64), B*nh). The block's 64 query rows (Q, dO as each
 * warp's A fragments) against every key tile up to the diagonal (K and V
 * row-major for S and dP, K transposed for dQ). */
template <int HD>
__global__ void __launch_bounds__(THREADS)
    flash_bwd_q_mma(float *dq, const float *dout, const float *q, const float *k, const float *v,
                    const float *lse, const float *dsum, const float *alibi, int T, int nh, int nkv,
                    float scale2) {
    typedef bwd_smem<HD> L;
    GPU_DYNAMIC_SHARED(unsigned char, smem);
    bf16 *Qs = (bf16 *)smem, *dOs = Qs + ROWS * L::LDK, *Ks = dOs + ROWS * L::LDK;
    bf16 *Vs = Ks + ROWS * L::LDK, *Kt = Vs + ROWS * L::LDK;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int bh = blockIdx.y, b = bh / nh, h = bh % nh, kvh = h / (nh / nkv);
    const int i0 = blockIdx.x * ROWS;
    const size_t q0 = ((size_t)bh * T + i0) * HD, kv = ((size_t)b * nkv + kvh) * T * HD;
    const float slope2 = alibi ? alibi[h] * LOG2E : 0.0f;
    load_tile<HD, ROWS, false>(Qs, L::LDK, q + q0, HD, T - i0, HD);
    load_tile<HD, ROWS, false>(dOs, L::LDK, dout + (((size_t)b * T + i0) * nh + h) * HD,
                               (size_t)nh * HD, T - i0, HD);
    __syncthreads();
    uint32_t qa[HD / 16][4], da[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        frag_a(qa[kk], Qs, L::LDK, warp * 16, kk * 16);
        frag_a(da[kk], dOs, L::LDK, warp * 16, kk * 16);
    }
    /* this lane's rows, their lse (base 2) and dsum */
    const int row[2] = {i0 + warp * 16 + g, i0 + warp * 16 + g + 8};
    float l2[2], D[2];
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        const bool in = row[hr] < T;
        l2[hr] = in ? lse[(size_t)bh * T + row[hr]] * LOG2E : 0.0f;
        D[hr] = in ? dsum[(size_t)bh * T + row[hr]] : 0.0f;
    }
    float dQ[HD / 8][4];
#pragma unroll
    for (int nd = 0; nd < HD / 8; nd++) dQ[nd][0] = dQ[nd][1] = dQ[nd][2] = dQ[nd][3] = 0.0f;

    for (int j0 = 0; j0 <= i0; j0 += ROWS) {
        __syncthreads(); /* the last tile's readers are done */
        load_tile<HD, ROWS, false>(Ks, L::LDK, k + kv + (size_t)j0 * HD, HD, T - j0, HD);
        load_tile<HD, ROWS, true>(Kt, L::LDT, k + kv + (size_t)j0 * HD, HD, T - j0, HD);
        load_tile<HD, ROWS, false>(Vs, L::LDK, v + kv + (size_t)j0 * HD, HD, T - j0, HD);
        __syncthreads();
        if (i0 + warp * 16 + 15 < j0) continue; /* every row of the warp is before the tile */

        float s[ROWS / 8][4], dp[ROWS / 8][4];
        scores<HD>(s, qa, Ks, L::LDK);
        scores<HD>(dp, da, Vs, L::LDK);
        /* dS into dp (0 where masked) */
#pragma unroll
        for (int nt = 0; nt < ROWS / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int hr = e >> 1, i = row[hr], j = j0 + nt * 8 + 2 * t + (e & 1);
                float ds = 0.0f;
                if (i < T && j <= i) {
                    const float p = exp2f(s[nt][e] * scale2 - slope2 * (float)(i - j) - l2[hr]);
                    ds = p * (dp[nt][e] - D[hr]);
                }
                dp[nt][e] = ds;
            }
        /* dQ += dS K (16 keys a step) */
#pragma unroll
        for (int kk = 0; kk < ROWS / 16; kk++) {
            uint32_t dsa[4];
            c_to_a(dsa, dp, kk);
#pragma unroll
            for (int nd = 0; nd < HD / 8; nd++) mma_bt(dQ[nd], dsa, Kt, L::LDT, nd * 8, kk * 16);
        }
    }
    const float scale = scale2 * LN2;
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        if (row[hr] >= T) continue;
        float *dqr = dq + ((size_t)bh * T + row[hr]) * HD;
#pragma unroll
        for (int nd = 0; nd < HD / 8; nd++)
            *reinterpret_cast<float2 *>(dqr + nd * 8 + 2 * t) =
                make_float2(dQ[nd][2 * hr] * scale, dQ[nd][2 * hr + 1] * scale);
    }
}

template <int HD>
void backward(float *dq, float *dk, float *dv, const float *dsum, const float *dout, const float *q,
              const float *k, const float *v, const float *lse, const float *alibi, int B, int T,
              int nh, int nkv) {
    const size_t bytes = bwd_smem<HD>::bytes;
    if (bytes > 48 * 1024) {
        cudaFuncSetAttribute(flash_bwd_q_mma<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)bytes);
        cudaFuncSetAttribute(flash_bwd_kv_mma<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)bytes);
    }
    const float scale2 = LOG2E / sqrtf((float)HD);
    GPU_LAUNCH(flash_bwd_q_mma<HD>, dim3(cdiv(T, ROWS), B * nh), THREADS, bytes)(
        dq, dout, q, k, v, lse, dsum, alibi, T, nh, nkv, scale2);
    GPU_LAUNCH(flash_bwd_kv_mma<HD>, dim3(cdiv(T, ROWS), B * nkv), THREADS, bytes)(
        dk, dv, dout, q, k, v, lse, dsum, alibi, T, nh, nkv, scale2);
}

} /* namespace */

extern "C" void gpu_flash_forward_mma(float *out, float *lse, const float *q, const float *k,
                                      const float *v, const float *alibi, int B, int T, int nh,
                                      int nkv, int hd) {
    BY_TILE_HD(forward, hd, out, lse, q, k, v, alibi, B, T, nh, nkv, hd);
}

extern "C" void gpu_flash_backward_mma(float *dq, float *dk, float *dv, const float *dsum,
                                       const float *dout, const float *q, const float *k,
                                       const float *v, const float *lse, const float *alibi, int B,
                                       int T, int nh, int nkv, int hd) {
    switch (hd) {
    case 16: backward<16>(dq, dk, dv, dsum, dout, q, k, v, lse, alibi, B, T, nh, nkv); break;
    case 32: backward<32>(dq, dk, dv, dsum, dout, q, k, v, lse, alibi, B, T, nh, nkv); break;
    case 48: backward<48>(dq, dk, dv, dsum, dout, q, k, v, lse, alibi, B, T, nh, nkv); break;
    case 64: backward<64>(dq, dk, dv, dsum, dout, q, k, v, lse, alibi, B, T, nh, nkv); break;
    default: break; /* not GPU_ATTN_MMA_BWD(hd): the caller uses gpu_flash_backward_tc */
    }
}
