/* generate.c: `rotary generate` (also `rotary sample`): stream text from any
 * model we read (run directory, our safetensors checkpoint, llama2.c .bin,
 * GGUF) with a KV cache, and report prefill and decode speed. */
#define _POSIX_C_SOURCE 200809L
#include "args.h"
#include "cli.h"
#include "cuda/cuda_model.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cli_decode_specs(arg_spec *s, cli_decode_args *a) {
    s[0] = (arg_spec){"-t", ARG_FLOAT, &a->temperature, 0, 100, "temperature (0 = greedy)", 0};
    s[1] = (arg_spec){"--top-k", ARG_INT, &a->top_k, 0, 1 << 24,
                      "sample among the k most likely (0 = off)", 0};
    s[2] = (arg_spec){"--top-p", ARG_FLOAT, &a->top_p, 1e-6, 1,
                      "nucleus: the smallest set with this much probability", 0};
    s[3] = (arg_spec){"--seed", ARG_LONG, &a->seed, 0, 9e15, "random seed", 0};
    s[4] = (arg_spec){"--threads", ARG_INT, &a->threads, 0, 1024, "threads (0 = all cores)", 0};
    s[5] = (arg_spec){"--ctx", ARG_INT, &a->ctx, 0, 1 << 22,
                      "KV cache positions (0 = the model's context)", 0};
    s[6] = (arg_spec){"--int8", ARG_FLAG, &a->int8, 0, 0,
                      "8-bit weights for the matrix products (Q8_0-style)", 0};
    s[7] = (arg_spec){"--bf16", ARG_FLAG, &a->bf16, 0, 0,
                      "bfloat16 weights for the matrix products (half of float32's bytes)", 0};
    s[8] = (arg_spec){"--ids", ARG_FLAG, &a->show_ids, 0, 0, "print token ids instead of text", 0};
    s[9] = (arg_spec){"--device", ARG_STR, &a->device, 0, 0, "cpu, or cuda (an NVIDIA GPU)", 0};
    return CLI_DECODE_N_SPECS;
}

static int on_gpu(const cli_decode_args *a) { return a->device && !strcmp(a->device, "cuda"); }

int cli_decode_check(const cli_decode_args *a) {
    if (a->int8 && a->bf16) return cli_fail("--bf16", "give --int8 or --bf16, not both");
    if (a->device && !on_gpu(a) && strcmp(a->device, "cpu"))
        return cli_fail("--device", "cpu or cuda");
    if (on_gpu(a) && cuda_device_check()) { /* the message names --device cuda */
        fprintf(stderr, "rotary: %s\n", rotary_last_error());
        return 1;
    }
    return 0;
}

void cli_emit_token(const rotary_tokenizer *tok, int id, int after_bos, int show_ids) {
    if (show_ids) {
        printf("%d ", id);
        fflush(stdout);
        return;
    }
    int len;
    const unsigned char *p = rotary_tokenizer_piece(tok, id, &len);
    if (after_bos && len > 0 && p[0] == ' ') p++, len--;
    fwrite(p, 1, (size_t)len, stdout);
    fflush(stdout);
}

int cli_check_cache(const rotary_model *m, int T) {
    double bytes = rotary_decoder_bytes(m, T), avail = rotary_mem_available();
    if (avail > 0 && bytes > 0.9 * avail) {
        char why[256];
        snprintf(why, sizeof why, "a KV cache for %d positions needs %.2f GiB, but only %.2f GiB "
                 "of memory is available; ask for a shorter --ctx", T, bytes / 1073741824.0,
                 avail / 1073741824.0);
        return cli_fail("--ctx", why);
    }
    return 0;
}

int cli_decoder_open(cli_decoder *d, rotary_model *m, int T, const cli_decode_args *a,
                     const char *what) {
    memset(d, 0, sizeof *d);
    d->max_T = T;
    d->weights = a->int8 ? "int8" : a->bf16 ? "bf16" : NULL;
    int rc;
    if (on_gpu(a)) {
        rc = rotary_model_extend(m, T) || cuda_model_new(&d->g, m) ||
             cuda_decoder_new(&d->gpu, d->g, T) ||
             (a->int8 ? cuda_decoder_quantize(d->gpu) : a->bf16 ? cuda_decoder_bf16(d->gpu) : 0);
        if (!rc && !(d->glogits = malloc((size_t)m->cfg.vocab * sizeof(float)))) {
            cli_decoder_close(d);
            return cli_fail(what, "out of memory");
        }
    } else {
        if (cli_check_cache(m, T)) return 1;
        rc = rotary_decoder_init(&d->cpu, m, T) ||
             (a->int8   ? rotary_decoder_quantize(&d->cpu)
              : a->bf16 ? rotary_decoder_bf16(&d->cpu)
                        : 0);
    }
    if (rc) {
        cli_fail(what, rotary_last_error());
        cli_decoder_close(d);
        return 1;
    }
    return 0;
}

int cli_decoder_step(cli_decoder *d, int token, const float **logits) {
    int rc;
    if (d->gpu) {
        *logits = d->glogits;
        rc = cuda_decoder_step(d->gpu, token, d->glogits);
    } else {
        rc = rotary_decoder_step(&d->cpu, token, logits);
    }
    d->n += !rc;
    return rc;
}

void cli_decoder_reset(cli_decoder *d) {
    if (d->gpu) cuda_decoder_reset(d->gpu);
    else rotary_decoder_reset(&d->cpu);
    d->n = 0;
}

const char *cli_decoder_how(const cli_decoder *d, char *buf, size_t cap, const char **note) {
    const int graphed = d->gpu && cuda_decoder_graphed(d->gpu, note);
    if (!d->gpu) *note = "";
    buf[0] = 0;
    if (d->weights || d->gpu)
        snprintf(buf, cap, " (%s%s%s)", d->weights ? d->weights : "",
                 d->weights && d->gpu ? ", " : "",
                 !d->gpu ? "" : graphed ? "a CUDA graph a token" : "kernel by kernel");
    return buf;
}

void cli_decoder_close(cli_decoder *d) {
    rotary_decoder_free(&d->cpu);
    cuda_decoder_free(d->gpu);
    cuda_model_free(d->g);
    free(d->glogits);
    memset(d, 0, sizeof *d);
}

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *ckpt = NULL, *tok_spec = NULL, *prompt = "";
    int n_new = 256, no_stop = 0;
    cli_decode_args da = {.temperature = 0.8f, .top_p = 0.95f, .seed = 1};
    cli_rope_args ra;
    cli_rope_args_default(&ra);
    /* The first argument, if it is not an option, is the model. */
    if (argc > 1 && argv[1][0] != '-') model = argv[1], argv[1] = argv[0], argv++, argc--;
    enum { N_SPECS = 9 };
    arg_spec specs[N_SPECS + CLI_DECODE_N_SPECS + CLI_ROPE_N_SPECS] = {
        {"--run", ARG_STR, &model, 0, 0, "run directory (same as MODEL)", 0},
        {"--checkpoint", ARG_STR, &ckpt, 0, 0, "model file (same as MODEL)", 0},
        {"-z", ARG_STR, &tok_spec, 0, 0, "tokenizer: bytes, ours (.json), llama2.c tokenizer.bin "
         "or a GGUF file (default: the run's or the GGUF's own)", 0},
        {"--tokenizer", ARG_STR, &tok_spec, 0, 0, "same as -z", 0},
        {"-p", ARG_STR, &prompt, 0, 0, "prompt text", 0},
        {"--prompt", ARG_STR, &prompt, 0, 0, "same as -p", 0},
        {"-n", ARG_INT, &n_new, 0, 1 << 24, "tokens to generate", 0},
        {"--temperature", ARG_FLOAT, &da.temperature, 0, 100, "same as -t", 0},
        {"--no-stop", ARG_FLAG, &no_stop, 0, 0, "do not stop at the end-of-text token (or BOS)", 0},
    };
    int n_specs = N_SPECS + cli_decode_specs(specs + N_SPECS, &da);
    n_specs += cli_rope_specs(specs + n_specs, &ra);
    int rc = args_parse(specs, n_specs, argc, argv,
                        "rotary generate MODEL [-z TOKENIZER] [-p PROMPT] [-n N] [-t TEMP] [options]\n"
                        "MODEL: a run directory, a .safetensors checkpoint, a llama2.c .bin or a GGUF file");
    if (rc) return rc < 0 ? 0 : rc;
    if (da.threads) omp_set_num_threads(da.threads);
    if (ckpt && model) return cli_fail("generate", "give the model once");
    if (cli_decode_check(&da)) return 1;
    rotary_model m;
    rotary_tokenizer *tok;
    if (cli_load_model(model ? model : ckpt, tok_spec, &m, &tok)) return 1;
    /* From here every way out goes through `done`, which frees what was made. */
    int *ids = NULL, *all = NULL;
    cli_decoder dec = {0};
    rotary_sampler smp = {0};
    if (cli_apply_rope_scaling(&m, &ra, specs, n_specs)) {
        rc = 1;
        goto done;
    }

    const int bos = rotary_tokenizer_add_bos(tok) ? rotary_tokenizer_bos(tok) : -1;
    const int eos = no_stop ? -1 : rotary_tokenizer_eos(tok);
    size_t n_text = 0;
    if (*prompt && rotary_tokenizer_encode(tok, (const unsigned char *)prompt, strlen(prompt),
                                           &ids, &n_text)) {
        rc = cli_fail("prompt", rotary_last_error());
        goto done;
    }
    /* Our byte-level models need at least one token to start from. */
    const char *start = bos < 0 && n_text == 0 ? "\n" : NULL;
    if (start && rotary_tokenizer_encode(tok, (const unsigned char *)start, 1, &ids, &n_text)) {
        rc = cli_fail("prompt", rotary_last_error());
        goto done;
    }
    size_t n_prompt = n_text + (bos >= 0);
    const int T = da.ctx ? da.ctx : m.cfg.ctx;
    if (n_prompt > (size_t)T) {
        char why[160];
        snprintf(why, sizeof why, "%zu tokens, but the context is %d (--ctx)", n_prompt, T);
        rc = cli_fail("prompt", why);
        goto done;
    }
    all = malloc((n_prompt + (size_t)n_new + 1) * sizeof(int));
    if (!all) {
        rc = cli_fail("generate", "out of memory");
        goto done;
    }
    if (bos >= 0) all[0] = bos;
    if (n_text) memcpy(all + (bos >= 0), ids, n_text * sizeof(int));
    if (cli_decoder_open(&dec, &m, T, &da, "generate")) {
        rc = 1;
        goto done;
    }
    if (rotary_sampler_init(&smp, m.cfg.vocab, da.temperature, da.top_k, da.top_p,
                            (uint64_t)da.seed)) {
        rc = cli_fail("generate", rotary_last_error());
        goto done;
    }

    if (da.show_ids)
        for (size_t i = 0; i < n_prompt; i++) cli_emit_token(tok, all[i], 0, 1);
    else if (!start) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    const float *logits = NULL;
    double t0 = now_s();
    for (size_t i = 0; i < n_prompt; i++)
        if (cli_decoder_step(&dec, all[i], &logits)) {
            rc = cli_fail("generate", rotary_last_error());
            goto done;
        }
    double t1 = now_s();
    size_t n = n_prompt;
    int made = 0;
    for (; made < n_new; made++) {
        if (dec.n == dec.max_T) { /* keep the last half of the window */
            cli_decoder_reset(&dec);
            for (size_t j = n - (size_t)T / 2; j < n; j++)
                if (cli_decoder_step(&dec, all[j], &logits)) {
                    rc = cli_fail("generate", rotary_last_error());
                    goto done;
                }
        }
        all[n] = rotary_sample(&smp, logits);
        if (!no_stop && bos >= 0 && all[n] == bos) break; /* llama2.c: between texts */
        if (all[n] == eos) break;                             /* end of text */
        cli_emit_token(tok, all[n], n == 1 && rotary_tokenizer_space_prefix(tok), da.show_ids);
        if (cli_decoder_step(&dec, all[n++], &logits)) {
            rc = cli_fail("generate", rotary_last_error());
            goto done;
        }
    }
    double t2 = now_s();
    printf("\n");
    fflush(stdout);
    char how[64];
    const char *why;
    cli_decoder_how(&dec, how, sizeof how, &why);
    fprintf(stderr, "rotary: prefill %zu tokens at %.1f tok/s, decode %d tokens at %.1f tok/s%s\n",
            n_prompt, n_prompt / (t1 - t0 + 1e-12), made, made / (t2 - t1 + 1e-12), how);
    if (*why) fprintf(stderr, "rotary: note: %s\n", why);
done:
    free(ids);
    free(all);
    rotary_sampler_free(&smp);
    cli_decoder_close(&dec);
    rotary_tokenizer_free(tok);
    rotary_model_free(&m);
    return rc;
}
