/* flash_mma.cu: causal attention forward on the tensor cores with mma.sync
 * (PTX m16n8k16, bf16 inputs, fp32 accumulators), the layout of
 * FlashAttention-2 (Dao 2023): the scores, the probabilities and the output
 * rows stay in registers for the whole pass, so unlike flash_fwd.cu (WMMA,
 * whose fragments are opaque) nothing goes through shared memory but the
 * K and V tiles. Same arguments, results and precision as
 * gpu_flash_forward_tc; chosen by gpu_attention_use(GPU_ATTN_MMA).
 *
 * A block of 4 warps owns 64 query rows of one head, 16 rows a warp, and
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
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* rows x hd floats at src (rows hd apart; rows at or past `valid` and
 * columns past hd read as zero) -> bf16, row-major (ld) or transposed
 * (dst[d * ld + r]). */
template <int HD, bool TRANSPOSE>
__device__ void load_tile(bf16 *dst, int ld, const float *src, int valid, int hd) {
    for (int e = threadIdx.x; e < ROWS * HD; e += THREADS) {
        const int r = e / HD, d = e % HD;
        const float x = r < valid && d < hd ? src[(size_t)r * hd + d] : 0.0f;
        dst[TRANSPOSE ? d * ld + r : r * ld + d] = __float2bfloat16(x);
    }
}

template <int HD>
__global__ void __launch_bounds__(THREADS)
    flash_fwd_mma_kernel(float *out, float *lse, const float *q, const float *k, const float *v,
                         const float *alibi, int T, int nh, int nkv, int hd, float scale2) {
    typedef mma_smem<HD> L;
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *Qs = (bf16 *)(smem + L::q_off), *Ks = (bf16 *)(smem + L::k_off);
    bf16 *Vt = (bf16 *)(smem + L::v_off);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;

    const int bh = blockIdx.y, b = bh / nh, h = bh % nh, kvh = h / (nh / nkv);
    const int q0 = blockIdx.x * ROWS, w0 = q0 + warp * 16;
    const float *kh = k + ((size_t)b * nkv + kvh) * T * hd;
    const float *vh = v + ((size_t)b * nkv + kvh) * T * hd;
    const float slope2 = alibi ? alibi[h] * 1.4426950408889634f : 0.0f;
    load_tile<HD, false>(Qs, L::LDK, q + ((size_t)bh * T + q0) * hd, T - q0, hd);
    __syncthreads();

    /* The warp's 16 rows of Q as A fragments, one per 16 columns. */
    uint32_t qa[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        const bf16 *p = Qs + (warp * 16 + g) * L::LDK + kk * 16 + 2 * t;
        qa[kk][0] = ld32(p), qa[kk][1] = ld32(p + 8 * L::LDK);
        qa[kk][2] = ld32(p + 8), qa[kk][3] = ld32(p + 8 * L::LDK + 8);
    }

    /* This lane's rows: r[0] = w0 + g, r[1] = w0 + g + 8; their running max
     * (base 2) and sum, and their output columns nd * 8 + 2t, +1. */
    const int row[2] = {w0 + g, w0 + g + 8};
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float o[HD / 8][4];
#pragma unroll
    for (int nd = 0; nd < HD / 8; nd++) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;

    const int last = min(T - 1, q0 + ROWS - 1);
    for (int j0 = 0; j0 <= last; j0 += KEYS) {
        __syncthreads(); /* the previous tile is no longer read */
        load_tile<HD, false>(Ks, L::LDK, kh + (size_t)j0 * hd, T - j0, hd);
        load_tile<HD, true>(Vt, L::LDV, vh + (size_t)j0 * hd, T - j0, hd);
        __syncthreads();
        if (w0 + 15 < j0) continue; /* every row of the warp is before the tile */

        /* S (16 x 64) = Q_w K^T: 8 tiles of 8 keys. */
        float s[KEYS / 8][4];
#pragma unroll
        for (int nt = 0; nt < KEYS / 8; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
            const bf16 *p = Ks + (nt * 8 + g) * L::LDK + 2 * t;
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++)
                mma16816(s[nt], qa[kk], ld32(p + kk * 16), ld32(p + kk * 16 + 8));
        }

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
            const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]),
                                    pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                    pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int nd = 0; nd < HD / 8; nd++) {
                const bf16 *p = Vt + (nd * 8 + g) * L::LDV + kk * 16 + 2 * t;
                mma16816(o[nd], pa, ld32(p), ld32(p + 8));
            }
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
        if (t == 0) lse[(size_t)bh * T + i] = (m[hr] + log2f(l[hr])) * 0.6931471805599453f;
    }
}

template <int HD>
void forward(float *out, float *lse, const float *q, const float *k, const float *v,
             const float *alibi, int B, int T, int nh, int nkv, int hd) {
    const size_t bytes = mma_smem<HD>::bytes;
    if (bytes > 48 * 1024)
        cudaFuncSetAttribute(flash_fwd_mma_kernel<HD>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    flash_fwd_mma_kernel<HD><<<dim3(cdiv(T, ROWS), B * nh), THREADS, bytes>>>(
        out, lse, q, k, v, alibi, T, nh, nkv, hd, 1.4426950408889634f / sqrtf((float)hd));
}

} /* namespace */

extern "C" void gpu_flash_forward_mma(float *out, float *lse, const float *q, const float *k,
                                      const float *v, const float *alibi, int B, int T, int nh,
                                      int nkv, int hd) {
    if (hd <= 16) forward<16>(out, lse, q, k, v, alibi, B, T, nh, nkv, hd);
    else if (hd <= 32) forward<32>(out, lse, q, k, v, alibi, B, T, nh, nkv, hd);
    else if (hd <= 64) forward<64>(out, lse, q, k, v, alibi, B, T, nh, nkv, hd);
    else forward<128>(out, lse, q, k, v, alibi, B, T, nh, nkv, hd);
}
