/* sample.c: incremental decoding with a key/value cache, and the sampler. */
#include "internal.h"
#include "matvec.h"
#include "model_internal.h"
#include "ops.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

int rotary_model_extend(rotary_model *m, int T) {
    const rotary_config *c = &m->cfg;
    if (T < 1 || T > (1 << 22)) return rotary_fail(ROTARY_EINVAL, "sequence length %d", T);
    if (c->pos == ROTARY_POS_LEARNED && T > c->ctx)
        return rotary_fail(ROTARY_EINVAL, "learned positions stop at ctx %d; %d tokens need a "
                           "model with another position encoding", c->ctx, T);
    if (c->pos == ROTARY_POS_ROPE && T > m->rope.max_pos) {
        rotary_rope r;
        int rc = rotary_rope_init(&r, m->rope.head_dim, m->rope.rotary_dim, m->rope.base,
                                  (rotary_rope_pairing)m->rope.pairing, T, &c->rope_scaling);
        if (rc) return rc;
        rotary_rope_free(&m->rope);
        m->rope = r;
    }
    if (c->pos == ROTARY_POS_SINUSOIDAL && T > m->pos_len) {
        float *t = rotary_alloc_floats((size_t)T * c->d_model, "sinusoidal table");
        if (!t) return ROTARY_ENOMEM;
        rotary_sinusoidal_table(t, T, c->d_model, c->sin_amplitude);
        free(m->pos_table);
        m->pos_table = t;
    }
    if (T > m->pos_len) m->pos_len = T;
    return ROTARY_OK;
}

/* ----------------------------------------------------------------- decoder */

/* A step runs as one parallel region (rotary_decoder_step): the threads
 * share out the rows of each matrix and the attention heads, and meet at
 * the barrier that ends each of those loops, five per layer; each thread
 * computes the small serial parts (norms, the MLP activation, quantizing
 * the input of a matrix) itself, into its own row of h, act and the int8
 * scratch, which saves the barriers around them. A step of a model with
 * fewer than this many matrix weights runs on one thread: it takes about as
 * long as the 5 * n_layer barriers would (~2 us each on this project's idle
 * VM, far more when other processes compete for the cores). */
#define STEP_PAR_MIN_WEIGHTS (1 << 20)

static size_t pad16(size_t n) { return (n + 15) & ~(size_t)15; } /* 64 bytes */

static int decoder_threads(void) {
    int threads = omp_get_max_threads();
    return threads < 1 ? 1 : threads > 1024 ? 1024 : threads;
}

/* Floats of the decoder's one allocation (laid out in rotary_decoder_init). */
static double decoder_floats(const rotary_config *c, int max_T, int threads) {
    size_t C = (size_t)c->d_model, hd = C / (size_t)c->n_head, kv = (size_t)c->n_kv_head * hd;
    size_t QKV = (size_t)(c->n_head + 2 * c->n_kv_head) * hd, F = (size_t)c->d_ff;
    size_t U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F;
    /* Softmax attention caches k and v of every position; linear attention
     * keeps S and z per kv head instead, whatever the length. */
    size_t FS = (size_t)(c->n_head + c->n_kv_head) * hd;
    double cache = c->attn == ROTARY_ATTN_LINEAR
                       ? (double)c->n_layer * c->n_kv_head * (hd * hd + hd) + 2.0 * FS
                       : 2.0 * c->n_layer * (double)max_T * kv;
    return cache + C + QKV + (double)c->n_head * max_T + (double)c->n_head * hd + U + c->vocab +
           (double)threads * (pad16(C) + pad16(F) + 16.0) + 16.0;
}

double rotary_decoder_bytes(const rotary_model *m, int max_T) {
    return 4.0 * decoder_floats(&m->cfg, max_T, decoder_threads());
}

int rotary_decoder_init(rotary_decoder *d, rotary_model *m, int max_T) {
    memset(d, 0, sizeof *d);
    int rc = rotary_model_extend(m, max_T);
    if (rc) return rc;
    const rotary_config *c = &m->cfg;
    size_t C = (size_t)c->d_model, hd = C / (size_t)c->n_head, kv = (size_t)c->n_kv_head * hd;
    size_t QKV = (size_t)(c->n_head + 2 * c->n_kv_head) * hd, F = (size_t)c->d_ff;
    size_t U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F;
    const int threads = decoder_threads();
    const int linear = c->attn == ROTARY_ATTN_LINEAR;
    size_t FS = (size_t)(c->n_head + c->n_kv_head) * hd;
    double need = decoder_floats(c, max_T, threads);
    if (need > (double)((size_t)1 << 37))
        return rotary_fail(ROTARY_ENOMEM, "KV cache for %d positions needs %.1f GiB", max_T,
                           need * 4 / 1073741824.0);
    d->buf = rotary_alloc_floats((size_t)need, "KV cache");
    if (!d->buf) return ROTARY_ENOMEM;
    if (c->pos == ROTARY_POS_T5) {
        d->bucket = malloc((size_t)max_T * sizeof(int));
        if (!d->bucket) {
            rotary_decoder_free(d);
            return rotary_fail(ROTARY_ENOMEM, "decoder: out of memory");
        }
        for (int n = 0; n < max_T; n++)
            d->bucket[n] = rotary_t5_bucket(n, c->t5_buckets, c->t5_max_distance);
    }
    float *p = d->buf;
    /* the per-thread cursors and rows first, each on its own cache lines */
    d->team = p, p += (size_t)threads * 16;
    d->h = p, p += (size_t)threads * pad16(C);
    d->act = p, p += (size_t)threads * pad16(F);
    if (linear) {
        d->S = p, p += (size_t)c->n_layer * c->n_kv_head * hd * hd;
        d->z = p, p += (size_t)c->n_layer * c->n_kv_head * hd;
        d->feat = p, p += FS;
        d->rfeat = p, p += FS;
    } else {
        d->k = p, p += (size_t)c->n_layer * max_T * kv;
        d->v = p, p += (size_t)c->n_layer * max_T * kv;
    }
    d->x = p, p += C;
    d->qkv = p, p += QKV;
    d->att = p, p += (size_t)c->n_head * max_T;
    d->attout = p, p += (size_t)c->n_head * hd;
    d->up = p, p += U;
    d->logits = p;
    d->m = m;
    d->max_T = max_T;
    d->threads = threads;
    return ROTARY_OK;
}

void rotary_decoder_free(rotary_decoder *d) {
    free(d->buf);
    free(d->q8);
    free(d->bf16);
    free(d->bucket);
    memset(d, 0, sizeof *d);
}

void rotary_decoder_reset(rotary_decoder *d) { d->n = 0; }

#define P(off) ((off) == ABSENT ? NULL : m->params + (off))

/* One row of LayerNorm or RMSNorm, the arithmetic of ops.c's (which open a
 * parallel region of their own) but with vectorised sums. */
static void norm_row(const rotary_model *m, float *out, const float *x, const float *w,
                     const float *b) {
    const int C = m->cfg.d_model;
    const float eps = m->cfg.norm_eps;
    if (m->cfg.norm == ROTARY_NORM_LAYER) {
        float mean = 0.0f, v = 0.0f;
#pragma omp simd reduction(+ : mean)
        for (int i = 0; i < C; i++) mean += x[i];
        mean /= C;
#pragma omp simd reduction(+ : v)
        for (int i = 0; i < C; i++) v += (x[i] - mean) * (x[i] - mean);
        const float s = 1.0f / sqrtf(v / C + eps);
        for (int i = 0; i < C; i++) out[i] = (x[i] - mean) * s * w[i] + (b ? b[i] : 0.0f);
    } else {
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < C; i++) ss += x[i] * x[i];
        const float s = 1.0f / sqrtf(ss / C + eps);
        for (int i = 0; i < C; i++) out[i] = x[i] * s * w[i];
    }
}

/* RoPE on n_head consecutive heads of one token at position pos, x to out
 * (which may be x), with the tables and the arithmetic of
 * rotary_rope_forward, which the step cannot call: its parallel region,
 * nested in the step's, would allocate a team on every call. */
static void rope_row(const rotary_rope *r, float *out, const float *x, int n_head, int pos) {
    const int hd = r->head_dim, half = r->rotary_dim / 2;
    const float *c = r->cos + (size_t)pos * half, *s = r->sin + (size_t)pos * half;
    for (int h = 0; h < n_head; h++) {
        const float *xh = x + (size_t)h * hd;
        float *oh = out + (size_t)h * hd;
        if (out != x) memcpy(oh + 2 * half, xh + 2 * half, (size_t)(hd - 2 * half) * sizeof(float));
        if (r->pairing == ROTARY_ROPE_HALF) {
#pragma omp simd
            for (int i = 0; i < half; i++) {
                const float a = xh[i], b = xh[half + i];
                oh[i] = a * c[i] - b * s[i];
                oh[half + i] = a * s[i] + b * c[i];
            }
        } else {
#pragma omp simd
            for (int i = 0; i < half; i++) {
                const float a = xh[2 * i], b = xh[2 * i + 1];
                oh[2 * i] = a * c[i] - b * s[i];
                oh[2 * i + 1] = a * s[i] + b * c[i];
            }
        }
    }
}

/* Softmax attention of position pos over the cache, d->qkv to d->attout;
 * called by every thread of the step's team, ending in a barrier. The cache
 * is head-major, (kv_head, max_T, head_dim) per layer, so the keys and
 * values a head reads are one contiguous run each. Each thread takes a
 * contiguous range of heads; it rotates their q in place and the k of
 * position pos of the kv heads they use into kr (the thread's row of d->h,
 * free between the norm and the q|k|v product), and the thread of the
 * first head of each kv head writes that k and v into the cache, while
 * every thread reads only rows < pos from it. */
static void softmax_step(rotary_decoder *d, int l, int pos, float *kr) {
    const rotary_model *m = d->m;
    const rotary_config *c = &m->cfg;
    const int nh = c->n_head, nkv = c->n_kv_head, hd = c->d_model / nh, kv = nkv * hd;
    const int group = nh / nkv;
    const size_t T = (size_t)d->max_T;
    const float scale = 1.0f / sqrtf((float)hd);
    const float *rel = c->pos == ROTARY_POS_T5 ? P(m->layout->rel_bias) : NULL;
    float *kc = d->k + (size_t)l * T * kv, *vc = d->v + (size_t)l * T * kv;
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int h0 = (int)((long)nh * t / nt), h1 = (int)((long)nh * (t + 1) / nt);
    const int g0 = h0 / group;
    const float *kq = d->qkv + nh * hd, *vq = d->qkv + nh * hd + kv; /* k, v of pos */
    for (int h = h0; h < h1; h++) {
        const int g = h / group;
        const float *kn = kq + g * hd;
        if (c->pos == ROTARY_POS_ROPE) {
            rope_row(&m->rope, d->qkv + h * hd, d->qkv + h * hd, 1, pos);
            if (h == h0 || h % group == 0) rope_row(&m->rope, kr + (g - g0) * hd, kn, 1, pos);
            kn = kr + (g - g0) * hd;
        }
        if (h % group == 0) {
            memcpy(kc + ((size_t)g * T + pos) * hd, kn, (size_t)hd * sizeof(float));
            memcpy(vc + ((size_t)g * T + pos) * hd, vq + g * hd, (size_t)hd * sizeof(float));
        }
    }
    const int by4 = hd % 16 == 0;
    for (int h = h0; h < h1; h++) {
        const int g = h / group;
        const float *q = d->qkv + h * hd;
        const float *kg = kc + (size_t)g * T * hd, *vg = vc + (size_t)g * T * hd;
        const float *kn = c->pos == ROTARY_POS_ROPE ? kr + (g - g0) * hd : kq + g * hd;
        float *att = d->att + (size_t)h * T;
        /* scores: rows < pos from the cache, four at a time; pos from kn */
        int j = 0;
        for (; by4 && j + 4 <= pos; j += 4) {
            const float *k0 = kg + (size_t)j * hd;
            dot4_f32(att + j, q, k0, k0 + hd, k0 + 2 * hd, k0 + 3 * hd, hd);
        }
        for (; j < pos; j++) att[j] = dot_f32(q, kg + (size_t)j * hd, hd);
        att[pos] = dot_f32(q, kn, hd);
        const float slope = m->alibi ? m->alibi[h] : 0.0f;
        float mx = -INFINITY, sum = 0;
        for (int i = 0; i <= pos; i++) {
            att[i] = rel ? att[i] * scale + rel[(size_t)d->bucket[pos - i] * nh + h]
                         : att[i] * scale - slope * (float)(pos - i);
            mx = att[i] > mx ? att[i] : mx;
        }
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i <= pos; i++) sum += att[i] = rotary_expf(att[i] - mx);
        const float inv = 1.0f / sum;
        /* o = sum_j p_j v_j, four rows per pass over o (o never overlaps
         * the cache) */
        float *o = d->attout + h * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (j = 0; j + 4 <= pos; j += 4) {
            const float *v0 = vg + (size_t)j * hd, *v1 = v0 + hd, *v2 = v1 + hd, *v3 = v2 + hd;
            const float p0 = att[j] * inv, p1 = att[j + 1] * inv, p2 = att[j + 2] * inv,
                        p3 = att[j + 3] * inv;
#pragma omp simd
            for (int i = 0; i < hd; i++)
                o[i] += (p0 * v0[i] + p1 * v1[i]) + (p2 * v2[i] + p3 * v3[i]);
        }
        for (; j <= pos; j++) {
            const float *vj = j < pos ? vg + (size_t)j * hd : vq + g * hd, p = att[j] * inv;
#pragma omp simd
            for (int i = 0; i < hd; i++) o[i] += p * vj[i];
        }
    }
#pragma omp barrier
}

/* Linear attention: fold position pos into the running sums S and z of
 * layer l, then read them; the same arithmetic as the full forward (phi as
 * elu1_forward, inlined like rope_row). One thread runs it. */
static void linear_step(rotary_decoder *d, int l, int pos) {
    rotary_model *m = d->m;
    const rotary_config *c = &m->cfg;
    const int nh = c->n_head, nkv = c->n_kv_head, hd = c->d_model / nh, group = nh / nkv;
    const int FS = (nh + nkv) * hd;
    float *S = d->S + (size_t)l * nkv * hd * hd, *z = d->z + (size_t)l * nkv * hd;
    if (pos == 0) { /* a fresh sequence (after init or reset) */
        memset(S, 0, (size_t)nkv * hd * hd * sizeof(float));
        memset(z, 0, (size_t)nkv * hd * sizeof(float));
    }
    for (int i = 0; i < FS; i++) d->feat[i] = d->qkv[i] > 0 ? d->qkv[i] + 1.0f : expf(d->qkv[i]);
    memcpy(d->rfeat, d->feat, (size_t)FS * sizeof(float));
    if (c->pos == ROTARY_POS_ROPE) rope_row(&m->rope, d->rfeat, d->rfeat, nh + nkv, pos);
    for (int g = 0; g < nkv; g++)
        linear_attention_update(S + (size_t)g * hd * hd, z + g * hd, d->rfeat + (nh + g) * hd,
                                d->feat + (nh + g) * hd, d->qkv + (nh + nkv + g) * hd, hd);
    for (int h = 0; h < nh; h++)
        linear_attention_query(d->attout + h * hd, S + (size_t)(h / group) * hd * hd,
                               z + (h / group) * hd, d->rfeat + h * hd, d->feat + h * hd, hd);
}

/* ------------------------------------------------------ int8 weights */

/* The Q8_0 allocation (d->q8): one quantized-input scratch per thread
 * first (64-byte aligned, for inputs up to the widest matrix), then per
 * layer the matrices (matvec.h's layout) in the order wqkv (QKV, C),
 * wo (C, A), wup (U, C), wdown (C, F), A = n_head * head_dim, then the
 * classifier (vocab, C), each starting on a 64-byte boundary. Offsets
 * follow from the shapes, so the struct keeps only the pointer. */
void q8_layer_shapes(const rotary_config *c, int rows[Q8_N], int cols[Q8_N]) {
    const int C = c->d_model, hd = C / c->n_head, F = c->d_ff;
    rows[Q8_WQKV] = (c->n_head + 2 * c->n_kv_head) * hd, cols[Q8_WQKV] = C;
    rows[Q8_WO] = C, cols[Q8_WO] = c->n_head * hd;
    rows[Q8_WUP] = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F, cols[Q8_WUP] = C;
    rows[Q8_WDOWN] = C, cols[Q8_WDOWN] = F;
}

size_t decoder_matrix(const rotary_config *c, const rotary_layout *lo, int l, int which, int *rows,
                      int *cols) {
    if (l == c->n_layer) {
        *rows = c->vocab, *cols = c->d_model;
        return lo->head;
    }
    int r[Q8_N], k[Q8_N];
    q8_layer_shapes(c, r, k);
    *rows = r[which], *cols = k[which];
    const layer_params *lp = &lo->layer[l];
    const size_t off[Q8_N] = {lp->wqkv, lp->wo, lp->wup, lp->wdown};
    return off[which];
}

/* bytes of one thread's scratch (q8_act_bytes is a multiple of 64) */
static size_t q8_scratch(const rotary_config *c) {
    return q8_act_bytes(c->d_model > c->d_ff ? c->d_model : c->d_ff);
}

/* One matrix rounded up to 64 bytes, so that the next starts aligned. */
static size_t q8_padded_bytes(int rows, int cols) {
    return (q8_matrix_bytes(rows, cols) + 63) & ~(size_t)63;
}

/* Offset of matrix `which` of layer l (l == n_layer: the classifier) in
 * a copy of every matrix stored one after another, each taking bytes(rows,
 * cols); the Q8_0 and the bfloat16 copies. */
static size_t matrix_offset(const rotary_config *c, int l, int which,
                            size_t (*bytes)(int rows, int cols)) {
    int rows[Q8_N], cols[Q8_N];
    q8_layer_shapes(c, rows, cols);
    size_t per_layer = 0, before = 0;
    for (int i = 0; i < Q8_N; i++) {
        size_t n = bytes(rows[i], cols[i]);
        before += i < which ? n : 0;
        per_layer += n;
    }
    return (size_t)l * per_layer + (l < c->n_layer ? before : 0);
}

size_t q8_matrix_offset(const rotary_config *c, int l, int which) {
    return matrix_offset(c, l, which, q8_padded_bytes);
}

size_t q8_weights_bytes(const rotary_config *c) {
    return q8_matrix_offset(c, c->n_layer, 0) + q8_padded_bytes(c->vocab, c->d_model);
}

/* Matrix `which` of layer l (l == n_layer: the classifier). */
static void *q8_matrix(const rotary_decoder *d, int l, int which) {
    const rotary_config *c = &d->m->cfg;
    return (char *)d->q8 + (size_t)d->threads * q8_scratch(c) + q8_matrix_offset(c, l, which);
}

int rotary_decoder_quantize(rotary_decoder *d) {
    if (!d->m || !d->buf) return rotary_fail(ROTARY_EINVAL, "quantize: decoder not initialised");
    rotary_model *m = d->m;
    const rotary_config *c = &m->cfg;
    const double bytes = (double)d->threads * q8_scratch(c) + (double)q8_weights_bytes(c);
    if (bytes > (double)((size_t)1 << 40))
        return rotary_fail(ROTARY_ENOMEM, "quantize: %.1f GiB of int8 weights",
                           bytes / 1073741824.0);
    /* rotary_alloc_floats gives 64-byte alignment (for the scratch). */
    void *q8 = rotary_alloc_floats(((size_t)bytes + 3) / 4, "int8 weights");
    if (!q8) return ROTARY_ENOMEM;
    free(d->q8);
    free(d->bf16);
    d->q8 = q8, d->bf16 = NULL;
    d->q8_bytes = (size_t)bytes;
    for (int l = 0; l <= c->n_layer; l++)
        for (int i = 0; i < DECODER_MATRICES(c, l); i++) {
            int rows, cols;
            const size_t off = decoder_matrix(c, m->layout, l, i, &rows, &cols);
            q8_quantize_matrix(q8_matrix(d, l, i), m->params + off, rows, cols);
        }
    return ROTARY_OK;
}

/* ---------------------------------------------------- bfloat16 weights */

/* The bfloat16 copy (d->bf16): the matrices in q8_matrix_offset's order,
 * matvec.h's layout (every row a multiple of 64 bytes). */
static size_t bf16_offset(const rotary_config *c, int l, int which) {
    return matrix_offset(c, l, which, bf16_matrix_bytes);
}

static const uint16_t *bf16_matrix(const rotary_decoder *d, int l, int which) {
    return (const uint16_t *)(const void *)((const char *)d->bf16 +
                                            bf16_offset(&d->m->cfg, l, which));
}

int rotary_decoder_bf16(rotary_decoder *d) {
    if (!d->m || !d->buf) return rotary_fail(ROTARY_EINVAL, "bf16: decoder not initialised");
    rotary_model *m = d->m;
    const rotary_config *c = &m->cfg;
    const double bytes = (double)bf16_offset(c, c->n_layer, 0) +
                         (double)bf16_matrix_bytes(c->vocab, c->d_model);
    if (bytes > (double)((size_t)1 << 40))
        return rotary_fail(ROTARY_ENOMEM, "bf16: %.1f GiB of weights", bytes / 1073741824.0);
    void *w = rotary_alloc_floats(((size_t)bytes + 3) / 4, "bf16 weights");
    if (!w) return ROTARY_ENOMEM;
    free(d->bf16);
    free(d->q8);
    d->bf16 = w, d->q8 = NULL, d->q8_bytes = 0;
    for (int l = 0; l <= c->n_layer; l++)
        for (int i = 0; i < DECODER_MATRICES(c, l); i++) {
            int rows, cols;
            const size_t off = decoder_matrix(c, m->layout, l, i, &rows, &cols);
            bf16_pack_matrix((uint16_t *)bf16_matrix(d, l, i), m->params + off, rows, cols);
        }
    return ROTARY_OK;
}

/* out (OC) (+)= W x + b with matrix `which` of layer l, shared out over the
 * team: the int8 copy after rotary_decoder_quantize (x quantized by each
 * thread into its own scratch), the bfloat16 copy after rotary_decoder_bf16,
 * the float32 weights (at offset w) otherwise. */
static void mv(rotary_decoder *d, matvec_team *tm, float *out, const float *x, int l, int which,
               size_t w, size_t b, int C, int OC, int accumulate) {
    const rotary_model *m = d->m;
    if (d->q8) {
        void *scratch = (char *)d->q8 + (size_t)omp_get_thread_num() * q8_scratch(&m->cfg);
        q8_act a = q8_act_view(scratch, C);
        q8_quantize_act(&a, x, C);
        matvec_q8_act_team(tm, out, q8_matrix(d, l, which), &a, P(b), C, OC, accumulate);
    } else if (d->bf16) {
        matvec_bf16_team(tm, out, bf16_matrix(d, l, which), x, P(b), C, OC, accumulate);
    } else {
        matvec_f32_team(tm, out, P(w), x, P(b), C, OC, accumulate);
    }
}

/* The body of a step, run by every thread of the team (see the top of the
 * decoder section); d->x holds the input embedding. */
static void step_team(rotary_decoder *d, matvec_team *tm, int pos) {
    rotary_model *m = d->m;
    const rotary_config *c = &m->cfg;
    const int C = c->d_model, nh = c->n_head, nkv = c->n_kv_head, hd = C / nh;
    const int QKV = (nh + 2 * nkv) * hd, F = c->d_ff;
    const int U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F;
    const rotary_layout *lo = m->layout;
    const int t = omp_get_thread_num();
    float *h = d->h + (size_t)t * pad16((size_t)C), *act = d->act + (size_t)t * pad16((size_t)F);

    for (int l = 0; l < c->n_layer; l++) {
        const layer_params *lp = &lo->layer[l];
        norm_row(m, h, d->x, P(lp->norm1_w), P(lp->norm1_b));
        mv(d, tm, d->qkv, h, l, Q8_WQKV, lp->wqkv, lp->bqkv, C, QKV, 0);
        if (c->attn == ROTARY_ATTN_LINEAR) {
#pragma omp single
            linear_step(d, l, pos);
        } else {
            softmax_step(d, l, pos, h);
        }
        mv(d, tm, d->x, d->attout, l, Q8_WO, lp->wo, lp->bo, nh * hd, C, 1);
        norm_row(m, h, d->x, P(lp->norm2_w), P(lp->norm2_b));
        mv(d, tm, d->up, h, l, Q8_WUP, lp->wup, lp->bup, C, U, 0);
        if (c->mlp == ROTARY_MLP_SWIGLU) { /* as swiglu_forward: silu(gate) * up */
            const float *g = d->up, *u = d->up + F;
#pragma omp simd
            for (int i = 0; i < F; i++) act[i] = g[i] / (1.0f + rotary_expf(-g[i])) * u[i];
        } else { /* as gelu_forward (tanh approximation) */
            for (int i = 0; i < F; i++) {
                const float x = d->up[i];
                const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
                act[i] = 0.5f * x * (1.0f + tanhf(u));
            }
        }
        mv(d, tm, d->x, act, l, Q8_WDOWN, lp->wdown, lp->bdown, F, C, 1);
    }
    norm_row(m, h, d->x, P(lo->normf_w), P(lo->normf_b));
    mv(d, tm, d->logits, h, c->n_layer, 0, lo->head, ABSENT, C, c->vocab, 0);
}

int rotary_decoder_step(rotary_decoder *d, int token, const float **logits) {
    rotary_model *m = d->m;
    const rotary_config *c = &m->cfg;
    if (token < 0 || token >= c->vocab)
        return rotary_fail(ROTARY_EINVAL, "token %d outside vocab %d", token, c->vocab);
    if (d->n >= d->max_T)
        return rotary_fail(ROTARY_EINVAL, "the KV cache is full (%d positions)", d->max_T);
    const int pos = d->n, C = c->d_model;
    const rotary_layout *lo = m->layout;

    memcpy(d->x, P(lo->tok_emb) + (size_t)token * C, (size_t)C * sizeof(float));
    const float *ptab = c->pos == ROTARY_POS_LEARNED ? P(lo->pos_emb) : m->pos_table;
    if (ptab)
        for (int i = 0; i < C; i++) d->x[i] += ptab[(size_t)pos * C + i];

    /* as many threads as OpenMP would use now, but no more than init made
     * rows for */
    int threads = omp_get_max_threads();
    threads = threads < d->threads ? threads : d->threads;
    int rows[Q8_N], cols[Q8_N];
    q8_layer_shapes(c, rows, cols);
    double weights = (double)c->vocab * C;
    for (int i = 0; i < Q8_N; i++) weights += (double)c->n_layer * rows[i] * cols[i];
    matvec_team tm = {d->team, d->threads};
    matvec_team_reset(&tm);
#pragma omp parallel num_threads(threads) if (weights >= STEP_PAR_MIN_WEIGHTS)
    step_team(d, &tm, pos);
    d->n++;
    *logits = d->logits;
    return ROTARY_OK;
}

/* ----------------------------------------------------------------- sampler */

typedef struct {
    float p;
    int id;
} candidate;

int rotary_sampler_init(rotary_sampler *s, int vocab, float temperature, int top_k,
                        float top_p, uint64_t seed) {
    memset(s, 0, sizeof *s);
    if (vocab < 1 || !(temperature >= 0) || top_k < 0 || !(top_p > 0 && top_p <= 1))
        return rotary_fail(ROTARY_EINVAL, "sampler: need temperature >= 0, top-k >= 0, "
                           "0 < top-p <= 1");
    s->work = malloc((size_t)vocab * sizeof(candidate));
    if (!s->work) return rotary_fail(ROTARY_ENOMEM, "sampler: out of memory");
    s->vocab = vocab;
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    rotary_rng_seed(&s->rng, seed);
    return ROTARY_OK;
}

void rotary_sampler_free(rotary_sampler *s) {
    free(s->work);
    memset(s, 0, sizeof *s);
}

static int by_prob_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id - y->id; /* ties: lower id first, so the order is total */
}

/* The first index of the largest logit (NaNs never win, except at 0 when
 * there is no number): the maximum in one vectorised pass, then a scan for
 * it, instead of a loop whose every step waits on the previous compare
 * (140 us for 32000 logits, 5% of an int8 step of the 110M model). */
static int argmax(const float *x, int n) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++)
        if (x[i] == mx) return i;
    return 0;
}

int rotary_sample(rotary_sampler *s, const float *logits) {
    const int V = s->vocab;
    candidate *c = s->work;
    const int best = argmax(logits, V);
    if (s->temperature == 0) return best;
    float sum = 0;
    for (int i = 0; i < V; i++) {
        c[i].p = expf((logits[i] - logits[best]) / s->temperature);
        c[i].id = i;
        sum += c[i].p;
    }
    int n = V;
    if (s->top_k > 0 || s->top_p < 1) {
        qsort(c, (size_t)V, sizeof *c, by_prob_desc);
        if (s->top_k > 0 && s->top_k < n) n = s->top_k;
        if (s->top_p < 1) {
            float cum = 0;
            for (int i = 0; i < n; i++) {
                cum += c[i].p / sum;
                if (cum >= s->top_p) {
                    n = i + 1;
                    break;
                }
            }
        }
        sum = 0;
        for (int i = 0; i < n; i++) sum += c[i].p;
    }
    float r = rotary_rng_uniform(&s->rng) * sum, cum = 0;
    for (int i = 0; i < n; i++) {
        cum += c[i].p;
        if (r < cum) return c[i].id;
    }
    return c[n - 1].id;
}
