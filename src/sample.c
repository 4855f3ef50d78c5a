/* sample.c: incremental decoding with a key/value cache, and the sampler. */
#include "internal.h"
#include "matvec.h"
#include "model_internal.h"
#include "ops.h"

#include <math.h>
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

int rotary_decoder_init(rotary_decoder *d, rotary_model *m, int max_T) {
    memset(d, 0, sizeof *d);
    int rc = rotary_model_extend(m, max_T);
    if (rc) return rc;
    const rotary_config *c = &m->cfg;
    size_t C = (size_t)c->d_model, hd = C / (size_t)c->n_head, kv = (size_t)c->n_kv_head * hd;
    size_t QKV = (size_t)(c->n_head + 2 * c->n_kv_head) * hd, F = (size_t)c->d_ff;
    size_t U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F;
    /* Softmax attention caches k and v of every position; linear attention
     * keeps S and z per kv head instead, whatever the length. */
    const int linear = c->attn == ROTARY_ATTN_LINEAR;
    size_t FS = (size_t)(c->n_head + c->n_kv_head) * hd;
    double cache = linear ? (double)c->n_layer * c->n_kv_head * (hd * hd + hd) + 2.0 * FS
                          : 2.0 * c->n_layer * (double)max_T * kv;
    double need = cache + 2.0 * C + QKV + (double)c->n_head * max_T + (double)c->n_head * hd + U +
                  F + c->vocab;
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
    d->h = p, p += C;
    d->qkv = p, p += QKV;
    d->att = p, p += (size_t)c->n_head * max_T;
    d->attout = p, p += (size_t)c->n_head * hd;
    d->up = p, p += U;
    d->act = p, p += F;
    d->logits = p;
    d->m = m;
    d->max_T = max_T;
    return ROTARY_OK;
}

void rotary_decoder_free(rotary_decoder *d) {
    free(d->buf);
    free(d->q8);
    free(d->bucket);
    memset(d, 0, sizeof *d);
}

void rotary_decoder_reset(rotary_decoder *d) { d->n = 0; }

#define P(off) ((off) == ABSENT ? NULL : m->params + (off))

static void norm(const rotary_model *m, float *out, const float *x, const float *w,
                 const float *b) {
    float mean, rstd;
    if (m->cfg.norm == ROTARY_NORM_LAYER)
        layernorm_forward(out, &mean, &rstd, x, w, b, 1, m->cfg.d_model, m->cfg.norm_eps);
    else
        rmsnorm_forward(out, &rstd, x, w, 1, m->cfg.d_model, m->cfg.norm_eps);
}

/* Softmax attention of position pos over the cache: d->qkv to d->attout. */
static void softmax_step(rotary_decoder *d, int l, int pos) {
    const rotary_model *m = d->m;
    const rotary_config *c = &m->cfg;
    const int nh = c->n_head, nkv = c->n_kv_head, hd = c->d_model / nh, kv = nkv * hd;
    const int group = nh / nkv;
    const float scale = 1.0f / sqrtf((float)hd);
    const float *rel = c->pos == ROTARY_POS_T5 ? P(m->layout->rel_bias) : NULL;
    float *kc = d->k + (size_t)l * d->max_T * kv, *vc = d->v + (size_t)l * d->max_T * kv;
    if (c->pos == ROTARY_POS_ROPE) {
        rotary_rope_forward(&m->rope, d->qkv, 1, 1, nh, (nh + 2 * nkv) * hd, &pos);
        rotary_rope_forward(&m->rope, d->qkv + nh * hd, 1, 1, nkv, (nh + 2 * nkv) * hd, &pos);
    }
    memcpy(kc + (size_t)pos * kv, d->qkv + nh * hd, (size_t)kv * sizeof(float));
    memcpy(vc + (size_t)pos * kv, d->qkv + nh * hd + kv, (size_t)kv * sizeof(float));
    /* Heads in parallel, each with its own row of att; a short cache is not
     * worth starting the threads for. */
#pragma omp parallel for schedule(static) if ((size_t)(pos + 1) * nh * hd >= 16384)
    for (int h = 0; h < nh; h++) {
        const float *q = d->qkv + h * hd;
        const int g = h / group;
        float *att = d->att + (size_t)h * d->max_T;
        float slope = m->alibi ? m->alibi[h] : 0.0f, mx = -INFINITY, sum = 0;
        for (int j = 0; j <= pos; j++) {
            const float *kj = kc + (size_t)j * kv + g * hd;
            const float s = dot_f32(q, kj, hd);
            if (rel)
                att[j] = s * scale + rel[(size_t)d->bucket[pos - j] * nh + h];
            else
                att[j] = s * scale - slope * (float)(pos - j);
            mx = att[j] > mx ? att[j] : mx;
        }
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j <= pos; j++) sum += att[j] = rotary_expf(att[j] - mx);
        float *o = d->attout + h * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        const float inv = 1.0f / sum;
        for (int j = 0; j <= pos; j++) {
            const float *vj = vc + (size_t)j * kv + g * hd, p = att[j] * inv;
#pragma omp simd /* o and vj never overlap (attout vs the cache) */
            for (int i = 0; i < hd; i++) o[i] += p * vj[i];
        }
    }
}

/* Linear attention: fold position pos into the running sums S and z of
 * layer l, then read them; the same arithmetic as the full forward. */
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
    elu1_forward(d->feat, d->qkv, 1, FS, (nh + 2 * nkv) * hd);
    memcpy(d->rfeat, d->feat, (size_t)FS * sizeof(float));
    if (c->pos == ROTARY_POS_ROPE) {
        rotary_rope_forward(&m->rope, d->rfeat, 1, 1, nh, FS, &pos);
        rotary_rope_forward(&m->rope, d->rfeat + nh * hd, 1, 1, nkv, FS, &pos);
    }
    for (int g = 0; g < nkv; g++)
        linear_attention_update(S + (size_t)g * hd * hd, z + g * hd, d->rfeat + (nh + g) * hd,
                                d->feat + (nh + g) * hd, d->qkv + (nh + nkv + g) * hd, hd);
    for (int h = 0; h < nh; h++)
        linear_attention_query(d->attout + h * hd, S + (size_t)(h / group) * hd * hd,
                               z + (h / group) * hd, d->rfeat + h * hd, d->feat + h * hd, hd);
}

/* ------------------------------------------------------ int8 weights */

/* The Q8_0 allocation (d->q8): the quantized input vector first (64-byte
 * aligned scratch for inputs up to the widest matrix), then per layer the
 * matrices (matvec.h's layout) in the order wqkv (QKV, C), wo (C, A),
 * wup (U, C), wdown (C, F), A = n_head * head_dim, then the classifier
 * (vocab, C), each starting on a 64-byte boundary. Offsets follow from the
 * shapes, so the struct keeps only the pointer. */
enum { Q8_WQKV, Q8_WO, Q8_WUP, Q8_WDOWN, Q8_N };

static void q8_shapes(const rotary_config *c, int rows[Q8_N], int cols[Q8_N]) {
    const int C = c->d_model, hd = C / c->n_head, F = c->d_ff;
    rows[Q8_WQKV] = (c->n_head + 2 * c->n_kv_head) * hd, cols[Q8_WQKV] = C;
    rows[Q8_WO] = C, cols[Q8_WO] = c->n_head * hd;
    rows[Q8_WUP] = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F, cols[Q8_WUP] = C;
    rows[Q8_WDOWN] = C, cols[Q8_WDOWN] = F;
}

static size_t q8_scratch(const rotary_config *c) {
    int w = c->d_model > c->d_ff ? c->d_model : c->d_ff;
    return q8_act_bytes(w); /* a multiple of 64 */
}

static size_t q8_size(int rows, int cols) { return (q8_matrix_bytes(rows, cols) + 63) & ~(size_t)63; }

/* Matrix `which` of layer l (l == n_layer: the classifier). */
static void *q8_matrix(const rotary_decoder *d, int l, int which) {
    const rotary_config *c = &d->m->cfg;
    int rows[Q8_N], cols[Q8_N];
    q8_shapes(c, rows, cols);
    size_t per_layer = 0, before = 0;
    for (int i = 0; i < Q8_N; i++) {
        size_t n = q8_size(rows[i], cols[i]);
        before += i < which ? n : 0;
        per_layer += n;
    }
    return (char *)d->q8 + q8_scratch(c) + (size_t)l * per_layer + (l < c->n_layer ? before : 0);
}

int rotary_decoder_quantize(rotary_decoder *d) {
    if (!d->m || !d->buf) return rotary_fail(ROTARY_EINVAL, "quantize: decoder not initialised");
    rotary_model *m = d->m;
    const rotary_config *c = &m->cfg;
    const rotary_layout *lo = m->layout;
    int rows[Q8_N], cols[Q8_N];
    q8_shapes(c, rows, cols);
    double bytes = (double)q8_scratch(c) + (double)q8_size(c->vocab, c->d_model);
    for (int i = 0; i < Q8_N; i++) bytes += (double)c->n_layer * q8_size(rows[i], cols[i]);
    if (bytes > (double)((size_t)1 << 40))
        return rotary_fail(ROTARY_ENOMEM, "quantize: %.1f GiB of int8 weights", bytes / 1073741824.0);
    /* rotary_alloc_floats gives 64-byte alignment (for the scratch). */
    void *q8 = rotary_alloc_floats(((size_t)bytes + 3) / 4, "int8 weights");
    if (!q8) return ROTARY_ENOMEM;
    free(d->q8);
    d->q8 = q8;
    d->q8_bytes = (size_t)bytes;
    for (int l = 0; l < c->n_layer; l++) {
        const layer_params *lp = &lo->layer[l];
        const size_t off[Q8_N] = {lp->wqkv, lp->wo, lp->wup, lp->wdown};
        for (int i = 0; i < Q8_N; i++)
            q8_quantize_matrix(q8_matrix(d, l, i), m->params + off[i], rows[i], cols[i]);
    }
    q8_quantize_matrix(q8_matrix(d, c->n_layer, 0), m->params + lo->head, c->vocab, c->d_model);
    return ROTARY_OK;
}

/* out (OC) (+)= W x + b with matrix `which` of layer l: the int8 copy after
 * rotary_decoder_quantize, the float32 weights (at offset w) before. */
static void mv(rotary_decoder *d, float *out, const float *x, int l, int which, size_t w,
               size_t b, int C, int OC, int accumulate) {
    const rotary_model *m = d->m;
    if (d->q8)
        matvec_q8(out, q8_matrix(d, l, which), x, P(b), C, OC, accumulate, d->q8);
    else
        matvec_f32(out, P(w), x, P(b), C, OC, accumulate);
}

int rotary_decoder_step(rotary_decoder *d, int token, const float **logits) {
    rotary_model *m = d->m;
    const rotary_config *c = &m->cfg;
    if (token < 0 || token >= c->vocab)
        return rotary_fail(ROTARY_EINVAL, "token %d outside vocab %d", token, c->vocab);
    if (d->n >= d->max_T)
        return rotary_fail(ROTARY_EINVAL, "the KV cache is full (%d positions)", d->max_T);
    const int pos = d->n, C = c->d_model, nh = c->n_head, nkv = c->n_kv_head, hd = C / nh;
    const int QKV = (nh + 2 * nkv) * hd, F = c->d_ff;
    const int U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F;
    const rotary_layout *lo = m->layout;

    memcpy(d->x, P(lo->tok_emb) + (size_t)token * C, (size_t)C * sizeof(float));
    const float *ptab = c->pos == ROTARY_POS_LEARNED ? P(lo->pos_emb) : m->pos_table;
    if (ptab)
        for (int i = 0; i < C; i++) d->x[i] += ptab[(size_t)pos * C + i];

    for (int l = 0; l < c->n_layer; l++) {
        const layer_params *lp = &lo->layer[l];
        norm(m, d->h, d->x, P(lp->norm1_w), P(lp->norm1_b));
        mv(d, d->qkv, d->h, l, Q8_WQKV, lp->wqkv, lp->bqkv, C, QKV, 0);
        if (c->attn == ROTARY_ATTN_LINEAR)
            linear_step(d, l, pos);
        else
            softmax_step(d, l, pos);
        mv(d, d->x, d->attout, l, Q8_WO, lp->wo, lp->bo, nh * hd, C, 1);
        norm(m, d->h, d->x, P(lp->norm2_w), P(lp->norm2_b));
        mv(d, d->up, d->h, l, Q8_WUP, lp->wup, lp->bup, C, U, 0);
        if (c->mlp == ROTARY_MLP_SWIGLU)
            swiglu_forward(d->act, d->up, 1, F);
        else
            gelu_forward(d->act, d->up, (size_t)F);
        mv(d, d->x, d->act, l, Q8_WDOWN, lp->wdown, lp->bdown, F, C, 1);
    }
    norm(m, d->h, d->x, P(lo->normf_w), P(lo->normf_b));
    mv(d, d->logits, d->h, c->n_layer, 0, lo->head, ABSENT, C, c->vocab, 0);
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

int rotary_sample(rotary_sampler *s, const float *logits) {
    const int V = s->vocab;
    candidate *c = s->work;
    int best = 0;
    for (int i = 1; i < V; i++) best = logits[i] > logits[best] ? i : best;
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
