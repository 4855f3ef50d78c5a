/* matvec.h: matrix-vector products for decoding one token (internal).
 *
 * Decoding reads every weight once per token, so these kernels are bound by
 * memory bandwidth; the OpenMP threads take long contiguous runs of rows
 * (matvec_team below), so that each streams memory. Each output is computed
 * by one thread in a fixed order: the results do not depend on the number
 * of threads or on which thread computes what.
 *
 * Q8_0 (the numbers of GGUF's Q8_0): a row of C weights is nb = ceil(C/32)
 * blocks of 32 integers q in [-127, 127] and one float16 scale d, weight =
 * d * q; a row whose C is not a multiple of 32 is padded with zeros. Our
 * layout differs from GGUF's in two ways that save instructions in the
 * kernel: the matrix stores all the rows of q first, then all the scales
 * (still 34 bytes per 32 weights), so that q rows are contiguous for 64-byte
 * loads; and q is stored as the unsigned byte u = q + 128, the operand
 * vpdpbusd wants unsigned. The input vector is quantized per block of 32 to
 * int8 with a float32 scale; each block's dot product is summed in 32-bit
 * integers, sum u x - 128 sum x = sum q x, and scaled by d_w * d_x. */
#ifndef ROTARY_MATVEC_H
#define ROTARY_MATVEC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* How the _team kernels share out the rows (in groups of 4): each thread
 * owns a contiguous share and takes a quarter of what is left of it at a
 * time, front to back, so that it streams one run of memory; a thread done
 * with its own share takes the back half of what is left of another's, so
 * no thread waits long at the closing barrier for one that was slowed
 * down (chunks no smaller than 16 KiB of weights). One cursor per thread,
 * on its own cache line: word packs the epoch of the call it belongs to
 * (8 bits), the owner's next group and the end of what is left (28 bits
 * each); epoch is the owner's latest, which only it writes. */
typedef struct {
    _Alignas(64) _Atomic uint64_t word;
    unsigned epoch;
} matvec_cursor;

typedef struct {
    matvec_cursor *cur; /* n cursors */
    int n;
} matvec_team;

/* Before each parallel region that calls the _team kernels (by one thread,
 * outside the region). A team of more than n threads shares out the rows
 * statically instead. */
void matvec_team_reset(matvec_team *tm);

/* out (OC) = w (OC, C) x (C) + b (OC); b may be NULL. With accumulate, the
 * result is added to out instead. x and out must not overlap w or each
 * other. OC < 2^30. */
void matvec_f32(float *out, const float *w, const float *x, const float *b, int C, int OC,
                int accumulate);

/* The _team variants do the same from inside a parallel region: every
 * thread of the team calls them with the same arguments (and tm, reset
 * before the region), and the barrier that closes them means out is
 * complete when they return. Called outside a parallel region they run on
 * the calling thread alone. */
void matvec_f32_team(matvec_team *tm, float *out, const float *w, const float *x, const float *b,
                     int C, int OC, int accumulate);

/* a . b over n floats; for short vectors such as one attention head. Also
 * dot4_f32 below. */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline float dot_f32(const float *a, const float *b, int n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* out[i] = q . k_i for four vectors k0..k3 of n floats, n a multiple of 16:
 * the four sums reduced together, a third of the shuffles of four dot_f32. */
static inline void dot4_f32(float *out, const float *q, const float *k0, const float *k1,
                            const float *k2, const float *k3, int n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < n; i += 16) {
        const __m512 qv = _mm512_loadu_ps(q + i);
        a0 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + i), a0);
        a1 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k1 + i), a1);
        a2 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k2 + i), a2);
        a3 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k3 + i), a3);
    }
#define HALVES(a) _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1))
    const __m256 e = _mm256_hadd_ps(_mm256_hadd_ps(HALVES(a0), HALVES(a1)),
                                    _mm256_hadd_ps(HALVES(a2), HALVES(a3)));
#undef HALVES
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(e), _mm256_extractf128_ps(e, 1)));
}
#else
static inline float dot_f32(const float *a, const float *b, int n) {
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    for (; i < n; i++) s[0] += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static inline void dot4_f32(float *out, const float *q, const float *k0, const float *k1,
                            const float *k2, const float *k3, int n) {
    out[0] = dot_f32(q, k0, n), out[1] = dot_f32(q, k1, n);
    out[2] = dot_f32(q, k2, n), out[3] = dot_f32(q, k3, n);
}
#endif

/* bfloat16 weights (rotary_decoder_bf16): each weight is the top half of
 * its float32, rounded to nearest even; half the bytes of float32, and the
 * products stay float32 (x is not rounded). A row of C weights takes
 * bf16_row(C) values, zeros past C, in runs of 32 stored as w0 w16 w1 w17
 * .. w15 w31: 32-bit word j of a run holds w_j in its low half and w_j+16
 * in its high half, so that one shift and one mask turn 64 bytes into the
 * two vectors w0..w15 and w16..w31, in x's order, without a shuffle.
 * Rows are 64 bytes apart times a whole number. */
static inline int bf16_row(int C) { return (C + 31) / 32 * 32; }
static inline size_t bf16_matrix_bytes(int OC, int C) {
    return (size_t)OC * (size_t)bf16_row(C) * sizeof(uint16_t);
}
/* w (OC, C) into dst (bf16_matrix_bytes), rows in parallel. */
void bf16_pack_matrix(uint16_t *dst, const float *w, int OC, int C);
/* Weight (r, i) of such a matrix, as a float (exact). */
float bf16_weight(const uint16_t *m, int C, int r, int i);
/* out (OC) = w x + b as matvec_f32, w such a matrix; and its team variant. */
void matvec_bf16(float *out, const uint16_t *w, const float *x, const float *b, int C, int OC,
                 int accumulate);
void matvec_bf16_team(matvec_team *tm, float *out, const uint16_t *w, const float *x,
                      const float *b, int C, int OC, int accumulate);

#define Q8_BLOCK 32

static inline int q8_blocks(int C) { return (C + Q8_BLOCK - 1) / Q8_BLOCK; }

/* A Q8_0 matrix (OC, C) in memory: u (OC, nb * 32) uint8 = q + 128, then
 * d (OC, nb) float16; q8_matrix_bytes = OC * nb * 34. Any byte alignment
 * works; 64 is fastest. */
size_t q8_matrix_bytes(int OC, int C);
static inline const uint8_t *q8_matrix_u(const void *m) { return (const uint8_t *)m; }
static inline const uint16_t *q8_matrix_d(const void *m, int OC, int C) {
    return (const uint16_t *)(const void *)((const char *)m + (size_t)OC * q8_blocks(C) * Q8_BLOCK);
}

/* Quantize one row src (C): per block d = max |x| / 127 rounded to float16,
 * q = round(x / d) to nearest even, clamped to +-127 (all 0 when d is 0).
 * u gets q8_blocks(C) * 32 values q + 128 (padding: q = 0), d gets
 * q8_blocks(C) scales. */
void q8_quantize_row(uint8_t *u, uint16_t *d, const float *src, int C);
/* The whole matrix w (OC, C) into dst (q8_matrix_bytes), rows in parallel. */
void q8_quantize_matrix(void *dst, const float *w, int OC, int C);
/* Row r of a Q8_0 matrix back to floats: dst (C) = d * q. */
void q8_dequantize_row(float *dst, const void *m, int OC, int C, int r);

/* The quantized input, padded to whole groups of 16 blocks with zeros:
 * q (int8), corr (-128 times the sum of each 4 consecutive q: what the
 * kernel starts each block's integer sums from), d (float32 scale per
 * block). */
typedef struct {
    int8_t *q;
    int32_t *corr;
    float *d;
} q8_act;

/* Bytes of scratch for inputs of up to C values (a multiple of 64). */
size_t q8_act_bytes(int C);
/* Carve a q8_act for C values out of scratch (64-byte aligned). */
q8_act q8_act_view(void *scratch, int C);
/* x (C) into a: per block d = max |x| / 127 (float32), q = round(x / d). */
void q8_quantize_act(q8_act *a, const float *x, int C);

/* out (OC) = w x + b as matvec_f32, w a Q8_0 matrix (OC, C). x is quantized
 * into scratch (q8_act_bytes(C) bytes, 64-byte aligned) first. */
void matvec_q8(float *out, const void *w, const float *x, const float *b, int C, int OC,
               int accumulate, void *scratch);
/* The same with x already quantized (a from q8_quantize_act), and its team
 * variant (threads may pass their own copies of a, equal in value). */
void matvec_q8_act(float *out, const void *w, const q8_act *a, const float *b, int C, int OC,
                   int accumulate);
void matvec_q8_act_team(matvec_team *tm, float *out, const void *w, const q8_act *a,
                        const float *b, int C, int OC, int accumulate);

#endif
