/* train_bench: training throughput of librotary on random tokens.
 *
 * usage: train_bench [--layers L] [--heads H] [--dim D] [--ff F] [--ctx T]
 *                    [--batch B] [--vocab V] [--steps N] [--warmup-steps W]
 *                    [--threads P] [--pos rope|learned|sinusoidal|alibi|none|t5]
 *
 * The model is rotary_config_default (RMSNorm, SwiGLU, interleaved RoPE, tied
 * head, no bias) with the shape given on the command line. One step is
 * zero_grad + forward + backward + clip_grad_norm(1.0) + AdamW (lr 1e-3,
 * betas (0.9, 0.99), eps 1e-8, wd 0.1), on the same fixed batch of random
 * tokens every step (the data does not change the arithmetic).
 *
 * Output: one `key=value` per line on stdout (see bench/README.md). */
#include "rotary.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int die(const char *what) {
    fprintf(stderr, "train_bench: %s: %s\n", what, rotary_last_error());
    return 1;
}

static void usage(void) {
    fprintf(stderr,
            "usage: train_bench [--layers L] [--heads H] [--dim D] [--ff F] [--ctx T]\n"
            "                   [--batch B] [--vocab V] [--steps N] [--warmup-steps W]\n"
            "                   [--threads P] [--pos rope|learned|sinusoidal|alibi|none|t5]\n");
}

int main(int argc, char **argv) {
    rotary_config c;
    rotary_config_default(&c);
    int B = 32, steps = 20, warmup = 3, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (i + 1 >= argc) return usage(), 2;
        const char *v = argv[++i];
        int n = atoi(v);
        if (!strcmp(a, "--layers")) c.n_layer = n;
        else if (!strcmp(a, "--heads")) c.n_head = c.n_kv_head = n;
        else if (!strcmp(a, "--dim")) c.d_model = n;
        else if (!strcmp(a, "--ff")) c.d_ff = n;
        else if (!strcmp(a, "--ctx")) c.ctx = n;
        else if (!strcmp(a, "--batch")) B = n;
        else if (!strcmp(a, "--vocab")) c.vocab = n;
        else if (!strcmp(a, "--steps")) steps = n;
        else if (!strcmp(a, "--warmup-steps")) warmup = n;
        else if (!strcmp(a, "--threads")) threads = n;
        else if (!strcmp(a, "--pos")) {
            if ((c.pos = rotary_pos_parse(v)) < 0) return fprintf(stderr, "train_bench: unknown --pos %s\n", v), 2;
        } else {
            fprintf(stderr, "train_bench: unknown option %s\n", a);
            return usage(), 2;
        }
    }
    if (B < 1 || steps < 1 || warmup < 0) return fprintf(stderr, "train_bench: bad --batch/--steps/--warmup-steps\n"), 2;
    if (threads > 0) omp_set_num_threads(threads);
    const int T = c.ctx;

    rotary_model m;
    rotary_adamw opt;
    if (rotary_config_validate(&c)) return die("config");
    if (rotary_model_build(&m, &c)) return die("build");
    rotary_model_init(&m, 1337);
    if (rotary_model_reserve(&m, B, T)) return die("reserve");
    if (rotary_adamw_init(&opt, m.n_params)) return die("adamw");

    int *tok = malloc(sizeof(int) * (size_t)B * T), *tgt = malloc(sizeof(int) * (size_t)B * T);
    if (!tok || !tgt) return fprintf(stderr, "train_bench: out of memory\n"), 1;
    rotary_rng rng;
    rotary_rng_seed(&rng, 42);
    for (long i = 0; i < (long)B * T; i++) {
        tok[i] = (int)(rotary_rng_next(&rng) % (uint64_t)c.vocab);
        tgt[i] = (int)(rotary_rng_next(&rng) % (uint64_t)c.vocab);
    }
    const rotary_adamw_config ac = {1e-3f, 0.9f, 0.99f, 1e-8f, 0.1f};

    float loss = 0.0f, first_loss = 0.0f;
    double t0 = 0.0;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) t0 = now_s();
        rotary_model_zero_grad(&m);
        if (rotary_model_forward(&m, tok, tgt, B, T, &loss)) return die("forward");
        if (rotary_model_backward(&m)) return die("backward");
        rotary_clip_grad_norm(m.grads, m.n_params, 1.0f);
        rotary_adamw_step(&opt, &m, &ac);
        if (s == 0) first_loss = loss;
    }
    const double secs = now_s() - t0;

    /* FLOPs per token, PaLM appendix B / llm.c convention: 6 N for the weight
     * matmuls (forward 2N, backward 4N) with N = ALL parameters (the tied
     * embedding counted once, which is its use as the head; the lookup is
     * free; norm weights are negligible), plus 12 L T d for attention scores
     * and weighted values (forward + backward, full T x T, causal mask not
     * discounted). */
    const double L = c.n_layer, d = c.d_model;
    const double flops_tok = 6.0 * (double)m.n_params + 12.0 * L * (double)T * d;
    const double tokens = (double)B * T * steps;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);

    printf("impl=rotary\n");
    printf("threads=%d\n", omp_get_max_threads());
    printf("layers=%d\nheads=%d\ndim=%d\nff=%d\nctx=%d\nbatch=%d\nvocab=%d\npos=%s\n", c.n_layer,
           c.n_head, c.d_model, c.d_ff, T, B, c.vocab, rotary_pos_name(c.pos));
    printf("params=%zu\n", m.n_params);
    printf("steps=%d\n", steps);
    printf("warmup_steps=%d\n", warmup);
    printf("first_loss=%.4f\n", first_loss);
    printf("loss=%.4f\n", loss);
    printf("ms_per_step=%.3f\n", 1e3 * secs / steps);
    printf("tokens_per_s=%.1f\n", tokens / secs);
    printf("flops_per_token=%.0f\n", flops_tok);
    printf("flops_convention=6*N_all_params+12*L*T*d\n");
    printf("gflops=%.2f\n", flops_tok * tokens / secs * 1e-9);
    printf("peak_rss_mb=%.1f\n", (double)ru.ru_maxrss / 1024.0);

    free(tok), free(tgt);
    rotary_adamw_free(&opt);
    rotary_model_free(&m);
    return 0;
}
