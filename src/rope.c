/* rope.c: rotary position embeddings (RoFormer), tables and apply.
 *
 * Pair i of a head rotates by the angle pos * inv_freq[i]. INTERLEAVED pairs
 * coordinates (2i, 2i+1), HALF pairs (i, i + rotary_dim/2). The backward of a
 * rotation is the rotation by the negative angle, so forward and backward share
 * one loop that takes the sign of sin. See docs/rope.md. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int rotary_rope_init(rotary_rope *r, int head_dim, int rotary_dim, double base,
                     rotary_rope_pairing pairing, int max_pos) {
    if (!r) return rotary_fail(ROTARY_EINVAL, "rope: NULL rope");
    memset(r, 0, sizeof *r); /* so rotary_rope_free is safe after a failure */
    if (head_dim <= 0)
        return rotary_fail(ROTARY_EINVAL, "rope: head_dim must be > 0 (got %d)", head_dim);
    if (rotary_dim == 0) rotary_dim = head_dim;
    if (rotary_dim < 0 || rotary_dim > head_dim)
        return rotary_fail(ROTARY_EINVAL, "rope: rotary_dim %d not in (0, head_dim=%d]",
                           rotary_dim, head_dim);
    if (rotary_dim % 2 != 0)
        return rotary_fail(ROTARY_EINVAL, "rope: rotary_dim must be even (got %d)", rotary_dim);
    if (!isfinite(base) || !(base > 1.0))
        return rotary_fail(ROTARY_EINVAL, "rope: base must be finite and > 1 (got %g)", base);
    if (pairing != ROTARY_ROPE_INTERLEAVED && pairing != ROTARY_ROPE_HALF)
        return rotary_fail(ROTARY_EINVAL, "rope: unknown pairing %d", (int)pairing);
    if (max_pos <= 0)
        return rotary_fail(ROTARY_EINVAL, "rope: max_pos must be > 0 (got %d)", max_pos);

    const int half = rotary_dim / 2;
    size_t n;
    if (rotary_mul_size((size_t)max_pos, (size_t)half, &n) != 0)
        return rotary_fail(ROTARY_ENOMEM, "rope: table size overflow (%d x %d)", max_pos, half);
    r->inv_freq = malloc((size_t)half * sizeof(double));
    if (!r->inv_freq)
        return rotary_fail(ROTARY_ENOMEM, "rope: cannot allocate %d frequencies", half);
    r->cos = rotary_alloc_floats(n, "rope cos table");
    r->sin = r->cos ? rotary_alloc_floats(n, "rope sin table") : NULL;
    if (!r->sin) {
        rotary_rope_free(r);
        return ROTARY_ENOMEM; /* message set by rotary_alloc_floats */
    }
    r->head_dim = head_dim;
    r->rotary_dim = rotary_dim;
    r->pairing = pairing;
    r->max_pos = max_pos;
    r->base = base;

    /* Angles reach max_pos * 1 rad: in float32 a position of 60000 would
     * already be off by ~0.004 rad, so angle and cos/sin are taken in double
     * and only the result is rounded to float. */
    for (int i = 0; i < half; i++) r->inv_freq[i] = pow(base, -2.0 * i / rotary_dim);
    double *inv_freq = r->inv_freq;
    float *c = r->cos, *s = r->sin;
#pragma omp parallel for schedule(static)
    for (int p = 0; p < max_pos; p++)
        for (int i = 0; i < half; i++) {
            double a = (double)p * inv_freq[i];
            c[(size_t)p * half + i] = (float)cos(a);
            s[(size_t)p * half + i] = (float)sin(a);
        }
    return ROTARY_OK;
}

void rotary_rope_free(rotary_rope *r) {
    if (!r) return;
    free(r->inv_freq);
    free(r->cos);
    free(r->sin);
    memset(r, 0, sizeof *r);
}

/* HALF: the two halves are separate contiguous runs. `omp simd` because gcc's
 * -O2 cost model would otherwise leave these loops scalar. */
static void rotate_half(float *restrict x1, float *restrict x2, const float *restrict c,
                        const float *restrict s, int n, float sg) {
#pragma omp simd
    for (int i = 0; i < n; i++) {
        float a = x1[i], b = x2[i], si = sg * s[i];
        x1[i] = a * c[i] - b * si;
        x2[i] = a * si + b * c[i];
    }
}

/* INTERLEAVED: pairs are adjacent floats. */
static void rotate_pairs(float *restrict x, const float *restrict c, const float *restrict s,
                         int n, float sg) {
#pragma omp simd
    for (int i = 0; i < n; i++) {
        float a = x[2 * i], b = x[2 * i + 1], si = sg * s[i];
        x[2 * i] = a * c[i] - b * si;
        x[2 * i + 1] = a * si + b * c[i];
    }
}

/* sg = +1: forward, R(theta); sg = -1: backward, R(-theta) = R(theta)^T. */
static int rope_apply(const rotary_rope *r, float *x, int B, int T, int n_head,
                      int row_stride, const int *pos, float sg, const char *who) {
    if (!r || !r->cos || !r->sin)
        return rotary_fail(ROTARY_EINVAL, "%s: rope tables not initialised", who);
    if (!x || !pos) return rotary_fail(ROTARY_EINVAL, "%s: NULL x or pos", who);
    if (B <= 0 || T <= 0 || n_head <= 0)
        return rotary_fail(ROTARY_EINVAL, "%s: B, T, n_head must be > 0 (got %d, %d, %d)",
                           who, B, T, n_head);
    if ((long long)row_stride < (long long)n_head * r->head_dim)
        return rotary_fail(ROTARY_EINVAL, "%s: row_stride %d < n_head*head_dim = %lld", who,
                           row_stride, (long long)n_head * r->head_dim);
    size_t rows, total;
    if (rotary_mul_size((size_t)B, (size_t)T, &rows) != 0 ||
        rotary_mul_size(rows, (size_t)row_stride, &total) != 0)
        return rotary_fail(ROTARY_EINVAL, "%s: B*T*row_stride overflows", who);
    for (int t = 0; t < T; t++)
        if (pos[t] < 0 || pos[t] >= r->max_pos)
            return rotary_fail(ROTARY_EINVAL, "%s: pos[%d] = %d not in [0, %d)", who, t,
                               pos[t], r->max_pos);

    const int hd = r->head_dim, half = r->rotary_dim / 2;
    const int is_half = r->pairing == ROTARY_ROPE_HALF;
    /* Threads only pay off beyond a few thousand pairs (decode is one token). */
#pragma omp parallel for collapse(2) schedule(static) if ((double)rows * n_head * half >= 16384.0)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *row = x + ((size_t)b * T + t) * (size_t)row_stride;
            const float *c = r->cos + (size_t)pos[t] * half;
            const float *s = r->sin + (size_t)pos[t] * half;
            for (int h = 0; h < n_head; h++) {
                float *xh = row + (size_t)h * hd;
                if (is_half)
                    rotate_half(xh, xh + half, c, s, half, sg);
                else
                    rotate_pairs(xh, c, s, half, sg);
            }
        }
    return ROTARY_OK;
}

int rotary_rope_forward(const rotary_rope *r, float *x, int B, int T, int n_head,
                        int row_stride, const int *pos) {
    return rope_apply(r, x, B, T, n_head, row_stride, pos, 1.0f, "rope forward");
}

int rotary_rope_backward(const rotary_rope *r, float *dx, int B, int T, int n_head,
                         int row_stride, const int *pos) {
    return rope_apply(r, dx, B, T, n_head, row_stride, pos, -1.0f, "rope backward");
}
