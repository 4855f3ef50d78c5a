/* matvec.c: y = W x for decoding, in float32, bfloat16 and Q8_0 (matvec.h).
 *
 * Rows go to the OpenMP threads in groups of 4 (see share_take). With
 * -march=native on a CPU with AVX-512 (F, BW, VL, VNNI) the inner loops are
 * intrinsics; the portable C after them computes the
 * same sums and is what every other compiler or CPU gets.
 *
 * Why our own float32 kernel and not the BLAS. Measured on this project's
 * 2-core AMD EPYC (Zen 4, 96 MiB L3, a VM), OpenBLAS 0.3.21 with its
 * Haswell kernels (OPENBLAS_CORETYPE=Haswell, as this machine sets it),
 * 2 OpenMP threads, the rotary-study job paused: GB/s of weights read, each
 * call on a new copy from a 512 MiB pool, best of 8 passes, against a
 * plain streaming sum of 512 MiB in the same run (56 GB/s); bench/decode
 * --matvec prints this table (bench/README.md):
 *
 *   matrix (OC x C)   sgemm M=1   cblas_sgemv   ours f32   ours Q8_0
 *   2304 x 768        18 (0.32)   43 (0.77)     59 (1.04)  56 (1.00)
 *    768 x 768        19 (0.35)   48 (0.85)     59 (1.04)  36 (0.64)
 *   4096 x 768        19 (0.34)   44 (0.79)     61 (1.08)  61 (1.08)
 *    768 x 2048       20 (0.35)   56 (0.99)     64 (1.14)  49 (0.86)
 *  32000 x 768        16 (0.28)   46 (0.82)     64 (1.13)  52 (0.93)
 *
 * (the Q8_0 column is the earlier 256-bit kernel, one block per
 * instruction; fractions of the streaming sum; above 1 the kernels'
 * access pattern streamed better than the plain sum did, or a little came
 * from L3). The
 * sgemm with M = 1 that linear_forward did for one row reaches a third of
 * the bandwidth, sgemv about 0.8, this kernel all of it: the decoder uses
 * it. One row at a time with four accumulators, one stream per thread,
 * did better than four rows interleaved (51 against 62 GB/s), which share
 * the loads of x but make four streams. */
#include "matvec.h"

#include "half.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__)
#define Q8_AVX512 1
#endif

/* Matrices smaller than this (in weights) are done by the calling thread:
 * a parallel region costs a few microseconds, more than they take. */
#define PAR_MIN_WEIGHTS 65536
#define GROUP 4
#define MIN_CHUNK_BYTES (16 << 10)
/* threads of the standalone kernels (their cursors are on the stack) */
#define STANDALONE_THREADS 64

/* ------------------------------------------------------ sharing the rows */

/* Why this schedule (matvec.h) and not an `omp for`: decoding the 110M
 * shape in int8 (116 MB of weights in 49 matrices, 2 threads) spent ~15%
 * of its time waiting at the barriers that close the products under
 * schedule guided, whose first chunk (half the rows) leaves the other
 * thread idle at the end when the two stream at different speeds; dynamic
 * chunks of 32 KiB streamed at 0.55 of the bandwidth (each chunk starts a
 * new run of memory). Measured on the 49 products of that model in a row,
 * the schedules taking turns, 40 passes (bench/README.md): this one is
 * 1.25x guided's speed in int8 and 1.03x in float32. Fixed chunks of 16 KiB
 * (own) and 8 KiB (taken) were slower than guided (0.95-0.98x): each chunk
 * costs a locked compare-and-swap, which waits for the loads in flight, and
 * the taken chunks are short runs; quarters and halves take a few dozen
 * chunks per matrix. */

#define EPOCH_SHIFT 56
#define NEXT_SHIFT 28
#define FIELD ((UINT64_C(1) << 28) - 1)

static inline uint64_t pack(uint64_t epoch, int next, int end) {
    return epoch << EPOCH_SHIFT | (uint64_t)next << NEXT_SHIFT | (uint64_t)end;
}

void matvec_team_reset(matvec_team *tm) {
    for (int i = 0; i < tm->n; i++) {
        atomic_store_explicit(&tm->cur[i].word, 0, memory_order_relaxed);
        tm->cur[i].epoch = 0;
    }
}

/* One thread's view of one call: its number, the team's size, the rows,
 * the epoch of this call (1-255: every call of the team ends at a barrier,
 * so a cursor holds this call's epoch, the previous call's, or 0 after the
 * reset, and those differ), the cursor it takes from now, and the smallest
 * chunk (in groups). */
typedef struct {
    matvec_cursor *cur;
    int t, nt, rows, ngroups, victim, min, done;
    uint64_t epoch;
} share;

static void share_begin(share *s, matvec_team *tm, int rows, size_t row_bytes) {
    s->t = omp_get_thread_num(), s->nt = omp_get_num_threads();
    s->rows = rows, s->ngroups = (rows + GROUP - 1) / GROUP, s->victim = 0, s->done = 0;
    s->min = (int)(MIN_CHUNK_BYTES / (row_bytes * GROUP)), s->min += s->min < 1;
    s->cur = tm && s->nt <= tm->n && s->ngroups <= (int)FIELD ? tm->cur : NULL;
    if (s->cur) s->epoch = s->cur[s->t].epoch = s->cur[s->t].epoch % 255 + 1;
}

/* Group range of thread u's own share. */
static inline int share_start(const share *s, int u) {
    return (int)((int64_t)s->ngroups * u / s->nt);
}

/* The next chunk of groups [*g0, *g1) for the calling thread: from the
 * front of its own share, then from the back of the others' (in turn from
 * the next thread on); 0 when all are taken. The first to touch a cursor in
 * a call sets it to its owner's share. Without cursors (a team larger than
 * the reset made, or outside any team), the own share in one piece. */
static int take_groups(share *s, int *g0, int *g1) {
    if (!s->cur) {
        if (s->done) return 0;
        s->done = 1;
        *g0 = share_start(s, s->t), *g1 = share_start(s, s->t + 1);
        return *g0 < *g1;
    }
    while (s->victim < s->nt) {
        const int u = (s->t + s->victim) % s->nt;
        _Atomic uint64_t *w = &s->cur[u].word;
        uint64_t old = atomic_load_explicit(w, memory_order_relaxed);
        if (old >> EPOCH_SHIFT != s->epoch) {
            atomic_compare_exchange_strong(
                w, &old, pack(s->epoch, share_start(s, u), share_start(s, u + 1)));
            continue;
        }
        const int next = (int)(old >> NEXT_SHIFT & FIELD), end = (int)(old & FIELD);
        if (next >= end) {
            s->victim++;
            continue;
        }
        const int left = end - next;
        uint64_t upd;
        if (u == s->t) { /* own share: a quarter of what is left, from the front */
            const int n = left / 4 > s->min ? left / 4 : s->min;
            *g0 = next, *g1 = n < left ? next + n : end;
            upd = pack(s->epoch, *g1, end);
        } else { /* another's: the back half of what is left */
            const int n = left / 2 > s->min ? left / 2 : s->min;
            *g1 = end, *g0 = n < left ? end - n : next;
            upd = pack(s->epoch, next, *g0);
        }
        if (atomic_compare_exchange_weak(w, &old, upd)) return 1;
    }
    return 0;
}

/* The same chunk as rows [*r0, *r1). */
static int share_take(share *s, int *r0, int *r1) {
    int g0, g1;
    if (!take_groups(s, &g0, &g1)) return 0;
    *r0 = g0 * GROUP, *r1 = g1 * GROUP < s->rows ? g1 * GROUP : s->rows;
    return 1;
}

static inline void put(float *out, int r, float y, const float *b, int accumulate) {
    if (b) y += b[r];
    out[r] = accumulate ? out[r] + y : y;
}

/* ------------------------------------------------------------- float32 */

#if defined(__AVX512F__)
static void rows_f32(float *out, const float *w, const float *x, const float *b, int C, int r0,
                     int r1, int accumulate) {
    const __mmask16 tail = (__mmask16)((1u << (C & 15)) - 1);
    for (int r = r0; r < r1; r++) {
        const float *wr = w + (size_t)r * C;
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        int i = 0;
        for (; i + 64 <= C; i += 64) {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + i), _mm512_loadu_ps(x + i), s0);
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + i + 16), _mm512_loadu_ps(x + i + 16), s1);
            s2 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + i + 32), _mm512_loadu_ps(x + i + 32), s2);
            s3 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + i + 48), _mm512_loadu_ps(x + i + 48), s3);
        }
        for (; i + 16 <= C; i += 16)
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + i), _mm512_loadu_ps(x + i), s0);
        if (tail)
            s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, wr + i),
                                 _mm512_maskz_loadu_ps(tail, x + i), s1);
        const __m512 s = _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3));
        put(out, r, _mm512_reduce_add_ps(s), b, accumulate);
    }
}
#else
/* Portable: 8 partial sums, which the compiler can keep in one vector. */
static void rows_f32(float *out, const float *w, const float *x, const float *b, int C, int r0,
                     int r1, int accumulate) {
    for (int r = r0; r < r1; r++) {
        const float *wr = w + (size_t)r * C;
        float s[8] = {0};
        int i = 0;
        for (; i + 8 <= C; i += 8)
            for (int j = 0; j < 8; j++) s[j] += wr[i + j] * x[i + j];
        for (; i < C; i++) s[i & 7] += wr[i] * x[i];
        put(out, r, ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])), b,
            accumulate);
    }
}
#endif

void matvec_f32_team(matvec_team *tm, float *out, const float *w, const float *x, const float *b,
                     int C, int OC, int accumulate) {
    share s;
    share_begin(&s, tm, OC, (size_t)C * sizeof(float));
    int r0, r1;
    while (share_take(&s, &r0, &r1)) rows_f32(out, w, x, b, C, r0, r1, accumulate);
#pragma omp barrier
}

/* The standalone kernels run a team of their own, cursors on the stack. */
static int standalone_threads(void) {
    const int nt = omp_get_max_threads();
    return nt < STANDALONE_THREADS ? nt : STANDALONE_THREADS;
}

void matvec_f32(float *out, const float *w, const float *x, const float *b, int C, int OC,
                int accumulate) {
    matvec_cursor cur[STANDALONE_THREADS];
    matvec_team tm = {cur, STANDALONE_THREADS};
    matvec_team_reset(&tm);
#pragma omp parallel num_threads(standalone_threads()) if ((size_t)OC * C >= PAR_MIN_WEIGHTS)
    matvec_f32_team(&tm, out, w, x, b, C, OC, accumulate);
}

/* ---------------------------------------------------------------- bf16 */

void bf16_pack_matrix(uint16_t *dst, const float *w, int OC, int C) {
    const int R = bf16_row(C);
#pragma omp parallel for schedule(static) if ((size_t)OC * C >= PAR_MIN_WEIGHTS)
    for (int r = 0; r < OC; r++) {
        const float *src = w + (size_t)r * C;
        uint16_t *row = dst + (size_t)r * R;
        for (int i = 0; i < R; i++) {
            const int k = i / 32 * 32, j = i % 32 / 2 + (i % 2) * 16; /* run k, weight j */
            row[i] = k + j < C ? rotary_f32_to_bf16(src[k + j]) : 0;
        }
    }
}

float bf16_weight(const uint16_t *m, int C, int r, int i) {
    const int k = i / 32 * 32, j = i % 32;
    return rotary_bf16_to_f32(m[(size_t)r * bf16_row(C) + k + (j % 16) * 2 + j / 16]);
}

#if defined(__AVX512F__)
static void rows_bf16(float *out, const uint16_t *w, const float *x, const float *b, int C,
                      int r0, int r1, int accumulate) {
    const int R = bf16_row(C), full = C / 32 * 32, left = C - full;
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    /* the last run's x: zeros past C (the weights there are zeros, but x
     * past C is another array's, maybe not finite) */
    const __mmask16 m0 = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    const __mmask16 m1 = left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
    for (int r = r0; r < r1; r++) {
        const uint16_t *wr = w + (size_t)r * R;
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        int i = 0;
        for (; i + 64 <= full; i += 64) {
            const __m512i v0 = _mm512_loadu_si512(wr + i), v1 = _mm512_loadu_si512(wr + i + 32);
            s0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v0, 16)),
                                 _mm512_loadu_ps(x + i), s0);
            s1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v0, hi)),
                                 _mm512_loadu_ps(x + i + 16), s1);
            s2 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v1, 16)),
                                 _mm512_loadu_ps(x + i + 32), s2);
            s3 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v1, hi)),
                                 _mm512_loadu_ps(x + i + 48), s3);
        }
        for (; i < R; i += 32) {
            const __m512i v = _mm512_loadu_si512(wr + i);
            const __m512 x0 = i < full ? _mm512_loadu_ps(x + i) : _mm512_maskz_loadu_ps(m0, x + i);
            const __m512 x1 =
                i < full ? _mm512_loadu_ps(x + i + 16) : _mm512_maskz_loadu_ps(m1, x + i + 16);
            s0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), x0, s0);
            s1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, hi)), x1, s1);
        }
        const __m512 s = _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3));
        put(out, r, _mm512_reduce_add_ps(s), b, accumulate);
    }
}
#else
static void rows_bf16(float *out, const uint16_t *w, const float *x, const float *b, int C,
                      int r0, int r1, int accumulate) {
    const int R = bf16_row(C);
    for (int r = r0; r < r1; r++) {
        const uint16_t *wr = w + (size_t)r * R;
        float s[16] = {0};
        for (int k = 0; k < R; k += 32)
            for (int j = 0; j < 16; j++) {
                const float lo = rotary_bf16_to_f32(wr[k + 2 * j]);
                const float hi = rotary_bf16_to_f32(wr[k + 2 * j + 1]);
                s[j] += lo * (k + j < C ? x[k + j] : 0.0f);
                s[j] += hi * (k + j + 16 < C ? x[k + j + 16] : 0.0f);
            }
        float y = 0;
        for (int j = 0; j < 16; j++) y += s[j];
        put(out, r, y, b, accumulate);
    }
}
#endif

void matvec_bf16_team(matvec_team *tm, float *out, const uint16_t *w, const float *x,
                      const float *b, int C, int OC, int accumulate) {
    share s;
    share_begin(&s, tm, OC, (size_t)bf16_row(C) * sizeof(uint16_t));
    int r0, r1;
    while (share_take(&s, &r0, &r1)) rows_bf16(out, w, x, b, C, r0, r1, accumulate);
#pragma omp barrier
}

void matvec_bf16(float *out, const uint16_t *w, const float *x, const float *b, int C, int OC,
                 int accumulate) {
    matvec_cursor cur[STANDALONE_THREADS];
    matvec_team tm = {cur, STANDALONE_THREADS};
    matvec_team_reset(&tm);
#pragma omp parallel num_threads(standalone_threads()) if ((size_t)OC * C >= PAR_MIN_WEIGHTS)
    matvec_bf16_team(&tm, out, w, x, b, C, OC, accumulate);
}

/* ---------------------------------------------------- Q8_0 quantization */

/* Round to nearest, ties to even, for |v| < 2^22: adding 1.5 * 2^23 leaves
 * no fraction bits. Vectorises, unlike lrintf. */
static inline float round_even(float v) { return (v + 12582912.0f) - 12582912.0f; }

static inline float clamp127(float v) { return v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v; }

static float absmax(const float *x, int n) {
    float m = 0;
#pragma omp simd reduction(max : m)
    for (int i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

size_t q8_matrix_bytes(int OC, int C) {
    return (size_t)OC * (size_t)q8_blocks(C) * (Q8_BLOCK + sizeof(uint16_t));
}

void q8_quantize_row(uint8_t *u, uint16_t *d, const float *src, int C) {
    const int nb = q8_blocks(C);
    for (int k = 0; k < nb; k++) {
        const int n = C - k * Q8_BLOCK < Q8_BLOCK ? C - k * Q8_BLOCK : Q8_BLOCK;
        const float *x = src + (size_t)k * Q8_BLOCK;
        uint8_t *uk = u + (size_t)k * Q8_BLOCK;
        const uint16_t dh = rotary_f32_to_f16(absmax(x, n) / 127.0f);
        const float dk = rotary_f16_to_f32(dh), id = dk > 0 ? 1.0f / dk : 0.0f;
        d[k] = dh;
        for (int i = 0; i < n; i++)
            uk[i] = (uint8_t)(int)(clamp127(round_even(x[i] * id)) + 128.0f);
        for (int i = n; i < Q8_BLOCK; i++) uk[i] = 128;
    }
}

void q8_quantize_matrix(void *dst, const float *w, int OC, int C) {
    const size_t nb = (size_t)q8_blocks(C);
    uint8_t *u = (uint8_t *)dst;
    uint16_t *d = (uint16_t *)(void *)((char *)dst + (size_t)OC * nb * Q8_BLOCK);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < OC; r++)
        q8_quantize_row(u + (size_t)r * nb * Q8_BLOCK, d + (size_t)r * nb, w + (size_t)r * C, C);
}

void q8_dequantize_row(float *dst, const void *m, int OC, int C, int r) {
    const size_t nb = (size_t)q8_blocks(C);
    const uint8_t *u = q8_matrix_u(m) + (size_t)r * nb * Q8_BLOCK;
    const uint16_t *d = q8_matrix_d(m, OC, C) + (size_t)r * nb;
    for (int i = 0; i < C; i++) dst[i] = rotary_f16_to_f32(d[i / Q8_BLOCK]) * (float)(u[i] - 128);
}

/* The input is padded to a multiple of 16 blocks, so the kernel can load
 * 16 scales and 2 blocks (64 bytes) at a time without looking past it. */
static inline size_t act_blocks(int C) { return ((size_t)q8_blocks(C) + 15) & ~(size_t)15; }

size_t q8_act_bytes(int C) {
    const size_t nbp = act_blocks(C);
    /* per block: q 32 bytes, corr 8 int32, d 1 float */
    return nbp * (Q8_BLOCK + 8 * 4 + 4);
}

q8_act q8_act_view(void *scratch, int C) {
    const size_t nbp = act_blocks(C);
    unsigned char *p = scratch;
    q8_act a;
    a.q = (int8_t *)p, p += nbp * Q8_BLOCK;
    a.corr = (int32_t *)(void *)p, p += nbp * 8 * 4;
    a.d = (float *)(void *)p;
    return a;
}

void q8_quantize_act(q8_act *a, const float *x, int C) {
    const int nbp = (int)act_blocks(C);
#ifdef Q8_AVX512
    /* The same numbers as the C below (rounding to nearest even: the
     * default mode of the conversion), ~10x faster: it runs before every
     * int8 product, in every thread. */
    const __m512 sign = _mm512_set1_ps(-0.0f);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    const __m256i ones = _mm256_set1_epi8(1);
    for (int k = 0; k < nbp; k++) {
        const int left = C - k * Q8_BLOCK, n = left < 0 ? 0 : left < Q8_BLOCK ? left : Q8_BLOCK;
        const __mmask32 m = n == Q8_BLOCK ? 0xffffffffu : (__mmask32)((1ull << n) - 1);
        const float *xb = x + (size_t)k * Q8_BLOCK;
        const __m512 v0 = _mm512_maskz_loadu_ps((__mmask16)m, xb);
        const __m512 v1 = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), xb + 16);
        const float amax = _mm512_reduce_max_ps(
            _mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1)));
        const float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        const __m512 s = _mm512_set1_ps(id);
#define Q8_INT(v) _mm512_min_epi32(hi, _mm512_max_epi32(lo, _mm512_cvtps_epi32(_mm512_mul_ps(v, s))))
        const __m512i i0 = Q8_INT(v0), i1 = Q8_INT(v1);
#undef Q8_INT
        const __m256i q = _mm256_set_m128i(_mm512_cvtepi32_epi8(i1), _mm512_cvtepi32_epi8(i0));
        _mm256_store_si256((void *)(a->q + (size_t)k * Q8_BLOCK), q);
        /* sums of each 4 q: vpdpbusd with ones as the unsigned operand */
        const __m256i s4 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, q);
        _mm256_store_si256((void *)(a->corr + (size_t)k * 8),
                           _mm256_mullo_epi32(s4, _mm256_set1_epi32(-128)));
        a->d[k] = n ? d : 0.0f;
    }
#else
    const int nb = q8_blocks(C);
    for (int k = 0; k < nb; k++) {
        const int n = C - k * Q8_BLOCK < Q8_BLOCK ? C - k * Q8_BLOCK : Q8_BLOCK;
        const float *xb = x + (size_t)k * Q8_BLOCK;
        const float d = absmax(xb, n) / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        int8_t *q = a->q + (size_t)k * Q8_BLOCK;
        a->d[k] = d;
#pragma omp simd
        for (int i = 0; i < n; i++) q[i] = (int8_t)clamp127(round_even(xb[i] * id));
    }
    const size_t used = (size_t)C, all = (size_t)nbp * Q8_BLOCK;
    memset(a->q + used, 0, all - used);
    for (int k = nb; k < nbp; k++) a->d[k] = 0;
    for (size_t j = 0; j < all / 4; j++)
        a->corr[j] = -128 * (a->q[4 * j] + a->q[4 * j + 1] + a->q[4 * j + 2] + a->q[4 * j + 3]);
#endif
}

/* -------------------------------------------------------- Q8_0 product */

#ifdef Q8_AVX512
#ifndef Q8_PREFETCH
#define Q8_PREFETCH 4096
#endif

/* 16 scales d_w * d_x for blocks k0 .. k0+nk-1 of a row (0 past nk). The
 * 32-byte load of d is masked only where it would read past the end of the
 * matrix (left: the scales from k0's row onwards). */
static inline __m512 scales16(const uint16_t *d, const q8_act *a, int k0, int nk, size_t left) {
    const __mmask16 dm = (__mmask16)((1u << nk) - 1);
    const __m256i dh = left - (size_t)k0 < 16 ? _mm256_maskz_loadu_epi16(dm, d + k0)
                                              : _mm256_loadu_si256((const void *)(d + k0));
    return _mm512_maskz_mul_ps(dm, _mm512_cvtph_ps(dh), _mm512_load_ps(a->d + k0));
}

/* Lanes 0-7 take scale j, lanes 8-15 scale j + 1: a vpermps index. */
static inline __m512i pair_index(int j) {
    const int lo = j, hi = j + 1;
    return _mm512_set_epi32(hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo);
}

/* One row, two blocks (64 bytes, one cache line) per 512-bit vpdpbusd: it
 * multiplies the unsigned u = q + 128 by the signed x and adds groups of 4
 * products to 16 int32 lanes that start at -128 * (the sum of those 4 x),
 * so the lanes end as exact partial sums of q x, 8 per block. Their float
 * conversion is multiplied by the blocks' d_w * d_x (a permute spreads the
 * two scales over the two halves, from 16 scales converted at once) and
 * added to one of two accumulators; an odd last block takes a 256-bit step.
 * Decoding with 2 threads (bench/decode with the two kernels taking turns
 * in one process), this form's median tokens/s was 0-7% above the 256-bit
 * form with one block per step: it issues about half the instructions per
 * byte (15-30% faster on data in cache), but from memory the kernel is
 * limited by streaming, not by arithmetic: only loading the rows and their
 * scales is no faster (bench/README.md). Tried and no better from memory: two rows sharing the
 * loads of x (two streams per thread), four accumulators, starting the sums
 * from zero and adding -128 sum x per 16 blocks in floats, a software
 * prefetch of the scales, prefetching a new chunk's first 4 KiB at once,
 * prefetching to L2 only, smaller chunks at the end of the (former)
 * guided schedule, and storing each 16 rows' scales after those rows (slower).
 * The software prefetch, Q8_PREFETCH bytes ahead on the row's stream, adds
 * 20-30% (measured with the 256-bit form); 4-16 KiB ahead did about as
 * well. */
static void row_q8(float *out, const uint8_t *U, const uint16_t *D, const q8_act *a,
                   const float *b, int nb, int r, int rows_left, int accumulate) {
    const uint8_t *u = U + (size_t)r * nb * Q8_BLOCK;
    const uint16_t *d = D + (size_t)r * nb;
    const char *pf = (const char *)u + Q8_PREFETCH;
    const size_t left = (size_t)rows_left * nb;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
#define Q8_PAIR(acc, k, j)                                                                  \
    acc = _mm512_fmadd_ps(                                                                  \
        _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(                                             \
            _mm512_load_si512((const void *)(a->corr + 8 * (k))),                           \
            _mm512_loadu_si512((const void *)(u + Q8_BLOCK * (k))),                         \
            _mm512_load_si512((const void *)(a->q + Q8_BLOCK * (k))))),                     \
        _mm512_permutexvar_ps(pair_index(j), s), acc)
#define Q8_QUAD(k0, j)                                                                      \
    do {                                                                                    \
        _mm_prefetch(pf + Q8_BLOCK * ((k0) + (j)), _MM_HINT_T0);                            \
        _mm_prefetch(pf + Q8_BLOCK * ((k0) + (j) + 2), _MM_HINT_T0);                        \
        Q8_PAIR(acc0, (k0) + (j), j);                                                       \
        Q8_PAIR(acc1, (k0) + (j) + 2, (j) + 2);                                             \
    } while (0)
    int k0 = 0;
    for (; k0 + 16 <= nb; k0 += 16) {
        const __m512 s = scales16(d, a, k0, 16, left);
#pragma GCC unroll 4
        for (int j = 0; j < 16; j += 4) Q8_QUAD(k0, j);
    }
    if (k0 < nb) { /* the last 1-15 blocks */
        const int nk = nb - k0;
        const __m512 s = scales16(d, a, k0, nk, left);
        int j = 0;
        for (; j + 4 <= nk; j += 4) Q8_QUAD(k0, j);
        if (j + 2 <= nk) {
            Q8_PAIR(acc0, k0 + j, j);
            j += 2;
        }
        if (j < nk) {
            const int k = k0 + j;
            const __m256i p = _mm256_dpbusd_epi32(
                _mm256_load_si256((const void *)(a->corr + 8 * k)),
                _mm256_loadu_si256((const void *)(u + Q8_BLOCK * k)),
                _mm256_load_si256((const void *)(a->q + Q8_BLOCK * k)));
            /* zero-extended: a cast leaves the upper half undefined, and
             * 0 times a NaN there would poison the sum */
            acc1 = _mm512_fmadd_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(p)),
                                   _mm512_maskz_permutexvar_ps(0x00ff, pair_index(j), s), acc1);
        }
    }
#undef Q8_QUAD
#undef Q8_PAIR
    const __m512 acc = _mm512_add_ps(acc0, acc1);
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    t = _mm_add_ss(t, _mm_movehdup_ps(t));
    put(out, r, _mm_cvtss_f32(t), b, accumulate);
}

static void rows_q8(float *out, const uint8_t *U, const uint16_t *D, const q8_act *a,
                    const float *b, int nb, int r0, int r1, int OC, int accumulate) {
    for (int r = r0; r < r1; r++) row_q8(out, U, D, a, b, nb, r, OC - r, accumulate);
}
#else
static void rows_q8(float *out, const uint8_t *U, const uint16_t *D, const q8_act *a,
                    const float *b, int nb, int r0, int r1, int OC, int accumulate) {
    (void)OC;
    for (int r = r0; r < r1; r++) {
        const uint8_t *ur = U + (size_t)r * nb * Q8_BLOCK;
        const uint16_t *dr = D + (size_t)r * nb;
        float y = 0;
        for (int k = 0; k < nb; k++) {
            const uint8_t *wu = ur + (size_t)k * Q8_BLOCK;
            const int8_t *xq = a->q + (size_t)k * Q8_BLOCK;
            /* sum u x - 128 sum x: GCC 12 vectorises sum (u - 128) x (and
             * sum (int8_t)(u ^ 128) x) for VNNI targets into wrong code */
            int32_t s = 0, sx = 0;
            for (int i = 0; i < Q8_BLOCK; i++) s += wu[i] * xq[i], sx += xq[i];
            s -= 128 * sx;
            y += (float)s * (rotary_f16_to_f32(dr[k]) * a->d[k]);
        }
        put(out, r, y, b, accumulate);
    }
}
#endif

void matvec_q8_act_team(matvec_team *tm, float *out, const void *w, const q8_act *a,
                        const float *b, int C, int OC, int accumulate) {
    const int nb = q8_blocks(C);
    const uint8_t *U = q8_matrix_u(w);
    const uint16_t *D = q8_matrix_d(w, OC, C);
    share s;
    share_begin(&s, tm, OC, (size_t)nb * (Q8_BLOCK + 2));
    int r0, r1;
    while (share_take(&s, &r0, &r1)) rows_q8(out, U, D, a, b, nb, r0, r1, OC, accumulate);
#pragma omp barrier
}

void matvec_q8_act(float *out, const void *w, const q8_act *a, const float *b, int C, int OC,
                   int accumulate) {
    matvec_cursor cur[STANDALONE_THREADS];
    matvec_team tm = {cur, STANDALONE_THREADS};
    matvec_team_reset(&tm);
#pragma omp parallel num_threads(standalone_threads()) if ((size_t)OC * C >= PAR_MIN_WEIGHTS)
    matvec_q8_act_team(&tm, out, w, a, b, C, OC, accumulate);
}

void matvec_q8(float *out, const void *w, const float *x, const float *b, int C, int OC,
               int accumulate, void *scratch) {
    q8_act a = q8_act_view(scratch, C);
    q8_quantize_act(&a, x, C);
    matvec_q8_act(out, w, &a, b, C, OC, accumulate);
}
