/* attention.c: causal softmax attention with grouped-query heads.
 * Each (batch, head) pair is an independent problem: scores and the weighted
 * sum of values are two GEMMs over strided views of the packed qkv rows. */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

void attention_forward(float *out, float *att, const float *qkv, const float *alibi,
                       int B, int T, int nh, int nkv, int hd) {
    const int S = (nh + 2 * nkv) * hd; /* floats per token in qkv */
    const int group = nh / nkv;
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < nh; h++) {
            const float *q = qkv + (size_t)b * T * S + h * hd;
            const float *k = qkv + (size_t)b * T * S + (nh + h / group) * hd;
            const float *v = k + nkv * hd;
            float *p = att + ((size_t)b * nh + h) * T * T;
            /* p = scale * q k^T over the full square; the masked half is
             * overwritten below. */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, q, S,
                        k, S, 0.0f, p, T);
            float slope = alibi ? alibi[h] : 0.0f;
            for (int t = 0; t < T; t++) {
                float *row = p + (size_t)t * T;
                float mx = -INFINITY;
                for (int j = 0; j <= t; j++) {
                    row[j] -= slope * (float)(t - j);
                    mx = row[j] > mx ? row[j] : mx;
                }
                float sum = 0.0f;
                for (int j = 0; j <= t; j++) {
                    row[j] = expf(row[j] - mx);
                    sum += row[j];
                }
                float inv = 1.0f / sum;
                for (int j = 0; j <= t; j++) row[j] *= inv;
                for (int j = t + 1; j < T; j++) row[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, p, T, v,
                        S, 0.0f, out + (size_t)b * T * nh * hd + h * hd, nh * hd);
        }
    }
}

void attention_backward(float *dqkv, float *scratch, const float *dout,
                        const float *qkv, const float *att, int B, int T, int nh,
                        int nkv, int hd) {
    const int S = (nh + 2 * nkv) * hd;
    const int group = nh / nkv;
    const float scale = 1.0f / sqrtf((float)hd);
    /* One task per (batch, kv head): the query heads of a group add into the
     * same dk, dv, so they run in order inside one task. */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < nkv; g++) {
            float *dp = scratch + (size_t)omp_get_thread_num() * T * T;
            const float *base = qkv + (size_t)b * T * S;
            float *dbase = dqkv + (size_t)b * T * S;
            const float *k = base + (nh + g) * hd, *v = k + nkv * hd;
            float *dk = dbase + (nh + g) * hd, *dv = dk + nkv * hd;
            for (int i = 0; i < group; i++) {
                int h = g * group + i;
                const float *q = base + h * hd;
                float *dq = dbase + h * hd;
                const float *p = att + ((size_t)b * nh + h) * T * T;
                const float *dO = dout + (size_t)b * T * nh * hd + h * hd;
                float beta = i == 0 ? 0.0f : 1.0f;
                /* dv (+)= p^T dO ; dp = dO v^T */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, p, T,
                            dO, nh * hd, beta, dv, S);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dO,
                            nh * hd, v, S, 0.0f, dp, T);
                /* softmax backward: ds = p * (dp - sum_j p dp), times scale */
                for (int t = 0; t < T; t++) {
                    const float *pr = p + (size_t)t * T;
                    float *dr = dp + (size_t)t * T;
                    float dot = 0.0f;
                    for (int j = 0; j <= t; j++) dot += pr[j] * dr[j];
                    for (int j = 0; j <= t; j++) dr[j] = pr[j] * (dr[j] - dot) * scale;
                    for (int j = t + 1; j < T; j++) dr[j] = 0.0f;
                }
                /* dq = ds k ; dk (+)= ds^T q */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, dp, T,
                            k, S, 0.0f, dq, S);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, dp, T, q,
                            S, beta, dk, S);
            }
        }
    }
}
