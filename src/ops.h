/* ops.h: the layer operations (internal). Each has a forward and a backward;
 * layouts are row-major, N = rows (B*T), C = features. Backward functions
 * that produce an input gradient say whether they overwrite (=) or add (+=);
 * parameter gradients are always added. */
#ifndef ROTARY_OPS_H
#define ROTARY_OPS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* exp(x) in float, within 2 ulp of the true value (tests/test_ops.c), written
 * so that loops calling it vectorise: glibc's vector expf is only reachable
 * with -ffast-math, and the scalar call was 5-7% of a training step. Range
 * reduction x = n ln2 + r (Cody-Waite), |r| <= ln2/2, degree-7 Taylor
 * polynomial (error < 6e-9), then scaling by 2^n through the exponent bits.
 * Results below the normal range flush to 0. */
static inline float rotary_expf(float x) {
    float xc = x < -87.33654f ? -87.33654f : x;
    xc = xc > 88.72283f ? 88.72283f : xc;
    xc = x != x ? 0.0f : xc; /* NaN: keep the float->int conversion defined */
    const float n = (xc * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = xc - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-6f;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* n = 128 happens only near the top of the range: split the scale. */
    const int32_t e = (int32_t)n, e1 = e > 127 ? 127 : e, e2 = e > 127 ? e - 127 : 0;
    union { int32_t i; float f; } s1 = {(e1 + 127) << 23}, s2 = {(e2 + 127) << 23};
    float y = p * s1.f * s2.f;
    y = x < -87.33654f ? 0.0f : y;
    y = x > 88.72283f ? INFINITY : y;
    return x != x ? x : y;
}

/* out (N, OC) = inp (N, C) @ w (OC, C)^T + b (OC); b may be NULL.
 * With accumulate, the product is added to out instead. */
void linear_forward(float *out, const float *inp, const float *w, const float *b,
                    int N, int C, int OC, int accumulate);
/* dinp (N, C) = dout @ w (dinp may be NULL); dw += dout^T @ inp; db += sum dout. */
void linear_backward(float *dinp, float *dw, float *db, const float *dout,
                     const float *inp, const float *w, int N, int C, int OC);

/* LayerNorm (b may be NULL) or RMSNorm over the last dim; saves mean (layer
 * only, may be NULL for rms) and rstd (N) for the backward. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *w, const float *b, int N, int C, float eps);
/* dinp += ...; dw += ...; db += ... (db may be NULL). */
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                        const float *inp, const float *w, const float *mean,
                        const float *rstd, int N, int C);
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w,
                     int N, int C, float eps);
void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                      const float *w, const float *rstd, int N, int C);

/* GELU, tanh approximation: out = gelu(inp), n elements; dinp = dout * gelu'(inp). */
void gelu_forward(float *out, const float *inp, size_t n);
void gelu_backward(float *dinp, const float *dout, const float *inp, size_t n);
/* SwiGLU: gu (N, 2F) holds [gate | up] per row; out (N, F) = silu(gate) * up.
 * Backward writes dgu (N, 2F) (=). */
void swiglu_forward(float *out, const float *gu, int N, int F);
void swiglu_backward(float *dgu, const float *dout, const float *gu, int N, int F);

/* Cross-entropy over logits (N, V) with targets (N): lse (N) saves the
 * log-sum-exp; returns the mean loss in nats. Targets must be valid. */
double crossentropy_forward(float *lse, const float *logits, const int *targets,
                            int N, int V);
/* In place: logits becomes dlogits = (softmax - onehot) * scale. */
void crossentropy_backward(float *logits, const float *lse, const int *targets,
                           int N, int V, float scale);

/* Causal attention. qkv (B, T, (nh + 2*nkv)*hd) holds q | k | v per token;
 * out (B, T, nh*hd); att (B, nh, T, T) saves the probabilities (zero above
 * the diagonal). Query head h reads kv head h / (nh/nkv). alibi (nh) slopes
 * or NULL; dist_bias (nh, T) or NULL: dist_bias[h][i - j] is added to the
 * scaled score of query i and key j (T5). Both passes need
 * ATTN_SCRATCH(T, hd) floats per thread. */
#define ATTN_SCRATCH(T, hd) ((((size_t)(T) + 15) & ~(size_t)15) * ((size_t)(hd) + 4))
void attention_forward(float *out, float *att, const float *qkv, const float *alibi,
                       const float *dist_bias, int B, int T, int nh, int nkv, int hd,
                       float *scratch);
/* dqkv (=) from dout (B, T, nh*hd). dbias (B, nh, T) or NULL: dbias[b][h][n]
 * (=) the sum over i of the gradient of the biased score (i, i - n). */
void attention_backward(float *dqkv, float *dbias, float *scratch, const float *dout,
                        const float *qkv, const float *att, int B, int T, int nh,
                        int nkv, int hd);

/* Causal linear attention (RoFormer section 3.3), per query head h of kv head g:
 *   out_i = sum_{j<=i} (rq_i . rk_j) v_j / sum_{j<=i} (fq_i . fk_j)
 * with fq = phi(q), fk = phi(k), phi(x) = elu(x) + 1 > 0, and rq, rk the same
 * features rotated by RoPE (or equal to them without it). Running sums
 * S_i = sum_{j<=i} rk_j v_j^T (hd, hd) and z_i = sum_{j<=i} fk_j make it O(T).
 * feat, rfeat (B, T, (nh + nkv)*hd): fq | fk per token, and rq | rk (rfeat
 * may equal feat); v is read from qkv (B, T, (nh + 2*nkv)*hd) as above.
 * out (B, T, nh*hd); den (B, T, nh) saves the denominators. Both passes need
 * LINATTN_SCRATCH(hd) floats per thread. */
#define LINATTN_SCRATCH(hd) ((size_t)(hd) * (size_t)(hd) + 2 * (size_t)(hd))
void linear_attention_forward(float *out, float *den, const float *feat, const float *rfeat,
                              const float *qkv, int B, int T, int nh, int nkv, int hd,
                              float *scratch);
/* Gradients (=): dfeat through the denominators, drfeat through the
 * numerators (the caller rotates it back and adds), dv into the v part of
 * dqkv (its q and k parts are left alone). The backward recomputes S_i and
 * z_i forward in time for the query side, and sums the gradients reaching
 * S and z backward in time for the key side, so it stores no states. */
void linear_attention_backward(float *dfeat, float *drfeat, float *dqkv, float *scratch,
                               const float *dout, const float *feat, const float *rfeat,
                               const float *qkv, const float *out, const float *den, int B,
                               int T, int nh, int nkv, int hd);
/* One step of the same, for the decoder: S (hd, hd) += rk v^T, z (hd) += fk. */
void linear_attention_update(float *S, float *z, const float *rk, const float *fk,
                             const float *v, int hd);
/* out (hd) = S^T rq / (fq . z); returns the denominator. */
float linear_attention_query(float *out, const float *S, const float *z, const float *rq,
                             const float *fq, int hd);
/* phi(x) = elu(x) + 1: out (N, C) = x + 1 for x > 0, exp(x) otherwise, from
 * inp rows `ldi` floats apart. Backward: dinp (=, rows ldi apart, like inp)
 * = dout (N, C) * phi'(inp), phi' = 1 for x > 0, exp(x) otherwise. */
void elu1_forward(float *out, const float *inp, int N, int C, int ldi);
void elu1_backward(float *dinp, const float *dout, const float *inp, int N, int C, int ldi);

#endif
