/* test_model: finite-difference gradient check of a tiny model for every
 * position encoding and block variant; determinism; bad input. */
#include "check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 2, T = 7 };

static void tiny(rotary_config *c) {
    rotary_config_default(c);
    c->n_layer = 2, c->n_head = 4, c->n_kv_head = 2, c->d_model = 16, c->d_ff = 24;
    c->ctx = 8, c->vocab = 11, c->init_std = 0.3f, c->sin_amplitude = 0.5f;
}

static double loss_at(rotary_model *m, const int *tok, const int *tgt) {
    float l;
    if (rotary_model_forward(m, tok, tgt, B, T, &l)) return NAN;
    return l;
}

/* Central differences on the largest-gradient element of every tensor and
 * on one random element; the loss is float32, so the step is large. */
static double gradcheck(const char *label, rotary_config *c) {
    rotary_model m;
    if (rotary_model_build(&m, c)) {
        EXPECT(0, "%s: build: %s", label, rotary_last_error());
        return INFINITY;
    }
    rotary_model_init(&m, 7);
    rotary_rng rng;
    rotary_rng_seed(&rng, 3);
    /* T5's table starts at zero; give the forward a bias to differentiate. */
    const rotary_tensor *rb = rotary_model_tensor(&m, "rel_bias.weight");
    for (size_t j = 0; rb && j < rb->numel; j++) m.params[rb->offset + j] = 0.5f * rotary_rng_normal(&rng);
    int tok[B * T], tgt[B * T];
    for (int i = 0; i < B * T; i++) {
        tok[i] = (int)(rotary_rng_next(&rng) % (uint64_t)c->vocab);
        tgt[i] = (int)(rotary_rng_next(&rng) % (uint64_t)c->vocab);
    }
    float loss;
    rotary_model_zero_grad(&m);
    EXPECT(rotary_model_forward(&m, tok, tgt, B, T, &loss) == 0, "%s forward", label);
    EXPECT(rotary_model_backward(&m) == 0, "%s backward", label);
    float *g = malloc(m.n_params * sizeof(float));
    memcpy(g, m.grads, m.n_params * sizeof(float));
    double worst = 0;
    const float h = 2e-3f;
    for (int ti = 0; ti < m.n_tensors; ti++) {
        const rotary_tensor *t = &m.tensors[ti];
        size_t big = 0;
        for (size_t j = 1; j < t->numel; j++)
            if (fabsf(g[t->offset + j]) > fabsf(g[t->offset + big])) big = j;
        size_t picks[2] = {big, rotary_rng_next(&rng) % t->numel};
        for (int k = 0; k < 2; k++) {
            size_t idx = t->offset + picks[k];
            float saved = m.params[idx];
            m.params[idx] = saved + h;
            double lp = loss_at(&m, tok, tgt);
            m.params[idx] = saved - h;
            double lm = loss_at(&m, tok, tgt);
            m.params[idx] = saved;
            double fd = (lp - lm) / (2.0 * h), an = g[idx];
            /* The float32 loss quantises fd to ~6e-5: an absolute floor. */
            if (fabs(an) > 1e-2 && fabs(fd - an) / fabs(an) > worst) worst = fabs(fd - an) / fabs(an);
            EXPECT(fabs(fd - an) <= 2e-2 * fabs(an) + 1e-4,
                   "%s %s[%zu]: analytic %.6g vs finite difference %.6g", label, t->name,
                   picks[k], an, fd);
        }
    }
    free(g);
    rotary_model_free(&m);
    printf("gradcheck %-40s worst relative error %.2e (|grad| > 1e-2)\n", label, worst);
    return worst;
}

static void test_gradients(void) {
    const char *pos[] = {"rope", "learned", "sinusoidal", "alibi", "none", "t5"};
    for (int attn = ROTARY_ATTN_SOFTMAX; attn <= ROTARY_ATTN_LINEAR; attn++) {
        for (int p = 0; p < 6; p++) {
            if (attn == ROTARY_ATTN_LINEAR && (p == 3 || p == 5)) continue; /* refused */
            for (int variant = 0; variant < 2; variant++) {
                rotary_config c;
                tiny(&c);
                c.pos = rotary_pos_parse(pos[p]);
                c.attn = attn;
                /* Few buckets, so T = 7 reaches the logarithmic ones. */
                c.t5_buckets = 8, c.t5_max_distance = 12;
                if (variant) {
                    c.norm = ROTARY_NORM_LAYER, c.mlp = ROTARY_MLP_GELU, c.bias = 1, c.tied = 0;
                    c.rope_pairing = ROTARY_ROPE_HALF, c.rotary_dim = 2;
                }
                char label[64];
                snprintf(label, sizeof label, "%s%s/%s", attn ? "linear," : "", pos[p],
                         variant ? "layernorm,gelu,bias" : "rms,swiglu");
                gradcheck(label, &c);
            }
        }
    }
}

/* The T5 buckets of the definition: exact below n_buckets/2, then
 * logarithmic up to max_distance, then saturated. */
static void test_t5_buckets(void) {
    EXPECT(rotary_t5_bucket(0, 32, 128) == 0 && rotary_t5_bucket(15, 32, 128) == 15, "exact");
    EXPECT(rotary_t5_bucket(16, 32, 128) == 16, "first log bucket");
    EXPECT(rotary_t5_bucket(32, 32, 128) == 21, "32 -> 16 + floor(16 log 2 / log 8) = 21, got %d",
           rotary_t5_bucket(32, 32, 128));
    EXPECT(rotary_t5_bucket(127, 32, 128) == 31 && rotary_t5_bucket(100000, 32, 128) == 31,
           "saturates at the last bucket");
    int prev = 0, mono = 1;
    for (int n = 0; n < 1000; n++) {
        int b = rotary_t5_bucket(n, 32, 128);
        mono &= b >= prev && b - prev <= 1 && b < 32;
        prev = b;
    }
    EXPECT(mono, "buckets rise by at most one per distance");
    EXPECT(rotary_t5_bucket(5, 6, 8) == 4 && rotary_t5_bucket(7, 6, 8) == 5, "6 buckets");
    printf("t5 buckets: ok\n");
}

static void test_determinism(void) {
    rotary_config c;
    tiny(&c);
    rotary_model a, b;
    EXPECT(rotary_model_build(&a, &c) == 0 && rotary_model_build(&b, &c) == 0, "build");
    rotary_model_init(&a, 5);
    rotary_model_init(&b, 5);
    EXPECT(memcmp(a.params, b.params, a.n_params * 4) == 0, "same seed gives the same weights");
    int tok[B * T], tgt[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = i % c.vocab, tgt[i] = (3 * i + 1) % c.vocab;
    float la, lb;
    rotary_model_zero_grad(&a);
    rotary_model_zero_grad(&b);
    rotary_model_forward(&a, tok, tgt, B, T, &la);
    rotary_model_backward(&a);
    rotary_model_forward(&b, tok, tgt, B, T, &lb);
    rotary_model_backward(&b);
    EXPECT(la == lb && memcmp(a.grads, b.grads, a.n_params * 4) == 0, "same inputs give the same bits");
    /* Initial loss of a near-uniform model is close to ln(vocab). */
    rotary_config c2 = c;
    c2.init_std = 0.002f;
    rotary_model s;
    rotary_model_build(&s, &c2);
    rotary_model_init(&s, 1);
    float l0;
    rotary_model_forward(&s, tok, tgt, B, T, &l0);
    EXPECT(fabs(l0 - log(c.vocab)) < 0.01, "initial loss %.4f vs ln(V) %.4f", l0, log(c.vocab));
    rotary_model_free(&a);
    rotary_model_free(&b);
    rotary_model_free(&s);
    printf("determinism: ok\n");
}

static void expect_error(int rc, const char *what) {
    EXPECT(rc != 0 && rotary_last_error()[0], "%s: expected an error", what);
    if (rc) printf("  %-32s -> %s\n", what, rotary_last_error());
}

static void test_bad_input(void) {
    rotary_config c;
    rotary_model m;
    tiny(&c); c.n_kv_head = 3; expect_error(rotary_model_build(&m, &c), "n_kv_head not dividing n_head");
    tiny(&c); c.d_model = 18; expect_error(rotary_model_build(&m, &c), "d_model not multiple of heads");
    tiny(&c); c.rotary_dim = 3; expect_error(rotary_model_build(&m, &c), "odd rotary_dim");
    tiny(&c); c.rotary_dim = 6; expect_error(rotary_model_build(&m, &c), "rotary_dim > head_dim");
    tiny(&c); c.vocab = 1; expect_error(rotary_model_build(&m, &c), "vocab 1");
    tiny(&c); c.n_layer = 0; expect_error(rotary_model_build(&m, &c), "no layers");
    tiny(&c); c.pos = 9; expect_error(rotary_model_build(&m, &c), "unknown pos");
    tiny(&c); c.rope_base = 0.5; expect_error(rotary_model_build(&m, &c), "rope_base below 1");
    tiny(&c); c.norm_eps = 0; expect_error(rotary_model_build(&m, &c), "norm_eps 0");
    tiny(&c); c.pos = ROTARY_POS_T5, c.t5_buckets = 1;
    expect_error(rotary_model_build(&m, &c), "t5_buckets 1");
    tiny(&c); c.pos = ROTARY_POS_T5, c.t5_buckets = 32, c.t5_max_distance = 16;
    expect_error(rotary_model_build(&m, &c), "t5_max_distance <= buckets/2");
    tiny(&c); c.attn = 2; expect_error(rotary_model_build(&m, &c), "unknown attn");
    tiny(&c); c.attn = ROTARY_ATTN_LINEAR, c.pos = ROTARY_POS_ALIBI;
    expect_error(rotary_model_build(&m, &c), "linear attention with alibi");
    tiny(&c); c.attn = ROTARY_ATTN_LINEAR, c.pos = ROTARY_POS_T5;
    expect_error(rotary_model_build(&m, &c), "linear attention with t5");
    tiny(&c); c.vocab = 16 << 20, c.d_model = 1 << 20, c.n_head = 1 << 10;
    expect_error(rotary_model_build(&m, &c), "absurd size");
    tiny(&c);
    EXPECT(rotary_model_build(&m, &c) == 0, "build");
    rotary_model_init(&m, 1);
    int tok[B * T] = {0}, tgt[B * T] = {0};
    float l;
    expect_error(rotary_model_backward(&m), "backward before forward");
    tok[3] = c.vocab;
    expect_error(rotary_model_forward(&m, tok, tgt, B, T, &l), "token id = vocab");
    tok[3] = -1;
    expect_error(rotary_model_forward(&m, tok, tgt, B, T, &l), "negative token id");
    tok[3] = 0;
    tgt[5] = c.vocab + 4;
    expect_error(rotary_model_forward(&m, tok, tgt, B, T, &l), "target id past vocab");
    expect_error(rotary_model_forward(&m, tok, NULL, 1, c.ctx + 1, &l), "T > ctx");
    expect_error(rotary_model_forward(&m, tok, NULL, 0, 1, &l), "B = 0");
    EXPECT(rotary_model_forward(&m, tok, NULL, 1, T, &l) == 0 && isnan(l), "forward without targets");
    expect_error(rotary_model_backward(&m), "backward without targets");
    rotary_model_free(&m);
}

int main(void) {
    test_t5_buckets();
    test_gradients();
    test_determinism();
    test_bad_input();
    return check_summary("test_model");
}
