/* test_export: our models through GGUF and back. For both RoPE pairings
 * (half is exported with q, k rows permuted into adjacent pairs), partial
 * rotary, GQA, untied heads and each exportable rope scaling, the model read
 * back from the file gives the same logits; the tokenizer comes back
 * identical; layouts the llama architecture cannot express are refused.
 * Files written here by hand, as llama.cpp writes Llama 3.1, carry per-pair
 * RoPE factors (rope_freqs.weight): they run as the Llama 3 scaling they
 * came from, and bad ones are refused. */
#include "check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *PATH = "test_export.gguf";
enum { T = 24 };

static void base_config(rotary_config *c) {
    rotary_config_default(c);
    c->n_layer = 2, c->n_head = 4, c->n_kv_head = 4, c->d_model = 32, c->d_ff = 48;
    c->ctx = 16, c->vocab = 256, c->init_std = 0.3f;
}

/* Largest |a - b| over max |a|, over T positions (past ctx: RoPE extends). */
static double logits_error(rotary_model *a, rotary_model *b) {
    int tok[T];
    for (int t = 0; t < T; t++) tok[t] = (t * 37 + 11) % 256;
    if (rotary_model_extend(a, T) || rotary_model_extend(b, T) ||
        rotary_model_reserve(a, 1, T) || rotary_model_reserve(b, 1, T) ||
        rotary_model_forward(a, tok, NULL, 1, T, NULL) ||
        rotary_model_forward(b, tok, NULL, 1, T, NULL))
        return INFINITY;
    const float *x = rotary_model_logits(a), *y = rotary_model_logits(b);
    double err = 0, scale = 0;
    for (int i = 0; i < T * 256; i++) {
        err = fmax(err, fabs((double)x[i] - y[i]));
        scale = fmax(scale, fabs((double)x[i]));
    }
    return err / scale;
}

static void round_trip(const char *what, const rotary_config *c, rotary_tokenizer *tok) {
    rotary_model m, back;
    if (rotary_model_build(&m, c)) {
        EXPECT(0, "%s: build: %s", what, rotary_last_error());
        return;
    }
    rotary_model_init(&m, 5);
    int rc = rotary_model_export_gguf(&m, tok, PATH);
    EXPECT(rc == 0, "%s: export: %s", what, rotary_last_error());
    rotary_gguf *g = NULL;
    if (rc == 0 && rotary_gguf_open(&g, PATH) == 0 && rotary_model_load_gguf(&back, g) == 0) {
        EXPECT(back.cfg.rope_pairing == ROTARY_ROPE_INTERLEAVED, "%s: pairing", what);
        EXPECT(back.cfg.n_kv_head == c->n_kv_head && back.cfg.tied == c->tied &&
               back.cfg.rotary_dim == (c->rotary_dim ? c->rotary_dim : c->d_model / c->n_head),
               "%s: config", what);
        double e = logits_error(&m, &back);
        EXPECT(e < 2e-5, "%s: logits differ by %.3g after the round trip", what, e);
        printf("%-34s logits max rel diff %.2e\n", what, e);
        rotary_tokenizer *t2 = NULL;
        EXPECT(rotary_tokenizer_from_gguf(&t2, g) == 0, "%s: tokenizer: %s", what, rotary_last_error());
        const unsigned char text[] = "Round trip: \xe4\xb8\xad\xe6\x96\x87 and \xff bytes";
        int *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        if (t2 && !rotary_tokenizer_encode(tok, text, sizeof text - 1, &a, &na) &&
            !rotary_tokenizer_encode(t2, text, sizeof text - 1, &b, &nb))
            EXPECT(na == nb && !memcmp(a, b, na * sizeof(int)), "%s: tokenizer differs", what);
        free(a);
        free(b);
        rotary_tokenizer_free(t2);
        rotary_model_free(&back);
    } else {
        EXPECT(0, "%s: read back: %s", what, rotary_last_error());
    }
    rotary_gguf_close(g);
    rotary_model_free(&m);
}

static void refused(const char *what, const rotary_config *c, rotary_tokenizer *tok) {
    rotary_model m;
    if (rotary_model_build(&m, c)) {
        EXPECT(0, "%s: build: %s", what, rotary_last_error());
        return;
    }
    unlink(PATH);
    int rc = rotary_model_export_gguf(&m, tok, PATH);
    EXPECT(rc != 0 && strstr(rotary_last_error(), "cannot export"), "%s: accepted", what);
    EXPECT(access(PATH, F_OK) != 0, "%s: a file was written anyway", what);
    rotary_model_free(&m);
}

/* ------------------------------------------ per-pair factors (rope_freqs) */

/* The rope_freqs.weight a file gets, if any, and a scaling key beside it. */
typedef struct {
    int type;           /* ggml type; -1: no tensor */
    int64_t n;          /* elements */
    const void *data;
    const char *scaling; /* llama.rope.scaling.type, or NULL */
} freqs_opt;

/* Write the interleaved, unscaled model m as GGUF llama the way llama.cpp's
 * converter does (our exporter is not used: the reader is tested against
 * files it did not write), with o's rope_freqs.weight. */
static int write_llama(const char *path, const rotary_model *m, const freqs_opt *o) {
    static const char *const ours[9] = {"norm1.weight", "attn.q.weight", "attn.k.weight",
                                        "attn.v.weight", "attn.o.weight", "norm2.weight",
                                        "mlp.gate.weight", "mlp.up.weight", "mlp.down.weight"};
    static const char *const theirs[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                          "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
    const rotary_config *c = &m->cfg;
    const int hd = c->d_model / c->n_head;
    rotary_gguf_writer *w = NULL;
    int rc = rotary_gguf_writer_new(&w);
    if (!rc) rc = rotary_gguf_set_string(w, "general.architecture", "llama", 5);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.context_length", (uint32_t)c->ctx);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.embedding_length", (uint32_t)c->d_model);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.block_count", (uint32_t)c->n_layer);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)c->d_ff);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.attention.head_count", (uint32_t)c->n_head);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_head);
    if (!rc) rc = rotary_gguf_set_u32(w, "llama.rope.dimension_count",
                                      (uint32_t)(c->rotary_dim ? c->rotary_dim : hd));
    if (!rc) rc = rotary_gguf_set_f32(w, "llama.rope.freq_base", (float)c->rope_base);
    if (!rc) rc = rotary_gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    if (!rc && o->scaling) {
        rc = rotary_gguf_set_string(w, "llama.rope.scaling.type", o->scaling, strlen(o->scaling));
        if (!rc) rc = rotary_gguf_set_f32(w, "llama.rope.scaling.factor", 2.0f);
    }
    if (!rc && o->type >= 0) rc = rotary_gguf_add_tensor(w, "rope_freqs.weight", o->type, 1, &o->n, o->data);
    const int last = c->n_layer * 9 + (c->tied ? 0 : 1);
    for (int k = -1; k <= last && !rc; k++) {
        char nm[64], th[64];
        if (k == -1) snprintf(nm, sizeof nm, "tok_emb.weight"), snprintf(th, sizeof th, "token_embd.weight");
        else if (k == c->n_layer * 9) snprintf(nm, sizeof nm, "norm_f.weight"), snprintf(th, sizeof th, "output_norm.weight");
        else if (k > c->n_layer * 9) snprintf(nm, sizeof nm, "lm_head.weight"), snprintf(th, sizeof th, "output.weight");
        else snprintf(nm, sizeof nm, "layers.%d.%s", k / 9, ours[k % 9]),
             snprintf(th, sizeof th, "blk.%d.%s.weight", k / 9, theirs[k % 9]);
        const rotary_tensor *t = rotary_model_tensor(m, nm);
        if (!t) { rc = ROTARY_EINVAL; break; }
        int64_t ne[2] = {t->ndim == 1 ? t->shape[0] : t->shape[1], t->shape[0]};
        rc = rotary_gguf_add_tensor(w, th, ROTARY_GGML_F32, t->ndim, ne, m->params + t->offset);
    }
    if (!rc) rc = rotary_gguf_write(w, path);
    rotary_gguf_writer_free(w);
    return rc;
}

/* Greedy ids after a 4-token prompt through the KV-cache decoder: n of them. */
static void greedy(rotary_model *m, int *out, int n) {
    const int prompt[4] = {1, 60, 113, 166};
    rotary_decoder d;
    const float *lg = NULL;
    int tok = prompt[0], rc = rotary_decoder_init(&d, m, 3 + n);
    for (int t = 0; t < 3 + n && !rc; t++) {
        if ((rc = rotary_decoder_step(&d, tok, &lg))) break;
        int best = 0;
        for (int v = 1; v < m->cfg.vocab; v++) best = lg[v] > lg[best] ? v : best;
        if (t >= 3) out[t - 3] = best;
        tok = t < 3 ? prompt[t + 1] : best;
    }
    EXPECT(rc == 0, "greedy: %s", rotary_last_error());
    if (!rc) rotary_decoder_free(&d);
}

/* Load path; returns 0 and fills *m, or the error. */
static int load_path(const char *path, rotary_model *m) {
    rotary_gguf *g = NULL;
    int rc = rotary_gguf_open(&g, path);
    if (!rc) rc = rotary_model_load_gguf(m, g);
    rotary_gguf_close(g);
    return rc;
}

static void test_rope_freqs(void) {
    /* head_dim 16, 12 of it rotating (6 pairs, wavelengths 6.3 .. 13500):
     * with L0 100, low 1, high 4 one pair is kept, one smoothed, four divided. */
    rotary_config c;
    base_config(&c);
    c.n_head = 2, c.n_kv_head = 1, c.rotary_dim = 12, c.tied = 0;
    rotary_rope_scaling l3;
    rotary_rope_scaling_default(&l3);
    l3.type = ROTARY_ROPE_SCALING_LLAMA3, l3.factor = 8, l3.original_ctx = 100;
    enum { P = 6 };
    double f0[P], f3[P];
    float fac[P];
    EXPECT(rotary_rope_inv_freq(f0, 12, c.rope_base, NULL, 1) == 0 &&
               rotary_rope_inv_freq(f3, 12, c.rope_base, &l3, 1) == 0, "inv_freq");
    int kept = 0, divided = 0;
    for (int i = 0; i < P; i++) {
        fac[i] = (float)(f0[i] / f3[i]);
        kept += fac[i] == 1.0f, divided += fac[i] == 8.0f;
    }
    EXPECT(kept == 1 && divided == 4, "regimes: %d kept, %d divided of %d", kept, divided, P);

    rotary_model plain, l3m, back;
    if (rotary_model_build(&plain, &c)) {
        EXPECT(0, "build: %s", rotary_last_error());
        return;
    }
    rotary_model_init(&plain, 11);
    c.rope_scaling = l3;
    EXPECT(rotary_model_build(&l3m, &c) == 0, "build llama3: %s", rotary_last_error());
    memcpy(l3m.params, plain.params, plain.n_params * sizeof(float));

    freqs_opt o = {ROTARY_GGML_F32, P, fac, NULL};
    EXPECT(write_llama(PATH, &plain, &o) == 0, "write: %s", rotary_last_error());
    int rc = load_path(PATH, &back);
    EXPECT(rc == 0, "rope_freqs: load: %s", rotary_last_error());
    if (rc == 0) {
        const rotary_rope_scaling *s = &back.cfg.rope_scaling;
        EXPECT(s->type == ROTARY_ROPE_SCALING_FACTORS && s->n_factors == P &&
                   !memcmp(s->freq_factors, fac, sizeof fac),
               "rope_freqs: scaling type %d, %d factors", s->type, s->n_factors);
        double e = 0;
        for (int i = 0; i < P; i++)
            e = fmax(e, fabs(back.rope.inv_freq[i] / (pow(c.rope_base, -2.0 * i / 12) / fac[i]) - 1));
        EXPECT(e < 1e-15, "rope_freqs: inv_freq off by %.3g", e);
        double el = logits_error(&l3m, &back);
        EXPECT(el < 1e-5, "rope_freqs: logits differ from llama3 by %.3g", el);
        printf("%-34s inv_freq rel err %.1e, logits vs llama3 %.2e\n", "rope_freqs.weight (llama3 x8)", e, el);
        enum { N = 40 };
        int ga[N], gb[N], same = 0;
        greedy(&l3m, ga, N);
        greedy(&back, gb, N);
        while (same < N && ga[same] == gb[same]) same++;
        EXPECT(same == N, "rope_freqs: greedy ids differ from llama3 at %d", same);
        printf("%-34s %d greedy ids as llama3's (%d %d %d ...)\n", "rope_freqs.weight decode",
               same, ga[0], ga[1], ga[2]);

        /* Export writes the factors back; they read back bit for bit. */
        rotary_tokenizer *bytes = NULL;
        rotary_model again;
        EXPECT(rotary_tokenizer_bytes(&bytes) == 0, "bytes tokenizer");
        rc = rotary_model_export_gguf(&back, bytes, PATH);
        EXPECT(rc == 0, "export factors: %s", rotary_last_error());
        if (rc == 0 && load_path(PATH, &again) == 0) {
            EXPECT(!memcmp(&again.cfg.rope_scaling, &back.cfg.rope_scaling, sizeof *s),
                   "factors changed through export");
            double ea = logits_error(&back, &again);
            EXPECT(ea == 0, "export factors: logits differ by %.3g", ea);
            printf("%-34s scaling identical, logits diff %.1e\n", "factors through export", ea);
            rotary_model_free(&again);
        } else {
            EXPECT(0, "export factors: read back: %s", rotary_last_error());
        }
        /* A llama3-scaled model exports as those factors (llama.cpp's way for
         * Llama 3.1) and reads back with llama3's logits. */
        rc = rotary_model_export_gguf(&l3m, bytes, PATH);
        EXPECT(rc == 0, "export llama3: %s", rotary_last_error());
        if (rc == 0 && load_path(PATH, &again) == 0) {
            const rotary_rope_scaling *a = &again.cfg.rope_scaling;
            EXPECT(a->type == ROTARY_ROPE_SCALING_FACTORS && a->n_factors == P &&
                       !memcmp(a->freq_factors, fac, sizeof fac),
                   "export llama3: scaling type %d, %d factors", a->type, a->n_factors);
            double ea = logits_error(&l3m, &again);
            EXPECT(ea < 1e-5, "export llama3: logits differ by %.3g", ea);
            printf("%-34s as rope_freqs.weight, logits vs llama3 %.2e\n", "llama3 through export", ea);
            rotary_model_free(&again);
        } else {
            EXPECT(0, "export llama3: read back: %s", rotary_last_error());
        }
        rotary_tokenizer_free(bytes);
        rotary_model_free(&back);
    }

    /* Bad files: an error that says what, never a model. */
    const uint16_t f16[P] = {0x3c00, 0x3c00, 0x4000, 0x4800, 0x4800, 0x4800};
    float nan_f[P], zero_f[P], neg_f[P], long_f[P + 1];
    memcpy(nan_f, fac, sizeof fac), memcpy(zero_f, fac, sizeof fac), memcpy(neg_f, fac, sizeof fac);
    memcpy(long_f, fac, sizeof fac), long_f[P] = 8;
    nan_f[2] = NAN, zero_f[5] = 0, neg_f[0] = -1;
    const struct {
        const char *what;
        freqs_opt o;
        const char *needle;
    } bad[] = {
        {"F16 rope_freqs", {ROTARY_GGML_F16, P, f16, NULL}, "must be F32"},
        {"5 factors for 6 pairs", {ROTARY_GGML_F32, P - 1, fac, NULL}, "needs one dim of 6"},
        {"7 factors for 6 pairs", {ROTARY_GGML_F32, P + 1, long_f, NULL}, "needs one dim of 6"},
        {"a NaN factor", {ROTARY_GGML_F32, P, nan_f, NULL}, "rope_freqs.weight[2] = nan"},
        {"a zero factor", {ROTARY_GGML_F32, P, zero_f, NULL}, "rope_freqs.weight[5] = 0"},
        {"a negative factor", {ROTARY_GGML_F32, P, neg_f, NULL}, "rope_freqs.weight[0] = -1"},
        {"factors and scaling.type linear", {ROTARY_GGML_F32, P, fac, "linear"}, "two rope scalings"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        rotary_model m;
        EXPECT(write_llama(PATH, &plain, &bad[k].o) == 0, "%s: write: %s", bad[k].what,
               rotary_last_error());
        rc = load_path(PATH, &m);
        EXPECT(rc != 0 && strstr(rotary_last_error(), bad[k].needle), "%s: rc %d, '%s'",
               bad[k].what, rc, rotary_last_error());
        printf("%-34s %s\n", bad[k].what, rotary_last_error());
        if (rc == 0) rotary_model_free(&m);
    }
    /* scaling.type none beside the factors is no second scaling. */
    freqs_opt none = {ROTARY_GGML_F32, P, fac, "none"};
    EXPECT(write_llama(PATH, &plain, &none) == 0 && load_path(PATH, &back) == 0 &&
               back.cfg.rope_scaling.type == ROTARY_ROPE_SCALING_FACTORS,
           "factors with scaling.type none: %s", rotary_last_error());
    if (back.params) rotary_model_free(&back);
    rotary_model_free(&plain);
    rotary_model_free(&l3m);
}

int main(void) {
    rotary_tokenizer *bytes = NULL, *bpe = NULL;
    const unsigned char corpus[] = "the theory of the thing, the theme, then the thesis";
    if (rotary_tokenizer_bytes(&bytes) ||
        rotary_tokenizer_train(&bpe, corpus, sizeof corpus - 1, 262, NULL, NULL)) {
        printf("tokenizers: %s\n", rotary_last_error());
        return 1;
    }
    rotary_config c;
    base_config(&c);
    round_trip("interleaved", &c, bytes);
    c.rope_pairing = ROTARY_ROPE_HALF;
    round_trip("half", &c, bytes);
    c.rotary_dim = 4, c.n_kv_head = 2, c.tied = 0;
    round_trip("half, rotary_dim 4, GQA, untied", &c, bytes);
    c.rope_pairing = ROTARY_ROPE_INTERLEAVED, c.n_kv_head = 1;
    round_trip("interleaved, rotary_dim 4, MQA", &c, bytes);
    const int types[3] = {ROTARY_ROPE_SCALING_LINEAR, ROTARY_ROPE_SCALING_NTK,
                          ROTARY_ROPE_SCALING_YARN};
    for (int i = 0; i < 3; i++) {
        base_config(&c);
        c.rope_pairing = ROTARY_ROPE_HALF;
        c.rope_scaling.type = types[i], c.rope_scaling.factor = 2.5, c.rope_scaling.original_ctx = 16;
        char what[64];
        snprintf(what, sizeof what, "half, rope scaling %s", rotary_rope_scaling_name(types[i]));
        round_trip(what, &c, bytes);
    }
    /* Our BPE vocabulary is smaller: a model sized for it. */
    base_config(&c);
    c.vocab = rotary_tokenizer_vocab_size(bpe);
    {
        rotary_model m, back;
        rotary_gguf *g = NULL;
        rotary_tokenizer *t2 = NULL;
        EXPECT(rotary_model_build(&m, &c) == 0, "bpe build");
        rotary_model_init(&m, 3);
        EXPECT(rotary_model_export_gguf(&m, bpe, PATH) == 0, "bpe export: %s", rotary_last_error());
        EXPECT(rotary_gguf_open(&g, PATH) == 0 && rotary_model_load_gguf(&back, g) == 0 &&
                   rotary_tokenizer_from_gguf(&t2, g) == 0,
               "bpe read back: %s", rotary_last_error());
        if (t2) {
            EXPECT(rotary_tokenizer_vocab_size(t2) == c.vocab, "bpe vocab");
            for (int id = 0; id < c.vocab; id++) {
                int la, lb;
                const unsigned char *pa = rotary_tokenizer_piece(bpe, id, &la);
                const unsigned char *pb = rotary_tokenizer_piece(t2, id, &lb);
                if (la != lb || memcmp(pa, pb, (size_t)la)) {
                    EXPECT(0, "bpe piece %d differs", id);
                    break;
                }
            }
            rotary_model_free(&back);
        }
        rotary_tokenizer_free(t2);
        rotary_gguf_close(g);
        EXPECT(rotary_model_export_gguf(&m, bytes, PATH) != 0, "vocab mismatch accepted");
        rotary_model_free(&m);
    }
    /* What the llama architecture cannot express. */
    struct { const char *what; int field, value; } bad[] = {
        {"layernorm", 0, ROTARY_NORM_LAYER}, {"gelu", 1, ROTARY_MLP_GELU},
        {"learned", 2, ROTARY_POS_LEARNED},  {"alibi", 2, ROTARY_POS_ALIBI},
        {"t5", 2, ROTARY_POS_T5},            {"none", 2, ROTARY_POS_NONE},
        {"bias", 3, 1},                      {"linear attention", 4, ROTARY_ATTN_LINEAR},
        {"dynamic-ntk", 5, ROTARY_ROPE_SCALING_DYNAMIC_NTK},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        base_config(&c);
        int *f[6] = {&c.norm, &c.mlp, &c.pos, &c.bias, &c.attn, &c.rope_scaling.type};
        *f[bad[i].field] = bad[i].value;
        if (bad[i].field == 5) c.rope_scaling.original_ctx = 16;
        refused(bad[i].what, &c, bytes);
    }
    test_rope_freqs();
    unlink(PATH);
    rotary_tokenizer_free(bytes);
    rotary_tokenizer_free(bpe);
    return check_summary("test_export");
}
