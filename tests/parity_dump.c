/* parity_dump: build a small model from key=value overrides, run two training
 * steps, and write everything tests/torch/model_parity.py compares:
 *   DIR/model.safetensors  the initial checkpoint
 *   DIR/out.safetensors    tokens, targets, logits of step 1, losses, gradients
 *                          (before clipping) and parameters after steps 1 and 2
 * usage: parity_dump DIR [key=value ...]   (keys: rotary_config fields) */
#include "rotary.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 3, T = 12, MAXT = 512 };

static int set_field(rotary_config *c, const char *k, const char *v) {
    struct { const char *name; int *p; } ints[] = {
        {"n_layer", &c->n_layer}, {"n_head", &c->n_head}, {"n_kv_head", &c->n_kv_head},
        {"d_model", &c->d_model}, {"d_ff", &c->d_ff}, {"ctx", &c->ctx}, {"vocab", &c->vocab},
        {"rotary_dim", &c->rotary_dim}, {"tied", &c->tied}, {"bias", &c->bias},
        {"t5_buckets", &c->t5_buckets}, {"t5_max_distance", &c->t5_max_distance}};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++)
        if (!strcmp(k, ints[i].name)) return *ints[i].p = atoi(v), 0;
    if (!strcmp(k, "norm")) return c->norm = strcmp(v, "rmsnorm") ? ROTARY_NORM_LAYER : ROTARY_NORM_RMS, 0;
    if (!strcmp(k, "mlp")) return c->mlp = strcmp(v, "swiglu") ? ROTARY_MLP_GELU : ROTARY_MLP_SWIGLU, 0;
    if (!strcmp(k, "pos")) return c->pos = rotary_pos_parse(v), 0;
    if (!strcmp(k, "attn")) return c->attn = strcmp(v, "linear") ? ROTARY_ATTN_SOFTMAX : ROTARY_ATTN_LINEAR, 0;
    if (!strcmp(k, "rope_pairing"))
        return c->rope_pairing = strcmp(v, "half") ? ROTARY_ROPE_INTERLEAVED : ROTARY_ROPE_HALF, 0;
    if (!strcmp(k, "rope_base")) return c->rope_base = atof(v), 0;
    if (!strcmp(k, "init_std")) return c->init_std = (float)atof(v), 0;
    if (!strcmp(k, "sin_amplitude")) return c->sin_amplitude = (float)atof(v), 0;
    return -1;
}

static int die(const char *what) {
    fprintf(stderr, "parity_dump: %s: %s\n", what, rotary_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: parity_dump DIR [key=value ...]\n");
        return 2;
    }
    rotary_config c;
    rotary_config_default(&c);
    c.n_layer = 2, c.n_head = 4, c.n_kv_head = 4, c.d_model = 32, c.d_ff = 48;
    c.ctx = 16, c.vocab = 37, c.init_std = 0.2f, c.sin_amplitude = 0.5f;
    for (int i = 2; i < argc; i++) {
        char key[64];
        const char *eq = strchr(argv[i], '=');
        if (!eq || eq - argv[i] >= (int)sizeof key) return fprintf(stderr, "bad arg %s\n", argv[i]), 2;
        memcpy(key, argv[i], (size_t)(eq - argv[i]));
        key[eq - argv[i]] = 0;
        if (set_field(&c, key, eq + 1)) return fprintf(stderr, "unknown key %s\n", key), 2;
    }
    rotary_model m;
    rotary_adamw opt;
    if (rotary_model_build(&m, &c)) return die("build");
    if (rotary_adamw_init(&opt, m.n_params)) return die("adamw");
    rotary_model_init(&m, 1234);
    /* T5's table starts at zero; give it values so the forward has a bias. */
    const rotary_tensor *rb = rotary_model_tensor(&m, "rel_bias.weight");
    rotary_rng brng;
    rotary_rng_seed(&brng, 77);
    for (size_t j = 0; rb && j < rb->numel; j++) m.params[rb->offset + j] = 0.5f * rotary_rng_normal(&brng);
    char path[MAXT];
    snprintf(path, sizeof path, "%s/model.safetensors", argv[1]);
    if (rotary_checkpoint_save(path, &m, NULL, 0)) return die(path);

    int tok[2][B * T], tgt[2][B * T];
    rotary_rng rng;
    rotary_rng_seed(&rng, 99);
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < B * T; i++) {
            tok[s][i] = (int)(rotary_rng_next(&rng) % (uint64_t)c.vocab);
            tgt[s][i] = (int)(rotary_rng_next(&rng) % (uint64_t)c.vocab);
        }
    size_t np = m.n_params;
    float *logits = malloc(sizeof(float) * B * T * c.vocab);
    float *grads[2] = {malloc(sizeof(float) * np), malloc(sizeof(float) * np)}, *p1 = malloc(sizeof(float) * np);
    float *p2 = malloc(sizeof(float) * np);
    float loss[2], gnorm[2];
    rotary_adamw_config ac = {1e-2f, 0.9f, 0.99f, 1e-8f, 0.1f};
    for (int s = 0; s < 2; s++) {
        rotary_model_zero_grad(&m);
        if (rotary_model_forward(&m, tok[s], tgt[s], B, T, &loss[s])) return die("forward");
        if (s == 0) memcpy(logits, rotary_model_logits(&m), sizeof(float) * B * T * c.vocab);
        if (rotary_model_backward(&m)) return die("backward");
        memcpy(grads[s], m.grads, sizeof(float) * np);
        gnorm[s] = rotary_clip_grad_norm(m.grads, np, 0.5f);
        rotary_adamw_step(&opt, &m, &ac);
        memcpy(s == 0 ? p1 : p2, m.params, sizeof(float) * np);
    }

    int nt = 7 + 4 * m.n_tensors, k = 0;
    rotary_st_tensor *t = calloc((size_t)nt, sizeof *t);
    char (*names)[80] = calloc((size_t)nt, sizeof *names);
    t[k++] = (rotary_st_tensor){"tokens", ROTARY_I32, 3, {2, B, T}, tok};
    t[k++] = (rotary_st_tensor){"targets", ROTARY_I32, 3, {2, B, T}, tgt};
    t[k++] = (rotary_st_tensor){"logits", ROTARY_F32, 3, {B, T, c.vocab}, logits};
    t[k++] = (rotary_st_tensor){"loss", ROTARY_F32, 1, {2}, loss};
    t[k++] = (rotary_st_tensor){"grad_norm", ROTARY_F32, 1, {2}, gnorm};
    const char *prefix[4] = {"grad1.", "grad2.", "step1.", "step2."};
    float *src[4] = {grads[0], grads[1], p1, p2};
    for (int j = 0; j < 4; j++)
        for (int i = 0; i < m.n_tensors; i++) {
            const rotary_tensor *mt = &m.tensors[i];
            snprintf(names[k], sizeof names[k], "%s%s", prefix[j], mt->name);
            t[k] = (rotary_st_tensor){names[k], ROTARY_F32, mt->ndim,
                                      {mt->shape[0], mt->shape[1]}, src[j] + mt->offset};
            k++;
        }
    snprintf(path, sizeof path, "%s/out.safetensors", argv[1]);
    const char *meta[] = {"lr", "0.01", "beta1", "0.9", "beta2", "0.99", "eps", "1e-8",
                          "weight_decay", "0.1", "clip", "0.5"};
    if (rotary_st_write(path, t, k, meta, 6)) return die(path);
    free(t), free(names), free(logits), free(grads[0]), free(grads[1]), free(p1), free(p2);
    rotary_adamw_free(&opt);
    rotary_model_free(&m);
    return 0;
}
