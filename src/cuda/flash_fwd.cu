/* flash_fwd.cu: causal attention forward on the tensor cores, in the manner of
 * FlashAttention-2 (Dao 2023). A block of 4 warps owns 64 query rows of one
 * head, 16 rows a warp, and streams 64-key tiles of K and V (bf16, as the
 * split kernel writes them) through shared memory. Per tile each warp computes
 * its 16 x 64 scores with WMMA (bf16 inputs, fp32 accumulation), applies the
 * mask, scale, ALiBi or T5's bias and online softmax in fp32 (two lanes a
 * row), and adds P V (P rounded to bf16) to its output rows, which the lanes
 * keep in registers: WMMA fragments cannot be rescaled row by row, so P V goes
 * through shared memory once per tile. Only the log-sum-exp of each row is
 * saved for the backward (flash_bwd.cu). Head sizes are padded with zeros to
 * HD (16, 32, 64, 128), which leaves every dot product unchanged. */
#include "common.cuh"

#include <cuda_bf16.h>
#include <math.h>
#include <mma.h>

using namespace nvcuda;
typedef __nv_bfloat16 bf16;

namespace {

enum { ROWS = 64, KEYS = 64, WARPS = 4, THREADS = 32 * WARPS };

/* Shared memory layout, in elements; every fragment pointer is 32-byte
 * aligned because each row stride is a multiple of 16 bytes times 16 rows
 * and every region starts on a 128-byte boundary. */
template <int HD> struct fwd_smem {
    static constexpr int LDT = HD + 8;                          /* bf16 tiles */
    static constexpr int LDS = KEYS + 4;                        /* fp32 scores */
    static constexpr int LDO = HD + 4;                          /* fp32 P V */
    static constexpr int LDP = KEYS + 8;                        /* bf16 P */
    static constexpr int SCR = 16 * (LDS > LDO ? LDS : LDO);    /* floats a warp */
    static constexpr size_t tile = (size_t)ROWS * LDT * sizeof(bf16);
    static constexpr size_t q_off = 0, k_off = tile, v_off = 2 * tile;
    static constexpr size_t s_off = 3 * tile;
    static constexpr size_t p_off = s_off + (size_t)WARPS * SCR * sizeof(float);
    static constexpr size_t bytes = p_off + (size_t)WARPS * 16 * LDP * sizeof(bf16);
};

/* rows x hd bf16 starting at src (consecutive rows, hd apart; rows at or
 * past `valid` and columns past hd read as zero) -> rows of HD, ld LDT. */
template <int HD>
__device__ void load_tile(bf16 *dst, const bf16 *src, int valid, int hd) {
    constexpr int LDT = fwd_smem<HD>::LDT;
    for (int e = threadIdx.x; e < ROWS * HD; e += THREADS) {
        const int r = e / HD, d = e % HD;
        dst[r * LDT + d] = r < valid && d < hd ? src[(size_t)r * hd + d] : __float2bfloat16(0.0f);
    }
}

template <int HD>
__global__ void __launch_bounds__(THREADS)
    flash_fwd_tc_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                        const float *alibi, const float *t5, int T, int nh, int nkv, int hd,
                        float scale) {
    typedef fwd_smem<HD> L;
    GPU_DYNAMIC_SHARED(unsigned char, smem);
    bf16 *Qs = (bf16 *)(smem + L::q_off), *Ks = (bf16 *)(smem + L::k_off);
    bf16 *Vs = (bf16 *)(smem + L::v_off);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *S = (float *)(smem + L::s_off) + warp * L::SCR;
    bf16 *P = (bf16 *)(smem + L::p_off) + warp * 16 * L::LDP;

    const int bh = blockIdx.y, b = bh / nh, h = bh % nh, g = h / (nh / nkv);
    const int q0 = blockIdx.x * ROWS;
    const bf16 *kh = k + ((size_t)b * nkv + g) * T * hd, *vh = v + ((size_t)b * nkv + g) * T * hd;
    const float slope = alibi ? alibi[h] : 0.0f;
    load_tile<HD>(Qs, q + ((size_t)bh * T + q0) * hd, T - q0, hd);

    /* Lane: row r of the warp's 16, columns [half*32, half*32+32) of a score
     * tile and [half*HD/2, half*HD/2 + HD/2) of the output. */
    const int r = lane / 2, half = lane % 2, i = q0 + warp * 16 + r;
    float o[HD / 2];
#pragma unroll
    for (int d = 0; d < HD / 2; d++) o[d] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    const int last = min(T - 1, q0 + ROWS - 1);
    for (int j0 = 0; j0 <= last; j0 += KEYS) {
        __syncthreads(); /* the previous tile is no longer read */
        load_tile<HD>(Ks, kh + (size_t)j0 * hd, T - j0, hd);
        load_tile<HD>(Vs, vh + (size_t)j0 * hd, T - j0, hd);
        __syncthreads();
        if (q0 + warp * 16 + 15 < j0) continue; /* every row of the warp is before the tile */

        /* S (16 x 64) = Q_w (16 x HD) K^T */
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[KEYS / 16];
#pragma unroll
        for (int n = 0; n < KEYS / 16; n++) wmma::fill_fragment(acc[n], 0.0f);
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
            wmma::load_matrix_sync(a, Qs + warp * 16 * L::LDT + kk * 16, L::LDT);
#pragma unroll
            for (int n = 0; n < KEYS / 16; n++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> bk;
                wmma::load_matrix_sync(bk, Ks + n * 16 * L::LDT + kk * 16, L::LDT);
                wmma::mma_sync(acc[n], a, bk, acc[n]);
            }
        }
#pragma unroll
        for (int n = 0; n < KEYS / 16; n++)
            wmma::store_matrix_sync(S + n * 16, acc[n], L::LDS, wmma::mem_row_major);
        __syncwarp();

        /* Online softmax of row r over this tile's keys, in fp32. */
        float s[32], mt = -INFINITY;
#pragma unroll
        for (int c = 0; c < 32; c++) {
            const int jj = half * 32 + c, j = j0 + jj;
            float x = -INFINITY;
            /* rows past T score garbage, never written: no table read there */
            if (j <= i && j < T)
                x = S[r * L::LDS + jj] * scale +
                    score_bias(slope, t5 && i < T ? t5 + (size_t)h * T : NULL, i - j);
            s[c] = x;
            mt = fmaxf(mt, x);
        }
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
        /* Row r has key 0 in the first tile, so mn is finite from then on. */
        const float mn = fmaxf(m, mt), corr = expf(m - mn);
        float sum = 0.0f;
#pragma unroll
        for (int c = 0; c < 32; c++) {
            const float p = expf(s[c] - mn); /* 0 where masked */
            sum += p;
            P[r * L::LDP + half * 32 + c] = __float2bfloat16(p);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * corr + sum;
        m = mn;
        __syncwarp();

        /* PV (16 x HD) = P (16 x 64) V, then o = o * corr + PV. */
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> pv[HD / 16];
#pragma unroll
        for (int n = 0; n < HD / 16; n++) wmma::fill_fragment(pv[n], 0.0f);
#pragma unroll
        for (int kk = 0; kk < KEYS / 16; kk++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
            wmma::load_matrix_sync(a, P + kk * 16, L::LDP);
#pragma unroll
            for (int n = 0; n < HD / 16; n++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> bv;
                wmma::load_matrix_sync(bv, Vs + kk * 16 * L::LDT + n * 16, L::LDT);
                wmma::mma_sync(pv[n], a, bv, pv[n]);
            }
        }
        /* S is consumed (s[] holds this lane's scores): reuse it for P V. */
#pragma unroll
        for (int n = 0; n < HD / 16; n++)
            wmma::store_matrix_sync(S + n * 16, pv[n], L::LDO, wmma::mem_row_major);
        __syncwarp();
#pragma unroll
        for (int d = 0; d < HD / 2; d++) o[d] = o[d] * corr + S[r * L::LDO + half * (HD / 2) + d];
        __syncwarp();
    }
    if (i >= T) return;
    const float inv = 1.0f / l;
    bf16 *orow = out + (((size_t)b * T + i) * nh + h) * hd;
#pragma unroll
    for (int d = 0; d < HD / 2; d++) {
        const int col = half * (HD / 2) + d;
        if (col < hd) orow[col] = __float2bfloat16(o[d] * inv);
    }
    if (half == 0) lse[(size_t)bh * T + i] = m + logf(l);
}

template <int HD>
void forward(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
             const float *alibi, const float *t5, int B, int T, int nh, int nkv, int hd) {
    const size_t bytes = fwd_smem<HD>::bytes;
    if (bytes > 48 * 1024)
        cudaFuncSetAttribute(flash_fwd_tc_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)bytes);
    GPU_LAUNCH(flash_fwd_tc_kernel<HD>, dim3(cdiv(T, ROWS), B * nh), THREADS, bytes)(
        out, lse, q, k, v, alibi, t5, T, nh, nkv, hd, 1.0f / sqrtf((float)hd));
}

} /* namespace */

extern "C" void gpu_flash_forward_tc(gpu_bf16 *out, float *lse, const gpu_bf16 *q,
                                     const gpu_bf16 *k, const gpu_bf16 *v, const float *alibi,
                                     const float *t5, int B, int T, int nh, int nkv, int hd) {
    BY_TILE_HD(forward, hd, (bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v,
               alibi, t5, B, T, nh, nkv, hd);
}
