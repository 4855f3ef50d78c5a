/* test_export: our models through GGUF and back. For both RoPE pairings
 * (half is exported with q, k rows permuted into adjacent pairs), partial
 * rotary, GQA, untied heads and each exportable rope scaling, the model read
 * back from the file gives the same logits; the tokenizer comes back
 * identical; layouts the llama architecture cannot express are refused. */
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
    unlink(PATH);
    rotary_tokenizer_free(bytes);
    rotary_tokenizer_free(bpe);
    return check_summary("test_export");
}
