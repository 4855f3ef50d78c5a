/* test_cuda_model: the GPU model (src/cuda/cuda_model.c) against the CPU
 * model on the same weights: loss, logits and every parameter's gradient for
 * each supported kind of model, one AdamW step with clipping from the same
 * gradients, the KV-cache decoder step by step against the full forward, and
 * a 50-step training run (cuda_train vs rotary_train) whose
 * loss curves must agree, and a run stopped on one device and resumed on
 * the other.
 *
 * Thresholds: the GPU's GEMMs round their inputs to bf16 (test_cuda_kernels
 * explains the 2^-8 per product); a two-layer model chains about a dozen of
 * them forward and back, so logits get 2e-2 and each gradient tensor 5e-2 of
 * its largest element. AdamW is fp32 on both sides from identical inputs:
 * 1e-5. The loss curves drift apart as bf16 rounding changes each update a
 * little: 3% of the loss at any step. */
#define _POSIX_C_SOURCE 200809L
#include "gpu_check.h"
#include "cuda/cuda_model.h"
#include "model_internal.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

enum { BATCH = 3 };

/* Decoder steps to check (0: the whole context). */
static int decode_steps;

static void base(rotary_config *c) {
    rotary_config_default(c);
    c->n_layer = 2, c->n_head = 4, c->n_kv_head = 2, c->d_model = 64, c->d_ff = 96;
    c->ctx = 40, c->vocab = 61, c->init_std = 0.1f;
}

/* From position 0, steps 0..n-1 of dec on tok: the worst relative error
 * of their logits (vocab V; row: scratch) against ref (n rows). */
static double decoder_worst(cuda_decoder *dec, const int *tok, int n, float *row,
                            const float *ref, int V) {
    double worst = 0;
    cuda_decoder_reset(dec);
    for (int t = 0; t < n; t++) {
        must(cuda_decoder_step(dec, tok[t], row), "decoder step");
        double e = rel_err(row, ref + (size_t)t * V, V);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

/* From position 0, steps 0..n-1 of dec on tok: their logits into out (n
 * rows of V). */
static void decoder_rows(cuda_decoder *dec, const int *tok, int n, float *out, int V) {
    cuda_decoder_reset(dec);
    for (int t = 0; t < n; t++)
        must(cuda_decoder_step(dec, tok[t], out + (size_t)t * V), "decoder step");
}

/* The worst relative error of n rows of V against ref's. */
static double rows_worst(const float *rows, const float *ref, int n, int V) {
    double worst = 0;
    for (int t = 0; t < n; t++) {
        double e = rel_err(rows + (size_t)t * V, ref + (size_t)t * V, V);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

static void round_all(float *w, size_t n) {
    for (size_t i = 0; i < n; i++) w[i] = round_bf16(w[i]);
}

/* What cuda_decoder_bf16 should give: the CPU decoder's logits (n rows)
 * for tok on a copy of m whose matrices that the GPU then reads in bf16
 * (every layer's q|k|v, output and MLP ones, and the classifier) are
 * rounded to bf16. The copy is untied, so that the token embedding stays
 * fp32 as the GPU's does. */
static float *bf16_reference(const rotary_model *m, const int *tok, int n) {
    rotary_config c = m->cfg;
    c.tied = 0;
    rotary_model r;
    must(rotary_model_build(&r, &c), "build");
    for (int i = 0; i < r.n_tensors; i++) {
        const rotary_tensor *t = &r.tensors[i], *from = rotary_model_tensor(m, t->name);
        const size_t off = from ? from->offset : m->layout->head; /* tied: the embedding */
        memcpy(r.params + t->offset, m->params + off, t->numel * sizeof(float));
    }
    for (int l = 0; l <= c.n_layer; l++)
        for (int i = 0; i < DECODER_MATRICES(&c, l); i++) {
            int rows, cols;
            const size_t off = decoder_matrix(&c, r.layout, l, i, &rows, &cols);
            round_all(r.params + off, (size_t)rows * cols);
        }
    rotary_decoder d;
    must(rotary_decoder_init(&d, &r, n), "cpu decoder");
    float *out = malloc((size_t)n * c.vocab * sizeof(float));
    for (int t = 0; t < n; t++) {
        const float *lg;
        must(rotary_decoder_step(&d, tok[t], &lg), "cpu decoder step");
        memcpy(out + (size_t)t * c.vocab, lg, (size_t)c.vocab * sizeof(float));
    }
    rotary_decoder_free(&d);
    rotary_model_free(&r);
    return out;
}

static void test_config(const char *label, const rotary_config *c) {
    char name[128];
    rotary_model m;
    must(rotary_model_build(&m, c), "build");
    rotary_model_init(&m, test_seed++);
    /* Norm weights and biases start at 1 and 0: make them random too. */
    for (int i = 0; i < m.n_tensors; i++)
        if (!m.tensors[i].decay) {
            float *r = randn(m.tensors[i].numel, 0.3f);
            for (size_t j = 0; j < m.tensors[i].numel; j++)
                m.params[m.tensors[i].offset + j] += r[j];
            free(r);
        }
    const int B = BATCH, T = c->ctx, N = B * T;
    int tok[BATCH * 40], tgt[BATCH * 40];
    for (int i = 0; i < N; i++) {
        tok[i] = (int)(rotary_rng_next(&test_rng) % (uint64_t)c->vocab);
        tgt[i] = (int)(rotary_rng_next(&test_rng) % (uint64_t)c->vocab);
    }
    cuda_model *g;
    must(cuda_model_new(&g, &m), "cuda_model_new");
    float lc, lg;
    must(rotary_model_forward(&m, tok, tgt, B, T, &lc), "cpu forward");
    must(cuda_model_forward(g, tok, tgt, B, T, 0, &lg), "gpu forward");
    float *logits = malloc((size_t)N * c->vocab * sizeof(float));
    must(cuda_model_logits(g, logits), "gpu logits");
    snprintf(name, sizeof name, "%s: logits", label);
    compare(name, logits, rotary_model_logits(&m), (size_t)N * c->vocab, 2e-2);
    snprintf(name, sizeof name, "%s: loss", label);
    check(fabsf(lg - lc) <= 1e-2f * lc, name, "gpu %.5f cpu %.5f", lg, lc);

    /* The decoder, token by token (a KV cache, or linear attention's state):
     * row t of sequence 0's logits. */
    cuda_decoder *dec;
    must(cuda_decoder_new(&dec, g, T), "cuda decoder");
    cuda_decoder_set_fused(dec, 0); /* cuBLAS first; the fused layers below */
    /* Steps replay a CUDA graph; a second decoder launches kernel by kernel
     * and must give the same bits. */
    float *row = malloc((size_t)c->vocab * sizeof(float));
    float *rows = malloc((size_t)T * c->vocab * sizeof(float));
    double dworst = 0;
    int graphed = 1;
    const char *why = "";
    const int T_dec = decode_steps && decode_steps < T ? decode_steps : T;
    for (int t = 0; t < T_dec; t++) {
        must(cuda_decoder_step(dec, tok[t], rows + (size_t)t * c->vocab), "decoder step");
        graphed &= cuda_decoder_graphed(dec, &why);
        double e = rel_err(rows + (size_t)t * c->vocab, rotary_model_logits(&m) +
                           (size_t)t * c->vocab, c->vocab);
        if (!(e <= dworst)) dworst = e;
    }
    snprintf(name, sizeof name, "%s: decoder, %d steps", label, T_dec);
    check(dworst <= 2e-2, name, "worst rel err %.2e (<= 2e-2)", dworst);
    snprintf(name, sizeof name, "%s: decoder steps as one CUDA graph", label);
    check(graphed, name, "%s", graphed ? "every step replayed it" : *why ? why : "not graphed");
    cuda_decoder_reset(dec);
    cuda_decoder_set_graph(dec, 0);
    int differ = 0;
    for (int t = 0; t < T_dec; t++) {
        must(cuda_decoder_step(dec, tok[t], row), "decoder step");
        differ += cuda_decoder_graphed(dec, NULL) ||
                  memcmp(row, rows + (size_t)t * c->vocab, (size_t)c->vocab * sizeof(float));
    }
    snprintf(name, sizeof name, "%s: decoder without the graph", label);
    check(!differ, name, "%d of %d steps differ in a bit", differ, T_dec);
    /* The fused linear layers (gpu_decode_matvec, the norms and activations
     * on the way in) instead of cuBLAS's, as a graph: the same logits up to
     * the order of the sums. */
    cuda_decoder_set_graph(dec, 1);
    cuda_decoder_set_fused(dec, 1);
    double fworst = decoder_worst(dec, tok, T_dec, row, rows, c->vocab);
    snprintf(name, sizeof name, "%s: decoder, fused linear layers", label);
    check(fworst <= 1e-5, name, "worst rel err %.2e (<= 1e-5) against cuBLAS's", fworst);
    /* --int8: Q8_0 weights, against the fp32 weights' logits. Each weight
     * moves by up to 1/254 of its block's largest; through two layers of
     * these small models that gave up to 3.1e-2 of the largest logit (the
     * CPU's int8 decoder, which also rounds the inputs, is held to 8e-2 in
     * test_decode): 5e-2. */
    must(cuda_decoder_quantize(dec), "quantize");
    double qworst = decoder_worst(dec, tok, T_dec, row, rows, c->vocab);
    snprintf(name, sizeof name, "%s: decoder, int8 weights", label);
    check(qworst <= 5e-2 && qworst > 0, name, "worst rel err %.2e (<= 5e-2) against fp32's",
          qworst);
    /* bf16: the model's own bf16 copy of the matrices (after int8: the two
     * replace each other), against the CPU decoder on the rounded weights:
     * the same products up to the order of the sums, as the fused fp32
     * layers against cuBLAS's. As a graph, then kernel by kernel: the same
     * bits. The reference must differ from fp32's, or it checks nothing. */
    float *ref16 = bf16_reference(&m, tok, T_dec);
    float *rows16 = malloc((size_t)T_dec * c->vocab * sizeof(float));
    must(cuda_decoder_bf16(dec), "bf16");
    decoder_rows(dec, tok, T_dec, rows16, c->vocab);
    graphed = cuda_decoder_graphed(dec, &why);
    const double bworst = rows_worst(rows16, ref16, T_dec, c->vocab);
    const double apart = rows_worst(rows, ref16, T_dec, c->vocab);
    snprintf(name, sizeof name, "%s: decoder, bf16 weights", label);
    check(bworst <= 1e-5 && apart >= 1e-4 && graphed, name,
          "worst rel err %.2e (<= 1e-5) against the CPU's on rounded weights (fp32's: %.2e, "
          ">= 1e-4)%s", bworst, apart, graphed ? "" : ", not graphed");
    cuda_decoder_reset(dec);
    cuda_decoder_set_graph(dec, 0);
    differ = 0;
    for (int t = 0; t < T_dec; t++) {
        must(cuda_decoder_step(dec, tok[t], row), "decoder step");
        differ += memcmp(row, rows16 + (size_t)t * c->vocab, (size_t)c->vocab * sizeof(float)) != 0;
    }
    snprintf(name, sizeof name, "%s: decoder, bf16 weights without the graph", label);
    check(!differ, name, "%d of %d steps differ in a bit", differ, T_dec);
    /* and back to int8: its logits again */
    cuda_decoder_set_graph(dec, 1);
    must(cuda_decoder_quantize(dec), "quantize");
    const double q2 = decoder_worst(dec, tok, T_dec, row, rows, c->vocab);
    snprintf(name, sizeof name, "%s: decoder, int8 weights after bf16", label);
    check(q2 == qworst, name, "worst rel err %.2e (%.2e before)", q2, qworst);
    cuda_decoder_free(dec);
    free(row), free(rows), free(ref16), free(rows16);

    /* Gradients: training forward (fused classifier) then backward. */
    rotary_model_zero_grad(&m);
    must(rotary_model_forward(&m, tok, tgt, B, T, &lc), "cpu forward");
    must(rotary_model_backward(&m), "cpu backward");
    /* A new device model holds no gradients (inference needs none) until
     * cuda_model_trainable, and says so instead of writing anywhere. */
    must(cuda_model_forward(g, tok, tgt, B, T, 1, &lg), "gpu train forward");
    snprintf(name, sizeof name, "%s: no backward before cuda_model_trainable", label);
    check(cuda_model_backward(g) == ROTARY_EINVAL && strstr(rotary_last_error(), "no gradients"),
          name, "%s", rotary_last_error());
    must(cuda_model_trainable(g, 0, m.n_params), "cuda_model_trainable");
    must(cuda_model_zero_grad(g), "gpu zero grad");
    must(cuda_model_forward(g, tok, tgt, B, T, 1, &lg), "gpu train forward");
    must(cuda_model_backward(g), "gpu backward");
    float *grads = malloc(m.n_params * sizeof(float));
    must(cuda_model_download(g, NULL, grads, NULL), "download grads");
    /* Each tensor's error is relative to its largest element, but not less
     * than 1e-2 of the largest gradient element of the model: some gradients
     * are zero in exact arithmetic and only rounding noise on both sides (a
     * key bias without RoPE adds the same q.b to every score of a row, which
     * the softmax cancels; with bf16 probabilities the cancellation is off by
     * about 1e-4 of the largest gradient, measured on an H100). An error in a
     * small gradient is still caught once it exceeds 5e-4 of the largest. */
    float gmax = 0;
    for (size_t i = 0; i < m.n_params; i++)
        if (fabsf(m.grads[i]) > gmax) gmax = fabsf(m.grads[i]);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.n_tensors; i++) {
        const rotary_tensor *t = &m.tensors[i];
        double e = rel_err_floor(grads + t->offset, m.grads + t->offset, t->numel, 1e-2 * gmax);
        snprintf(name, sizeof name, ".%s: grad %s", label, t->name);
        check(e <= 5e-2, name, "rel err %.2e (<= 5e-2)", e);
        if (!(e <= worst)) worst = e, worst_name = t->name;
    }
    snprintf(name, sizeof name, "%s: %d gradients", label, m.n_tensors);
    check(worst <= 5e-2, name, "worst %.2e (%s)", worst, worst_name);

    /* AdamW from the GPU's gradients on both sides, clipped to half the norm. */
    memcpy(m.grads, grads, m.n_params * sizeof(float));
    float gnorm;
    must(cuda_model_grad_norm(g, &gnorm), "gpu grad norm");
    rotary_adamw opt;
    must(rotary_adamw_init(&opt, m.n_params), "adamw init");
    rotary_adamw_config ac = {3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f};
    const float cnorm = rotary_clip_grad_norm(m.grads, m.n_params, 0.5f * gnorm);
    snprintf(name, sizeof name, "%s: gradient norm", label);
    check(fabsf(gnorm - cnorm) <= 1e-5f * cnorm, name, "gpu %.6g cpu %.6g", gnorm, cnorm);
    for (int s = 0; s < 2; s++) rotary_adamw_step(&opt, &m, &ac);
    const float scale = 0.5f * gnorm / (gnorm + 1e-6f);
    for (int s = 0; s < 2; s++) must(cuda_model_adamw_step(g, &ac, scale), "gpu adamw");
    float *params = malloc(m.n_params * sizeof(float));
    must(cuda_model_download(g, params, NULL, NULL), "download params");
    snprintf(name, sizeof name, "%s: parameters after 2 AdamW steps", label);
    compare(name, params, m.params, m.n_params, 1e-5);
    rotary_adamw_free(&opt);
    cuda_model_free(g);
    rotary_model_free(&m);
    free(grads); /* logits and params: freed by compare */
}

/* Loss column of run/metrics.csv into loss[steps]; the count read. */
static int read_losses(const char *dir, float *loss, int steps) {
    char path[256], line[256];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    FILE *f = fopen(path, "r");
    int n = 0;
    if (!f) return 0;
    if (!fgets(line, sizeof line, f)) line[0] = 0;
    while (n < steps && fgets(line, sizeof line, f)) {
        long s;
        float l;
        if (sscanf(line, "%ld,%f", &s, &l) == 2 && s == n + 1) loss[n++] = l;
    }
    fclose(f);
    return n;
}

/* 50 steps on a text with structure to learn (a noisy counting sequence). */
static void test_training_curve(void) {
    enum { STEPS = 50, NTOK = 20000 };
    rotary_config c;
    base(&c);
    c.init_std = 0.02f, c.ctx = 64;
    static int ids[NTOK];
    rotary_rng r;
    rotary_rng_seed(&r, 5);
    for (int i = 0; i < NTOK; i++)
        ids[i] = rotary_rng_uniform(&r) < 0.8f ? (i * 7 + i / 13) % c.vocab
                                               : (int)(rotary_rng_next(&r) % (uint64_t)c.vocab);
    char dir[2][64] = {"cuda_curve_cpu.XXXXXX", "cuda_curve_gpu.XXXXXX"};
    float loss[2][STEPS];
    for (int d = 0; d < 2; d++) {
        if (!mkdtemp(dir[d])) must(ROTARY_EIO, "mkdtemp");
        rotary_model m;
        must(rotary_model_build(&m, &c), "build");
        rotary_model_init(&m, 3);
        rotary_train_opts o = {.run_dir = dir[d], .train_ids = ids, .val_ids = ids + 18000,
                               .n_train = 18000, .n_val = 2000, .batch = 8, .steps = STEPS,
                               .warmup = 5, .lr = 3e-3f, .min_lr = 3e-4f, .weight_decay = 0.1f,
                               .clip = 1.0f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                               .eval_every = 25, .eval_batches = 2, .seed = 9};
        must(d ? cuda_train(&m, &o) : rotary_train(&m, &o), d ? "cuda_train" : "rotary_train");
        int n = read_losses(dir[d], loss[d], STEPS);
        check(n == STEPS, d ? "gpu run: metrics.csv" : "cpu run: metrics.csv", "%d steps", n);
        rotary_model_free(&m);
    }
    double worst = 0;
    int at = 0;
    for (int s = 0; s < STEPS; s++) {
        double e = fabs(loss[1][s] - loss[0][s]) / loss[0][s];
        if (!(e <= worst)) worst = e, at = s + 1;
    }
    check(worst <= 3e-2, "50-step loss curve, gpu vs cpu", "worst %.2e at step %d; loss %.4f -> "
          "%.4f (cpu), %.4f -> %.4f (gpu)", worst, at, loss[0][0], loss[0][STEPS - 1], loss[1][0],
          loss[1][STEPS - 1]);
    check(loss[1][STEPS - 1] < loss[1][0] - 0.5f, "gpu run learns", "%.4f -> %.4f", loss[1][0],
          loss[1][STEPS - 1]);
    printf("step  cpu     gpu\n");
    for (int s = 0; s < STEPS; s += 7) printf("%4d  %.4f  %.4f\n", s + 1, loss[0][s], loss[1][s]);
    for (int d = 0; d < 2; d++) {
        char cmd[160];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir[d]);
        if (system(cmd)) printf("note: could not remove %s\n", dir[d]);
    }
}

/* on_step for the resume test: stop after the step *ctx. */
static int stop_at(void *ctx, const rotary_train_status *st) { return st->step == *(long *)ctx; }

/* A run stopped on one device and resumed on the other (both ways) goes on
 * from the checkpoint: its metrics.csv has every step once, the steps before
 * the stop are the first device's own, and the rest follow a run that never
 * stopped to within the drift of a few bf16 steps (5e-3 of the loss). */
static void test_resume(void) {
    enum { STEPS = 6, STOP = 3, NTOK = 4000 };
    rotary_config c;
    base(&c);
    static int ids[NTOK];
    for (int i = 0; i < NTOK; i++) ids[i] = (i * 7 + i / 11) % c.vocab;
    float loss[3][STEPS];
    char dir[3][64] = {"cuda_resume_a.XXXXXX", "cuda_resume_b.XXXXXX", "cuda_resume_c.XXXXXX"};
    /* run 0: the CPU straight through; 1: CPU, then GPU; 2: GPU, then CPU */
    for (int run = 0; run < 3; run++) {
        if (!mkdtemp(dir[run])) must(ROTARY_EIO, "mkdtemp");
        long stop = STOP;
        rotary_train_opts o = {.run_dir = dir[run], .train_ids = ids, .val_ids = ids + 3000,
                               .n_train = 3000, .n_val = 1000, .batch = 2, .steps = STEPS,
                               .warmup = 2, .lr = 3e-3f, .min_lr = 3e-4f, .weight_decay = 0.1f,
                               .clip = 1.0f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                               .eval_batches = 1, .seed = 4};
        for (int leg = 0; leg < (run ? 2 : 1); leg++) {
            rotary_model m;
            char ckpt[96];
            snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", dir[run]);
            if (leg) { /* the weights come from the checkpoint, as `train --resume` */
                must(rotary_checkpoint_load(ckpt, &m), "load the checkpoint");
            } else {
                must(rotary_model_build(&m, &c), "build");
                rotary_model_init(&m, 8);
            }
            o.resume = leg, o.on_step = run && !leg ? stop_at : NULL, o.ctx = &stop;
            const int gpu = (run == 1 && leg == 1) || (run == 2 && leg == 0);
            int rc = gpu ? cuda_train(&m, &o) : rotary_train(&m, &o);
            if (run && !leg)
                check(rc == ROTARY_EINTR, "resume: a stopped run says so", "rc %d", rc);
            else
                must(rc, gpu ? "cuda_train" : "rotary_train");
            rotary_model_free(&m);
        }
        int n = read_losses(dir[run], loss[run], STEPS);
        check(n == STEPS, "resume: metrics.csv has every step once", "run %d: %d steps", run, n);
    }
    for (int run = 1; run < 3; run++) {
        double worst = 0;
        for (int s = 0; s < STEPS; s++) {
            double e = fabs(loss[run][s] - loss[0][s]) / loss[0][s];
            /* the CPU's own steps repeat its bits */
            if (run == 1 && s < STOP && e != 0) worst = INFINITY;
            if (!(e <= worst)) worst = e;
        }
        check(worst <= 5e-3, run == 1 ? "resume: stopped on the cpu, resumed on the gpu"
                                      : "resume: stopped on the gpu, resumed on the cpu",
              "worst %.2e; last loss %.4f (straight through %.4f)", worst, loss[run][STEPS - 1],
              loss[0][STEPS - 1]);
    }
    for (int run = 0; run < 3; run++) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir[run]);
        if (system(cmd)) printf("note: could not remove %s\n", dir[run]);
    }
}

/* --quick: three configurations (RoPE, T5 and linear attention), 20
 * decoder steps, the resume test and no 50-step run, for the CPU emulation
 * (test_cuda_model_emu), where every kernel launch costs a few
 * milliseconds. */
int main(int argc, char **argv) {
    gpu_or_skip("test_cuda_model");
    const int quick = argc > 1 && !strcmp(argv[1], "--quick");
    decode_steps = quick ? 20 : 0;
    rotary_config c;
    base(&c);
    test_config("rope interleaved rms swiglu gqa tied", &c);
    /* T5: 8 buckets, the last 4 logarithmic up to distance 20 (ctx 40) */
    base(&c);
    c.pos = ROTARY_POS_T5, c.rope_scaling.type = ROTARY_ROPE_SCALING_NONE;
    c.t5_buckets = 8, c.t5_max_distance = 20;
    test_config("t5 rms swiglu gqa", &c);
    if (quick) {
        base(&c);
        c.attn = ROTARY_ATTN_LINEAR, c.init_std = 0.05f;
        test_config("linear attention rope gqa", &c);
        test_resume();
        return check_summary("test_cuda_model");
    }
    base(&c);
    c.norm = ROTARY_NORM_LAYER, c.mlp = ROTARY_MLP_GELU, c.bias = 1, c.tied = 0;
    c.rope_pairing = ROTARY_ROPE_HALF, c.rotary_dim = 8, c.n_kv_head = 1;
    test_config("rope half rd 8 layernorm gelu bias untied mqa", &c);
    base(&c);
    c.pos = ROTARY_POS_ALIBI, c.n_kv_head = 4;
    test_config("alibi rms swiglu", &c);
    base(&c);
    c.pos = ROTARY_POS_LEARNED, c.norm = ROTARY_NORM_LAYER, c.mlp = ROTARY_MLP_GELU, c.bias = 1;
    test_config("learned layernorm gelu bias", &c);
    base(&c);
    c.pos = ROTARY_POS_SINUSOIDAL, c.n_head = 2, c.n_kv_head = 2;
    test_config("sinusoidal hd 32", &c);
    base(&c);
    c.pos = ROTARY_POS_NONE, c.rope_scaling.type = ROTARY_ROPE_SCALING_NONE;
    test_config("none", &c);
    base(&c);
    c.rope_scaling.type = ROTARY_ROPE_SCALING_LINEAR, c.rope_scaling.factor = 2;
    c.rope_scaling.original_ctx = 20;
    test_config("rope linear scaling", &c);

    base(&c);
    c.attn = ROTARY_ATTN_LINEAR, c.init_std = 0.05f;
    test_config("linear attention rope gqa", &c);
    base(&c);
    c.attn = ROTARY_ATTN_LINEAR, c.pos = ROTARY_POS_LEARNED, c.norm = ROTARY_NORM_LAYER;
    c.init_std = 0.05f;
    test_config("linear attention learned layernorm", &c);

    test_training_curve();
    test_resume();
    return check_summary("test_cuda_model");
}
