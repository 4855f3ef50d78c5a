/* flash_mma.cu: causal attention forward and backward on the tensor cores
 * with mma.sync (PTX m16n8k16, bf16 inputs, fp32 accumulators), the layout
 * of FlashAttention-2 (Dao 2023): the scores, the probabilities and the
 * output rows stay in registers for the whole pass, so unlike flash_fwd.cu
 * (WMMA, whose fragments are opaque) nothing goes through shared memory but
 * the K and V tiles. Same arguments, results and precision as
 * gpu_flash_forward_tc and gpu_flash_backward_tc; chosen by
 * gpu_attention_use(GPU_ATTN_MMA). The backward is further down.
 *
 * q, k, v and dout arrive in bf16 (the split kernel and the output
 * projection's backward GEMM write them so), and every tile is a cp.async
 * copy.
 *
 * Forward: a block owns 128 query rows of one head, 32 rows a warp (4
 * warps; 16 rows and 8 warps at head sizes over 64), and streams 64-key
 * tiles of K and V through two shared buffers:
 * cp.async copies the next tile into one while the products read the
 * other. Blocks start with the last query rows, which have the most keys.
 * Every tile is stored row-major in bf16, rows HD + 8 apart, and every
 * operand comes out of it with ldmatrix (x4: four 8 x 8 matrices, one row
 * address a lane; .trans for the operands that are a tile's columns, V in
 * P V), without bank conflicts: the 8 rows of a matrix are 16 bytes mod 128
 * apart.
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
#include <type_traits>

typedef __nv_bfloat16 bf16;

namespace {

enum { KEYS = 64, FWD_ROWS = 128, ROWS = 64, THREADS = 128 };
constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x = lo: the lower address */
    return *reinterpret_cast<uint32_t *>(&v);
}

/* Two adjacent values of a row: 8 bytes of fp32 or 4 of bf16. */
__device__ __forceinline__ void store_pair(float *p, float lo, float hi) {
    *reinterpret_cast<float2 *>(p) = make_float2(lo, hi);
}
__device__ __forceinline__ void store_pair(bf16 *p, float lo, float hi) {
    *reinterpret_cast<uint32_t *>(p) = pack_bf16(lo, hi);
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

/* r[i] = this lane's part of 8 x 8 matrix i (bf16) of shared memory, whose
 * row l % 8 lane l addresses: (g, 2t), (g, 2t+1), or TRANS (2t, g), (2t+1, g). */
template <bool TRANS> __device__ __forceinline__ void ldsm_x4(uint32_t r[4], const bf16 *row) {
#ifdef ROTARY_CUDA_EMU
    emu_ldmatrix_x4(r, row, TRANS);
#else
    const unsigned a = (unsigned)__cvta_generic_to_shared(row);
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
#endif
}

/* cp.async: 16 bytes from global to shared memory without a trip through
 * registers (zeros when !full), then commit the thread's copies as a group,
 * and wait until at most N of its groups are still in flight. */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool full) {
#ifdef ROTARY_CUDA_EMU
    emu_cp_async16(dst, src, full);
#else
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src),
                 "r"(full ? 16 : 0)
                 : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef ROTARY_CUDA_EMU
    emu_cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
#ifdef ROTARY_CUDA_EMU
    emu_cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

/* R rows of HD bf16 columns at src (rows `stride` apart; rows at or past
 * `valid` and columns at or past hd zero) into shared memory (dst, ld) by
 * NT threads' cp.async, 16 bytes a copy (hd and stride multiples of 8, src
 * 16-byte aligned). The copies are this thread's open group. */
template <int HD, int R, int NT>
__device__ __forceinline__ void copy_tile(bf16 *dst, int ld, const bf16 *src, size_t stride,
                                          int valid, int hd) {
    for (int c = threadIdx.x; c < R * HD / 8; c += NT) {
        const int r = c / (HD / 8), d = 8 * (c % (HD / 8));
        const bool in = r < valid && d < hd;
        cp_async16(dst + r * ld + d, in ? src + r * stride + d : src, in);
    }
}

/* The four 8 x 8 quarters of rows r0.. (16), columns c0.. (16) of a
 * row-major bf16 array (ld), in the order (r0, c0) (r0+8, c0) (r0, c0+8)
 * (r0+8, c0+8). Without TRANS that is the A fragment; with TRANS, the B
 * fragments (b0, b1) of columns c0.. and c0+8.. (two n tiles) of the
 * 16 x 16 B the rows are. */
template <bool TRANS>
__device__ __forceinline__ void quarters(uint32_t r[4], const bf16 *m, int ld, int r0, int c0) {
    const int l = threadIdx.x % 32;
    ldsm_x4<TRANS>(r, m + (r0 + l % 8 + 8 * (l / 8 % 2)) * ld + c0 + 8 * (l / 16));
}

__device__ __forceinline__ void frag_a(uint32_t a[4], const bf16 *m, int ld, int r0, int c0) {
    quarters<false>(a, m, ld, r0, c0);
}

/* The B fragments of two n tiles, b[0..1] for n0.. and b[2..3] for n0+8..,
 * of B (k = 16) the transpose of rows n0.. (16), columns c0.. (16) of a
 * row-major array: a product with a tile whose rows are the n (K in Q K^T). */
__device__ __forceinline__ void frag_bt(uint32_t b[4], const bf16 *m, int ld, int n0, int c0) {
    const int l = threadIdx.x % 32;
    ldsm_x4<false>(b, m + (n0 + l % 8 + 8 * (l / 16)) * ld + c0 + 8 * (l / 8 % 2));
}

/* The A fragment, 16 columns kk*16.., of a 16-row fp32 product held as
 * C fragments of 8-column tiles (x[2kk], x[2kk+1]), rounded to bf16. */
__device__ __forceinline__ void c_to_a(uint32_t a[4], const float (*x)[4], int kk) {
    a[0] = pack_bf16(x[2 * kk][0], x[2 * kk][1]);
    a[1] = pack_bf16(x[2 * kk][2], x[2 * kk][3]);
    a[2] = pack_bf16(x[2 * kk + 1][0], x[2 * kk + 1][1]);
    a[3] = pack_bf16(x[2 * kk + 1][2], x[2 * kk + 1][3]);
}

/* s (16 x N, N/8 tiles of 8 columns) = A B^T: A the warp's 16 rows as
 * fragments (a[kk]: columns 16kk..), B N rows of a row-major bf16 tile. */
template <int HD, int N>
__device__ __forceinline__ void scores(float (&s)[N / 8][4], const uint32_t (&a)[HD / 16][4],
                                       const bf16 *m, int ld) {
#pragma unroll
    for (int nt = 0; nt < N / 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int nt = 0; nt < N / 8; nt += 2)
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            uint32_t b[4];
            frag_bt(b, m, ld, nt * 8, kk * 16);
            mma16816(s[nt], a[kk], b[0], b[1]);
            mma16816(s[nt + 1], a[kk], b[2], b[3]);
        }
}

/* o (16 x HD) += a M: a the A fragment of 16 columns of a product, M rows
 * k0.. (16) of a row-major bf16 tile of HD columns (V in P V). */
template <int HD>
__device__ __forceinline__ void accumulate(float (&o)[HD / 8][4], const uint32_t a[4],
                                           const bf16 *m, int ld, int k0) {
#pragma unroll
    for (int nd = 0; nd < HD / 8; nd += 2) {
        uint32_t b[4];
        quarters<true>(b, m, ld, k0, nd * 8);
        mma16816(o[nd], a, b[0], b[1]);
        mma16816(o[nd + 1], a, b[2], b[3]);
    }
}

/* Shared memory of the forward: two buffers of a K and a V tile (64 rows
 * each), one filling while the other is read; the block's Q tile (128 rows)
 * starts in the second. */
template <int HD> struct fwd_smem {
    static constexpr int LD = HD + 8;
    static constexpr size_t buffer = (size_t)2 * KEYS * LD; /* bf16 */
    static constexpr size_t bytes = 2 * buffer * sizeof(bf16);
    static_assert(FWD_ROWS <= 2 * KEYS, "Q fits in a buffer");
};

/* Query tiles (16 rows) a warp takes in the forward: two at head sizes up
 * to 64, so that each K and V fragment read from shared memory serves 32
 * rows (FlashAttention-2's 4 warps of 32 rows: shared memory's bandwidth,
 * not the tensor cores, bounds 8 warps of 16), one above (two would not fit
 * in registers). The block keeps FWD_ROWS rows either way. */
template <int HD> struct fwd_shape {
    static constexpr int MT = HD <= 64 ? 2 : 1, WARPS = FWD_ROWS / 16 / MT,
                         THREADS = 32 * WARPS;
};

template <int HD>
__global__ void __launch_bounds__(fwd_shape<HD>::THREADS)
    flash_fwd_mma_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                         const float *alibi, int T, int nh, int nkv, int hd, float scale2) {
    constexpr int LD = fwd_smem<HD>::LD, MT = fwd_shape<HD>::MT, NT = fwd_shape<HD>::THREADS;
    GPU_DYNAMIC_SHARED(unsigned char, smem);
    /* buffer i at buf0 + i * BUF (arithmetic, not an array: an indexed
     * array would live in local memory) */
    constexpr size_t BUF = fwd_smem<HD>::buffer;
    bf16 *const buf0 = (bf16 *)smem, *const Qs = buf0 + BUF;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;

    const int bh = blockIdx.y, b = bh / nh, h = bh % nh, kvh = h / (nh / nkv);
    const int q0 = (gridDim.x - 1 - blockIdx.x) * FWD_ROWS, w0 = q0 + warp * 16 * MT;
    const bf16 *kh = k + ((size_t)b * nkv + kvh) * T * hd;
    const bf16 *vh = v + ((size_t)b * nkv + kvh) * T * hd;
    const float slope2 = alibi ? alibi[h] * LOG2E : 0.0f;
    copy_tile<HD, FWD_ROWS, NT>(Qs, LD, q + ((size_t)bh * T + q0) * hd, hd, T - q0, hd);
    copy_tile<HD, KEYS, NT>(buf0, LD, kh, hd, T, hd);
    copy_tile<HD, KEYS, NT>(buf0 + KEYS * LD, LD, vh, hd, T, hd);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    /* The warp's MT x 16 rows of Q as A fragments, one per 16 columns. */
    uint32_t qa[MT][HD / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++)
            frag_a(qa[mt][kk], Qs, LD, (warp * MT + mt) * 16, kk * 16);

    /* This lane's rows: row[mt][0] = w0 + 16 mt + g, row[mt][1] = that + 8;
     * their running max (base 2) and sum, and their output columns
     * nd * 8 + 2t, +1. */
    int row[MT][2];
    float m[MT][2], l[MT][2], o[MT][HD / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        row[mt][0] = w0 + 16 * mt + g, row[mt][1] = w0 + 16 * mt + g + 8;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
#pragma unroll
        for (int nd = 0; nd < HD / 8; nd++)
            o[mt][nd][0] = o[mt][nd][1] = o[mt][nd][2] = o[mt][nd][3] = 0.0f;
    }

    const int last = min(T - 1, q0 + FWD_ROWS - 1);
    for (int j0 = 0, it = 0; j0 <= last; j0 += KEYS, it++) {
        const bf16 *Ks = buf0 + (it & 1) * BUF, *Vs = Ks + KEYS * LD;
        __syncthreads(); /* Q's fragments, then the tile before, are read: its buffer is free */
        if (j0 + KEYS <= last) { /* the next tile, in flight under this one's products */
            bf16 *nb = buf0 + ((it + 1) & 1) * BUF;
            const size_t off = (size_t)(j0 + KEYS) * hd;
            copy_tile<HD, KEYS, NT>(nb, LD, kh + off, hd, T - j0 - KEYS, hd);
            copy_tile<HD, KEYS, NT>(nb + KEYS * LD, LD, vh + off, hd, T - j0 - KEYS, hd);
            cp_async_commit();
            cp_async_wait<1>(); /* this tile's copies have landed */
        } else {
            cp_async_wait<0>();
        }
        __syncthreads(); /* everyone's */
        if (w0 + 16 * MT - 1 < j0) continue; /* every row of the warp is before the tile */

        /* S (16 x 64 a query tile) = Q_w K^T: 8 tiles of 8 keys, each K
         * fragment read once for the MT query tiles. */
        float s[MT][KEYS / 8][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < KEYS / 8; nt++)
                s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.0f;
#pragma unroll
        for (int nt = 0; nt < KEYS / 8; nt += 2)
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                uint32_t bf[4];
                frag_bt(bf, Ks, LD, nt * 8, kk * 16);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(s[mt][nt], qa[mt][kk], bf[0], bf[1]);
                    mma16816(s[mt][nt + 1], qa[mt][kk], bf[2], bf[3]);
                }
            }

        /* Mask, scale, ALiBi (base 2), and the online softmax of each row;
         * the 4 lanes of a row (same g) combine by shuffles. Every row has
         * key 0 in the first tile, so m is finite from then on (a row with
         * no key in a later tile gets p = 0 and corr = 1). */
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float corr[2];
#pragma unroll
            for (int hr = 0; hr < 2; hr++) {
                float mt_max = -INFINITY;
#pragma unroll
                for (int nt = 0; nt < KEYS / 8; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const int j = j0 + nt * 8 + 2 * t + e;
                        float x = -INFINITY;
                        if (j <= row[mt][hr] && j < T)
                            x = s[mt][nt][2 * hr + e] * scale2 - slope2 * (float)(row[mt][hr] - j);
                        s[mt][nt][2 * hr + e] = x;
                        mt_max = fmaxf(mt_max, x);
                    }
                mt_max = fmaxf(mt_max, __shfl_xor_sync(0xffffffffu, mt_max, 1));
                mt_max = fmaxf(mt_max, __shfl_xor_sync(0xffffffffu, mt_max, 2));
                const float mn = fmaxf(m[mt][hr], mt_max);
                corr[hr] = exp2f(m[mt][hr] - mn);
                float sum = 0.0f;
#pragma unroll
                for (int nt = 0; nt < KEYS / 8; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const float p = exp2f(s[mt][nt][2 * hr + e] - mn); /* 0 where masked */
                        s[mt][nt][2 * hr + e] = p;
                        sum += p;
                    }
                sum += __shfl_xor_sync(0xffffffffu, sum, 1);
                sum += __shfl_xor_sync(0xffffffffu, sum, 2);
                l[mt][hr] = l[mt][hr] * corr[hr] + sum;
                m[mt][hr] = mn;
            }
#pragma unroll
            for (int nd = 0; nd < HD / 8; nd++) {
                o[mt][nd][0] *= corr[0], o[mt][nd][1] *= corr[0];
                o[mt][nd][2] *= corr[1], o[mt][nd][3] *= corr[1];
            }
        }

        /* O (16 x HD a query tile) += P V: P's A fragments straight from s,
         * 16 keys at a time, each V fragment read once for the MT tiles. */
#pragma unroll
        for (int kk = 0; kk < KEYS / 16; kk++) {
            uint32_t pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) c_to_a(pa[mt], s[mt], kk);
#pragma unroll
            for (int nd = 0; nd < HD / 8; nd += 2) {
                uint32_t bf[4];
                quarters<true>(bf, Vs, LD, kk * 16, nd * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(o[mt][nd], pa[mt], bf[0], bf[1]);
                    mma16816(o[mt][nd + 1], pa[mt], bf[2], bf[3]);
                }
            }
        }
    }

#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            const int i = row[mt][hr];
            if (i >= T) continue;
            const float inv = 1.0f / l[mt][hr];
            bf16 *orow = out + (((size_t)b * T + i) * nh + h) * hd;
#pragma unroll
            for (int nd = 0; nd < HD / 8; nd++) {
                const int col = nd * 8 + 2 * t; /* hd is even: col + 1 < hd too */
                if (col < hd)
                    *reinterpret_cast<__nv_bfloat162 *>(orow + col) = __floats2bfloat162_rn(
                        o[mt][nd][2 * hr] * inv, o[mt][nd][2 * hr + 1] * inv);
            }
            /* natural log-sum-exp of the scaled scores, as the other kernels */
            if (t == 0) lse[(size_t)bh * T + i] = (m[mt][hr] + log2f(l[mt][hr])) * LN2;
        }
}

template <int HD>
void forward(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
             const float *alibi, int B, int T, int nh, int nkv, int hd) {
    const size_t bytes = fwd_smem<HD>::bytes;
    if (bytes > 48 * 1024)
        cudaFuncSetAttribute(flash_fwd_mma_kernel<HD>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    GPU_LAUNCH(flash_fwd_mma_kernel<HD>, dim3(cdiv(T, FWD_ROWS), B * nh),
               fwd_shape<HD>::THREADS, bytes)(out, lse, q, k, v, alibi, T, nh, nkv, hd,
                                               LOG2E / sqrtf((float)hd));
}

/* ---------------------------------------------------------------- backward */

/* The backward as flash_bwd.cu's (two kernels, each recomputing P and dS
 * from lse so that every gradient element has one writer), with the
 * products of this file: the score-like tiles (S, dP and their transposes,
 * 16 x 64 a warp) stay in registers and become the A operand of the next
 * product directly; the B operands that are a tile's columns (dO, Q, K for
 * dV, dK, dQ) come out of the row-major tile with ldmatrix.trans. Blocks of
 * 4 warps and 64 rows. Head sizes up to 64 (at 128 the kv kernel's four
 * 16 x HD accumulators and two score tiles would not fit in registers). */
template <int HD> struct bwd_smem {
    static constexpr int LD = HD + 8, LDS = ROWS + 8;
    static constexpr size_t tile = (size_t)ROWS * LD; /* bf16 */
    /* dq: Q, dO and two buffers of K and V (6 tiles); dk, dv: K, V and two
     * buffers of Q, dO (6 tiles), then two of lse and dsum (64 rows each),
     * then (with dq) the dS tile (64 x 64) */
    static constexpr size_t q_bytes = 6 * tile * sizeof(bf16);
    static constexpr size_t kv_bytes = 6 * tile * sizeof(bf16) + 4 * ROWS * sizeof(float);
    static constexpr size_t kv_dq_bytes = kv_bytes + (size_t)ROWS * LDS * sizeof(bf16);
};

/* dk, dv: grid (ceil(T/64), B*nkv). The block's 64 keys (K, V row-major,
 * each warp 16 of them as A fragments) against every query tile at or
 * after them, of every query head of the group (Q, dO). The first blocks
 * have the most query tiles. With DQ (FlashAttention-2's backward: five
 * products, not seven), dS also goes through shared memory, each warp
 * multiplies 16 of its rows by K and adds them to dq (zeroed beforehand)
 * atomically: no dq kernel, but dq's bits then vary with the order the
 * blocks finish in. dk and dv are bf16 (TG), as the dq kernel's dq, except
 * with DQ, whose dq must sum in fp32: then all three are fp32. The query
 * tiles (every head's, one after another) stream through two buffers as
 * the forward's K and V tiles do: cp.async fills one while the products
 * read the other, and the next tile's lse and dsum, loaded into registers
 * before the products, reach shared memory after them. */
template <int HD, bool DQ, typename TG = typename std::conditional<DQ, float, bf16>::type>
__global__ void __launch_bounds__(THREADS)
    flash_bwd_kv_mma(TG *dk, TG *dv, float *dq, const bf16 *dout, const bf16 *q,
                     const bf16 *k, const bf16 *v, const float *lse, const float *dsum,
                     const float *alibi, int T, int nh, int nkv, float scale2) {
    constexpr int LD = bwd_smem<HD>::LD, LDS = bwd_smem<HD>::LDS;
    GPU_DYNAMIC_SHARED(unsigned char, smem);
    constexpr size_t TILE = bwd_smem<HD>::tile;
    /* buffer i: Q at qbuf + 2 i TILE, dO after it; lse, dsum at lsbuf + 2 i ROWS */
    bf16 *Ks = (bf16 *)smem, *Vs = Ks + TILE, *const qbuf = Vs + TILE;
    float *const lsbuf = (float *)(qbuf + 4 * TILE);
    bf16 *dSs = (bf16 *)(lsbuf + 4 * ROWS); /* DQ: dS (64 queries x 64 keys), rows LDS apart */
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int bg = blockIdx.y, b = bg / nkv, kvh = bg % nkv, group = nh / nkv;
    const int j0 = blockIdx.x * ROWS;
    const size_t kv0 = ((size_t)bg * T + j0) * HD;
    /* step s: query tile i0 = j0 + (s % tiles) ROWS of head kvh group + s / tiles */
    const int tiles = (T - j0 + ROWS - 1) / ROWS, steps = group * tiles;
    /* Issue step s's Q and dO copies into buffer s % 2 and return its lse
     * (base 2) and dsum of row threadIdx.x, for shared memory later. */
    auto fetch = [&](int s, float &l2, float &d) {
        const int h = kvh * group + s / tiles, i0 = j0 + s % tiles * ROWS;
        const size_t bh = (size_t)b * nh + h;
        bf16 *Qn = qbuf + 2 * (s & 1) * TILE;
        copy_tile<HD, ROWS, THREADS>(Qn, LD, q + (bh * T + i0) * HD, HD, T - i0, HD);
        copy_tile<HD, ROWS, THREADS>(Qn + TILE, LD, dout + (((size_t)b * T + i0) * nh + h) * HD,
                                     (size_t)nh * HD, T - i0, HD);
        cp_async_commit();
        const int i = i0 + threadIdx.x;
        const bool in = threadIdx.x < ROWS && i < T;
        l2 = in ? lse[bh * T + i] * LOG2E : 0.0f;
        d = in ? dsum[bh * T + i] : 0.0f;
    };
    auto put_rows = [&](int s, float l2, float d) {
        float *r = lsbuf + 2 * (s & 1) * ROWS;
        if (threadIdx.x < ROWS) r[threadIdx.x] = l2, r[ROWS + threadIdx.x] = d;
    };
    copy_tile<HD, ROWS, THREADS>(Ks, LD, k + kv0, HD, T - j0, HD);
    copy_tile<HD, ROWS, THREADS>(Vs, LD, v + kv0, HD, T - j0, HD);
    cp_async_commit();
    float nl2, nds;
    fetch(0, nl2, nds);
    put_rows(0, nl2, nds);
    cp_async_wait<1>(); /* K and V */
    __syncthreads();
    uint32_t ka[HD / 16][4], va[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        frag_a(ka[kk], Ks, LD, warp * 16, kk * 16);
        frag_a(va[kk], Vs, LD, warp * 16, kk * 16);
    }
    float dK[HD / 8][4], dV[HD / 8][4];
#pragma unroll
    for (int nd8 = 0; nd8 < HD / 8; nd8++)
#pragma unroll
        for (int e = 0; e < 4; e++) dK[nd8][e] = dV[nd8][e] = 0.0f;
    /* this lane's keys: j0 + 16 warp + g and + 8 */
    const int key[2] = {j0 + warp * 16 + g, j0 + warp * 16 + g + 8};

    for (int st = 0; st < steps; st++) {
        const int h = kvh * group + st / tiles, i0 = j0 + st % tiles * ROWS;
        const size_t bh = (size_t)b * nh + h;
        const float slope2 = alibi ? alibi[h] * LOG2E : 0.0f;
        const bf16 *Qs = qbuf + 2 * (st & 1) * TILE, *dOs = Qs + TILE;
        const float *ls = lsbuf + 2 * (st & 1) * ROWS, *Ds = ls + ROWS;
        __syncthreads(); /* the tile before is read: its buffers are free */
        const bool next = st + 1 < steps;
        if (next) { /* the next tile, in flight under this one's products */
            fetch(st + 1, nl2, nds);
            cp_async_wait<1>(); /* this tile's copies have landed */
        } else {
            cp_async_wait<0>();
        }
        __syncthreads(); /* everyone's, and this tile's lse and dsum */
        /* (i0 >= j0: every warp's keys have queries in the tile) */
        /* S^T and dP^T (16 keys x 64 queries), 8 tiles of 8 queries. */
        float sT[ROWS / 8][4], dpT[ROWS / 8][4];
        scores<HD, ROWS>(sT, ka, Qs, LD);
        scores<HD, ROWS>(dpT, va, dOs, LD);
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
            accumulate<HD>(dV, pa, dOs, LD, kq * 16);
            accumulate<HD>(dK, dsa, Qs, LD, kq * 16);
        }
        if (DQ) {
            /* dS, query-major, for the dq product */
#pragma unroll
            for (int nt = 0; nt < ROWS / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    dSs[(nt * 8 + 2 * t + (e & 1)) * LDS + warp * 16 + g + 8 * (e >> 1)] =
                        __float2bfloat16(dpT[nt][e]);
            __syncthreads(); /* every warp's dS */
            /* dq of the warp's 16 queries += scale dS K, 16 keys a step */
            float dQ[HD / 8][4];
#pragma unroll
            for (int nd = 0; nd < HD / 8; nd++) dQ[nd][0] = dQ[nd][1] = dQ[nd][2] = dQ[nd][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < ROWS / 16; kk++) {
                uint32_t dsa[4];
                frag_a(dsa, dSs, LDS, warp * 16, kk * 16);
                accumulate<HD>(dQ, dsa, Ks, LD, kk * 16);
            }
            const float scale = scale2 * LN2;
#pragma unroll
            for (int hr = 0; hr < 2; hr++) {
                const int i = i0 + warp * 16 + g + 8 * hr;
                if (i >= T) continue;
                float *dqr = dq + (bh * T + i) * HD;
#pragma unroll
                for (int nd = 0; nd < HD / 8; nd++) {
                    atomicAdd(dqr + nd * 8 + 2 * t, dQ[nd][2 * hr] * scale);
                    atomicAdd(dqr + nd * 8 + 2 * t + 1, dQ[nd][2 * hr + 1] * scale);
                }
            }
        }
        if (next) put_rows(st + 1, nl2, nds); /* its readers wait at the next step's barriers */
    }
    /* dk = scale dS^T Q (scale2 / log2 e is the softmax scale), dv = P^T dO */
    const float scale = scale2 * LN2;
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        if (key[hr] >= T) continue;
        TG *dkr = dk + ((size_t)bg * T + key[hr]) * HD, *dvr = dv + ((size_t)bg * T + key[hr]) * HD;
#pragma unroll
        for (int nd = 0; nd < HD / 8; nd++) {
            const int col = nd * 8 + 2 * t;
            store_pair(dkr + col, dK[nd][2 * hr] * scale, dK[nd][2 * hr + 1] * scale);
            store_pair(dvr + col, dV[nd][2 * hr], dV[nd][2 * hr + 1]);
        }
    }
}

/* dq: grid (ceil(T/64), B*nh). The block's 64 query rows (Q, dO as each
 * warp's A fragments) against every key tile up to the diagonal (K, V);
 * the last rows, with the most tiles, first. */
template <int HD>
/* two blocks an SM: ptxas then needs no spills at HD 64 (alone it took 168
 * registers and spilled 20 bytes) */
__global__ void __launch_bounds__(THREADS, 2)
    flash_bwd_q_mma(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
                    const float *lse, const float *dsum, const float *alibi, int T, int nh, int nkv,
                    float scale2) {
    constexpr int LD = bwd_smem<HD>::LD;
    GPU_DYNAMIC_SHARED(unsigned char, smem);
    bf16 *Qs = (bf16 *)smem, *dOs = Qs + ROWS * LD;
    constexpr size_t BUF = 2 * bwd_smem<HD>::tile; /* two buffers of K, V at buf0 */
    bf16 *const buf0 = dOs + ROWS * LD;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int bh = blockIdx.y, b = bh / nh, h = bh % nh, kvh = h / (nh / nkv);
    const int i0 = (gridDim.x - 1 - blockIdx.x) * ROWS;
    const size_t q0 = ((size_t)bh * T + i0) * HD, kv = ((size_t)b * nkv + kvh) * T * HD;
    const float slope2 = alibi ? alibi[h] * LOG2E : 0.0f;
    copy_tile<HD, ROWS, THREADS>(Qs, LD, q + q0, HD, T - i0, HD);
    copy_tile<HD, ROWS, THREADS>(buf0, LD, k + kv, HD, T, HD);
    copy_tile<HD, ROWS, THREADS>(buf0 + ROWS * LD, LD, v + kv, HD, T, HD);
    copy_tile<HD, ROWS, THREADS>(dOs, LD, dout + (((size_t)b * T + i0) * nh + h) * HD,
                                 (size_t)nh * HD, T - i0, HD);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    uint32_t qa[HD / 16][4], da[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        frag_a(qa[kk], Qs, LD, warp * 16, kk * 16);
        frag_a(da[kk], dOs, LD, warp * 16, kk * 16);
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

    for (int j0 = 0, it = 0; j0 <= i0; j0 += ROWS, it++) {
        const bf16 *Ks = buf0 + (it & 1) * BUF, *Vs = Ks + ROWS * LD;
        __syncthreads(); /* the tile before is read: its buffer is free */
        if (j0 + ROWS <= i0) { /* the next tile, in flight under this one's products */
            bf16 *nb = buf0 + ((it + 1) & 1) * BUF;
            const size_t off = kv + (size_t)(j0 + ROWS) * HD;
            copy_tile<HD, ROWS, THREADS>(nb, LD, k + off, HD, T - j0 - ROWS, HD);
            copy_tile<HD, ROWS, THREADS>(nb + ROWS * LD, LD, v + off, HD, T - j0 - ROWS, HD);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads(); /* this tile has landed, everyone's copies */
        if (i0 + warp * 16 + 15 < j0) continue; /* every row of the warp is before the tile */

        float s[ROWS / 8][4], dp[ROWS / 8][4];
        scores<HD, ROWS>(s, qa, Ks, LD);
        scores<HD, ROWS>(dp, da, Vs, LD);
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
            accumulate<HD>(dQ, dsa, Ks, LD, kk * 16);
        }
    }
    const float scale = scale2 * LN2;
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        if (row[hr] >= T) continue;
        bf16 *dqr = dq + ((size_t)bh * T + row[hr]) * HD;
#pragma unroll
        for (int nd = 0; nd < HD / 8; nd++)
            store_pair(dqr + nd * 8 + 2 * t, dQ[nd][2 * hr] * scale, dQ[nd][2 * hr + 1] * scale);
    }
}

template <int HD, bool DQ, typename TG>
void launch_kv(size_t bytes, dim3 grid, TG *dk, TG *dv, float *dq, const bf16 *dout,
               const bf16 *q, const bf16 *k, const bf16 *v, const float *lse, const float *dsum,
               const float *alibi, int T, int nh, int nkv, float scale2) {
    if (bytes > 48 * 1024)
        cudaFuncSetAttribute(flash_bwd_kv_mma<HD, DQ>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)bytes);
    GPU_LAUNCH((flash_bwd_kv_mma<HD, DQ>), grid, THREADS, bytes)(dk, dv, dq, dout, q, k, v, lse,
                                                                 dsum, alibi, T, nh, nkv, scale2);
}

/* atomic_dq: the kv kernel computes dq too (atomically), and dq, dk, dv are
 * fp32; else the dq kernel, and they are bf16. */
template <int HD>
void backward(void *dq, void *dk, void *dv, const float *dsum, const bf16 *dout, const bf16 *q,
              const bf16 *k, const bf16 *v, const float *lse, const float *alibi, int B, int T,
              int nh, int nkv, int atomic_dq) {
    const float scale2 = LOG2E / sqrtf((float)HD);
    const dim3 kv_grid(cdiv(T, ROWS), B * nkv);
    if (atomic_dq) {
        cudaMemsetAsync(dq, 0, (size_t)B * nh * T * HD * sizeof(float), cudaStreamPerThread);
        launch_kv<HD, true>(bwd_smem<HD>::kv_dq_bytes, kv_grid, (float *)dk, (float *)dv,
                            (float *)dq, dout, q, k, v, lse, dsum, alibi, T, nh, nkv, scale2);
        return;
    }
    const size_t bytes = bwd_smem<HD>::q_bytes;
    if (bytes > 48 * 1024)
        cudaFuncSetAttribute(flash_bwd_q_mma<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)bytes);
    GPU_LAUNCH(flash_bwd_q_mma<HD>, dim3(cdiv(T, ROWS), B * nh), THREADS, bytes)(
        (bf16 *)dq, dout, q, k, v, lse, dsum, alibi, T, nh, nkv, scale2);
    launch_kv<HD, false>(bwd_smem<HD>::kv_bytes, kv_grid, (bf16 *)dk, (bf16 *)dv, NULL, dout, q,
                         k, v, lse, dsum, alibi, T, nh, nkv, scale2);
}

} /* namespace */

extern "C" void gpu_flash_forward_mma(gpu_bf16 *out, float *lse, const gpu_bf16 *q,
                                      const gpu_bf16 *k, const gpu_bf16 *v, const float *alibi,
                                      int B, int T, int nh, int nkv, int hd) {
    BY_TILE_HD(forward, hd, (bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v,
               alibi, B, T, nh, nkv, hd);
}

extern "C" void gpu_flash_backward_mma(void *dq, void *dk, void *dv, const float *dsum,
                                       const gpu_bf16 *dout16, const gpu_bf16 *q16,
                                       const gpu_bf16 *k16, const gpu_bf16 *v16, const float *lse,
                                       const float *alibi, int B, int T, int nh, int nkv, int hd,
                                       int atomic_dq) {
    const bf16 *q = (const bf16 *)q16, *k = (const bf16 *)k16, *v = (const bf16 *)v16;
    const bf16 *dout = (const bf16 *)dout16;
    const int a = atomic_dq;
    switch (hd) {
    case 16: backward<16>(dq, dk, dv, dsum, dout, q, k, v, lse, alibi, B, T, nh, nkv, a); break;
    case 32: backward<32>(dq, dk, dv, dsum, dout, q, k, v, lse, alibi, B, T, nh, nkv, a); break;
    case 48: backward<48>(dq, dk, dv, dsum, dout, q, k, v, lse, alibi, B, T, nh, nkv, a); break;
    case 64: backward<64>(dq, dk, dv, dsum, dout, q, k, v, lse, alibi, B, T, nh, nkv, a); break;
    default: break; /* not GPU_ATTN_MMA_BWD(hd): the caller uses gpu_flash_backward_tc */
    }
}
