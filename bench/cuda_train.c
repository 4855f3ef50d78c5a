/* cuda_train: training throughput of the GPU backend (src/cuda/) on random
 * tokens.
 *
 * usage: cuda_train [--layers L] [--heads H] [--dim D] [--ff F] [--ctx T]
 *                   [--batch B] [--vocab V] [--steps N] [--warmup-steps W]
 *                   [--peak-tflops P] [--pos rope|t5|alibi|...]
 *
 * Defaults: the GPT-2-small shape (12 layers, 12 heads, d_model 768, ctx
 * 1024, vocab 50304) with librotary's default block (RMSNorm, SwiGLU with
 * d_ff 2048, interleaved RoPE, tied head, no bias), batch 16. One step is
 * zero_grad + forward + backward + gradient norm and clipping + AdamW, as
 * bench/train_bench.c does on the CPU; forward_ms, backward_ms and
 * optimizer_ms split it (zero_grad goes with the forward). --pos changes
 * the position encoding (T5: 32 buckets up to distance 128, T5's own).
 *
 * MFU = tokens/s * flops per token / peak, with flops per token = 6 N (N all
 * parameters: the tied embedding is used by the classifier's GEMM) + 12 L C T
 * (attention scores and weighted sums, forward and backward, as in PaLM's
 * appendix B), and peak the dense bf16 rate of the GPU (989 TFLOP/s for an
 * H100 SXM and an H200; --peak-tflops for others).
 *
 * Output: one `key=value` per line on stdout (bench/README.md). */
#include "rotary.h"
#include "cuda/cuda_model.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int die(const char *what) {
    fprintf(stderr, "cuda_train: %s: %s\n", what, rotary_last_error());
    return 1;
}

int main(int argc, char **argv) {
    rotary_config c;
    rotary_config_default(&c);
    c.n_layer = 12, c.n_head = 12, c.n_kv_head = 12, c.d_model = 768, c.d_ff = 2048;
    c.ctx = 1024, c.vocab = 50304;
    int B = 16, steps = 10, warmup = 3;
    double peak = 989.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i];
        const double v = atof(argv[i + 1]);
        if (!strcmp(k, "--pos")) {
            if ((c.pos = rotary_pos_parse(argv[i + 1])) < 0) {
                fprintf(stderr, "cuda_train: --pos %s: unknown position encoding\n", argv[i + 1]);
                return 2;
            }
        } else if (!strcmp(k, "--layers")) c.n_layer = (int)v;
        else if (!strcmp(k, "--heads")) c.n_head = c.n_kv_head = (int)v;
        else if (!strcmp(k, "--dim")) c.d_model = (int)v;
        else if (!strcmp(k, "--ff")) c.d_ff = (int)v;
        else if (!strcmp(k, "--ctx")) c.ctx = (int)v;
        else if (!strcmp(k, "--batch")) B = (int)v;
        else if (!strcmp(k, "--vocab")) c.vocab = (int)v;
        else if (!strcmp(k, "--steps")) steps = (int)v;
        else if (!strcmp(k, "--warmup-steps")) warmup = (int)v;
        else if (!strcmp(k, "--peak-tflops")) peak = v;
        else {
            fprintf(stderr, "cuda_train: unknown option %s (see the comment at the top)\n", k);
            return 2;
        }
    }
    if (cuda_device_check()) return die("device");
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    rotary_model m;
    cuda_model *g;
    if (rotary_model_build(&m, &c)) return die("model");
    rotary_model_init(&m, 1);
    if (cuda_model_new(&g, &m) || cuda_model_trainable(g, 0, m.n_params) ||
        cuda_model_reserve(g, B, c.ctx))
        return die("cuda model");
    const int N = B * c.ctx;
    int *tok = malloc(2 * (size_t)N * sizeof(int));
    rotary_rng r;
    rotary_rng_seed(&r, 7);
    for (int i = 0; i < 2 * N; i++) tok[i] = (int)(rotary_rng_next(&r) % (uint64_t)c.vocab);
    rotary_adamw_config ac = {1e-4f, 0.9f, 0.99f, 1e-8f, 0.1f};
    /* Each phase ends in a device synchronisation (cuda_model.c), so the
     * host clock between them splits the step: forward (with the
     * classifier), backward, and the rest (zero_grad, the norm, AdamW). */
    double t0 = 0, phase[3] = {0, 0, 0};
    float loss = 0;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) t0 = now_s();
        float norm;
        const double a = now_s();
        if (cuda_model_zero_grad(g) || cuda_model_forward(g, tok, tok + N, B, c.ctx, 1, &loss))
            return die("forward");
        const double b = now_s();
        if (cuda_model_backward(g)) return die("backward");
        const double e = now_s();
        if (cuda_model_grad_norm(g, &norm) ||
            cuda_model_adamw_step(g, &ac, norm > 1.0f ? 1.0f / norm : 1.0f))
            return die("optimizer");
        if (s >= warmup) phase[0] += b - a, phase[1] += e - b, phase[2] += now_s() - e;
    }
    const double dt = (now_s() - t0) / steps, tps = N / dt;
    const double fpt = 6.0 * (double)m.n_params + 12.0 * c.n_layer * c.d_model * c.ctx;
    printf("device=%s\npos=%s\n", prop.name, rotary_pos_name(c.pos));
    printf("params=%zu\nbatch=%d\nctx=%d\nloss=%.4f\n", m.n_params, B, c.ctx, loss);
    printf("ms_per_step=%.2f\ntokens_per_s=%.0f\n", dt * 1e3, tps);
    printf("forward_ms=%.2f\nbackward_ms=%.2f\noptimizer_ms=%.2f\n", phase[0] * 1e3 / steps,
           phase[1] * 1e3 / steps, phase[2] * 1e3 / steps);
    printf("flops_per_token=%.4g\nmfu=%.4f\npeak_tflops=%.0f\n", fpt, tps * fpt / (peak * 1e12), peak);
    cuda_model_free(g);
    rotary_model_free(&m);
    free(tok);
    return 0;
}
