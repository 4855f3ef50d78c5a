/* sample.c: `rotary sample`: stream text from a model with a KV cache. */
#define _POSIX_C_SOURCE 200809L
#include "args.h"
#include "cli.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void emit(const rotary_tokenizer *tok, int id) {
    int len;
    const unsigned char *p = rotary_tokenizer_piece(tok, id, &len);
    fwrite(p, 1, (size_t)len, stdout);
    fflush(stdout);
}

int cmd_sample(int argc, char **argv) {
    const char *run = NULL, *ckpt = NULL, *tok_spec = NULL, *prompt = "\n";
    int n_new = 200, top_k = 0, threads = 0;
    long seed = 1;
    float temperature = 0.8f, top_p = 0.95f;
    int ctx = 0;
    cli_rope_args ra;
    cli_rope_args_default(&ra);
    arg_spec specs[11 + CLI_ROPE_N_SPECS] = {
        {"--run", ARG_STR, &run, 0, 0, "run directory", 0},
        {"--checkpoint", ARG_STR, &ckpt, 0, 0, "checkpoint file", 0},
        {"--tokenizer", ARG_STR, &tok_spec, 0, 0, "bytes or a tokenizer file (default: the run's)", 0},
        {"--prompt", ARG_STR, &prompt, 0, 0, "text to continue", 0},
        {"-n", ARG_INT, &n_new, 0, 1 << 24, "tokens to generate", 0},
        {"--temperature", ARG_FLOAT, &temperature, 0, 100, "0 = greedy", 0},
        {"--top-k", ARG_INT, &top_k, 0, 1 << 24, "sample among the k most likely (0 = off)", 0},
        {"--top-p", ARG_FLOAT, &top_p, 1e-6, 1, "nucleus: the smallest set with this much probability", 0},
        {"--seed", ARG_LONG, &seed, 0, 9e15, "random seed", 0},
        {"--threads", ARG_INT, &threads, 0, 1024, "threads (0 = all cores)", 0},
        {"--ctx", ARG_INT, &ctx, 0, 1 << 20, "tokens the model sees at once (0 = the model's ctx)", 0},
    };
    int n_specs = 11 + cli_rope_specs(specs + 11, &ra);
    int rc = args_parse(specs, n_specs, argc, argv,
                        "rotary sample (--run DIR | --checkpoint FILE) [--prompt TEXT] [-n N] [options]");
    if (rc) return rc < 0 ? 0 : rc;
    if (threads) omp_set_num_threads(threads);
    rotary_model m;
    rotary_tokenizer *tok;
    if (cli_load_model(run, ckpt, tok_spec, &m, &tok)) return 1;
    if (cli_apply_rope_scaling(&m, &ra, specs, n_specs)) return 1;
    int *ids;
    size_t n_prompt;
    if (!*prompt) prompt = "\n";
    if (rotary_tokenizer_encode(tok, (const unsigned char *)prompt, strlen(prompt), &ids, &n_prompt))
        return cli_fail("prompt", rotary_last_error());
    const int T = ctx ? ctx : m.cfg.ctx;
    if (n_prompt >= (size_t)T) {
        char why[128];
        snprintf(why, sizeof why, "%zu tokens, but the model's context is %d", n_prompt, T);
        return cli_fail("--prompt", why);
    }
    int *all = realloc(ids, (n_prompt + (size_t)n_new) * sizeof(int));
    if (!all) return cli_fail("sample", "out of memory");
    rotary_decoder dec;
    rotary_sampler smp;
    if (rotary_decoder_init(&dec, &m, T) ||
        rotary_sampler_init(&smp, m.cfg.vocab, temperature, top_k, top_p, (uint64_t)seed))
        return cli_fail("sample", rotary_last_error());
    const float *logits = NULL;
    double t0 = now_s();
    for (size_t i = 0; i < n_prompt; i++) {
        if (rotary_decoder_step(&dec, all[i], &logits)) return cli_fail("sample", rotary_last_error());
        emit(tok, all[i]);
    }
    double t1 = now_s();
    size_t n = n_prompt;
    for (int k = 0; k < n_new; k++) {
        if (dec.n == dec.max_T) { /* full: keep the last half of the window */
            rotary_decoder_reset(&dec);
            for (size_t j = n - (size_t)T / 2; j < n; j++)
                if (rotary_decoder_step(&dec, all[j], &logits)) return cli_fail("sample", rotary_last_error());
        }
        all[n] = rotary_sample(&smp, logits);
        emit(tok, all[n]);
        if (rotary_decoder_step(&dec, all[n++], &logits)) return cli_fail("sample", rotary_last_error());
    }
    double t2 = now_s();
    printf("\n");
    fprintf(stderr, "rotary: %zu prompt tokens (%.0f tok/s), %d generated (%.0f tok/s)\n", n_prompt,
            n_prompt / (t1 - t0 + 1e-9), n_new, n_new / (t2 - t1 + 1e-9));
    free(all);
    rotary_sampler_free(&smp);
    rotary_decoder_free(&dec);
    rotary_tokenizer_free(tok);
    rotary_model_free(&m);
    return 0;
}
