/* demo.c: `rotary demo`: show the relative-position property of RoPE, train a
 * small byte-level model on built-in text for a few hundred steps, and
 * sample from it. A smoke test of the whole library in a few seconds. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char demo_text[] =
    "Rotary position embedding turns each pair of features of a query or a key into "
    "a point on a plane and turns that point by an angle that grows with the position "
    "of the token. Two tokens that sit far apart are turned by different angles, and "
    "the dot product of a turned query with a turned key only sees the difference of "
    "their positions. So attention learns about relative distance while each token "
    "carries only its own absolute position. The low pairs turn fast and the high "
    "pairs turn slowly, like the hands of a clock, so near and far relations are both "
    "easy to read. A model that uses it needs no table of learned positions, and its "
    "scores fade gently as the distance between two tokens grows. ";

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* <R_m q, R_n k> with a fresh model's RoPE tables. */
static float rotated_score(const rotary_rope *r, const float *q, const float *k, int m, int n) {
    float qq[64], kk[64];
    memcpy(qq, q, sizeof qq);
    memcpy(kk, k, sizeof kk);
    rotary_rope_forward(r, qq, 1, 1, 1, 64, &m);
    rotary_rope_forward(r, kk, 1, 1, 1, 64, &n);
    float s = 0;
    for (int i = 0; i < 64; i++) s += qq[i] * kk[i];
    return s;
}

static int usage(void) {
    printf("usage: rotary demo [--steps N] [--pos rope|learned|sinusoidal|alibi|none|t5] [--seed N]\n"
           "                   [--threads N] [--save FILE]\n");
    return 0;
}

int cmd_demo(int argc, char **argv) {
    int steps = 300, seed = 1, threads = 0;
    const char *pos_name = "rope", *save = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage();
        if (!v) return cli_fail(a, "missing value");
        char *end;
        if (!strcmp(a, "--steps")) steps = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--seed")) seed = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--threads")) threads = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--pos")) { pos_name = v; end = ""; }
        else if (!strcmp(a, "--save")) { save = v; end = ""; }
        else return cli_fail(a, "unknown option (see rotary demo --help)");
        if (*end) return cli_fail(a, "not a number");
        if (steps < 1 || threads < 0) return cli_fail(a, "must be positive");
        i++;
    }
    if (threads) omp_set_num_threads(threads);
    rotary_config cfg;
    rotary_config_default(&cfg);
    cfg.pos = rotary_pos_parse(pos_name);
    if (cfg.pos < 0) return cli_fail("--pos", "unknown encoding");
    cfg.n_layer = 2;
    cfg.d_model = 64;
    cfg.d_ff = 192;
    cfg.ctx = 64;

    /* 1. The property RoPE is built on. */
    rotary_rope r;
    if (rotary_rope_init(&r, 64, 0, 10000.0, ROTARY_ROPE_INTERLEAVED, 70000, NULL))
        return cli_fail("demo", rotary_last_error());
    rotary_rng rng;
    rotary_rng_seed(&rng, (uint64_t)seed);
    float q[64], k[64];
    for (int i = 0; i < 64; i++) q[i] = rotary_rng_normal(&rng), k[i] = rotary_rng_normal(&rng);
    printf("RoPE: <R_m q, R_n k> depends only on m - n:\n");
    const int shifts[] = {0, 1, 100, 10000, 65000};
    for (size_t i = 0; i < sizeof shifts / sizeof *shifts; i++)
        printf("  m=%5d n=%5d  score %+.5f\n", 7 + shifts[i], 3 + shifts[i],
               rotated_score(&r, q, k, 7 + shifts[i], 3 + shifts[i]));
    rotary_rope_free(&r);

    /* 2. Train on the built-in text, bytes as tokens. */
    rotary_model m;
    rotary_adamw opt;
    if (rotary_model_build(&m, &cfg) || rotary_adamw_init(&opt, m.n_params))
        return cli_fail("demo", rotary_last_error());
    rotary_model_init(&m, (uint64_t)seed);
    const int B = 16, T = cfg.ctx, n = (int)strlen(demo_text);
    int *tok = malloc(sizeof(int) * (size_t)B * T), *tgt = malloc(sizeof(int) * (size_t)B * T);
    if (!tok || !tgt) return cli_fail("demo", "out of memory");
    rotary_adamw_config ac = {3e-3f, 0.9f, 0.99f, 1e-8f, 0.1f};
    printf("\ntraining a %zu-parameter %s model (pos=%s) on %d bytes of built-in text, %d threads\n",
           m.n_params, "RMSNorm+SwiGLU", pos_name, n, omp_get_max_threads());
    double t0 = seconds();
    for (int step = 0; step < steps; step++) {
        for (int b = 0; b < B; b++) {
            int off = (int)(rotary_rng_next(&rng) % (uint64_t)(n - T - 1));
            for (int t = 0; t < T; t++) {
                tok[b * T + t] = (unsigned char)demo_text[off + t];
                tgt[b * T + t] = (unsigned char)demo_text[off + t + 1];
            }
        }
        float loss;
        rotary_model_zero_grad(&m);
        if (rotary_model_forward(&m, tok, tgt, B, T, &loss) || rotary_model_backward(&m))
            return cli_fail("demo", rotary_last_error());
        rotary_clip_grad_norm(m.grads, m.n_params, 1.0f);
        ac.lr = rotary_lr_at(step, 30, steps, 3e-3f, 3e-4f);
        rotary_adamw_step(&opt, &m, &ac);
        if (step % 50 == 0 || step == steps - 1)
            printf("  step %4d/%d  loss %.4f  lr %.2e  %.1f s\n", step + 1, steps, loss, ac.lr,
                   seconds() - t0);
    }

    /* 3. Greedy sampling, re-running the window (the KV-cache sampler is
     * `rotary sample`). */
    char out[256] = "Rotary position";
    int len = (int)strlen(out);
    while (len < 200) {
        int start = len > T ? len - T : 0, w = len - start;
        for (int t = 0; t < w; t++) tok[t] = (unsigned char)out[start + t];
        if (rotary_model_forward(&m, tok, NULL, 1, w, NULL)) return cli_fail("demo", rotary_last_error());
        const float *z = rotary_model_logits(&m) + (size_t)(w - 1) * cfg.vocab;
        int best = 0;
        for (int i = 1; i < cfg.vocab; i++) best = z[i] > z[best] ? i : best;
        out[len++] = (char)best;
    }
    out[len] = 0;
    for (int i = 0; i < len; i++)
        if ((unsigned char)out[i] < 32 || (unsigned char)out[i] > 126) out[i] = '?';
    printf("\ngreedy sample:\n%s\n", out);
    if (save) {
        const char *meta[] = {"note", "rotary demo"};
        if (rotary_checkpoint_save(save, &m, meta, 1)) return cli_fail(save, rotary_last_error());
        printf("saved %s\n", save);
    }
    free(tok);
    free(tgt);
    rotary_adamw_free(&opt);
    rotary_model_free(&m);
    return 0;
}
