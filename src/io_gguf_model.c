/* io_gguf_model.c: GGUF models of architecture `llama` into our model, and
 * our models out to GGUF.
 *
 * Names and shapes follow llama.cpp's llama architecture: token_embd,
 * blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
 * ffn_up, ffn_down}, output_norm, output (absent when tied). A matrix that
 * maps in -> out has ne = {in, out}, the same bytes as our (out, in) rows.
 * RoPE rotates adjacent pairs (2i, 2i+1) within the first
 * llama.rope.dimension_count dims of each head. */
#include "internal.h"
#include "model_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Our tensor names, per layer, and theirs. */
static const char *const OURS[9] = {"norm1.weight", "attn.q.weight", "attn.k.weight",
                                    "attn.v.weight", "attn.o.weight", "norm2.weight",
                                    "mlp.gate.weight", "mlp.up.weight", "mlp.down.weight"};
static const char *const THEIRS[9] = {"attn_norm.weight", "attn_q.weight", "attn_k.weight",
                                      "attn_v.weight", "attn_output.weight", "ffn_norm.weight",
                                      "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"};

/* An integer key that must be present and in [lo, hi]. */
static int get_dim(const rotary_gguf *g, const char *key, int64_t lo, int64_t hi, int *out) {
    int64_t v;
    int rc = rotary_gguf_get_int(g, key, &v);
    if (rc) return rc;
    if (v < lo || v > hi)
        return rotary_fail(ROTARY_EFORMAT, "GGUF: %s = %lld is outside [%lld, %lld]", key,
                           (long long)v, (long long)lo, (long long)hi);
    *out = (int)v;
    return ROTARY_OK;
}

/* The same, but absent means dflt. */
static int get_dim_or(const rotary_gguf *g, const char *key, int64_t lo, int64_t hi, int dflt,
                      int *out) {
    if (rotary_gguf_find(g, key) < 0) {
        *out = dflt;
        return ROTARY_OK;
    }
    return get_dim(g, key, lo, hi, out);
}

static int get_float_or(const rotary_gguf *g, const char *key, double dflt, double *out) {
    if (rotary_gguf_find(g, key) < 0) {
        *out = dflt;
        return ROTARY_OK;
    }
    int rc = rotary_gguf_get_float(g, key, out);
    if (rc == ROTARY_OK && !isfinite(*out))
        return rotary_fail(ROTARY_EFORMAT, "GGUF: %s is not finite", key);
    return rc;
}

static int read_scaling(const rotary_gguf *g, int ctx, rotary_rope_scaling *s) {
    rotary_rope_scaling_default(s);
    if (rotary_gguf_find(g, "llama.rope.scaling.type") < 0) return ROTARY_OK;
    const char *type;
    size_t len;
    int rc = rotary_gguf_get_string(g, "llama.rope.scaling.type", &type, &len);
    if (rc) return rc;
    if (len == 4 && !memcmp(type, "none", 4)) return ROTARY_OK;
    if (len == 6 && !memcmp(type, "linear", 6))
        s->type = ROTARY_ROPE_SCALING_LINEAR;
    else if (len == 4 && !memcmp(type, "yarn", 4))
        s->type = ROTARY_ROPE_SCALING_YARN;
    else
        return rotary_fail(ROTARY_EFORMAT, "GGUF: llama.rope.scaling.type '%.*s' is not one "
                           "we run (none, linear, yarn)", (int)(len < 32 ? len : 32), type);
    if ((rc = get_float_or(g, "llama.rope.scaling.factor", 1.0, &s->factor)) ||
        (rc = get_dim_or(g, "llama.rope.scaling.original_context_length", 1, 1 << 24, ctx,
                         &s->original_ctx)))
        return rc;
    if (rotary_rope_scaling_validate(s))
        return rotary_fail(ROTARY_EFORMAT, "GGUF: rope scaling: %s", rotary_last_error());
    return ROTARY_OK;
}

/* Per-pair divisors of the frequencies (Llama 3.1 and later): llama.cpp's
 * converter writes the "llama3" scaling as this F32 tensor of rotary_dim/2
 * values f_i, not as keys, and rotates pair i by pos * base^(-2i/d) / f_i. */
static int read_freq_factors(const rotary_gguf *g, int rotary_dim, rotary_rope_scaling *s) {
    const char *name = "rope_freqs.weight";
    const rotary_gguf_tensor *t = rotary_gguf_find_tensor(g, name);
    if (!t) return ROTARY_OK;
    const int n = rotary_dim / 2;
    /* llama.cpp would apply both; no file we know of means that. */
    if (s->type != ROTARY_ROPE_SCALING_NONE)
        return rotary_fail(ROTARY_EFORMAT, "GGUF: two rope scalings: llama.rope.scaling.type "
                           "%s and per-pair factors (%s); a file should have one",
                           rotary_rope_scaling_name(s->type), name);
    if (t->type != ROTARY_GGML_F32)
        return rotary_fail(ROTARY_EFORMAT, "GGUF: %s has ggml type %d; per-pair RoPE factors "
                           "must be F32 (0)", name, t->type);
    if (t->n_dims != 1 || t->ne[0] != n)
        return rotary_fail(ROTARY_EFORMAT, "GGUF: %s has %d dims and %lld elements; rotary "
                           "dim %d needs one dim of %d", name, t->n_dims,
                           (long long)t->n_elements, rotary_dim, n);
    if (n > ROTARY_ROPE_MAX_FACTORS)
        return rotary_fail(ROTARY_EFORMAT, "GGUF: %s: %d per-pair factors, rotary takes at "
                           "most %d (rotary dim 256)", name, n, ROTARY_ROPE_MAX_FACTORS);
    int rc = rotary_gguf_tensor_f32(t, s->freq_factors);
    if (rc) return rc;
    for (int i = 0; i < n; i++)
        if (!isfinite(s->freq_factors[i]) || !(s->freq_factors[i] > 0))
            return rotary_fail(ROTARY_EFORMAT, "GGUF: %s[%d] = %g; each factor must be finite "
                               "and > 0", name, i, (double)s->freq_factors[i]);
    s->type = ROTARY_ROPE_SCALING_FACTORS;
    s->n_factors = n;
    return ROTARY_OK;
}

static int read_config(const rotary_gguf *g, rotary_config *c) {
    const char *arch;
    size_t len;
    int rc = rotary_gguf_get_string(g, "general.architecture", &arch, &len);
    if (rc) return rc;
    if (len != 5 || memcmp(arch, "llama", 5))
        return rotary_fail(ROTARY_EFORMAT, "GGUF: architecture '%.*s' is not llama",
                           (int)(len < 32 ? len : 32), arch);
    rotary_config_default(c);
    const int big = 1 << 24;
    double base, eps;
    if ((rc = get_dim(g, "llama.embedding_length", 1, big, &c->d_model)) ||
        (rc = get_dim(g, "llama.block_count", 1, 4096, &c->n_layer)) ||
        (rc = get_dim(g, "llama.feed_forward_length", 1, big, &c->d_ff)) ||
        (rc = get_dim(g, "llama.attention.head_count", 1, 4096, &c->n_head)) ||
        (rc = get_dim_or(g, "llama.attention.head_count_kv", 1, 4096, c->n_head, &c->n_kv_head)) ||
        (rc = get_dim(g, "llama.context_length", 1, big, &c->ctx)) ||
        (rc = get_float_or(g, "llama.rope.freq_base", 10000.0, &base)) ||
        (rc = get_float_or(g, "llama.attention.layer_norm_rms_epsilon", 1e-5, &eps)))
        return rc;
    if (c->d_model % c->n_head)
        return rotary_fail(ROTARY_EFORMAT, "GGUF: embedding_length %d is not a multiple of "
                           "head_count %d", c->d_model, c->n_head);
    const int hd = c->d_model / c->n_head;
    if ((rc = get_dim_or(g, "llama.rope.dimension_count", 2, hd, hd, &c->rotary_dim))) return rc;
    const rotary_gguf_tensor *emb = rotary_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return rotary_fail(ROTARY_EFORMAT, "GGUF: no tensor token_embd.weight");
    if (emb->n_dims != 2 || emb->ne[0] != c->d_model || emb->ne[1] < 1 || emb->ne[1] > big)
        return rotary_fail(ROTARY_EFORMAT, "GGUF: token_embd.weight is not {%d, vocab}", c->d_model);
    c->vocab = (int)emb->ne[1];
    c->norm = ROTARY_NORM_RMS, c->mlp = ROTARY_MLP_SWIGLU, c->pos = ROTARY_POS_ROPE;
    c->rope_pairing = ROTARY_ROPE_INTERLEAVED, c->rope_base = base;
    c->tied = rotary_gguf_find_tensor(g, "output.weight") == NULL;
    c->bias = 0, c->norm_eps = (float)eps;
    if ((rc = read_scaling(g, c->ctx, &c->rope_scaling)) ||
        (rc = read_freq_factors(g, c->rotary_dim, &c->rope_scaling)))
        return rc;
    if (rotary_config_validate(c))
        return rotary_fail(ROTARY_EFORMAT, "GGUF: unsupported model: %s", rotary_last_error());
    return ROTARY_OK;
}

/* Convert the GGUF tensor `theirs` into our tensor `ours`; expect_all has
 * checked its presence, shape and type against the config already. */
static int take(rotary_model *m, const rotary_gguf *g, const char *theirs, const char *ours) {
    const rotary_gguf_tensor *t = rotary_gguf_find_tensor(g, theirs);
    const rotary_tensor *o = rotary_model_tensor(m, ours);
    if (!t || !o || (uint64_t)t->n_elements != o->numel) /* our table and expect_all disagree */
        return rotary_fail(ROTARY_EINVAL, "GGUF: %s does not fit our %s", theirs, ours);
    return rotary_gguf_tensor_f32(t, m->params + o->offset);
}

/* The tensor `theirs` is present with ne {ne0} (ne1 == 0) or {ne0, ne1} and a
 * type we convert: checked for every tensor before anything is allocated,
 * so a small file cannot make us allocate the model its header describes. */
static int expect(const rotary_gguf *g, const char *theirs, int ne0, int ne1) {
    const rotary_gguf_tensor *t = rotary_gguf_find_tensor(g, theirs);
    if (!t) return rotary_fail(ROTARY_EFORMAT, "GGUF: no tensor %s", theirs);
    int ok = ne1 == 0 ? t->n_dims == 1 && t->ne[0] == ne0
                      : t->n_dims == 2 && t->ne[0] == ne0 && t->ne[1] == ne1;
    if (!ok)
        return rotary_fail(ROTARY_EFORMAT, "GGUF: %s has shape {%lld, %lld}, the config needs "
                           "{%d, %d}", theirs, (long long)t->ne[0],
                           (long long)(t->n_dims > 1 ? t->ne[1] : 1), ne0, ne1 ? ne1 : 1);
    if (t->type != ROTARY_GGML_F32 && t->type != ROTARY_GGML_F16 &&
        t->type != ROTARY_GGML_BF16 && t->type != ROTARY_GGML_Q8_0)
        return rotary_fail(ROTARY_EFORMAT, "GGUF: tensor '%s' has ggml type %d, which rotary "
                           "cannot convert to float32 (it reads F32, F16, BF16 and Q8_0)",
                           theirs, t->type);
    return ROTARY_OK;
}

static int expect_all(const rotary_gguf *g, const rotary_config *c) {
    const int D = c->d_model, F = c->d_ff, KV = c->n_kv_head * (c->d_model / c->n_head);
    /* ne of THEIRS[i]: {in, out} for matrices, {D} for norms */
    const int ne[9][2] = {{D, 0}, {D, D}, {D, KV}, {D, KV}, {D, D}, {D, 0}, {D, F}, {D, F}, {F, D}};
    int rc = expect(g, "token_embd.weight", D, c->vocab);
    for (int l = 0; l < c->n_layer && rc == ROTARY_OK; l++)
        for (int i = 0; i < 9 && rc == ROTARY_OK; i++) {
            char theirs[64];
            snprintf(theirs, sizeof theirs, "blk.%d.%s", l, THEIRS[i]);
            rc = expect(g, theirs, ne[i][0], ne[i][1]);
        }
    if (rc == ROTARY_OK) rc = expect(g, "output_norm.weight", D, 0);
    if (rc == ROTARY_OK && !c->tied) rc = expect(g, "output.weight", D, c->vocab);
    return rc;
}

int rotary_model_load_gguf(rotary_model *m, const rotary_gguf *g) {
    memset(m, 0, sizeof *m);
    rotary_config c;
    int rc = read_config(g, &c);
    if (rc) return rc;
    if ((rc = expect_all(g, &c))) return rc;
    if ((rc = model_build(m, &c, 0))) return rc;
    rc = take(m, g, "token_embd.weight", "tok_emb.weight");
    for (int l = 0; l < c.n_layer && rc == ROTARY_OK; l++)
        for (int i = 0; i < 9 && rc == ROTARY_OK; i++) {
            char theirs[64], ours[64];
            snprintf(theirs, sizeof theirs, "blk.%d.%s", l, THEIRS[i]);
            snprintf(ours, sizeof ours, "layers.%d.%s", l, OURS[i]);
            rc = take(m, g, theirs, ours);
        }
    if (rc == ROTARY_OK) rc = take(m, g, "output_norm.weight", "norm_f.weight");
    if (rc == ROTARY_OK && !c.tied) rc = take(m, g, "output.weight", "lm_head.weight");
    if (rc) rotary_model_free(m);
    return rc;
}

/* ------------------------------------------------------------------ export */

/* Why the llama architecture cannot express c, or NULL. */
static const char *unexportable(const rotary_config *c) {
    if (c->norm != ROTARY_NORM_RMS) return "it uses LayerNorm (llama has RMSNorm)";
    if (c->mlp != ROTARY_MLP_SWIGLU) return "its MLP is GELU (llama has SwiGLU)";
    if (c->pos != ROTARY_POS_ROPE) return "its positions are not RoPE";
    if (c->attn != ROTARY_ATTN_SOFTMAX) return "it uses linear attention";
    if (c->bias) return "it has biases (llama has none)";
    int t = c->rope_scaling.type;
    if (t == ROTARY_ROPE_SCALING_DYNAMIC_NTK)
        return "its rope scaling (dynamic-ntk) has no GGUF metadata";
    if (t == ROTARY_ROPE_SCALING_YARN &&
        (c->rope_scaling.yarn_alpha != 1.0 || c->rope_scaling.yarn_beta != 32.0 ||
         c->rope_scaling.mscale != 0))
        return "its YaRN parameters differ from the defaults GGUF readers assume";
    return NULL;
}

/* Rows of one head's q or k, half pairing -> adjacent pairs: row 2i takes
 * old row i, row 2i+1 old row i + r/2 (r = rotary dims); the rest stay. */
static void permute_heads(float *dst, const float *src, int heads, int hd, int r, int C) {
    for (int h = 0; h < heads; h++) {
        const float *s = src + (size_t)h * hd * C;
        float *d = dst + (size_t)h * hd * C;
        for (int i = 0; i < hd; i++) {
            int from = i >= r ? i : (i % 2 ? r / 2 + i / 2 : i / 2);
            memcpy(d + (size_t)i * C, s + (size_t)from * C, (size_t)C * sizeof(float));
        }
    }
}

static int set_meta(rotary_gguf_writer *w, const rotary_config *c) {
    const int hd = c->d_model / c->n_head, r = c->rotary_dim ? c->rotary_dim : hd;
    double base = c->rope_base;
    const rotary_rope_scaling *s = &c->rope_scaling;
    /* NTK-aware scaling is a change of base, which GGUF states directly. */
    if (s->type == ROTARY_ROPE_SCALING_NTK) base *= pow(s->factor, (double)r / (r - 2));
    int rc = rotary_gguf_set_string(w, "general.architecture", "llama", 5);
    if (!rc) rc = rotary_gguf_set_string(w, "general.name", "rotary", 6);
    if (!rc) rc = rotary_gguf_set_u32(w, "general.alignment", 32);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.context_length", (uint32_t)c->ctx);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.embedding_length", (uint32_t)c->d_model);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.block_count", (uint32_t)c->n_layer);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)c->d_ff);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.attention.head_count", (uint32_t)c->n_head);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_head);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.rope.dimension_count", (uint32_t)r);
    if (!rc) rc = rotary_gguf_set_f32(w, "llama.rope.freq_base", (float)base);
    if (!rc) rc = rotary_gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.vocab_size", (uint32_t)c->vocab);
    if (!rc && (s->type == ROTARY_ROPE_SCALING_LINEAR || s->type == ROTARY_ROPE_SCALING_YARN)) {
        const char *t = s->type == ROTARY_ROPE_SCALING_LINEAR ? "linear" : "yarn";
        rc = rotary_gguf_set_string(w, "llama.rope.scaling.type", t, strlen(t));
        if (!rc) rc = rotary_gguf_set_f32(w, "llama.rope.scaling.factor", (float)s->factor);
        if (!rc)
            rc = rotary_gguf_set_u32(w, "llama.rope.scaling.original_context_length",
                                     (uint32_t)s->original_ctx);
    }
    return rc;
}

static int add(rotary_gguf_writer *w, const rotary_model *m, const char *ours, const char *theirs,
               const float *data) {
    const rotary_tensor *t = rotary_model_tensor(m, ours);
    if (!t) return rotary_fail(ROTARY_EINVAL, "export: model has no tensor %s", ours);
    int64_t ne[2] = {t->ndim == 1 ? t->shape[0] : t->shape[1], t->ndim == 1 ? 1 : t->shape[0]};
    return rotary_gguf_add_tensor(w, theirs, ROTARY_GGML_F32, t->ndim, ne,
                                  data ? data : m->params + t->offset);
}

int rotary_model_export_gguf(const rotary_model *m, const rotary_tokenizer *tok,
                             const char *path) {
    const rotary_config *c = &m->cfg;
    const char *why = unexportable(c);
    if (why)
        return rotary_fail(ROTARY_EINVAL, "cannot export as GGUF llama: %s", why);
    if (rotary_tokenizer_vocab_size(tok) != c->vocab)
        return rotary_fail(ROTARY_EINVAL, "export: the tokenizer has %d ids, the model %d",
                           rotary_tokenizer_vocab_size(tok), c->vocab);
    const int hd = c->d_model / c->n_head, r = c->rotary_dim ? c->rotary_dim : hd;
    const int half = c->rope_pairing == ROTARY_ROPE_HALF;
    /* Permuted copies of every layer's wq and wk (half pairing only). */
    size_t per = (size_t)(c->n_head + c->n_kv_head) * hd * c->d_model;
    float *perm = half ? rotary_alloc_floats(per * c->n_layer, "export: permuted q, k") : NULL;
    if (half && !perm) return ROTARY_ENOMEM;
    rotary_gguf_writer *w = NULL;
    int rc = rotary_gguf_writer_new(&w);
    if (!rc) rc = set_meta(w, c);
    if (!rc) rc = rotary_tokenizer_to_gguf(tok, w);
    /* Per-pair factors go back where llama.cpp puts them (read_freq_factors);
     * Llama 3 scaling goes there too, as its ratios to the unscaled
     * frequencies, which is how llama.cpp's converter writes Llama 3.1. */
    const rotary_rope_scaling *sc = &c->rope_scaling;
    float l3[ROTARY_ROPE_MAX_FACTORS];
    const float *factors = sc->type == ROTARY_ROPE_SCALING_FACTORS ? sc->freq_factors : NULL;
    int64_t n_factors = sc->n_factors;
    if (!rc && sc->type == ROTARY_ROPE_SCALING_LLAMA3) {
        double f0[ROTARY_ROPE_MAX_FACTORS], f3[ROTARY_ROPE_MAX_FACTORS];
        if (r / 2 > ROTARY_ROPE_MAX_FACTORS)
            rc = rotary_fail(ROTARY_EINVAL, "cannot export as GGUF llama: llama3 scaling over %d "
                             "pairs (at most %d as rope_freqs.weight)", r / 2,
                             ROTARY_ROPE_MAX_FACTORS);
        if (!rc) rc = rotary_rope_inv_freq(f0, r, c->rope_base, NULL, c->ctx);
        if (!rc) rc = rotary_rope_inv_freq(f3, r, c->rope_base, sc, c->ctx);
        for (int i = 0; i < r / 2 && !rc; i++) l3[i] = (float)(f0[i] / f3[i]);
        factors = l3, n_factors = r / 2;
    }
    if (!rc && factors)
        rc = rotary_gguf_add_tensor(w, "rope_freqs.weight", ROTARY_GGML_F32, 1, &n_factors,
                                    factors);
    if (!rc) rc = add(w, m, "tok_emb.weight", "token_embd.weight", NULL);
    for (int l = 0; l < c->n_layer && !rc; l++)
        for (int i = 0; i < 9 && !rc; i++) {
            char theirs[64], ours[64];
            snprintf(theirs, sizeof theirs, "blk.%d.%s", l, THEIRS[i]);
            snprintf(ours, sizeof ours, "layers.%d.%s", l, OURS[i]);
            const float *data = NULL;
            if (half && (i == 1 || i == 2)) {
                const rotary_tensor *t = rotary_model_tensor(m, ours);
                int heads = i == 1 ? c->n_head : c->n_kv_head;
                float *d = perm + per * l + (i == 2 ? (size_t)c->n_head * hd * c->d_model : 0);
                permute_heads(d, m->params + t->offset, heads, hd, r, c->d_model);
                data = d;
            }
            rc = add(w, m, ours, theirs, data);
        }
    if (!rc) rc = add(w, m, "norm_f.weight", "output_norm.weight", NULL);
    if (!rc && !c->tied) rc = add(w, m, "lm_head.weight", "output.weight", NULL);
    if (!rc) rc = rotary_gguf_write(w, path);
    rotary_gguf_writer_free(w);
    free(perm);
    return rc;
}
