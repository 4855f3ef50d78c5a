/* io_llama2c.c: llama2.c checkpoints (.bin) into our model.
 *
 * The file: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size, seq_len), then float32 arrays, each stacked over layers:
 * tok_emb (V, D), rms_att (L, D), wq (L, D, D), wk (L, KV, D), wv (L, KV, D),
 * wo (L, D, D), rms_ffn (L, D), w1 (L, H, D), w2 (L, D, H), w3 (L, H, D),
 * rms_final (D), two RoPE tables of seq_len * head_size / 2 floats each (we
 * compute our own), then wcls (V, D) when vocab_size < 0. Matrices are
 * (out, in) row-major, as ours. The MLP is w2(silu(w1 x) * w3 x), so w1 is
 * our gate and w3 our up. */
#include "internal.h"
#include "model_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sizes of the arrays above, in floats, in file order. */
typedef struct {
    size_t emb, rms, wq, wk, wv, wo, w1, w2, w3, rms_f, freq, cls;
} sizes;

static int header_config(const int32_t h[7], const char *path, rotary_config *c, sizes *z) {
    const char *names[7] = {"dim", "hidden_dim", "n_layers", "n_heads",
                            "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        long v = i == 5 ? labs((long)h[i]) : h[i];
        if (v <= 0 || v > (1 << 24))
            return rotary_fail(ROTARY_EFORMAT, "%s: not a llama2.c checkpoint (%s = %d)", path,
                               names[i], (int)h[i]);
    }
    const int D = h[0], H = h[1], L = h[2], nh = h[3], nkv = h[4], S = h[6];
    const int V = h[5] < 0 ? -h[5] : h[5];
    if (D % nh || nh % nkv || (D / nh) % 2)
        return rotary_fail(ROTARY_EFORMAT, "%s: dim %d, %d heads, %d kv heads do not fit "
                           "(dim %% heads, heads %% kv heads, even head size)", path, D, nh, nkv);
    rotary_config_default(c);
    c->n_layer = L, c->n_head = nh, c->n_kv_head = nkv;
    c->d_model = D, c->d_ff = H, c->ctx = S, c->vocab = V;
    c->norm = ROTARY_NORM_RMS, c->mlp = ROTARY_MLP_SWIGLU, c->pos = ROTARY_POS_ROPE;
    c->rope_pairing = ROTARY_ROPE_INTERLEAVED, c->rope_base = 10000.0, c->rotary_dim = 0;
    c->tied = h[5] > 0, c->bias = 0, c->norm_eps = 1e-5f;
    c->attn = ROTARY_ATTN_SOFTMAX;
    const size_t kv = (size_t)nkv * (D / nh);
    /* Every product below is < 2^24 * 2^24 * 2^24 < 2^72: check as we go. */
    size_t t;
    if (rotary_mul_size((size_t)V, D, &z->emb) || rotary_mul_size((size_t)L, D, &z->rms) ||
        rotary_mul_size((size_t)L * D, D, &z->wq) || rotary_mul_size((size_t)L * kv, D, &z->wk) ||
        rotary_mul_size((size_t)L * D, H, &t))
        return rotary_fail(ROTARY_EFORMAT, "%s: sizes overflow", path);
    z->wv = z->wk, z->wo = z->wq, z->w1 = z->w2 = z->w3 = t, z->rms_f = D;
    z->freq = (size_t)S * (D / nh) / 2;
    z->cls = c->tied ? 0 : z->emb;
    return rotary_config_validate(c);
}

/* Floats the file must hold after the header; 0 on overflow. */
static size_t total_floats(const sizes *z) {
    const size_t parts[] = {z->emb, z->rms, z->wq, z->wk, z->wv, z->wo, z->rms,
                            z->w1, z->w2, z->w3, z->rms_f, z->freq, z->freq, z->cls};
    size_t sum = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (parts[i] > SIZE_MAX / 8 - sum) return 0;
        sum += parts[i];
    }
    return sum;
}

/* Copy n floats into the tensor called name. */
static int copy_to(rotary_model *m, const char *name, const float *src, size_t n) {
    const rotary_tensor *t = rotary_model_tensor(m, name);
    if (!t || t->numel != n) /* our own table disagrees with the header: a bug */
        return rotary_fail(ROTARY_EINVAL, "llama2.c: no tensor %s of %zu floats", name, n);
    memcpy(m->params + t->offset, src, n * sizeof(float));
    return ROTARY_OK;
}

/* Layer l's slice of a stacked (L, per_layer) array into layers.l.suffix. */
static int put(rotary_model *m, const float *src, size_t per_layer, int l, const char *suffix) {
    char name[64];
    snprintf(name, sizeof name, "layers.%d.%s", l, suffix);
    return copy_to(m, name, src + (size_t)l * per_layer, per_layer);
}

int rotary_model_load_llama2c(rotary_model *m, const char *path) {
    memset(m, 0, sizeof *m);
    const void *map;
    size_t size;
    int rc = rotary_map_file(path, &map, &size);
    if (rc != ROTARY_OK) return rc;
    int32_t h[7];
    if (size < sizeof h) {
        rotary_unmap_file(map, size);
        return rotary_fail(ROTARY_EFORMAT, "%s: %zu bytes is too short for a llama2.c header",
                           path, size);
    }
    memcpy(h, map, sizeof h);
    rotary_config c;
    sizes z = {0};
    rc = header_config(h, path, &c, &z);
    size_t n = rc ? 0 : total_floats(&z);
    if (rc == ROTARY_OK && (n == 0 || size != sizeof h + n * sizeof(float)))
        rc = rotary_fail(ROTARY_EFORMAT, "%s: %zu bytes, but its header (dim %d, hidden %d, "
                         "%d layers, %d heads, %d kv heads, vocab %d, seq_len %d) needs %zu",
                         path, size, h[0], h[1], h[2], h[3], h[4], h[5], h[6],
                         sizeof h + n * sizeof(float));
    if (rc == ROTARY_OK) rc = model_build(m, &c, 0);
    if (rc != ROTARY_OK) {
        rotary_unmap_file(map, size);
        return rc;
    }
    const float *p = (const float *)((const char *)map + sizeof h);
    const int L = c.n_layer, D = c.d_model;
    const float *emb = p, *rms_att = emb + z.emb, *wq = rms_att + z.rms, *wk = wq + z.wq;
    const float *wv = wk + z.wk, *wo = wv + z.wv, *rms_ffn = wo + z.wo, *w1 = rms_ffn + z.rms;
    const float *w2 = w1 + z.w1, *w3 = w2 + z.w2, *rms_f = w3 + z.w3;
    const float *cls = rms_f + z.rms_f + 2 * z.freq;
    rc = copy_to(m, "tok_emb.weight", emb, z.emb);
    for (int l = 0; l < L && rc == ROTARY_OK; l++) {
        const float *src[9] = {rms_att, wq, wk, wv, wo, rms_ffn, w1, w3, w2};
        const size_t per[9] = {D, z.wq / L, z.wk / L, z.wv / L, z.wo / L, D,
                               z.w1 / L, z.w3 / L, z.w2 / L};
        const char *dst[9] = {"norm1.weight", "attn.q.weight", "attn.k.weight",
                              "attn.v.weight", "attn.o.weight", "norm2.weight",
                              "mlp.gate.weight", "mlp.up.weight", "mlp.down.weight"};
        for (int i = 0; i < 9 && rc == ROTARY_OK; i++) rc = put(m, src[i], per[i], l, dst[i]);
    }
    if (rc == ROTARY_OK) rc = copy_to(m, "norm_f.weight", rms_f, z.rms_f);
    if (rc == ROTARY_OK && !c.tied) rc = copy_to(m, "lm_head.weight", cls, z.cls);
    rotary_unmap_file(map, size);
    if (rc != ROTARY_OK) rotary_model_free(m);
    return rc;
}
