/* rope.c: rotary position embeddings (RoFormer), tables and apply.
 *
 * Pair i of a head rotates by the angle pos * inv_freq[i]. INTERLEAVED pairs
 * coordinates (2i, 2i+1), HALF pairs (i, i + rotary_dim/2). The backward of a
 * rotation is the rotation by the negative angle, so forward and backward share
 * one loop that takes the sign of sin. The frequency scalings for long
 * contexts (linear, NTK, dynamic NTK, YaRN, Llama 3, per-pair factors) only
 * change inv_freq and, for YaRN, multiply the tables by a constant. See
 * docs/rope.md. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- scaling */

_Static_assert(sizeof(rotary_rope_scaling) ==
                   4 * sizeof(int) + 6 * sizeof(double) + ROTARY_ROPE_MAX_FACTORS * sizeof(float),
               "rotary_rope_scaling has padding: memcmp of two would read it");

void rotary_rope_scaling_default(rotary_rope_scaling *s) {
    memset(s, 0, sizeof *s);
    s->type = ROTARY_ROPE_SCALING_NONE;
    s->factor = 1.0;
    s->yarn_alpha = 1.0;
    s->yarn_beta = 32.0;
    s->low_freq_factor = 1.0;
    s->high_freq_factor = 4.0;
}

const char *rotary_rope_scaling_name(int type) {
    static const char *const names[] = {"none",  "linear", "ntk",    "dynamic-ntk",
                                        "yarn", "llama3", "factors"};
    return type >= 0 && type < (int)(sizeof names / sizeof *names) ? names[type] : NULL;
}

int rotary_rope_scaling_parse(const char *name) {
    for (int t = 0; name && rotary_rope_scaling_name(t); t++)
        if (strcmp(name, rotary_rope_scaling_name(t)) == 0) return t;
    return -1;
}

int rotary_rope_scaling_validate(const rotary_rope_scaling *s) {
    if (!s || s->type == ROTARY_ROPE_SCALING_NONE) return ROTARY_OK;
    const char *name = rotary_rope_scaling_name(s->type);
    if (!name)
        return rotary_fail(ROTARY_EINVAL, "rope scaling: unknown type %d (none, linear, ntk, "
                           "dynamic-ntk, yarn, llama3, factors)", s->type);
    if (s->type == ROTARY_ROPE_SCALING_FACTORS) {
        if (s->n_factors < 1 || s->n_factors > ROTARY_ROPE_MAX_FACTORS)
            return rotary_fail(ROTARY_EINVAL, "rope scaling factors: n_factors %d must be in "
                               "[1, %d]", s->n_factors, ROTARY_ROPE_MAX_FACTORS);
        for (int i = 0; i < s->n_factors; i++)
            if (!isfinite(s->freq_factors[i]) || !(s->freq_factors[i] > 0))
                return rotary_fail(ROTARY_EINVAL, "rope scaling factors: factor %d is %g; each "
                                   "must be finite and > 0", i, (double)s->freq_factors[i]);
    } else if (!(s->factor >= 1.0 && s->factor <= 1e6)) {
        /* A factor below 1 would stretch the frequencies, not compress them. */
        return rotary_fail(ROTARY_EINVAL, "rope scaling %s: factor %g must be in [1, 1e6]", name,
                           s->factor);
    }
    /* FACTORS has its numbers already: factor and original_ctx are unused. */
    if (s->type != ROTARY_ROPE_SCALING_FACTORS &&
        (s->original_ctx <= 0 || s->original_ctx > (1 << 30)))
        return rotary_fail(ROTARY_EINVAL, "rope scaling %s: original_ctx %d must be in [1, 2^30] "
                           "(the context the model was trained at)", name, s->original_ctx);
    if (s->type == ROTARY_ROPE_SCALING_YARN &&
        !(s->yarn_alpha >= 0 && s->yarn_alpha < s->yarn_beta && s->yarn_beta <= 1e9))
        return rotary_fail(ROTARY_EINVAL, "rope scaling yarn: need 0 <= alpha < beta <= 1e9 "
                           "(got alpha %g, beta %g)", s->yarn_alpha, s->yarn_beta);
    if (s->type == ROTARY_ROPE_SCALING_LLAMA3 &&
        !(s->low_freq_factor > 0 && s->low_freq_factor < s->high_freq_factor &&
          s->high_freq_factor <= 1e9))
        return rotary_fail(ROTARY_EINVAL, "rope scaling llama3: need 0 < low_freq_factor < "
                           "high_freq_factor <= 1e9 (got %g, %g)", s->low_freq_factor,
                           s->high_freq_factor);
    if (!(s->mscale == 0 || (s->mscale > 0 && s->mscale <= 100)))
        return rotary_fail(ROTARY_EINVAL, "rope scaling %s: mscale %g must be 0 (the type's "
                           "default) or in (0, 100]", name, s->mscale);
    return ROTARY_OK;
}

double rotary_rope_scaling_mscale(const rotary_rope_scaling *s) {
    if (!s || s->type == ROTARY_ROPE_SCALING_NONE) return 1.0;
    if (s->mscale > 0) return s->mscale;
    /* YaRN: sqrt(1/t) = 0.1 ln(s) + 1 on both q and k, so logits / t. */
    if (s->type == ROTARY_ROPE_SCALING_YARN) return 0.1 * log(s->factor) + 1.0;
    return 1.0;
}

/* Weight of the unscaled frequency: 0 below lo, 1 above hi, linear between. */
static double ramp(double x, double lo, double hi) {
    double g = (x - lo) / (hi - lo);
    return g < 0 ? 0 : g > 1 ? 1 : g;
}

/* The frequency f under the per-pair scalings; (dynamic) NTK changes the base
 * instead. g is the weight of the unscaled frequency, by r = L0 / wavelength. */
static double scale_freq(double f, const rotary_rope_scaling *s) {
    const double two_pi = 6.283185307179586476925, r = s->original_ctx / (two_pi / f);
    double g;
    switch (s->type) {
    case ROTARY_ROPE_SCALING_LINEAR: return f / s->factor;
    case ROTARY_ROPE_SCALING_YARN: g = ramp(r, s->yarn_alpha, s->yarn_beta); break;
    case ROTARY_ROPE_SCALING_LLAMA3: g = ramp(r, s->low_freq_factor, s->high_freq_factor); break;
    default: return f;
    }
    return (1 - g) * f / s->factor + g * f;
}

/* FACTORS states one divisor per pair: the count must be this rope's. */
static int factors_fit(const rotary_rope_scaling *s, int rotary_dim) {
    if (!s || s->type != ROTARY_ROPE_SCALING_FACTORS || s->n_factors == rotary_dim / 2)
        return ROTARY_OK;
    return rotary_fail(ROTARY_EINVAL, "rope scaling factors: %d factors for rotary_dim %d, "
                       "which has %d pairs", s->n_factors, rotary_dim, rotary_dim / 2);
}

int rotary_rope_inv_freq(double *out, int rotary_dim, double base, const rotary_rope_scaling *s,
                         int seq_len) {
    if (!out) return rotary_fail(ROTARY_EINVAL, "rope: NULL inv_freq output");
    if (rotary_dim <= 0 || rotary_dim % 2 != 0)
        return rotary_fail(ROTARY_EINVAL, "rope: rotary_dim must be even and > 0 (got %d)",
                           rotary_dim);
    if (!isfinite(base) || !(base > 1.0))
        return rotary_fail(ROTARY_EINVAL, "rope: base must be finite and > 1 (got %g)", base);
    int rc = rotary_rope_scaling_validate(s);
    if (rc) return rc;
    const int type = s ? s->type : ROTARY_ROPE_SCALING_NONE;
    if ((rc = factors_fit(s, rotary_dim))) return rc;
    if (type == ROTARY_ROPE_SCALING_DYNAMIC_NTK && seq_len <= 0)
        return rotary_fail(ROTARY_EINVAL, "rope scaling dynamic-ntk: sequence length %d must be "
                           "> 0", seq_len);
    double b = base;
    if (type == ROTARY_ROPE_SCALING_NTK || type == ROTARY_ROPE_SCALING_DYNAMIC_NTK) {
        double f = type == ROTARY_ROPE_SCALING_NTK ? s->factor
                                                   : fmax(1.0, (double)seq_len / s->original_ctx);
        /* d = 2 has the single frequency 1 whatever the base. */
        if (rotary_dim > 2) b = base * pow(f, (double)rotary_dim / (rotary_dim - 2));
    }
    for (int i = 0; i < rotary_dim / 2; i++) {
        double f = pow(b, -2.0 * i / rotary_dim);
        if (type == ROTARY_ROPE_SCALING_FACTORS) out[i] = f / s->freq_factors[i];
        else out[i] = s && type != ROTARY_ROPE_SCALING_NONE ? scale_freq(f, s) : f;
    }
    return ROTARY_OK;
}

/* ----------------------------------------------------------------- tables */

int rotary_rope_init(rotary_rope *r, int head_dim, int rotary_dim, double base,
                     rotary_rope_pairing pairing, int max_pos,
                     const rotary_rope_scaling *scaling) {
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
    int rc = rotary_rope_scaling_validate(scaling);
    if (rc || (rc = factors_fit(scaling, rotary_dim))) return rc;

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
    if (scaling) r->scaling = *scaling;
    else rotary_rope_scaling_default(&r->scaling);
    r->mscale = rotary_rope_scaling_mscale(scaling);
    rotary_rope_inv_freq(r->inv_freq, rotary_dim, base, scaling, max_pos); /* args checked */

    /* Angles reach max_pos * 1 rad: in float32 a position of 60000 would
     * already be off by ~0.004 rad, so angle and cos/sin are taken in double
     * and only the result is rounded to float. */
    const double *inv_freq = r->inv_freq, ms = r->mscale;
    float *c = r->cos, *s = r->sin;
#pragma omp parallel for schedule(static)
    for (int p = 0; p < max_pos; p++)
        for (int i = 0; i < half; i++) {
            double a = (double)p * inv_freq[i];
            c[(size_t)p * half + i] = (float)(ms * cos(a));
            s[(size_t)p * half + i] = (float)(ms * sin(a));
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
