/* attention.c: causal softmax attention with grouped-query heads.
 *
 * Each (batch, head) pair is an independent problem. Instead of one BLAS
 * call per head over the full T x T square (small GEMMs, half of them
 * masked away), two register-blocked kernels walk the causal triangle only:
 * scores4 (four query rows against sixteen keys at a time) and wsum4 (four
 * weighted sums of rows at a time). At the head sizes of the models we train
 * (32-128) this is about 1.8x faster than the BLAS formulation end to end
 * (bench/README.md). Other head sizes take plain loops. */
#include "ops.h"

#include <math.h>
#include <omp.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));

static int round16(int n) { return (n + 15) & ~15; }

/* dst (d, ldd) = src (n rows of d floats, `stride` apart) transposed; columns
 * n..ldd-1 are zeroed so kernels may read whole vectors. */
static void transpose(float *dst, int ldd, const float *src, int n, int d, int stride) {
    for (int i = 0; i < d; i++) {
        float *o = dst + (size_t)i * ldd;
        for (int t = 0; t < n; t++) o[t] = src[(size_t)t * stride + i];
        for (int t = n; t < ldd; t++) o[t] = 0.0f;
    }
}

/* sc_r[j] = scale * (a_r . b_j) for r < rows (<= 4) and j < n (n a multiple
 * of 16), a_r = a + r*lda, bt (d, ldb) holding the b_j as columns. Rows past
 * `rows` repeat the last one (computed, never meaningful). */
static void scores4(float *sc, int ldsc, const float *a, int lda, const float *bt, int ldb,
                    int n, int d, float scale, int rows) {
    const float *a0 = a, *a1 = a + (rows > 1) * lda, *a2 = a + (rows > 2 ? 2 : rows - 1) * lda;
    const float *a3 = a + (rows > 3 ? 3 : rows - 1) * lda;
    for (int j = 0; j < n; j += 16) {
        v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        for (int i = 0; i < d; i++) {
            v16 b = *(const v16 *)(bt + (size_t)i * ldb + j);
            s0 += a0[i] * b;
            s1 += a1[i] * b;
            s2 += a2[i] * b;
            s3 += a3[i] * b;
        }
        *(v16 *)(sc + j) = s0 * scale;
        *(v16 *)(sc + ldsc + j) = s1 * scale;
        *(v16 *)(sc + 2 * ldsc + j) = s2 * scale;
        *(v16 *)(sc + 3 * ldsc + j) = s3 * scale;
    }
}

/* out_r (+)= sum_{j0 <= j < j1} w_r[j] * x_j for r < rows (<= 4);
 * w_r = w + r*ldw, x_j = x + j*ldx, out_r = out + r*ldo. One function per
 * head size d = 16*NC so the 4*NC accumulators live in registers. */
#define DEFINE_WSUM4(NC)                                                                     \
    static void wsum4_##NC(float *out, int ldo, const float *w, int ldw, const float *x,    \
                           int ldx, int j0, int j1, int rows, int acc) {                    \
        const float *w0 = w, *w1 = w + (rows > 1) * ldw;                                     \
        const float *w2 = w + (rows > 2 ? 2 : rows - 1) * ldw;                               \
        const float *w3 = w + (rows > 3 ? 3 : rows - 1) * ldw;                               \
        v16 o0[NC], o1[NC], o2[NC], o3[NC];                                                  \
        _Pragma("GCC unroll 8")                                                              \
        for (int c = 0; c < NC; c++) o0[c] = o1[c] = o2[c] = o3[c] = (v16){0};               \
        for (int j = j0; j < j1; j++) {                                                      \
            const float *xj = x + (size_t)j * ldx;                                           \
            _Pragma("GCC unroll 8")                                                          \
            for (int c = 0; c < NC; c++) {                                                   \
                v16 v = *(const v16 *)(xj + 16 * c);                                         \
                o0[c] += w0[j] * v;                                                          \
                o1[c] += w1[j] * v;                                                          \
                o2[c] += w2[j] * v;                                                          \
                o3[c] += w3[j] * v;                                                          \
            }                                                                                \
        }                                                                                    \
        _Pragma("GCC unroll 8")                                                              \
        for (int c = 0; c < NC; c++) {                                                       \
            v16 *d0 = (v16 *)(out + 16 * c), *d1 = (v16 *)(out + ldo + 16 * c);              \
            v16 *d2 = (v16 *)(out + 2 * ldo + 16 * c), *d3 = (v16 *)(out + 3 * ldo + 16 * c); \
            *d0 = acc ? *d0 + o0[c] : o0[c];                                                 \
            if (rows > 1) *d1 = acc ? *d1 + o1[c] : o1[c];                                   \
            if (rows > 2) *d2 = acc ? *d2 + o2[c] : o2[c];                                   \
            if (rows > 3) *d3 = acc ? *d3 + o3[c] : o3[c];                                   \
        }                                                                                    \
    }
DEFINE_WSUM4(1)
DEFINE_WSUM4(2)
DEFINE_WSUM4(3)
DEFINE_WSUM4(4)
DEFINE_WSUM4(6)
DEFINE_WSUM4(8)

static void wsum4(float *out, int ldo, const float *w, int ldw, const float *x, int ldx, int j0,
                  int j1, int d, int rows, int acc) {
    switch (d) {
    case 16: wsum4_1(out, ldo, w, ldw, x, ldx, j0, j1, rows, acc); return;
    case 32: wsum4_2(out, ldo, w, ldw, x, ldx, j0, j1, rows, acc); return;
    case 48: wsum4_3(out, ldo, w, ldw, x, ldx, j0, j1, rows, acc); return;
    case 64: wsum4_4(out, ldo, w, ldw, x, ldx, j0, j1, rows, acc); return;
    case 96: wsum4_6(out, ldo, w, ldw, x, ldx, j0, j1, rows, acc); return;
    case 128: wsum4_8(out, ldo, w, ldw, x, ldx, j0, j1, rows, acc); return;
    }
    for (int r = 0; r < rows; r++) {
        float *o = out + (size_t)r * ldo;
        if (!acc) memset(o, 0, (size_t)d * sizeof(float));
        for (int j = j0; j < j1; j++) {
            const float wj = w[(size_t)r * ldw + j], *xj = x + (size_t)j * ldx;
            for (int c = 0; c < d; c++) o[c] += wj * xj[c];
        }
    }
}

/* Scores for the general case: the same contract as scores4 by plain loops. */
static void scores_any(float *sc, int ldsc, const float *a, int lda, const float *bt, int ldb,
                       int n, int d, float scale, int rows) {
    for (int r = 0; r < rows; r++) {
        float *s = sc + (size_t)r * ldsc;
        for (int j = 0; j < n; j++) s[j] = 0.0f;
        for (int i = 0; i < d; i++) {
            const float ai = a[(size_t)r * lda + i] * scale, *b = bt + (size_t)i * ldb;
            for (int j = 0; j < n; j++) s[j] += ai * b[j];
        }
    }
}

static void scores(float *sc, int ldsc, const float *a, int lda, const float *bt, int ldb, int n,
                   int d, float scale, int rows) {
    if (d % 16 == 0) scores4(sc, ldsc, a, lda, bt, ldb, n, d, scale, rows);
    else scores_any(sc, ldsc, a, lda, bt, ldb, n, d, scale, rows);
}

void attention_forward(float *out, float *att, const float *qkv, const float *alibi,
                       const float *dist_bias, int B, int T, int nh, int nkv, int hd,
                       float *scratch) {
    const int S = (nh + 2 * nkv) * hd; /* floats per token in qkv */
    const int group = nh / nkv, Tp = round16(T), ldo = nh * hd;
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < nh; h++) {
            float *kt = scratch + (size_t)omp_get_thread_num() * ATTN_SCRATCH(T, hd);
            float *sc = kt + (size_t)hd * Tp; /* 4 rows of Tp scores */
            const float *q = qkv + (size_t)b * T * S + h * hd;
            const float *k = qkv + (size_t)b * T * S + (nh + h / group) * hd;
            const float *v = k + nkv * hd;
            float *p = att + ((size_t)b * nh + h) * T * T;
            const float slope = alibi ? alibi[h] : 0.0f;
            const float *db = dist_bias ? dist_bias + (size_t)h * T : NULL;
            transpose(kt, Tp, k, T, hd, S);
            for (int t0 = 0; t0 < T; t0 += 4) {
                const int rows = T - t0 < 4 ? T - t0 : 4;
                scores(sc, Tp, q + (size_t)t0 * S, S, kt, Tp, round16(t0 + rows), hd, scale, rows);
                for (int r = 0; r < rows; r++) {
                    const int t = t0 + r;
                    const float *s = sc + (size_t)r * Tp;
                    float *row = p + (size_t)t * T, mx = -INFINITY, sum = 0.0f;
                    if (db) {
#pragma omp simd reduction(max : mx)
                        for (int j = 0; j <= t; j++) {
                            const float x = s[j] + db[t - j];
                            row[j] = x;
                            mx = x > mx ? x : mx;
                        }
                    } else {
#pragma omp simd reduction(max : mx)
                        for (int j = 0; j <= t; j++) {
                            const float x = s[j] - slope * (float)(t - j);
                            row[j] = x;
                            mx = x > mx ? x : mx;
                        }
                    }
#pragma omp simd reduction(+ : sum)
                    for (int j = 0; j <= t; j++) {
                        const float e = rotary_expf(row[j] - mx);
                        row[j] = e;
                        sum += e;
                    }
                    const float inv = 1.0f / sum;
#pragma omp simd
                    for (int j = 0; j <= t; j++) row[j] *= inv;
                    for (int j = t + 1; j < T; j++) row[j] = 0.0f;
                }
                wsum4(out + ((size_t)b * T + t0) * ldo + h * hd, ldo, p + (size_t)t0 * T, T, v, S, 0,
                      t0 + rows, hd, rows, 0);
            }
        }
    }
}

/* acc_j (+)= sum_{r < rows} w_r[j] * x_r for j in [0, n): a rank-4 update,
 * x_r = x + r*ldx (rows of d floats), w_r = w + r*ldw, acc_j = acc + j*lda.
 * Used for dk = ds^T q and dv = p^T dO without transposing ds or p. */
#define DEFINE_RANK4(NC)                                                                     \
    static void rank4_##NC(float *acc, int lda, const float *w, int ldw, const float *x,    \
                           int ldx, int n, int rows) {                                       \
        v16 x0[NC], x1[NC], x2[NC], x3[NC];                                                  \
        const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;            \
        _Pragma("GCC unroll 8")                                                              \
        for (int c = 0; c < NC; c++) {                                                       \
            x0[c] = *(const v16 *)(x + 16 * c);                                              \
            x1[c] = rows > 1 ? *(const v16 *)(x + ldx + 16 * c) : (v16){0};                  \
            x2[c] = rows > 2 ? *(const v16 *)(x + 2 * ldx + 16 * c) : (v16){0};              \
            x3[c] = rows > 3 ? *(const v16 *)(x + 3 * ldx + 16 * c) : (v16){0};              \
        }                                                                                    \
        if (rows < 4) w3 = w0;                                                               \
        if (rows < 3) w2 = w0;                                                               \
        if (rows < 2) w1 = w0;                                                               \
        for (int j = 0; j < n; j++) {                                                        \
            v16 *a = (v16 *)(acc + (size_t)j * lda);                                         \
            _Pragma("GCC unroll 8")                                                          \
            for (int c = 0; c < NC; c++)                                                     \
                a[c] += w0[j] * x0[c] + w1[j] * x1[c] + w2[j] * x2[c] + w3[j] * x3[c];      \
        }                                                                                    \
    }
DEFINE_RANK4(1)
DEFINE_RANK4(2)
DEFINE_RANK4(3)
DEFINE_RANK4(4)
DEFINE_RANK4(6)
DEFINE_RANK4(8)

static void rank4(float *acc, int lda, const float *w, int ldw, const float *x, int ldx, int n,
                  int d, int rows) {
    switch (d) {
    case 16: rank4_1(acc, lda, w, ldw, x, ldx, n, rows); return;
    case 32: rank4_2(acc, lda, w, ldw, x, ldx, n, rows); return;
    case 48: rank4_3(acc, lda, w, ldw, x, ldx, n, rows); return;
    case 64: rank4_4(acc, lda, w, ldw, x, ldx, n, rows); return;
    case 96: rank4_6(acc, lda, w, ldw, x, ldx, n, rows); return;
    case 128: rank4_8(acc, lda, w, ldw, x, ldx, n, rows); return;
    }
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < n; j++) {
            const float wj = w[(size_t)r * ldw + j], *xr = x + (size_t)r * ldx;
            float *a = acc + (size_t)j * lda;
            for (int c = 0; c < d; c++) a[c] += wj * xr[c];
        }
}

void attention_backward(float *dqkv, float *dbias, float *scratch, const float *dout,
                        const float *qkv, const float *att, int B, int T, int nh,
                        int nkv, int hd) {
    const int S = (nh + 2 * nkv) * hd;
    const int group = nh / nkv, Tp = round16(T), ldo = nh * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    /* One task per (batch, kv head): the query heads of a group add into the
     * same dk, dv, so they run in order inside one task. */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < nkv; g++) {
            float *vt = scratch + (size_t)omp_get_thread_num() * ATTN_SCRATCH(T, hd);
            float *sc = vt + (size_t)hd * Tp;  /* 4 x Tp: dp, then ds */
            const float *base = qkv + (size_t)b * T * S;
            float *dbase = dqkv + (size_t)b * T * S;
            const float *k = base + (nh + g) * hd, *v = k + nkv * hd;
            float *dk = dbase + (nh + g) * hd, *dv = dk + nkv * hd;
            for (int t = 0; t < T; t++) {
                memset(dk + (size_t)t * S, 0, (size_t)hd * sizeof(float));
                memset(dv + (size_t)t * S, 0, (size_t)hd * sizeof(float));
            }
            transpose(vt, Tp, v, T, hd, S);
            for (int i = 0; i < group; i++) {
                const int h = g * group + i;
                const float *q = base + h * hd, *p = att + ((size_t)b * nh + h) * T * T;
                const float *dO = dout + (size_t)b * T * ldo + h * hd;
                float *dq = dbase + h * hd;
                /* This task owns row (b, h) of dbias: a fixed summation order. */
                float *db = dbias ? dbias + ((size_t)b * nh + h) * T : NULL;
                if (db) memset(db, 0, (size_t)T * sizeof(float));
                for (int t0 = 0; t0 < T; t0 += 4) {
                    const int rows = T - t0 < 4 ? T - t0 : 4, n = t0 + rows;
                    /* dp = dO v^T, then ds = p * (dp - rowsum(p * dp)) * scale */
                    scores(sc, Tp, dO + (size_t)t0 * ldo, ldo, vt, Tp, round16(n), hd, 1.0f, rows);
                    for (int r = 0; r < rows; r++) {
                        const int t = t0 + r;
                        const float *pr = p + (size_t)t * T;
                        float *d = sc + (size_t)r * Tp, dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                        for (int j = 0; j <= t; j++) dot += pr[j] * d[j];
                        if (db) {
#pragma omp simd
                            for (int j = 0; j <= t; j++) {
                                const float ds = pr[j] * (d[j] - dot); /* d loss / d score */
                                db[t - j] += ds;
                                d[j] = ds * scale;
                            }
                        } else {
#pragma omp simd
                            for (int j = 0; j <= t; j++) d[j] = pr[j] * (d[j] - dot) * scale;
                        }
                        for (int j = t + 1; j < n; j++) d[j] = 0.0f;
                    }
                    /* dq_t = sum_j ds_tj k_j; dk_j += ds_tj q_t; dv_j += p_tj dO_t */
                    wsum4(dq + (size_t)t0 * S, S, sc, Tp, k, S, 0, n, hd, rows, 0);
                    rank4(dk, S, sc, Tp, q + (size_t)t0 * S, S, n, hd, rows);
                    rank4(dv, S, p + (size_t)t0 * T, T, dO + (size_t)t0 * ldo, ldo, n, hd, rows);
                }
            }
        }
    }
}

/* -------------------------------------------------------- linear attention */

void linear_attention_update(float *S, float *z, const float *rk, const float *fk,
                             const float *v, int hd) {
    for (int a = 0; a < hd; a++) {
        float *s = S + (size_t)a * hd;
        const float r = rk[a];
#pragma omp simd
        for (int c = 0; c < hd; c++) s[c] += r * v[c];
        z[a] += fk[a];
    }
}

float linear_attention_query(float *out, const float *S, const float *z, const float *rq,
                             const float *fq, int hd) {
    float den = 0.0f;
    for (int c = 0; c < hd; c++) out[c] = 0.0f;
    for (int a = 0; a < hd; a++) {
        const float *s = S + (size_t)a * hd, r = rq[a];
#pragma omp simd
        for (int c = 0; c < hd; c++) out[c] += r * s[c];
        den += fq[a] * z[a];
    }
    for (int c = 0; c < hd; c++) out[c] /= den;
    return den;
}

void linear_attention_forward(float *out, float *den, const float *feat, const float *rfeat,
                              const float *qkv, int B, int T, int nh, int nkv, int hd,
                              float *scratch) {
    const int S = (nh + 2 * nkv) * hd, Fs = (nh + nkv) * hd, group = nh / nkv, ldo = nh * hd;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < nkv; g++) {
            float *St = scratch + (size_t)omp_get_thread_num() * LINATTN_SCRATCH(hd);
            float *z = St + (size_t)hd * hd;
            memset(St, 0, ((size_t)hd * hd + hd) * sizeof(float));
            for (int t = 0; t < T; t++) {
                const size_t n = (size_t)b * T + t;
                const float *f = feat + n * Fs, *r = rfeat + n * Fs;
                const float *v = qkv + n * S + (nh + nkv + g) * hd;
                linear_attention_update(St, z, r + (nh + g) * hd, f + (nh + g) * hd, v, hd);
                for (int h = g * group; h < (g + 1) * group; h++)
                    den[n * nh + h] = linear_attention_query(out + n * ldo + h * hd, St, z,
                                                             r + h * hd, f + h * hd, hd);
            }
        }
    }
}

/* out = num / den: dnum (hd) = dout / den; returns dden = -(dout . out) / den. */
static float linear_grad_num(float *dnum, const float *dO, const float *o, float den, int hd) {
    float dot = 0.0f;
    for (int c = 0; c < hd; c++) {
        dnum[c] = dO[c] / den;
        dot += dO[c] * o[c];
    }
    return -dot / den;
}

void linear_attention_backward(float *dfeat, float *drfeat, float *dqkv, float *scratch,
                               const float *dout, const float *feat, const float *rfeat,
                               const float *qkv, const float *out, const float *den, int B,
                               int T, int nh, int nkv, int hd) {
    const int S = (nh + 2 * nkv) * hd, Fs = (nh + nkv) * hd, group = nh / nkv, ldo = nh * hd;
    /* One task per (batch, kv head): its query heads, its k and v. */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < nkv; g++) {
            float *M = scratch + (size_t)omp_get_thread_num() * LINATTN_SCRATCH(hd);
            float *z = M + (size_t)hd * hd, *dn = z + hd;
            /* Query side, forward in time: S_t, z_t recomputed;
             * drq_t = S_t dnum_t, dfq_t = dden_t z_t. */
            memset(M, 0, ((size_t)hd * hd + hd) * sizeof(float));
            for (int t = 0; t < T; t++) {
                const size_t n = (size_t)b * T + t;
                const float *f = feat + n * Fs, *r = rfeat + n * Fs;
                const float *v = qkv + n * S + (nh + nkv + g) * hd;
                linear_attention_update(M, z, r + (nh + g) * hd, f + (nh + g) * hd, v, hd);
                for (int h = g * group; h < (g + 1) * group; h++) {
                    const float dd = linear_grad_num(dn, dout + n * ldo + h * hd,
                                                     out + n * ldo + h * hd, den[n * nh + h], hd);
                    float *drq = drfeat + n * Fs + h * hd, *dfq = dfeat + n * Fs + h * hd;
                    for (int a = 0; a < hd; a++) {
                        const float *m = M + (size_t)a * hd;
                        float s = 0.0f;
                        for (int c = 0; c < hd; c++) s += m[c] * dn[c];
                        drq[a] = s;
                        dfq[a] = dd * z[a];
                    }
                }
            }
            /* Key side, backward in time: U_t = sum_{i>=t} rq_i dnum_i^T (in M)
             * and w_t = sum_{i>=t} dden_i fq_i (in z) are what reach S_i and
             * z_i for every i >= t; drk_t = U_t v_t, dv_t = U_t^T rk_t,
             * dfk_t = w_t. */
            memset(M, 0, ((size_t)hd * hd + hd) * sizeof(float));
            for (int t = T - 1; t >= 0; t--) {
                const size_t n = (size_t)b * T + t;
                const float *f = feat + n * Fs, *r = rfeat + n * Fs;
                for (int h = g * group; h < (g + 1) * group; h++) {
                    const float dd = linear_grad_num(dn, dout + n * ldo + h * hd,
                                                     out + n * ldo + h * hd, den[n * nh + h], hd);
                    const float *rq = r + h * hd, *fq = f + h * hd;
                    for (int a = 0; a < hd; a++) {
                        float *m = M + (size_t)a * hd;
                        const float ra = rq[a];
#pragma omp simd
                        for (int c = 0; c < hd; c++) m[c] += ra * dn[c];
                        z[a] += dd * fq[a];
                    }
                }
                const float *v = qkv + n * S + (nh + nkv + g) * hd, *rk = r + (nh + g) * hd;
                float *drk = drfeat + n * Fs + (nh + g) * hd, *dfk = dfeat + n * Fs + (nh + g) * hd;
                float *dv = dqkv + n * S + (nh + nkv + g) * hd;
                for (int c = 0; c < hd; c++) dv[c] = 0.0f;
                for (int a = 0; a < hd; a++) {
                    const float *m = M + (size_t)a * hd;
                    float s = 0.0f;
                    for (int c = 0; c < hd; c++) {
                        s += m[c] * v[c];
                        dv[c] += m[c] * rk[a];
                    }
                    drk[a] = s;
                    dfk[a] = z[a];
                }
            }
        }
    }
}
