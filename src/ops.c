/* ops.c: linear layers (BLAS), norms, activations and cross-entropy. */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void linear_forward(float *out, const float *inp, const float *w, const float *b,
                    int N, int C, int OC, int accumulate) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, w, C,
                accumulate ? 1.0f : 0.0f, out, OC);
    if (b) {
#pragma omp parallel for
        for (int n = 0; n < N; n++) {
            float *o = out + (size_t)n * OC;
            for (int j = 0; j < OC; j++) o[j] += b[j];
        }
    }
}

void linear_backward(float *dinp, float *dw, float *db, const float *dout,
                     const float *inp, const float *w, int N, int C, int OC) {
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC,
                    w, C, 0.0f, dinp, C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C,
                1.0f, dw, C);
    if (db) {
        /* Columns split across threads so each db[j] has one writer. */
#pragma omp parallel for
        for (int j0 = 0; j0 < OC; j0 += 64) {
            int j1 = j0 + 64 < OC ? j0 + 64 : OC;
            for (int n = 0; n < N; n++) {
                const float *d = dout + (size_t)n * OC;
                for (int j = j0; j < j1; j++) db[j] += d[j];
            }
        }
    }
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *w, const float *b, int N, int C, float eps) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float m = 0.0f, v = 0.0f;
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        float s = 1.0f / sqrtf(v / C + eps);
        for (int i = 0; i < C; i++) o[i] = (x[i] - m) * s * w[i] + (b ? b[i] : 0.0f);
        mean[n] = m;
        rstd[n] = s;
    }
}

/* Parameter gradients of a norm: dw[i] += sum_n dout[n,i] * xhat[n,i], split
 * over columns so every dw[i] has one writer (deterministic). */
static void norm_param_grads(float *dw, float *db, const float *dout, const float *inp,
                             const float *mean, const float *rstd, int N, int C) {
#pragma omp parallel for
    for (int i0 = 0; i0 < C; i0 += 32) {
        int i1 = i0 + 32 < C ? i0 + 32 : C;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
            float m = mean ? mean[n] : 0.0f, s = rstd[n];
            for (int i = i0; i < i1; i++) {
                dw[i] += d[i] * (x[i] - m) * s;
                if (db) db[i] += d[i];
            }
        }
    }
}

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                        const float *inp, const float *w, const float *mean,
                        const float *rstd, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float m = mean[n], s = rstd[n];
        float dsum = 0.0f, dxsum = 0.0f; /* mean of dnorm and of dnorm * xhat */
        for (int i = 0; i < C; i++) {
            float dn = d[i] * w[i];
            dsum += dn;
            dxsum += dn * (x[i] - m) * s;
        }
        dsum /= C;
        dxsum /= C;
        for (int i = 0; i < C; i++)
            dx[i] += s * (d[i] * w[i] - dsum - (x[i] - m) * s * dxsum);
    }
    norm_param_grads(dw, db, dout, inp, mean, rstd, N, C);
}

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w,
                     int N, int C, float eps) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float ss = 0.0f;
        for (int i = 0; i < C; i++) ss += x[i] * x[i];
        float s = 1.0f / sqrtf(ss / C + eps);
        for (int i = 0; i < C; i++) o[i] = x[i] * s * w[i];
        rstd[n] = s;
    }
}

void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                      const float *w, const float *rstd, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float s = rstd[n], dxsum = 0.0f;
        for (int i = 0; i < C; i++) dxsum += d[i] * w[i] * x[i] * s;
        dxsum /= C;
        for (int i = 0; i < C; i++) dx[i] += s * (d[i] * w[i] - x[i] * s * dxsum);
    }
    norm_param_grads(dw, NULL, dout, inp, NULL, rstd, N, C);
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

void gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
    }
}

void gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float th = tanhf(GELU_K * (x + 0.044715f * x * x * x));
        float dth = (1.0f - th * th) * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = dout[i] * (0.5f * (1.0f + th) + 0.5f * x * dth);
    }
}

/* expf rather than rotary_expf: these are few (2 per q/k element) and the
 * decoder must reproduce them exactly. */
void elu1_forward(float *out, const float *inp, int N, int C, int ldi) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * ldi;
        float *o = out + (size_t)n * C;
        for (int i = 0; i < C; i++) o[i] = x[i] > 0 ? x[i] + 1.0f : expf(x[i]);
    }
}

void elu1_backward(float *dinp, const float *dout, const float *inp, int N, int C, int ldi) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * ldi, *d = dout + (size_t)n * C;
        float *o = dinp + (size_t)n * ldi;
        for (int i = 0; i < C; i++) o[i] = x[i] > 0 ? d[i] : d[i] * expf(x[i]);
    }
}

void swiglu_forward(float *out, const float *gu, int N, int F) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * F, *u = g + F;
        float *o = out + (size_t)n * F;
#pragma omp simd
        for (int i = 0; i < F; i++) o[i] = g[i] / (1.0f + rotary_expf(-g[i])) * u[i];
    }
}

void swiglu_backward(float *dgu, const float *dout, const float *gu, int N, int F) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * F, *u = g + F, *d = dout + (size_t)n * F;
        float *dg = dgu + (size_t)n * 2 * F, *du = dg + F;
#pragma omp simd
        for (int i = 0; i < F; i++) {
            float sg = 1.0f / (1.0f + rotary_expf(-g[i]));
            float silu = g[i] * sg;
            du[i] = d[i] * silu;
            dg[i] = d[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
        }
    }
}

double crossentropy_forward(float *lse, const float *logits, const int *targets,
                            int N, int V) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * V;
        float mx = z[0], s = 0.0f;
#pragma omp simd reduction(max : mx)
        for (int i = 1; i < V; i++) mx = z[i] > mx ? z[i] : mx;
#pragma omp simd reduction(+ : s)
        for (int i = 0; i < V; i++) s += rotary_expf(z[i] - mx);
        lse[n] = mx + logf(s);
    }
    double total = 0.0; /* serial sum: the same bits for any thread count */
    for (int n = 0; n < N; n++) total += (double)lse[n] - logits[(size_t)n * V + targets[n]];
    return total / N;
}

void crossentropy_backward(float *logits, const float *lse, const int *targets,
                           int N, int V, float scale) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        float *z = logits + (size_t)n * V;
#pragma omp simd
        for (int i = 0; i < V; i++) z[i] = rotary_expf(z[i] - lse[n]) * scale;
        z[targets[n]] -= scale;
    }
}
