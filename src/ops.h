/* ops.h: the layer operations (internal). Each has a forward and a backward;
 * layouts are row-major, N = rows (B*T), C = features. Backward functions
 * that produce an input gradient say whether they overwrite (=) or add (+=);
 * parameter gradients are always added. */
#ifndef ROTARY_OPS_H
#define ROTARY_OPS_H

#include <stddef.h>

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
 * out (B, T, nh*hd); att (B, nh, T, T) saves the probabilities. Query head h
 * reads kv head h / (nh/nkv). alibi (nh) slopes or NULL. */
void attention_forward(float *out, float *att, const float *qkv, const float *alibi,
                       int B, int T, int nh, int nkv, int hd);
/* dqkv (=) from dout (B, T, nh*hd); scratch needs T*T floats per thread. */
void attention_backward(float *dqkv, float *scratch, const float *dout,
                        const float *qkv, const float *att, int B, int T, int nh,
                        int nkv, int hd);

#endif
