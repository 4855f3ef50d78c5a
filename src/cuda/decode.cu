/* decode.cu: the kernels of one decoding step that are its own (the rest
 * are the training kernels on one row): the split of the token's qkv row
 * into q and the KV cache, RoPE on the way, and attention of one query row
 * against the cache. Both read the token's position from device memory
 * (*pos), so a step launches the same kernels with the same arguments at
 * every position and the whole step can be replayed as one CUDA graph
 * (cuda_model.c). Their source also runs on the CPU (tests/cuda/emu). */
#include "common.cuh"

#include <math.h>
#include <stdint.h>
#ifdef ROTARY_CUDA_EMU
#include "../half.h"
#else
#include <cuda_fp16.h>
#endif

/* Where the token's q, k and v go: q (nh*hd), and row *pos of each kv
 * head's cache (nkv, max_T, hd); cs, sn the RoPE tables (NULL: none), rd
 * the rotated dims, half_pairs the pairing (rope_pair). */
struct decode_split {
    float *q, *kc, *vc;
    const float *cs, *sn;
    const int *pos;
    int max_T, nh, nkv, hd, rd, half_pairs;
};

/* Pair p of the qkv row, (a, b) = coordinates (e0, e1) of head row p / (hd
 * / 2), rotated by its angle at *pos where it rotates, to its place. */
__device__ __forceinline__ void split_pair(const decode_split &sp, int p, int e0, int e1, int rot,
                                           float a, float b) {
    const int i = p % (sp.hd / 2), s = p / (sp.hd / 2), t = *sp.pos, r2 = sp.rd / 2;
    const size_t row = (size_t)t * sp.hd, cache = (size_t)sp.max_T * sp.hd;
    float *dst = s < sp.nh            ? sp.q + (size_t)s * sp.hd
               : s < sp.nh + sp.nkv ? sp.kc + (s - sp.nh) * cache + row
                                      : sp.vc + (s - sp.nh - sp.nkv) * cache + row;
    const float c = rot ? sp.cs[(size_t)t * r2 + i] : 1.0f;
    const float si = rot ? sp.sn[(size_t)t * r2 + i] : 0.0f;
    dst[e0] = a * c - b * si;
    dst[e1] = a * si + b * c;
}

/* The one token's qkv row -> q rotated, and k (rotated) and v into the
 * caches. One thread per pair. */
__global__ void decode_split_rope_kernel(decode_split sp, const float *qkv) {
    const int hp = sp.hd / 2, idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (sp.nh + 2 * sp.nkv) * hp) return;
    int e0, e1;
    const int rot = rope_pair(idx % hp, sp.rd, sp.half_pairs, &e0, &e1) && sp.cs &&
                    idx / hp < sp.nh + sp.nkv;
    const float *src = qkv + (size_t)(idx / hp) * sp.hd;
    split_pair(sp, idx, e0, e1, rot, src[e0], src[e1]);
}

static decode_split split_args(float *q, float *kc, float *vc, const float *cos,
                               const float *sin, const int *pos, int max_T, int nh, int nkv,
                               int hd, int rd, int pairing) {
    return decode_split{q, kc, vc, cos, sin, pos, max_T, nh, nkv, hd, cos ? rd : 0, pairing == 1};
}

extern "C" void gpu_decode_split_rope(float *q, float *kc, float *vc, const float *qkv,
                                      const float *cos, const float *sin, const int *pos,
                                      int max_T, int nh, int nkv, int hd, int rd, int pairing) {
    const int n = (nh + 2 * nkv) * (hd / 2);
    GPU_LAUNCH(decode_split_rope_kernel, cdiv(n, 128), 128, 0)(
        split_args(q, kc, vc, cos, sin, pos, max_T, nh, nkv, hd, rd, pairing), qkv);
}

/* Attention of the token's query against the cache, flash-decoding style:
 * the keys of each head are split into up to `splits` chunks of whole
 * DEC_WARPS * DEC_KEYS-key rounds, one block of DEC_WARPS warps each (grid
 * nh x splits), so that a short context still streams its cache through
 * many SMs (one block a head gave the 110M shape 12 busy SMs of 132). An
 * online softmax in each warp: warp w takes keys in groups of DEC_KEYS
 * (w*DEC_KEYS.., then DEC_WARPS groups further on), so that DEC_KEYS
 * independent dot products and loads are in flight at once; lane l holds
 * coordinates l, l+32, .. of the head. The warps' (max, sum, output) merge
 * through shared memory; with one split the block writes the output, else
 * its (max, sum, unnormalised output) into part (nh, splits, hd + 2), and
 * the head's last block to finish (a counter a head after the parts, done,
 * which it sets back to zero) merges them: no launch of its own for the
 * merge. Chunks past the position are empty (max -inf). Rows past *pos are
 * never read (the cache holds garbage there). */
enum { DEC_WARPS = 8, DEC_KEYS = 4, DEC_ROUND = DEC_WARPS * DEC_KEYS, DEC_MIN_KEYS = 64 };

/* The factor that brings a partial result of running max m to the merged
 * max M: 0 for a part that saw no keys (m = -inf; M may be -inf too, and
 * expf would give NaN). */
__device__ __forceinline__ float rescale(float m, float M) {
    return m == -INFINITY ? 0.0f : expf(m - M);
}

/* out (hd) of head h: its splits merged in split order (the same bits
 * whichever block merges), by the threads of one block. The parts come
 * from other blocks of the same launch: read from L2 (__ldcg), past any
 * line this SM's L1 holds. */
__device__ void merge_splits(float *out, const float *part, int h, int splits, int hd) {
    const float *ph = part + (size_t)h * splits * (hd + 2);
    float M = -INFINITY, L = 0.0f;
    for (int x = 0; x < splits; x++) M = fmaxf(M, __ldcg(ph + (size_t)x * (hd + 2)));
    for (int x = 0; x < splits; x++) {
        const float *px = ph + (size_t)x * (hd + 2);
        L += __ldcg(px + 1) * rescale(__ldcg(px), M);
    }
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float O = 0.0f;
        for (int x = 0; x < splits; x++) {
            const float *px = ph + (size_t)x * (hd + 2);
            O += __ldcg(px + 2 + d) * rescale(__ldcg(px), M);
        }
        out[(size_t)h * hd + d] = O / L;
    }
}

template <int HD>
__global__ void __launch_bounds__(DEC_WARPS * 32)
decode_attention_kernel(float *out, float *part, const float *q, const float *kc,
                        const float *vc, const float *alibi, const float *t5, const int *pos,
                        int max_T, int nh, int nkv, int hd, float scale) {
    constexpr int R = HD / 32; /* coordinates a lane holds */
    __shared__ float part_m[DEC_WARPS], part_l[DEC_WARPS], part_o[DEC_WARPS][HD];
    const int h = blockIdx.x, g = h / (nh / nkv), lane = threadIdx.x % 32, w = threadIdx.x / 32;
    const int i = *pos, n = i + 1, splits = gridDim.y;
    /* this block's keys: [k0, k1), whole rounds */
    const int chunk = (n + splits * DEC_ROUND - 1) / (splits * DEC_ROUND) * DEC_ROUND;
    const int k0 = blockIdx.y * chunk, k1 = min(n, k0 + chunk);
    const float *kh = kc + (size_t)g * max_T * hd, *vh = vc + (size_t)g * max_T * hd;
    const float slope = alibi ? alibi[h] : 0.0f, *tb = t5 ? t5 + (size_t)h * max_T : NULL;
    float qr[R], o[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int d = lane + 32 * r;
        qr[r] = d < hd ? q[(size_t)h * hd + d] * scale : 0.0f;
        o[r] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j0 = k0 + w * DEC_KEYS; j0 < k1; j0 += DEC_ROUND) {
        float s[DEC_KEYS], mx = m;
#pragma unroll
        for (int u = 0; u < DEC_KEYS; u++) {
            const int j = j0 + u;
            float x = 0.0f;
#pragma unroll
            for (int r = 0; r < R; r++) {
                const int d = lane + 32 * r;
                if (j < k1 && d < hd) x += qr[r] * kh[(size_t)j * hd + d];
            }
            s[u] = x;
        }
#pragma unroll
        for (int u = 0; u < DEC_KEYS; u++) {
            const int j = j0 + u;
            s[u] = j < k1 ? warp_sum(s[u]) + score_bias(slope, tb, i - j) : -INFINITY;
            mx = fmaxf(mx, s[u]);
        }
        /* mx is finite: key j0 < k1 exists. */
        const float corr = expf(m - mx);
        l *= corr;
#pragma unroll
        for (int r = 0; r < R; r++) o[r] *= corr;
#pragma unroll
        for (int u = 0; u < DEC_KEYS; u++) {
            const int j = j0 + u;
            if (j >= k1) break;
            const float p = expf(s[u] - mx);
            l += p;
#pragma unroll
            for (int r = 0; r < R; r++) {
                const int d = lane + 32 * r;
                if (d < hd) o[r] += p * vh[(size_t)j * hd + d];
            }
        }
        m = mx;
    }
    if (lane == 0) part_m[w] = m, part_l[w] = l;
#pragma unroll
    for (int r = 0; r < R; r++) part_o[w][lane + 32 * r] = o[r];
    __syncthreads();
    float M = -INFINITY, L = 0.0f;
    for (int x = 0; x < DEC_WARPS; x++) M = fmaxf(M, part_m[x]);
    for (int x = 0; x < DEC_WARPS; x++) L += part_l[x] * rescale(part_m[x], M);
    float *pp = splits > 1 ? part + ((size_t)h * splits + blockIdx.y) * (hd + 2) : NULL;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float O = 0.0f;
        for (int x = 0; x < DEC_WARPS; x++) O += part_o[x][d] * rescale(part_m[x], M);
        if (splits == 1) out[(size_t)h * hd + d] = O / L;
        else pp[2 + d] = O;
    }
    if (splits == 1) return;
    if (threadIdx.x == 0) pp[0] = M, pp[1] = L;
    /* Each thread's part writes reach L2 before the block counts itself;
     * the block that counts last sees every part. */
    __shared__ unsigned ticket;
    __threadfence();
    __syncthreads();
    unsigned *done = reinterpret_cast<unsigned *>(part + (size_t)nh * splits * (hd + 2));
    if (threadIdx.x == 0) ticket = atomicAdd(&done[h], 1u);
    __syncthreads();
    if (ticket != (unsigned)splits - 1) return;
    __threadfence();
    merge_splits(out, part, h, splits, hd);
    if (threadIdx.x == 0) done[h] = 0; /* for the next step */
}

/* Chunks a head: enough blocks for twice the SMs, none shorter than
 * DEC_MIN_KEYS keys at max_T. */
static int decode_splits(int nh, int max_T) {
    const int by_sm = (int)cdiv(2 * (size_t)sm_count(), nh), by_T = (int)cdiv(max_T, DEC_MIN_KEYS);
    return by_sm < by_T ? by_sm : by_T;
}

extern "C" size_t gpu_decode_attention_part(int nh, int hd, int max_T) {
    const int splits = decode_splits(nh, max_T);
    return splits > 1 ? (size_t)nh * splits * (hd + 2) + (size_t)nh : 0; /* parts, counters */
}

template <int HD>
static void decode_hd(float *out, float *part, const float *q, const float *kc, const float *vc,
                      const float *alibi, const float *t5, const int *pos, int max_T, int nh,
                      int nkv, int hd) {
    const int splits = decode_splits(nh, max_T);
    GPU_LAUNCH(decode_attention_kernel<HD>, dim3(nh, splits), DEC_WARPS * 32, 0)(
        out, part, q, kc, vc, alibi, t5, pos, max_T, nh, nkv, hd, 1.0f / sqrtf((float)hd));
}

extern "C" void gpu_decode_attention(float *out, float *part, const float *q, const float *kc,
                                     const float *vc, const float *alibi, const float *t5,
                                     const int *pos, int max_T, int nh, int nkv, int hd) {
    if (hd <= 32) decode_hd<32>(out, part, q, kc, vc, alibi, t5, pos, max_T, nh, nkv, hd);
    else if (hd <= 64) decode_hd<64>(out, part, q, kc, vc, alibi, t5, pos, max_T, nh, nkv, hd);
    else decode_hd<128>(out, part, q, kc, vc, alibi, t5, pos, max_T, nh, nkv, hd);
}

/* Linear attention, one token (as sample.c's linear_step): each kv head's
 * state S (hd x hd) = sum over positions of rope(phi(k)) v^T and z (hd) =
 * sum of phi(k), phi = elu + 1, updated with the token's k and v, then each
 * query head of the group reads out (rope(phi(q)) S) / (phi(q) . z). At
 * position 0 the state starts from zero (a new sequence). One block per kv
 * head; thread c owns column c of S, so no other thread reads what it
 * writes there. Shared: phi(k), rope(phi(k)), v, and one query head's
 * phi(q) and rope(phi(q)) at a time. */
/* phi of the head row src into f, rotated into r (r = f where it does not
 * rotate), one pair a thread. */
__device__ void decode_features(float *f, float *r, const float *src, const float *cs,
                                const float *sn, int t, int hd, int rd, int half_pairs) {
    for (int i = threadIdx.x; i < hd / 2; i += blockDim.x) {
        int e0, e1;
        const int rot = rope_pair(i, rd, half_pairs, &e0, &e1) && cs;
        const float a = elu1(src[e0]), b = elu1(src[e1]);
        const float c = rot ? cs[(size_t)t * (rd / 2) + i] : 1.0f;
        const float s = rot ? sn[(size_t)t * (rd / 2) + i] : 0.0f;
        f[e0] = a, f[e1] = b;
        r[e0] = rot ? a * c - b * s : a;
        r[e1] = rot ? a * s + b * c : b;
    }
}

__global__ void decode_linear_kernel(float *out, float *S, float *z, const float *qkv,
                                     const float *cs, const float *sn, const int *pos, int nh,
                                     int nkv, int hd, int rd, int half_pairs) {
    GPU_DYNAMIC_SHARED(float, sh);
    float *fk = sh, *rk = sh + hd, *v = sh + 2 * hd, *fq = sh + 3 * hd, *rq = sh + 4 * hd;
    const int g = blockIdx.x, group = nh / nkv, t = *pos;
    float *Sg = S + (size_t)g * hd * hd, *zg = z + (size_t)g * hd;
    decode_features(fk, rk, qkv + (size_t)(nh + g) * hd, cs, sn, t, hd, rd, half_pairs);
    for (int c = threadIdx.x; c < hd; c += blockDim.x) v[c] = qkv[(size_t)(nh + nkv + g) * hd + c];
    __syncthreads();
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        for (int a = 0; a < hd; a++) {
            float *s = Sg + (size_t)a * hd + c;
            *s = (t ? *s : 0.0f) + rk[a] * v[c];
        }
        zg[c] = (t ? zg[c] : 0.0f) + fk[c];
    }
    for (int h = g * group; h < (g + 1) * group; h++) {
        __syncthreads(); /* z is complete; the head before is read */
        decode_features(fq, rq, qkv + (size_t)h * hd, cs, sn, t, hd, rd, half_pairs);
        __syncthreads();
        float den = 0.0f;
        for (int a = 0; a < hd; a++) den += fq[a] * zg[a];
        for (int c = threadIdx.x; c < hd; c += blockDim.x) {
            float o = 0.0f;
            for (int a = 0; a < hd; a++) o += rq[a] * Sg[(size_t)a * hd + c];
            out[(size_t)h * hd + c] = o / den;
        }
    }
}

extern "C" void gpu_decode_linear(float *out, float *S, float *z, const float *qkv,
                                  const float *cos, const float *sin, const int *pos, int nh,
                                  int nkv, int hd, int rd, int pairing) {
    const int threads = hd < 32 ? 32 : hd > 128 ? 128 : (hd + 31) / 32 * 32;
    GPU_LAUNCH(decode_linear_kernel, nkv, threads, 5 * (size_t)hd * sizeof(float))(
        out, S, z, qkv, cos, sin, pos, nh, nkv, hd, cos ? rd : 0, pairing == 1);
}

/* ------------------------------------------- linear layers, fused input */

/* One row through a linear layer with the elementwise step before it done
 * on the way in, so that a decoding step launches one kernel where it
 * launched two: out (OC) (+)= W (OC, C) x' + b, W fp32, Q8_0 (matvec.h's
 * layout) or bf16, widened to fp32 on the fly (x' stays fp32), where x' is
 * - GPU_PRE_NONE: x;
 * - GPU_PRE_NORM: RMSNorm of x (w), or LayerNorm (w, nb) with layer_norm;
 * - GPU_PRE_SWIGLU: silu(gate) * up of x = gate | up (2C values);
 * - GPU_PRE_GELU: gelu(x).
 * Every block makes x' in shared memory (a norm's sums in a fixed order,
 * the same in every block of a launch; zeros past C up to Q8_0's whole
 * blocks), then each warp takes output rows in turn, lane l the runs l,
 * l + 32, .. of the row (fp32: V floats, V = 4 where C and W allow 16-byte
 * loads; bf16 likewise V = 8, else 1: the model's bf16 copy puts a matrix
 * at any even address; Q8_0: 16 bytes, half a block), summed across the
 * warp. Blocks have 8 warps, or 4 or 2 where 8 would leave SMs without a
 * block (a 768-row product is 96 blocks of 8 warps on a 132-SM H100):
 * every SM then streams its share of W. */
enum { MV_MAX_WARPS = 8, MV_MAX_BLOCKS = 1024 };

/* The sum over the block of each thread's v, in a fixed order; red holds a
 * float a warp. Every thread gets it. */
__device__ __forceinline__ float block_sum(float v, float *red) {
    v = warp_sum(v);
    __syncthreads(); /* red's last use is over */
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    float s = 0.0f;
    for (int w = 0; w < (int)blockDim.x / 32; w++) s += red[w];
    return s;
}

__device__ __forceinline__ float f16_bits(uint16_t h) {
#ifdef ROTARY_CUDA_EMU
    return rotary_f16_to_f32(h);
#else
    return __half2float(__ushort_as_half(h));
#endif
}

/* This lane's share of row o of W times xs: W fp32 or bf16 (widened
 * exactly), a plain (OC, C) matrix, V values (one access) a step. */
template <int V, typename T>
__device__ __forceinline__ float row_dot(const T *W, const float *xs, int C, int OC, int o,
                                         int lane) {
    (void)OC;
    const T *row = W + (size_t)o * C;
    float s = 0.0f;
    for (int i = lane * V; i < C; i += 32 * V) {
        float wv[V];
        load_vec<V>(wv, row + i);
#pragma unroll
        for (int k = 0; k < V; k++) s += wv[k] * xs[i + k];
    }
    return s;
}
/* Q8_0: u (OC, nb * 32) bytes q + 128, then the scales (OC, nb) float16. */
template <int V>
__device__ __forceinline__ float row_dot(const uint8_t *W, const float *xs, int C, int OC, int o,
                                         int lane) {
    const int nb = (C + 31) / 32;
    const uint8_t *row = W + (size_t)o * nb * 32;
    const uint16_t *d = (const uint16_t *)(W + (size_t)OC * nb * 32) + (size_t)o * nb;
    float s = 0.0f;
    for (int j = lane; j < 2 * nb; j += 32) { /* 16 bytes: half of block j / 2 */
        uint32_t u[4];
        *reinterpret_cast<uint4 *>(u) = *reinterpret_cast<const uint4 *>(row + 16 * j);
        float p = 0.0f;
#pragma unroll
        for (int k = 0; k < 16; k++)
            p += (float)((int)((u[k / 4] >> (8 * (k % 4))) & 0xffu) - 128) * xs[16 * j + k];
        s += p * f16_bits(d[j / 2]);
    }
    return s;
}

/* SPLIT: out is unused; the rows are the token's qkv row, which goes to
 * sp's places as decode_split_rope_kernel puts it: each warp takes a pair
 * of rows, the two coordinates RoPE turns together. */
template <int PRE, int V, typename TW, bool SPLIT>
__global__ void __launch_bounds__(MV_MAX_WARPS * 32)
    decode_matvec_kernel(float *out, const float *x, const TW *W, const float *b,
                         const float *nw, const float *nb, int layer_norm, float eps, int C,
                         int OC, int accumulate, decode_split sp) {
    GPU_DYNAMIC_SHARED(float, xs);
    __shared__ float red[MV_MAX_WARPS];
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, nt = blockDim.x, warps = nt / 32;
    if (PRE == GPU_PRE_NORM) {
        float m = 0.0f, s = 0.0f;
        if (layer_norm) {
            for (int i = threadIdx.x; i < C; i += nt) s += x[i];
            m = block_sum(s, red) / C;
            s = 0.0f;
        }
        for (int i = threadIdx.x; i < C; i += nt) s += (x[i] - m) * (x[i] - m);
        const float r = 1.0f / sqrtf(block_sum(s, red) / C + eps);
        for (int i = threadIdx.x; i < C; i += nt)
            xs[i] = (x[i] - m) * r * nw[i] + (layer_norm && nb ? nb[i] : 0.0f);
    } else {
        for (int i = threadIdx.x; i < C; i += nt) {
            const float a = x[i];
            xs[i] = PRE == GPU_PRE_SWIGLU ? swiglu(a, x[C + i])
                  : PRE == GPU_PRE_GELU   ? gelu(a)
                                          : a;
        }
    }
    for (int i = C + threadIdx.x; i < (C + 31) / 32 * 32; i += nt) xs[i] = 0.0f;
    __syncthreads();
    if constexpr (SPLIT) { /* as the split kernel's sums: 0 + the product + the bias */
        const int hp = sp.hd / 2;
        for (int p = blockIdx.x * warps + w; p < OC / 2; p += gridDim.x * warps) {
            int e0, e1;
            const int rot = rope_pair(p % hp, sp.rd, sp.half_pairs, &e0, &e1) && sp.cs &&
                            p / hp < sp.nh + sp.nkv;
            const int o0 = p / hp * sp.hd + e0, o1 = p / hp * sp.hd + e1;
            const float s0 = warp_sum(row_dot<V>(W, xs, C, OC, o0, lane));
            const float s1 = warp_sum(row_dot<V>(W, xs, C, OC, o1, lane));
            if (lane == 0)
                split_pair(sp, p, e0, e1, rot, 0.0f + s0 + (b ? b[o0] : 0.0f),
                           0.0f + s1 + (b ? b[o1] : 0.0f));
        }
    } else {
        for (int o = blockIdx.x * warps + w; o < OC; o += gridDim.x * warps) {
            const float s = warp_sum(row_dot<V>(W, xs, C, OC, o, lane));
            if (lane == 0) out[o] = (accumulate ? out[o] : 0.0f) + s + (b ? b[o] : 0.0f);
        }
    }
}

/* sp: the split's places (the SPLIT kernel), or NULL. */
template <int PRE, int V, typename TW>
static void launch_matvec(float *out, const float *x, const TW *W, const float *b,
                          const float *nw, const float *nb, int layer_norm, float eps, int C,
                          int OC, int accumulate, const decode_split *sp) {
    const size_t shmem = (size_t)(C + 31) / 32 * 32 * sizeof(float);
    const int items = sp ? OC / 2 : OC; /* a warp's: rows, or pairs of rows */
    int warps = MV_MAX_WARPS;
    while (warps > 2 && cdiv(items, warps) < (unsigned)sm_count()) warps /= 2;
    const unsigned groups = cdiv(items, warps), cap = MV_MAX_BLOCKS;
    const dim3 grid(groups < cap ? groups : cap), block(32 * warps);
    if (sp) {
        if (shmem > 48 * 1024)
            cudaFuncSetAttribute(decode_matvec_kernel<PRE, V, TW, true>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shmem);
        GPU_LAUNCH((decode_matvec_kernel<PRE, V, TW, true>), grid, block, shmem)(
            out, x, W, b, nw, nb, layer_norm, eps, C, OC, accumulate, *sp);
        return;
    }
    if (shmem > 48 * 1024)
        cudaFuncSetAttribute(decode_matvec_kernel<PRE, V, TW, false>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shmem);
    GPU_LAUNCH((decode_matvec_kernel<PRE, V, TW, false>), grid, block, shmem)(
        out, x, W, b, nw, nb, layer_norm, eps, C, OC, accumulate, decode_split{});
}

template <int PRE>
static void decode_matvec(float *out, const float *x, const void *W, int wfmt, const float *b,
                          const float *nw, const float *nb, int layer_norm, float eps, int C,
                          int OC, int accumulate, const decode_split *sp = NULL) {
    if (wfmt == GPU_W_Q8)
        launch_matvec<PRE, 1>(out, x, (const uint8_t *)W, b, nw, nb, layer_norm, eps, C, OC,
                              accumulate, sp);
    else if (wfmt == GPU_W_BF16 && C % 8 == 0 && vec_ok(W, 16))
        launch_matvec<PRE, 8>(out, x, (const __nv_bfloat16 *)W, b, nw, nb, layer_norm, eps, C, OC,
                              accumulate, sp);
    else if (wfmt == GPU_W_BF16)
        launch_matvec<PRE, 1>(out, x, (const __nv_bfloat16 *)W, b, nw, nb, layer_norm, eps, C, OC,
                              accumulate, sp);
    else if (C % 4 == 0 && vec_ok(W, 16))
        launch_matvec<PRE, 4>(out, x, (const float *)W, b, nw, nb, layer_norm, eps, C, OC,
                              accumulate, sp);
    else
        launch_matvec<PRE, 1>(out, x, (const float *)W, b, nw, nb, layer_norm, eps, C, OC,
                              accumulate, sp);
}

extern "C" void gpu_decode_matvec_split(float *q, float *kc, float *vc, const float *x,
                                        const void *W, int wfmt, const float *b, const float *nw,
                                        const float *nb, int layer_norm, float eps, int C,
                                        const float *cos, const float *sin, const int *pos,
                                        int max_T, int nh, int nkv, int hd, int rd, int pairing) {
    const decode_split sp = split_args(q, kc, vc, cos, sin, pos, max_T, nh, nkv, hd, rd, pairing);
    decode_matvec<GPU_PRE_NORM>(NULL, x, W, wfmt, b, nw, nb, layer_norm, eps, C,
                                (nh + 2 * nkv) * hd, 0, &sp);
}

extern "C" void gpu_decode_matvec(float *out, const float *x, const void *W, int wfmt,
                                  const float *b, int C, int OC, int accumulate, int pre,
                                  const float *nw, const float *nb, int layer_norm, float eps) {
    switch (pre) {
    case GPU_PRE_NORM:
        decode_matvec<GPU_PRE_NORM>(out, x, W, wfmt, b, nw, nb, layer_norm, eps, C, OC,
                                    accumulate);
        break;
    case GPU_PRE_SWIGLU:
        decode_matvec<GPU_PRE_SWIGLU>(out, x, W, wfmt, b, NULL, NULL, 0, 0, C, OC, accumulate);
        break;
    case GPU_PRE_GELU:
        decode_matvec<GPU_PRE_GELU>(out, x, W, wfmt, b, NULL, NULL, 0, 0, C, OC, accumulate);
        break;
    default:
        decode_matvec<GPU_PRE_NONE>(out, x, W, wfmt, b, NULL, NULL, 0, 0, C, OC, accumulate);
    }
}
