/* flash_bwd.cu: causal attention backward on the tensor cores (bf16 WMMA
 * m16n16k16, fp32 accumulators), the same quantities as the fp32 kernels of
 * attention.cu: P_ij = exp(scale q_i.k_j + bias_ij - lse_i) (bias: ALiBi's
 * -slope (i-j), or T5's table at i-j), dP_ij = dout_i.v_j,
 * dS_ij = P_ij (dP_ij - dsum_i), dq = scale dS K, dk = scale dS^T Q,
 * dv = P^T dout, summed over the query heads of a group, and T5's table
 * gradient dt5[i-j] += dS_ij.
 *
 * Two kernels, each recomputing P and dS from lse, so that every gradient
 * element has a single writer (no atomics, the same bits on every run):
 * - kv: a block owns 64 keys of one kv head, each of its 4 warps 16 of them,
 *   and keeps dK, dV of its rows in accumulator fragments while it streams
 *   the 64-row query tiles at or after its keys (causal: earlier ones
 *   contribute nothing), for every query head of the group. Per tile a warp
 *   forms S^T = K_w Q^T and dP^T = V_w dO^T (16 x 64), turns them into P^T
 *   and dS^T elementwise in fp32, then dV_w += P^T dO and dK_w += dS^T Q.
 * - q: a block owns 64 query rows of one head (a warp 16), streams the key
 *   tiles up to the diagonal and accumulates dQ_w += dS_w K the same way.
 *   With T5's table, each warp also sums its 16 x 64 dS (fp32) along the
 *   79 diagonals of the tile, one distance each, and adds each sum to the
 *   table's gradient atomically: 79 atomics a tile instead of 1024, but
 *   the table's gradient alone is not the same bits every run.
 * q, k, v and dout arrive in bf16 (from the split kernel and the output
 * projection's backward GEMM), and P and dS are rounded as they
 * enter the second products; scores, the
 * exponentials, lse, dsum and every sum stay fp32; dq, dk, dv are written
 * in bf16 (the RoPE merge reads them into the bf16 dqkv). Expected precision: a
 * relative error around 1e-2 of each gradient's largest element (on random
 * inputs, against an fp64 reference: 4e-3 to 8e-3 here, 1e-6 for the fp32
 * kernels).
 *
 * Shared memory (HD + 8 bf16 per tile row, WMMA wants a leading dimension
 * that is a multiple of 8 and every fragment pointer 32-byte aligned; all
 * offsets below are multiples of 32 bytes): four 64-row tiles (the block's
 * own rows and the streamed ones), lse and dsum of the 64 query rows, then
 * per warp fp32 S and dP (16 x SLD) and bf16 P and dS (16 x PLD). At the end
 * the tile area is reused to stage the results for coalesced stores. */
#include "common.cuh"

#include <cuda_bf16.h>
#include <math.h>
#include <mma.h>

using namespace nvcuda;
typedef __nv_bfloat16 bf16;

/* Tiles of 64 rows, 4 warps of 16 rows; S, dP rows of SLD floats and P, dS
 * rows of PLD bf16 (padded against bank conflicts). */
enum { TC_TILE = 64, TC_WARPS = 4, TC_THREADS = 32 * TC_WARPS };
enum { TC_SLD = TC_TILE + 4, TC_PLD = TC_TILE + 8 };

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> FragA;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> FragB;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> FragBt;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> FragC;

template <int HD> struct TcLayout {
    enum { LD = HD + 8, OLD = HD + 4 }; /* bf16 tile row; fp32 staging row */
    enum { TILE_BYTES = TC_TILE * LD * 2, ROWS_BYTES = 2 * TC_TILE * 4 };
    enum { F32_BYTES = TC_WARPS * 2 * 16 * TC_SLD * 4, B16_BYTES = TC_WARPS * 2 * 16 * TC_PLD * 2 };
    enum { BYTES = 4 * TILE_BYTES + ROWS_BYTES + F32_BYTES + B16_BYTES };
};

/* The block's pieces of shared memory; w is the warp. */
template <int HD> struct TcSmem {
    bf16 *t0, *t1, *t2, *t3; /* 64 x LD tiles */
    float *ls, *Ds;          /* 64 each */
    float *S, *dP;           /* the warp's 16 x SLD */
    bf16 *P, *dS;            /* the warp's 16 x PLD */
    __device__ TcSmem(unsigned char *smem, int w) {
        typedef TcLayout<HD> L;
        t0 = (bf16 *)smem;
        t1 = t0 + TC_TILE * L::LD;
        t2 = t1 + TC_TILE * L::LD;
        t3 = t2 + TC_TILE * L::LD;
        ls = (float *)(smem + 4 * L::TILE_BYTES);
        Ds = ls + TC_TILE;
        S = (float *)(smem + 4 * L::TILE_BYTES + L::ROWS_BYTES) + w * 2 * 16 * TC_SLD;
        dP = S + 16 * TC_SLD;
        P = (bf16 *)(smem + 4 * L::TILE_BYTES + L::ROWS_BYTES + L::F32_BYTES) + w * 2 * 16 * TC_PLD;
        dS = P + 16 * TC_PLD;
    }
};

/* dst (64 x LD bf16) = rows 0..63 of src (bf16, row stride `stride`
 * elements, HD used), zero from row n on. */
template <int HD>
__device__ __forceinline__ void tc_load_tile(bf16 *dst, const bf16 *src, size_t stride, int n) {
#pragma unroll 2 /* more spills registers at some HD */
    for (int e = threadIdx.x; e < TC_TILE * HD; e += TC_THREADS) {
        const int r = e / HD, d = e % HD;
        dst[r * TcLayout<HD>::LD + d] = r < n ? src[(size_t)r * stride + d] : __float2bfloat16(0.0f);
    }
}

/* out (16 x 64 fp32, ld SLD) = a (16 x HD, ld LD) times the transpose of
 * b (64 x HD, ld LD): b read as a column-major matrix_b. */
template <int HD>
__device__ __forceinline__ void tc_scores(float *out, const bf16 *a, const bf16 *b) {
    constexpr int LD = TcLayout<HD>::LD;
    for (int n = 0; n < TC_TILE / 16; n++) {
        FragC acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            FragA fa;
            FragBt fb;
            wmma::load_matrix_sync(fa, a + kk * 16, LD);
            wmma::load_matrix_sync(fb, b + n * 16 * LD + kk * 16, LD);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(out + n * 16, acc, TC_SLD, wmma::mem_row_major);
    }
}

/* acc (16 x HD, fragment f = columns 16f..16f+15) += a (16 x 64, ld PLD)
 * times b (64 x HD, ld LD). */
template <int HD>
__device__ __forceinline__ void tc_accumulate(FragC (&acc)[HD / 16], const bf16 *a, const bf16 *b) {
    constexpr int LD = TcLayout<HD>::LD;
#pragma unroll 1 /* unrolled, the B fragments hoisted ahead spill the kv kernel at HD 128 */
    for (int kk = 0; kk < TC_TILE / 16; kk++) {
        FragA fa;
        wmma::load_matrix_sync(fa, a + kk * 16, TC_PLD);
#pragma unroll
        for (int f = 0; f < HD / 16; f++) {
            FragB fb;
            wmma::load_matrix_sync(fb, b + kk * 16 * LD + f * 16, LD);
            wmma::mma_sync(acc[f], fa, fb, acc[f]);
        }
    }
}

/* Writes acc * mul (the warp's rows 16w.. of a 64 x HD block) to dst (row
 * stride HD) in bf16, rows below n only, through shared memory (o: 64 x OLD
 * floats) so that the global stores are coalesced, two values a thread. */
template <int HD>
__device__ __forceinline__ void tc_store_rows(bf16 *dst, FragC (&acc)[HD / 16], float mul,
                                              float *o, int n) {
    constexpr int OLD = TcLayout<HD>::OLD;
    const int w = threadIdx.x / 32;
#pragma unroll
    for (int f = 0; f < HD / 16; f++) {
#pragma unroll
        for (int t = 0; t < acc[f].num_elements; t++) acc[f].x[t] *= mul;
        wmma::store_matrix_sync(o + 16 * w * OLD + 16 * f, acc[f], OLD, wmma::mem_row_major);
    }
    __syncthreads();
    for (int e = threadIdx.x * 2; e < TC_TILE * HD; e += TC_THREADS * 2) {
        const int r = e / HD, d = e % HD;
        if (r < n)
            *reinterpret_cast<__nv_bfloat162 *>(dst + (size_t)r * HD + d) =
                __floats2bfloat162_rn(o[r * OLD + d], o[r * OLD + d + 1]);
    }
}

/* dk, dv: grid (ceil(T/64), B*nkv); t0, t1 hold K, V of the block's keys,
 * t2, t3 the streamed Q, dO tiles. */
template <int HD>
__global__ void __launch_bounds__(TC_THREADS)
    flash_bwd_kv_tc(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q, const bf16 *k,
                    const bf16 *v, const float *lse, const float *dsum, const float *alibi,
                    const float *t5, int T, int nh, int nkv, float scale) {
    GPU_DYNAMIC_SHARED(unsigned char, smem);
    constexpr int LD = TcLayout<HD>::LD, NF = HD / 16;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    TcSmem<HD> s(smem, w);
    bf16 *Ks = s.t0, *Vs = s.t1, *Qs = s.t2, *dOs = s.t3;
    const int bg = blockIdx.y, b = bg / nkv, g = bg % nkv, group = nh / nkv;
    const int j0 = blockIdx.x * TC_TILE;
    const size_t kv0 = ((size_t)bg * T + j0) * HD;
    tc_load_tile<HD>(Ks, k + kv0, HD, T - j0);
    tc_load_tile<HD>(Vs, v + kv0, HD, T - j0);
    FragC dKf[NF], dVf[NF];
#pragma unroll
    for (int f = 0; f < NF; f++) {
        wmma::fill_fragment(dKf[f], 0.0f);
        wmma::fill_fragment(dVf[f], 0.0f);
    }
    for (int hh = 0; hh < group; hh++) {
        const int h = g * group + hh;
        const size_t bh = (size_t)b * nh + h;
        const float slope = alibi ? alibi[h] : 0.0f, *tb = t5 ? t5 + (size_t)h * T : NULL;
        for (int i0 = j0; i0 < T; i0 += TC_TILE) {
            __syncthreads(); /* the last tile's readers are done */
            tc_load_tile<HD>(Qs, q + (bh * T + i0) * HD, HD, T - i0);
            tc_load_tile<HD>(dOs, dout + (((size_t)b * T + i0) * nh + h) * HD, (size_t)nh * HD,
                             T - i0);
            if (threadIdx.x < TC_TILE) {
                const int i = i0 + threadIdx.x;
                s.ls[threadIdx.x] = i < T ? lse[bh * T + i] : 0.0f;
                s.Ds[threadIdx.x] = i < T ? dsum[bh * T + i] : 0.0f;
            }
            __syncthreads();
            tc_scores<HD>(s.S, Ks + 16 * w * LD, Qs);   /* S^T: 16 keys x 64 queries */
            tc_scores<HD>(s.dP, Vs + 16 * w * LD, dOs); /* dP^T */
            __syncwarp();
#pragma unroll 4
            for (int e = lane; e < 16 * TC_TILE; e += 32) {
                const int r = e / TC_TILE, c = e % TC_TILE, j = j0 + 16 * w + r, i = i0 + c;
                float p = 0.0f, ds = 0.0f;
                if (i < T && j <= i) {
                    p = expf(s.S[r * TC_SLD + c] * scale + score_bias(slope, tb, i - j) - s.ls[c]);
                    ds = p * (s.dP[r * TC_SLD + c] - s.Ds[c]);
                }
                s.P[r * TC_PLD + c] = __float2bfloat16(p);
                s.dS[r * TC_PLD + c] = __float2bfloat16(ds);
            }
            __syncwarp();
            tc_accumulate<HD>(dVf, s.P, dOs);
            tc_accumulate<HD>(dKf, s.dS, Qs);
        }
    }
    /* Stage dK in the Q, dO tiles and dV in the K, V tiles (64 x OLD floats
     * fit in two 64 x LD bf16 tiles). */
    __syncthreads();
    tc_store_rows<HD>(dk + kv0, dKf, scale, (float *)Qs, T - j0);
    tc_store_rows<HD>(dv + kv0, dVf, 1.0f, (float *)Ks, T - j0);
}

/* dq: grid (ceil(T/64), B*nh); t0, t1 hold Q, dO of the block's rows, t2,
 * t3 the streamed K, V tiles. */
template <int HD>
__global__ void __launch_bounds__(TC_THREADS)
    flash_bwd_q_tc(bf16 *dq, float *dt5, const bf16 *dout, const bf16 *q, const bf16 *k,
                   const bf16 *v, const float *lse, const float *dsum, const float *alibi,
                   const float *t5, int T, int nh, int nkv, float scale) {
    GPU_DYNAMIC_SHARED(unsigned char, smem);
    constexpr int LD = TcLayout<HD>::LD, NF = HD / 16;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    TcSmem<HD> s(smem, w);
    bf16 *Qs = s.t0, *dOs = s.t1, *Ks = s.t2, *Vs = s.t3;
    const int bh = blockIdx.y, b = bh / nh, h = bh % nh, g = h / (nh / nkv);
    const int i0 = blockIdx.x * TC_TILE;
    const size_t q0 = ((size_t)bh * T + i0) * HD, kvh = ((size_t)b * nkv + g) * T * HD;
    const float slope = alibi ? alibi[h] : 0.0f, *tb = t5 ? t5 + (size_t)h * T : NULL;
    float *dtb = dt5 ? dt5 + (size_t)bh * T : NULL;
    tc_load_tile<HD>(Qs, q + q0, HD, T - i0);
    tc_load_tile<HD>(dOs, dout + (((size_t)b * T + i0) * nh + h) * HD, (size_t)nh * HD, T - i0);
    if (threadIdx.x < TC_TILE) {
        const int i = i0 + threadIdx.x;
        s.ls[threadIdx.x] = i < T ? lse[(size_t)bh * T + i] : 0.0f;
        s.Ds[threadIdx.x] = i < T ? dsum[(size_t)bh * T + i] : 0.0f;
    }
    FragC dQf[NF];
#pragma unroll
    for (int f = 0; f < NF; f++) wmma::fill_fragment(dQf[f], 0.0f);
    for (int j0 = 0; j0 <= i0; j0 += TC_TILE) {
        __syncthreads(); /* the last tile's readers are done */
        tc_load_tile<HD>(Ks, k + kvh + (size_t)j0 * HD, HD, T - j0);
        tc_load_tile<HD>(Vs, v + kvh + (size_t)j0 * HD, HD, T - j0);
        __syncthreads();
        tc_scores<HD>(s.S, Qs + 16 * w * LD, Ks);   /* S: 16 queries x 64 keys */
        tc_scores<HD>(s.dP, dOs + 16 * w * LD, Vs); /* dP */
        __syncwarp();
#pragma unroll 4
        for (int e = lane; e < 16 * TC_TILE; e += 32) {
            const int r = e / TC_TILE, c = e % TC_TILE, i = i0 + 16 * w + r, j = j0 + c;
            float ds = 0.0f;
            if (i < T && j <= i) {
                const float p = expf(s.S[r * TC_SLD + c] * scale + score_bias(slope, tb, i - j) -
                                     s.ls[16 * w + r]);
                ds = p * (s.dP[r * TC_SLD + c] - s.Ds[16 * w + r]);
            }
            s.dS[r * TC_PLD + c] = __float2bfloat16(ds);
            if (dtb) s.dP[r * TC_SLD + c] = ds; /* read above by this lane alone */
        }
        __syncwarp();
        if (dtb) { /* diagonal dg: r - c = dg - 63, distance i - j = base + dg - 63 */
            const int base = i0 + 16 * w - j0;
            for (int dg = lane; dg < 16 + TC_TILE - 1; dg += 32) {
                const int n = base + dg - (TC_TILE - 1);
                if (n < 0 || n >= T) continue; /* above the diagonal, or rows past T */
                float sum = 0.0f;
                for (int r = max(0, dg - (TC_TILE - 1)); r < 16 && r <= dg; r++)
                    sum += s.dP[r * TC_SLD + r + TC_TILE - 1 - dg];
                atomicAdd(&dtb[n], sum);
            }
        }
        tc_accumulate<HD>(dQf, s.dS, Ks);
    }
    __syncthreads(); /* stage dQ in the K, V tiles */
    tc_store_rows<HD>(dq + q0, dQf, scale, (float *)Ks, T - i0);
}

template <int HD>
static void backward_tc(bf16 *dq, bf16 *dk, bf16 *dv, const float *dsum, const bf16 *dout,
                        const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
                        const float *alibi, const float *t5, float *dt5, int B, int T, int nh,
                        int nkv) {
    const size_t shmem = TcLayout<HD>::BYTES;
    const float scale = 1.0f / sqrtf((float)HD);
    if (shmem > 48 * 1024) {
        cudaFuncSetAttribute(flash_bwd_q_tc<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)shmem);
        cudaFuncSetAttribute(flash_bwd_kv_tc<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)shmem);
    }
    GPU_LAUNCH(flash_bwd_q_tc<HD>, dim3(cdiv(T, TC_TILE), B * nh), TC_THREADS, shmem)(
        dq, dt5, dout, q, k, v, lse, dsum, alibi, t5, T, nh, nkv, scale);
    GPU_LAUNCH(flash_bwd_kv_tc<HD>, dim3(cdiv(T, TC_TILE), B * nkv), TC_THREADS, shmem)(
        dk, dv, dout, q, k, v, lse, dsum, alibi, t5, T, nh, nkv, scale);
}

extern "C" void gpu_flash_backward_tc(gpu_bf16 *dq16, gpu_bf16 *dk16, gpu_bf16 *dv16,
                                      const float *dsum,
                                      const gpu_bf16 *dout16, const gpu_bf16 *q16,
                                      const gpu_bf16 *k16, const gpu_bf16 *v16, const float *lse,
                                      const float *alibi, const float *t5, float *dt5, int B,
                                      int T, int nh, int nkv, int hd) {
    const bf16 *q = (const bf16 *)q16, *k = (const bf16 *)k16, *v = (const bf16 *)v16;
    const bf16 *dout = (const bf16 *)dout16;
    bf16 *dq = (bf16 *)dq16, *dk = (bf16 *)dk16, *dv = (bf16 *)dv16;
#define TC_CASE(HD)                                                                                \
    case HD:                                                                                       \
        backward_tc<HD>(dq, dk, dv, dsum, dout, q, k, v, lse, alibi, t5, dt5, B, T, nh, nkv);     \
        break
    switch (hd) {
        TC_CASE(16);
        TC_CASE(32);
        TC_CASE(48);
        TC_CASE(64);
        TC_CASE(80);
        TC_CASE(96);
        TC_CASE(112);
        TC_CASE(128);
    default: break; /* not GPU_ATTN_TC(hd): the caller uses gpu_attention_backward */
    }
#undef TC_CASE
}
