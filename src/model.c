/* model.c: the decoder-only transformer: config, parameter table, forward
 * and backward. Parameters, gradients and activations each live in one
 * allocation; the step itself allocates nothing. */
#include "internal.h"
#include "model_internal.h"
#include "ops.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rotary_acts {
    int B, T;           /* capacity */
    int cur_B, cur_T;   /* shape of the last forward */
    int has_targets;
    int n_threads;
    float *buf;
    float *res, *res_mid, *h1, *mean1, *rstd1, *qkv, *att, *attout;
    float *h2, *mean2, *rstd2, *up, *act, *hf, *meanf, *rstdf, *logits, *lse;
    float *dres, *dh, *dqkv, *dattout, *dup, *dact, *scratch;
    float *tbias, *dtbias;    /* T5: (n_head, T) bias by distance, (B, n_head, T) its grad */
    float *feat, *rfeat, *den; /* linear attention: phi(q)|phi(k), rotated, denominators */
    float *dfeat, *drfeat;
    int *tokens, *targets, *pos;
};

/* ------------------------------------------------------------------ config */

void rotary_config_default(rotary_config *c) {
    memset(c, 0, sizeof *c);
    c->n_layer = 4;
    c->n_head = 4;
    c->n_kv_head = 4;
    c->d_model = 128;
    c->d_ff = 352; /* ~8/3 d_model for SwiGLU, rounded up to a multiple of 32 */
    c->ctx = 128;
    c->vocab = 256;
    c->norm = ROTARY_NORM_RMS;
    c->mlp = ROTARY_MLP_SWIGLU;
    c->pos = ROTARY_POS_ROPE;
    c->rope_pairing = ROTARY_ROPE_INTERLEAVED;
    c->rope_base = 10000.0;
    c->rotary_dim = 0;
    rotary_rope_scaling_default(&c->rope_scaling);
    c->tied = 1;
    c->bias = 0;
    c->norm_eps = 1e-5f;
    c->init_std = 0.02f;
    /* RMS of a sinusoid is amplitude/sqrt(2): this matches the RMS of the
     * token embeddings at init instead of swamping them. */
    c->sin_amplitude = 0.02f * 1.41421356f;
    c->attn = ROTARY_ATTN_SOFTMAX;
    c->t5_buckets = 32; /* T5's defaults */
    c->t5_max_distance = 128;
}

static const char *scaling_name(int type) {
    const char *n = rotary_rope_scaling_name(type);
    return n ? n : "(unknown)";
}

#define CHECK(cond, ...) \
    do { if (!(cond)) return rotary_fail(ROTARY_EINVAL, __VA_ARGS__); } while (0)

int rotary_config_validate(const rotary_config *c) {
    const int big = 1 << 20;
    CHECK(c->n_layer >= 1 && c->n_layer <= 4096, "n_layer %d: must be 1..4096", c->n_layer);
    CHECK(c->n_head >= 1 && c->n_head <= 4096, "n_head %d: must be 1..4096", c->n_head);
    CHECK(c->n_kv_head >= 1 && c->n_kv_head <= c->n_head && c->n_head % c->n_kv_head == 0,
          "n_kv_head %d: must divide n_head %d", c->n_kv_head, c->n_head);
    CHECK(c->d_model >= 1 && c->d_model <= big, "d_model %d: must be 1..%d", c->d_model, big);
    CHECK(c->d_model % c->n_head == 0, "d_model %d: must be a multiple of n_head %d",
          c->d_model, c->n_head);
    CHECK(c->d_ff >= 1 && c->d_ff <= 4 * big, "d_ff %d: must be 1..%d", c->d_ff, 4 * big);
    CHECK(c->ctx >= 1 && c->ctx <= big, "ctx %d: must be 1..%d", c->ctx, big);
    CHECK(c->vocab >= 2 && c->vocab <= 16 * big, "vocab %d: must be 2..%d", c->vocab, 16 * big);
    CHECK(c->norm == ROTARY_NORM_LAYER || c->norm == ROTARY_NORM_RMS, "norm %d: unknown", c->norm);
    CHECK(c->mlp == ROTARY_MLP_GELU || c->mlp == ROTARY_MLP_SWIGLU, "mlp %d: unknown", c->mlp);
    CHECK(c->pos >= ROTARY_POS_ROPE && c->pos <= ROTARY_POS_T5, "pos %d: unknown", c->pos);
    CHECK(c->attn == ROTARY_ATTN_SOFTMAX || c->attn == ROTARY_ATTN_LINEAR, "attn %d: unknown",
          c->attn);
    /* Linear attention never forms the score matrix these would bias. */
    CHECK(c->attn != ROTARY_ATTN_LINEAR || (c->pos != ROTARY_POS_ALIBI && c->pos != ROTARY_POS_T5),
          "pos %s: a bias on attention scores has no meaning for linear attention (use rope, "
          "learned, sinusoidal or none)", rotary_pos_name(c->pos));
    CHECK(c->tied == 0 || c->tied == 1, "tied %d: must be 0 or 1", c->tied);
    CHECK(c->bias == 0 || c->bias == 1, "bias %d: must be 0 or 1", c->bias);
    CHECK(c->norm_eps > 0 && c->norm_eps < 1, "norm_eps %g: must be in (0, 1)", c->norm_eps);
    CHECK(c->init_std > 0 && c->init_std < 10, "init_std %g: must be in (0, 10)", c->init_std);
    CHECK(c->sin_amplitude >= 0 && c->sin_amplitude < 100, "sin_amplitude %g: must be in [0, 100)",
          c->sin_amplitude);
    int hd = c->d_model / c->n_head;
    if (c->pos == ROTARY_POS_ROPE) {
        CHECK(c->rope_pairing == ROTARY_ROPE_INTERLEAVED || c->rope_pairing == ROTARY_ROPE_HALF,
              "rope_pairing %d: unknown", c->rope_pairing);
        CHECK(c->rope_base > 1 && c->rope_base < 1e12, "rope_base %g: must be in (1, 1e12)",
              c->rope_base);
        int rd = c->rotary_dim ? c->rotary_dim : hd;
        CHECK(rd > 0 && rd <= hd && rd % 2 == 0,
              "rotary_dim %d: must be even and at most head_dim %d", c->rotary_dim, hd);
        if (rotary_rope_scaling_validate(&c->rope_scaling)) return ROTARY_EINVAL;
        CHECK(c->rope_scaling.type != ROTARY_ROPE_SCALING_FACTORS ||
                  c->rope_scaling.n_factors == rd / 2,
              "rope_scaling factors: %d factors, but rotary_dim %d has %d pairs",
              c->rope_scaling.n_factors, rd, rd / 2);
    } else {
        CHECK(c->rope_scaling.type == ROTARY_ROPE_SCALING_NONE,
              "rope_scaling %s: only for pos rope (pos is %s)",
              scaling_name(c->rope_scaling.type), rotary_pos_name(c->pos));
    }
    if (c->pos == ROTARY_POS_SINUSOIDAL)
        CHECK(c->d_model % 2 == 0, "d_model %d: must be even for sinusoidal", c->d_model);
    if (c->pos == ROTARY_POS_T5) {
        CHECK(c->t5_buckets >= 2 && c->t5_buckets <= 4096, "t5_buckets %d: must be 2..4096",
              c->t5_buckets);
        CHECK(c->t5_max_distance > c->t5_buckets / 2 && c->t5_max_distance <= big,
              "t5_max_distance %d: must be in (t5_buckets/2 = %d, %d]", c->t5_max_distance,
              c->t5_buckets / 2, big);
    }
    return ROTARY_OK;
}

/* ------------------------------------------------------------ build, free */

typedef struct {
    rotary_model *m;
    int cap;
    int failed;
} table_builder;

static size_t add_tensor(table_builder *tb, const char *name, int ndim, int d0, int d1,
                         int decay) {
    rotary_model *m = tb->m;
    if (tb->failed) return ABSENT;
    if (m->n_tensors == tb->cap) {
        int cap = tb->cap ? 2 * tb->cap : 64;
        rotary_tensor *t = realloc(m->tensors, (size_t)cap * sizeof *t);
        if (!t) { tb->failed = 1; return ABSENT; }
        m->tensors = t;
        tb->cap = cap;
    }
    rotary_tensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim == 2 ? d1 : 0;
    t->numel = (size_t)d0 * (ndim == 2 ? (size_t)d1 : 1);
    t->offset = m->n_params;
    t->decay = decay;
    m->n_params += t->numel;
    return t->offset;
}

static void build_table(table_builder *tb) {
    rotary_model *m = tb->m;
    const rotary_config *c = &m->cfg;
    rotary_layout *lo = m->layout;
    int C = c->d_model, hd = C / c->n_head, F = c->d_ff;
    int has_nb = c->norm == ROTARY_NORM_LAYER && c->bias;
    char nm[64];
    lo->tok_emb = add_tensor(tb, "tok_emb.weight", 2, c->vocab, C, 1);
    /* One table shared by all layers, as in T5; a bias, so no weight decay. */
    lo->rel_bias = c->pos == ROTARY_POS_T5
                       ? add_tensor(tb, "rel_bias.weight", 2, c->t5_buckets, c->n_head, 0)
                       : ABSENT;
    lo->pos_emb = c->pos == ROTARY_POS_LEARNED ? add_tensor(tb, "pos_emb.weight", 2, c->ctx, C, 1)
                                               : ABSENT;
    for (int l = 0; l < c->n_layer; l++) {
        layer_params *p = &lo->layer[l];
#define T1(field, suffix, n) \
    (snprintf(nm, sizeof nm, "layers.%d.%s", l, suffix), p->field = add_tensor(tb, nm, 1, n, 0, 0))
#define T2(field, suffix, r, k) \
    (snprintf(nm, sizeof nm, "layers.%d.%s", l, suffix), p->field = add_tensor(tb, nm, 2, r, k, 1))
        *p = (layer_params){ABSENT, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT,
                            ABSENT, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT};
        T1(norm1_w, "norm1.weight", C);
        if (has_nb) T1(norm1_b, "norm1.bias", C);
        T2(wqkv, "attn.q.weight", c->n_head * hd, C);
        snprintf(nm, sizeof nm, "layers.%d.attn.k.weight", l);
        add_tensor(tb, nm, 2, c->n_kv_head * hd, C, 1);
        snprintf(nm, sizeof nm, "layers.%d.attn.v.weight", l);
        add_tensor(tb, nm, 2, c->n_kv_head * hd, C, 1);
        if (c->bias) {
            T1(bqkv, "attn.q.bias", c->n_head * hd);
            snprintf(nm, sizeof nm, "layers.%d.attn.k.bias", l);
            add_tensor(tb, nm, 1, c->n_kv_head * hd, 0, 0);
            snprintf(nm, sizeof nm, "layers.%d.attn.v.bias", l);
            add_tensor(tb, nm, 1, c->n_kv_head * hd, 0, 0);
        }
        T2(wo, "attn.o.weight", C, c->n_head * hd);
        if (c->bias) T1(bo, "attn.o.bias", C);
        T1(norm2_w, "norm2.weight", C);
        if (has_nb) T1(norm2_b, "norm2.bias", C);
        if (c->mlp == ROTARY_MLP_SWIGLU) {
            T2(wup, "mlp.gate.weight", F, C);
            snprintf(nm, sizeof nm, "layers.%d.mlp.up.weight", l);
            add_tensor(tb, nm, 2, F, C, 1);
            if (c->bias) {
                T1(bup, "mlp.gate.bias", F);
                snprintf(nm, sizeof nm, "layers.%d.mlp.up.bias", l);
                add_tensor(tb, nm, 1, F, 0, 0);
            }
        } else {
            T2(wup, "mlp.up.weight", F, C);
            if (c->bias) T1(bup, "mlp.up.bias", F);
        }
        T2(wdown, "mlp.down.weight", C, F);
        if (c->bias) T1(bdown, "mlp.down.bias", C);
#undef T1
#undef T2
    }
    lo->normf_w = add_tensor(tb, "norm_f.weight", 1, C, 0, 0);
    lo->normf_b = has_nb ? add_tensor(tb, "norm_f.bias", 1, C, 0, 0) : ABSENT;
    lo->head = c->tied ? lo->tok_emb : add_tensor(tb, "lm_head.weight", 2, c->vocab, C, 1);
}

int rotary_model_build(rotary_model *m, const rotary_config *cfg) {
    return model_build(m, cfg, 1);
}

int model_build(rotary_model *m, const rotary_config *cfg, int with_grads) {
    memset(m, 0, sizeof *m);
    int rc = rotary_config_validate(cfg);
    if (rc) return rc;
    m->cfg = *cfg;
    m->layout = calloc(1, sizeof(rotary_layout) + (size_t)cfg->n_layer * sizeof(layer_params));
    if (!m->layout) return rotary_fail(ROTARY_ENOMEM, "model: cannot allocate layout");
    table_builder tb = {m, 0, 0};
    build_table(&tb);
    if (tb.failed) {
        rotary_model_free(m);
        return rotary_fail(ROTARY_ENOMEM, "model: cannot allocate tensor table");
    }
    /* Sizes are bounded by validate (each dim <= 2^24), but the total can
     * still be absurd: refuse more than 2^36 parameters (256 GiB). */
    if (m->n_params > ((size_t)1 << 36)) {
        size_t n = m->n_params;
        rotary_model_free(m);
        return rotary_fail(ROTARY_ENOMEM, "model: %zu parameters is more than supported", n);
    }
    m->params = rotary_alloc_floats(m->n_params, "model parameters");
    if (m->params && with_grads) m->grads = rotary_alloc_floats(m->n_params, "model gradients");
    if (!m->params || (with_grads && !m->grads)) {
        rotary_model_free(m);
        return ROTARY_ENOMEM;
    }
    int C = cfg->d_model, hd = C / cfg->n_head;
    m->pos_len = cfg->ctx;
    if (cfg->pos == ROTARY_POS_ROPE) {
        rc = rotary_rope_init(&m->rope, hd, cfg->rotary_dim, cfg->rope_base,
                              (rotary_rope_pairing)cfg->rope_pairing, cfg->ctx,
                              &cfg->rope_scaling);
        if (rc) {
            rotary_model_free(m);
            return rc;
        }
    } else if (cfg->pos == ROTARY_POS_SINUSOIDAL) {
        m->pos_table = rotary_alloc_floats((size_t)cfg->ctx * C, "sinusoidal table");
        if (!m->pos_table) {
            rotary_model_free(m);
            return ROTARY_ENOMEM;
        }
        rotary_sinusoidal_table(m->pos_table, cfg->ctx, C, cfg->sin_amplitude);
    } else if (cfg->pos == ROTARY_POS_ALIBI) {
        m->alibi = rotary_alloc_floats((size_t)cfg->n_head, "alibi slopes");
        if (!m->alibi) {
            rotary_model_free(m);
            return ROTARY_ENOMEM;
        }
        rotary_alibi_slopes(m->alibi, cfg->n_head);
    }
    return ROTARY_OK;
}

static void free_acts(rotary_acts *a) {
    if (!a) return;
    free(a->buf);
    free(a->tokens);
    free(a);
}

void rotary_model_free(rotary_model *m) {
    free(m->params);
    free(m->grads);
    free(m->tensors);
    free(m->layout);
    free(m->pos_table);
    free(m->alibi);
    rotary_rope_free(&m->rope);
    free_acts(m->acts);
    memset(m, 0, sizeof *m);
}

int rotary_model_set_rope_scaling(rotary_model *m, const rotary_rope_scaling *s) {
    rotary_rope_scaling none;
    rotary_rope_scaling_default(&none);
    if (!s) s = &none;
    if (!m || !m->params) return rotary_fail(ROTARY_EINVAL, "rope scaling: the model is not built");
    if (m->cfg.pos != ROTARY_POS_ROPE) {
        if (s->type == ROTARY_ROPE_SCALING_NONE) return ROTARY_OK;
        return rotary_fail(ROTARY_EINVAL, "rope scaling %s: the model uses pos %s, not rope",
                           scaling_name(s->type), rotary_pos_name(m->cfg.pos));
    }
    /* Build the new tables first, so a failure leaves the model as it was. */
    rotary_rope r;
    const rotary_rope *old = &m->rope;
    int rc = rotary_rope_init(&r, old->head_dim, old->rotary_dim, old->base,
                              (rotary_rope_pairing)old->pairing, old->max_pos, s);
    if (rc) return rc;
    rotary_rope_free(&m->rope);
    m->rope = r;
    m->cfg.rope_scaling = *s;
    return ROTARY_OK;
}

const rotary_tensor *rotary_model_tensor(const rotary_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

void rotary_model_init(rotary_model *m, uint64_t seed) {
    rotary_rng rng;
    rotary_rng_seed(&rng, seed);
    float resid_scale = 1.0f / sqrtf(2.0f * (float)m->cfg.n_layer);
    for (int i = 0; i < m->n_tensors; i++) {
        const rotary_tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        size_t len = strlen(t->name);
        int is_norm = strstr(t->name, "norm") != NULL;
        int is_bias = len > 5 && strcmp(t->name + len - 5, ".bias") == 0;
        if (t->offset == m->layout->rel_bias) {
            /* Zero: the model starts as NoPE and draws nothing from rng, so
             * the other weights equal those of the same seed without T5. */
            memset(p, 0, t->numel * sizeof(float));
        } else if (t->ndim == 2) {
            float std = m->cfg.init_std;
            if (strstr(t->name, "attn.o.") || strstr(t->name, "mlp.down.")) std *= resid_scale;
            for (size_t j = 0; j < t->numel; j++) p[j] = std * rotary_rng_normal(&rng);
        } else {
            float v = is_norm && !is_bias ? 1.0f : 0.0f;
            for (size_t j = 0; j < t->numel; j++) p[j] = v;
        }
    }
}

/* ------------------------------------------------------------- activations */

int rotary_model_reserve(rotary_model *m, int B, int T) {
    const rotary_config *c = &m->cfg;
    if (B < 1 || T < 1 || T > m->pos_len)
        return rotary_fail(ROTARY_EINVAL, "reserve: batch %d x %d tokens (the model takes up to %d; "
                           "see rotary_model_extend)", B, T, m->pos_len);
    rotary_acts *a = m->acts;
    if (a && a->B >= B && a->T >= T) return ROTARY_OK;
    free_acts(a);
    m->acts = NULL;

    size_t N = (size_t)B * T, L = (size_t)c->n_layer, C = (size_t)c->d_model;
    size_t hd = C / (size_t)c->n_head, nh = (size_t)c->n_head;
    size_t QKV = (size_t)(c->n_head + 2 * c->n_kv_head) * hd;
    size_t F = (size_t)c->d_ff, U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F;
    size_t V = (size_t)c->vocab;
    int n_threads = omp_get_max_threads();
    /* Only what the attention kind needs: softmax keeps the probabilities
     * (B, nh, T, T) per layer; linear attention keeps the features (twice
     * with RoPE: plain and rotated) and one denominator per (token, head). */
    const int linear = c->attn == ROTARY_ATTN_LINEAR;
    size_t FS = linear ? (size_t)(c->n_head + c->n_kv_head) * hd : 0;
    size_t RF = linear && c->pos == ROTARY_POS_ROPE ? FS : 0;
    double att_n = linear ? 0 : (double)B * nh * T * T;
    double den_n = linear ? (double)N * nh : 0;
    double scratch_n = linear ? (double)LINATTN_SCRATCH(hd) : (double)ATTN_SCRATCH(T, hd);
    size_t TB = c->pos == ROTARY_POS_T5 ? nh * T : 0;
    /* Every size below is a product of validated dims; doubles catch overflow. */
    double need = (double)N * (double)(L + 1) * C + (double)L * N * (3 * C + 4 + QKV + nh * hd + U + F)
                + (double)L * (att_n + den_n + (double)N * (FS + RF)) + (double)N * (C + 3 + V)
                + (double)N * (2 * C + QKV + nh * hd + U + F + 2 * FS) + (double)n_threads * scratch_n
                + (double)TB * (B + 1);
    if (need > (double)((size_t)1 << 40))
        return rotary_fail(ROTARY_ENOMEM, "reserve: activations for batch %d x %d need %.0f floats",
                           B, T, need);
    a = calloc(1, sizeof *a);
    if (!a) return rotary_fail(ROTARY_ENOMEM, "reserve: out of memory");
    a->B = B;
    a->T = T;
    a->n_threads = n_threads;
    a->buf = rotary_alloc_floats((size_t)need, "activations");
    a->tokens = malloc((2 * N + (size_t)T) * sizeof(int));
    if (!a->buf || !a->tokens) {
        free_acts(a);
        return rotary_fail(ROTARY_ENOMEM, "reserve: cannot allocate %.0f MiB of activations",
                           need * 4 / 1048576.0);
    }
    a->targets = a->tokens + N;
    a->pos = a->targets + N;
    for (int t = 0; t < T; t++) a->pos[t] = t;
    float *p = a->buf;
#define CARVE(field, n) (a->field = p, p += (n))
    CARVE(res, (L + 1) * N * C);
    CARVE(res_mid, L * N * C);
    CARVE(h1, L * N * C);
    CARVE(mean1, L * N);
    CARVE(rstd1, L * N);
    CARVE(qkv, L * N * QKV);
    CARVE(att, L * (size_t)att_n);
    CARVE(den, L * (size_t)den_n);
    CARVE(feat, L * N * FS);
    CARVE(rfeat, L * N * RF);
    CARVE(attout, L * N * nh * hd);
    CARVE(h2, L * N * C);
    CARVE(mean2, L * N);
    CARVE(rstd2, L * N);
    CARVE(up, L * N * U);
    CARVE(act, L * N * F);
    CARVE(hf, N * C);
    CARVE(meanf, N);
    CARVE(rstdf, N);
    CARVE(logits, N * V);
    CARVE(lse, N);
    CARVE(dres, N * C);
    CARVE(dh, N * C);
    CARVE(dqkv, N * QKV);
    CARVE(dattout, N * nh * hd);
    CARVE(dup, N * U);
    CARVE(dact, N * F);
    CARVE(dfeat, N * FS);
    CARVE(drfeat, N * FS);
    CARVE(scratch, (size_t)n_threads * (size_t)scratch_n);
    CARVE(tbias, TB);
    CARVE(dtbias, (size_t)B * TB);
#undef CARVE
    m->acts = a;
    return ROTARY_OK;
}

/* ------------------------------------------------------------ forward pass */

#define P(off) (m->params + (off))
#define G(off) (m->grads + (off))
#define OPT(base, off) ((off) == ABSENT ? NULL : (base) + (off))

static void norm_forward(const rotary_model *m, float *out, float *mean, float *rstd,
                         const float *inp, size_t w, size_t b, int N) {
    const rotary_config *c = &m->cfg;
    if (c->norm == ROTARY_NORM_LAYER)
        layernorm_forward(out, mean, rstd, inp, P(w), OPT(m->params, b), N, c->d_model, c->norm_eps);
    else
        rmsnorm_forward(out, rstd, inp, P(w), N, c->d_model, c->norm_eps);
}

static void norm_backward(rotary_model *m, float *dinp, const float *dout, const float *inp,
                          const float *mean, const float *rstd, size_t w, size_t b, int N) {
    const rotary_config *c = &m->cfg;
    if (c->norm == ROTARY_NORM_LAYER)
        layernorm_backward(dinp, G(w), OPT(m->grads, b), dout, inp, P(w), mean, rstd, N,
                           c->d_model);
    else
        rmsnorm_backward(dinp, G(w), dout, inp, P(w), rstd, N, c->d_model);
}

/* T5: tab (n_head, T), the bias of each head by distance, from the table
 * shared by all layers. */
static void t5_bias_forward(const rotary_model *m, float *tab, int T) {
    const rotary_config *c = &m->cfg;
    const float *rel = P(m->layout->rel_bias);
    for (int n = 0; n < T; n++) {
        const int b = rotary_t5_bucket(n, c->t5_buckets, c->t5_max_distance);
        for (int h = 0; h < c->n_head; h++) tab[(size_t)h * T + n] = rel[(size_t)b * c->n_head + h];
    }
}

/* dtab (B, n_head, T) into the table's gradient, in a fixed order. */
static void t5_bias_backward(rotary_model *m, const float *dtab, int B, int T) {
    const int nh = m->cfg.n_head;
    float *drel = G(m->layout->rel_bias);
    for (int n = 0; n < T; n++) {
        const int bk = rotary_t5_bucket(n, m->cfg.t5_buckets, m->cfg.t5_max_distance);
        for (int h = 0; h < nh; h++) {
            float s = 0.0f;
            for (int b = 0; b < B; b++) s += dtab[((size_t)b * nh + h) * T + n];
            drel[(size_t)bk * nh + h] += s;
        }
    }
}

/* What layer l's attention saves for the backward; NULL where the kind
 * (softmax or linear) has none. rfeat is feat when nothing rotates. */
typedef struct {
    float *att, *feat, *rfeat, *den;
} attn_saved;

static attn_saved attn_slices(const rotary_model *m, int l) {
    const rotary_config *c = &m->cfg;
    const rotary_acts *a = m->acts;
    const size_t capN = (size_t)a->B * a->T, nh = (size_t)c->n_head;
    const size_t FS = (nh + (size_t)c->n_kv_head) * (size_t)(c->d_model / c->n_head);
    attn_saved s = {NULL, NULL, NULL, NULL};
    if (c->attn == ROTARY_ATTN_LINEAR) {
        s.feat = a->feat + l * capN * FS;
        s.rfeat = c->pos == ROTARY_POS_ROPE ? a->rfeat + l * capN * FS : s.feat;
        s.den = a->den + l * capN * nh;
    } else {
        s.att = a->att + l * (size_t)a->B * nh * a->T * a->T;
    }
    return s;
}

/* RoPE on x (B, T, nh | nkv heads, rows ld floats apart): q heads, then k. */
static int rope_qk(rotary_model *m, float *x, int B, int T, int ld, int backward) {
    const int nh = m->cfg.n_head, nkv = m->cfg.n_kv_head, hd = m->cfg.d_model / nh;
    const int *pos = m->acts->pos;
    if (backward) {
        int rc = rotary_rope_backward(&m->rope, x, B, T, nh, ld, pos);
        return rc ? rc : rotary_rope_backward(&m->rope, x + nh * hd, B, T, nkv, ld, pos);
    }
    int rc = rotary_rope_forward(&m->rope, x, B, T, nh, ld, pos);
    return rc ? rc : rotary_rope_forward(&m->rope, x + nh * hd, B, T, nkv, ld, pos);
}

/* Layer l's attention from its q | k | v (qkv) to attout. */
static int attention_block_forward(rotary_model *m, int l, float *qkv, float *attout, int B,
                                   int T) {
    const rotary_config *c = &m->cfg;
    rotary_acts *a = m->acts;
    const int nh = c->n_head, nkv = c->n_kv_head, hd = c->d_model / nh, N = B * T;
    const int QKV = (nh + 2 * nkv) * hd, FS = (nh + nkv) * hd;
    const attn_saved s = attn_slices(m, l);
    int rc = ROTARY_OK;
    if (c->attn == ROTARY_ATTN_LINEAR) {
        /* RoPE rotates the features in the numerator, not q and k. */
        elu1_forward(s.feat, qkv, N, FS, QKV);
        if (c->pos == ROTARY_POS_ROPE) {
            memcpy(s.rfeat, s.feat, (size_t)N * FS * sizeof(float));
            if ((rc = rope_qk(m, s.rfeat, B, T, FS, 0))) return rc;
        }
        linear_attention_forward(attout, s.den, s.feat, s.rfeat, qkv, B, T, nh, nkv, hd,
                                 a->scratch);
        return ROTARY_OK;
    }
    if (c->pos == ROTARY_POS_ROPE && (rc = rope_qk(m, qkv, B, T, QKV, 0))) return rc;
    attention_forward(attout, s.att, qkv, m->alibi, c->pos == ROTARY_POS_T5 ? a->tbias : NULL, B,
                      T, nh, nkv, hd, a->scratch);
    return ROTARY_OK;
}

/* a->dattout to a->dqkv (=), and into the T5 table's gradient. */
static int attention_block_backward(rotary_model *m, int l, const float *qkv,
                                    const float *attout, int B, int T) {
    const rotary_config *c = &m->cfg;
    rotary_acts *a = m->acts;
    const int nh = c->n_head, nkv = c->n_kv_head, hd = c->d_model / nh, N = B * T;
    const int QKV = (nh + 2 * nkv) * hd, FS = (nh + nkv) * hd;
    const attn_saved s = attn_slices(m, l);
    int rc = ROTARY_OK;
    if (c->attn == ROTARY_ATTN_LINEAR) {
        linear_attention_backward(a->dfeat, a->drfeat, a->dqkv, a->scratch, a->dattout, s.feat,
                                  s.rfeat, qkv, attout, s.den, B, T, nh, nkv, hd);
        if (c->pos == ROTARY_POS_ROPE && (rc = rope_qk(m, a->drfeat, B, T, FS, 1))) return rc;
        const size_t n = (size_t)N * FS;
#pragma omp parallel for
        for (size_t i = 0; i < n; i++) a->dfeat[i] += a->drfeat[i];
        elu1_backward(a->dqkv, a->dfeat, qkv, N, FS, QKV);
        return ROTARY_OK;
    }
    const int t5 = c->pos == ROTARY_POS_T5;
    attention_backward(a->dqkv, t5 ? a->dtbias : NULL, a->scratch, a->dattout, qkv, s.att, B, T,
                       nh, nkv, hd);
    if (t5) t5_bias_backward(m, a->dtbias, B, T);
    if (c->pos == ROTARY_POS_ROPE && (rc = rope_qk(m, a->dqkv, B, T, QKV, 1))) return rc;
    return ROTARY_OK;
}

int rotary_model_forward(rotary_model *m, const int *tokens, const int *targets, int B, int T,
                         float *loss) {
    const rotary_config *c = &m->cfg;
    int rc = rotary_model_reserve(m, B, T);
    if (rc) return rc;
    rotary_acts *a = m->acts;
    const rotary_layout *lo = m->layout;
    const int N = B * T, C = c->d_model, nh = c->n_head, nkv = c->n_kv_head, hd = C / nh;
    const int QKV = (nh + 2 * nkv) * hd, F = c->d_ff;
    const int U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F;
    const size_t NC = (size_t)N * C, capN = (size_t)a->B * a->T;
    for (int i = 0; i < N; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->vocab)
            return rotary_fail(ROTARY_EINVAL, "forward: token %d at index %d outside vocab %d",
                               tokens[i], i, c->vocab);
        if (targets && (targets[i] < 0 || targets[i] >= c->vocab))
            return rotary_fail(ROTARY_EINVAL, "forward: target %d at index %d outside vocab %d",
                               targets[i], i, c->vocab);
    }
    memcpy(a->tokens, tokens, (size_t)N * sizeof(int));
    if (targets) memcpy(a->targets, targets, (size_t)N * sizeof(int));
    a->cur_B = B;
    a->cur_T = T;
    a->has_targets = targets != NULL;

    /* Embedding plus any absolute position table. */
    const float *ptab = c->pos == ROTARY_POS_LEARNED ? P(lo->pos_emb) : m->pos_table;
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *e = P(lo->tok_emb) + (size_t)tokens[n] * C;
        float *x = a->res + (size_t)n * C;
        if (ptab) {
            const float *pe = ptab + (size_t)(n % T) * C;
            for (int i = 0; i < C; i++) x[i] = e[i] + pe[i];
        } else {
            memcpy(x, e, (size_t)C * sizeof(float));
        }
    }

    if (c->pos == ROTARY_POS_T5) t5_bias_forward(m, a->tbias, T);

    for (int l = 0; l < c->n_layer; l++) {
        const layer_params *lp = &lo->layer[l];
        float *x = a->res + l * capN * C, *xmid = a->res_mid + l * capN * C;
        float *h1 = a->h1 + l * capN * C, *h2 = a->h2 + l * capN * C;
        float *qkv = a->qkv + l * capN * QKV, *attout = a->attout + l * capN * nh * hd;
        float *up = a->up + l * capN * U, *act = a->act + l * capN * F;

        norm_forward(m, h1, a->mean1 + l * capN, a->rstd1 + l * capN, x, lp->norm1_w, lp->norm1_b, N);
        linear_forward(qkv, h1, P(lp->wqkv), OPT(m->params, lp->bqkv), N, C, QKV, 0);
        if ((rc = attention_block_forward(m, l, qkv, attout, B, T))) return rc;
        memcpy(xmid, x, NC * sizeof(float));
        linear_forward(xmid, attout, P(lp->wo), OPT(m->params, lp->bo), N, nh * hd, C, 1);

        norm_forward(m, h2, a->mean2 + l * capN, a->rstd2 + l * capN, xmid, lp->norm2_w, lp->norm2_b, N);
        linear_forward(up, h2, P(lp->wup), OPT(m->params, lp->bup), N, C, U, 0);
        if (c->mlp == ROTARY_MLP_SWIGLU)
            swiglu_forward(act, up, N, F);
        else
            gelu_forward(act, up, (size_t)N * F);
        float *next = a->res + (l + 1) * capN * C;
        memcpy(next, xmid, NC * sizeof(float));
        linear_forward(next, act, P(lp->wdown), OPT(m->params, lp->bdown), N, F, C, 1);
    }
    norm_forward(m, a->hf, a->meanf, a->rstdf, a->res + c->n_layer * capN * C, lo->normf_w,
                 lo->normf_b, N);
    linear_forward(a->logits, a->hf, P(lo->head), NULL, N, C, c->vocab, 0);
    if (targets) {
        double l = crossentropy_forward(a->lse, a->logits, targets, N, c->vocab);
        if (loss) *loss = (float)l;
    } else if (loss) {
        *loss = NAN;
    }
    return ROTARY_OK;
}

const float *rotary_model_logits(const rotary_model *m) {
    return m->acts ? m->acts->logits : NULL;
}

void rotary_model_zero_grad(rotary_model *m) {
    if (m->grads) memset(m->grads, 0, m->n_params * sizeof(float));
}

/* ----------------------------------------------------------- backward pass */

int rotary_model_backward(rotary_model *m) {
    const rotary_config *c = &m->cfg;
    rotary_acts *a = m->acts;
    if (!a || !a->has_targets)
        return rotary_fail(ROTARY_EINVAL, "backward: no forward pass with targets to differentiate");
    if (!m->grads) return rotary_fail(ROTARY_EINVAL, "backward: the model was loaded for inference only");
    const rotary_layout *lo = m->layout;
    const int B = a->cur_B, T = a->cur_T, N = B * T, C = c->d_model, nh = c->n_head;
    const int nkv = c->n_kv_head, hd = C / nh, QKV = (nh + 2 * nkv) * hd, F = c->d_ff;
    const int U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F;
    const size_t capN = (size_t)a->B * a->T;
    int rc;

    /* Loss and head; logits become their gradient in place. */
    crossentropy_backward(a->logits, a->lse, a->targets, N, c->vocab, 1.0f / N);
    linear_backward(a->dh, G(lo->head), NULL, a->logits, a->hf, P(lo->head), N, C, c->vocab);
    memset(a->dres, 0, (size_t)N * C * sizeof(float));
    norm_backward(m, a->dres, a->dh, a->res + c->n_layer * capN * C, a->meanf, a->rstdf,
                  lo->normf_w, lo->normf_b, N);

    for (int l = c->n_layer - 1; l >= 0; l--) {
        const layer_params *lp = &lo->layer[l];
        const float *x = a->res + l * capN * C, *xmid = a->res_mid + l * capN * C;
        const float *h1 = a->h1 + l * capN * C, *h2 = a->h2 + l * capN * C;
        const float *qkv = a->qkv + l * capN * QKV, *attout = a->attout + l * capN * nh * hd;
        const float *up = a->up + l * capN * U, *act = a->act + l * capN * F;

        /* MLP block: dres holds the gradient of this layer's output. */
        linear_backward(a->dact, G(lp->wdown), OPT(m->grads, lp->bdown), a->dres, act,
                        P(lp->wdown), N, F, C);
        if (c->mlp == ROTARY_MLP_SWIGLU)
            swiglu_backward(a->dup, a->dact, up, N, F);
        else
            gelu_backward(a->dup, a->dact, up, (size_t)N * F);
        linear_backward(a->dh, G(lp->wup), OPT(m->grads, lp->bup), a->dup, h2, P(lp->wup), N, C, U);
        norm_backward(m, a->dres, a->dh, xmid, a->mean2 + l * capN, a->rstd2 + l * capN,
                      lp->norm2_w, lp->norm2_b, N);

        /* Attention block. */
        linear_backward(a->dattout, G(lp->wo), OPT(m->grads, lp->bo), a->dres, attout, P(lp->wo),
                        N, nh * hd, C);
        if ((rc = attention_block_backward(m, l, qkv, attout, B, T))) return rc;
        linear_backward(a->dh, G(lp->wqkv), OPT(m->grads, lp->bqkv), a->dqkv, h1, P(lp->wqkv), N,
                        C, QKV);
        norm_backward(m, a->dres, a->dh, x, a->mean1 + l * capN, a->rstd1 + l * capN,
                      lp->norm1_w, lp->norm1_b, N);
        /* Layer l starts at norm1_w in the buffer; it and all that follows
         * (later layers, the final norm, an untied head) are done. */
        if (m->grads_ready) m->grads_ready(m->grads_ready_ctx, lp->norm1_w);
    }

    /* Embeddings: columns split across threads so each gradient element has
     * one writer and a fixed summation order. */
    float *dtok = G(lo->tok_emb);
    float *dpos = c->pos == ROTARY_POS_LEARNED ? G(lo->pos_emb) : NULL;
#pragma omp parallel for
    for (int i0 = 0; i0 < C; i0 += 16) {
        int i1 = i0 + 16 < C ? i0 + 16 : C;
        for (int n = 0; n < N; n++) {
            const float *d = a->dres + (size_t)n * C;
            float *dt = dtok + (size_t)a->tokens[n] * C;
            for (int i = i0; i < i1; i++) dt[i] += d[i];
            if (dpos) {
                float *dp = dpos + (size_t)(n % T) * C;
                for (int i = i0; i < i1; i++) dp[i] += d[i];
            }
        }
    }
    a->has_targets = 0; /* the logits were consumed */
    return ROTARY_OK;
}
