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
    return CLI_DECODE_N_SPECS;
}

const char *cli_decode_weights(const cli_decode_args *a) {
    if (a->int8 && a->bf16) {
        cli_fail("--bf16", "give --int8 or --bf16, not both");
        return "";
    }
    return a->int8 ? "int8" : a->bf16 ? "bf16" : NULL;
}

int cli_decoder_weights(rotary_decoder *d, const cli_decode_args *a) {
    return a->int8 ? rotary_decoder_quantize(d) : a->bf16 ? rotary_decoder_bf16(d) : ROTARY_OK;
}

/* The same on the GPU. */
static int gpu_decoder_weights(cuda_decoder *d, const cli_decode_args *a) {
    return a->int8 ? cuda_decoder_quantize(d) : a->bf16 ? cuda_decoder_bf16(d) : ROTARY_OK;
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

/* The decoder of either device: the CPU's, or with --device cuda the GPU's
 * (gpu non-NULL), whose logits land in glogits. */
typedef struct {
    rotary_decoder cpu;
    cuda_decoder *gpu;
    float *glogits;
} decoder;

static int step(decoder *d, int token, const float **logits) {
    if (!d->gpu) return rotary_decoder_step(&d->cpu, token, logits);
    *logits = d->glogits;
    return cuda_decoder_step(d->gpu, token, d->glogits);
}

static int full(const decoder *d) {
    return d->gpu ? cuda_decoder_full(d->gpu) : d->cpu.n == d->cpu.max_T;
}

static void reset(decoder *d) {
    if (d->gpu) cuda_decoder_reset(d->gpu);
    else rotary_decoder_reset(&d->cpu);
}

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *ckpt = NULL, *tok_spec = NULL, *prompt = "", *device = "cpu";
    int n_new = 256, no_stop = 0;
    cli_decode_args da = {.temperature = 0.8f, .top_p = 0.95f, .seed = 1};
    cli_rope_args ra;
    cli_rope_args_default(&ra);
    /* The first argument, if it is not an option, is the model. */
    if (argc > 1 && argv[1][0] != '-') model = argv[1], argv[1] = argv[0], argv++, argc--;
    enum { N_SPECS = 10 };
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
        {"--device", ARG_STR, &device, 0, 0, "cpu, or cuda (an NVIDIA GPU)", 0},
    };
    int n_specs = N_SPECS + cli_decode_specs(specs + N_SPECS, &da);
    n_specs += cli_rope_specs(specs + n_specs, &ra);
    int rc = args_parse(specs, n_specs, argc, argv,
                        "rotary generate MODEL [-z TOKENIZER] [-p PROMPT] [-n N] [-t TEMP] [options]\n"
                        "MODEL: a run directory, a .safetensors checkpoint, a llama2.c .bin or a GGUF file");
    if (rc) return rc < 0 ? 0 : rc;
    if (da.threads) omp_set_num_threads(da.threads);
    if (ckpt && model) return cli_fail("generate", "give the model once");
    const char *weights = cli_decode_weights(&da);
    if (weights && !*weights) return 1;
    const int on_gpu = strcmp(device, "cuda") == 0;
    if (!on_gpu && strcmp(device, "cpu")) return cli_fail("--device", "cpu or cuda");
    if (on_gpu && cuda_device_check()) return cli_fail("generate", rotary_last_error());
    rotary_model m;
    rotary_tokenizer *tok;
    if (cli_load_model(model ? model : ckpt, tok_spec, &m, &tok)) return 1;
    /* From here every way out goes through `done`, which frees what was made. */
    int *ids = NULL, *all = NULL;
    decoder dec = {0};
    rotary_sampler smp = {0};
    cuda_model *g = NULL;
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
    if (on_gpu) {
        if (rotary_model_extend(&m, T) || cuda_model_new(&g, &m) ||
            cuda_decoder_new(&dec.gpu, g, T) || gpu_decoder_weights(dec.gpu, &da)) {
            rc = cli_fail("generate", rotary_last_error());
            goto done;
        }
        if (!(dec.glogits = malloc((size_t)m.cfg.vocab * sizeof(float)))) {
            rc = cli_fail("generate", "out of memory");
            goto done;
        }
    } else {
        if (cli_check_cache(&m, T)) {
            rc = 1;
            goto done;
        }
        if (rotary_decoder_init(&dec.cpu, &m, T) || cli_decoder_weights(&dec.cpu, &da)) {
            rc = cli_fail("generate", rotary_last_error());
            goto done;
        }
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
        if (step(&dec, all[i], &logits)) {
            rc = cli_fail("generate", rotary_last_error());
            goto done;
        }
    double t1 = now_s();
    size_t n = n_prompt;
    int made = 0;
    for (; made < n_new; made++) {
        if (full(&dec)) { /* keep the last half of the window */
            reset(&dec);
            for (size_t j = n - (size_t)T / 2; j < n; j++)
                if (step(&dec, all[j], &logits)) {
                    rc = cli_fail("generate", rotary_last_error());
                    goto done;
                }
        }
        all[n] = rotary_sample(&smp, logits);
        if (!no_stop && bos >= 0 && all[n] == bos) break; /* llama2.c: between texts */
        if (all[n] == eos) break;                             /* end of text */
        cli_emit_token(tok, all[n], n == 1 && rotary_tokenizer_space_prefix(tok), da.show_ids);
        if (step(&dec, all[n++], &logits)) {
            rc = cli_fail("generate", rotary_last_error());
            goto done;
        }
    }
    double t2 = now_s();
    printf("\n");
    fflush(stdout);
    const char *why = "";
    const int graphed = dec.gpu && cuda_decoder_graphed(dec.gpu, &why);
    char how[64] = "";
    if (weights || dec.gpu)
        snprintf(how, sizeof how, " (%s%s%s)", weights ? weights : "", weights && dec.gpu ? ", " : "",
                 !dec.gpu ? "" : graphed ? "a CUDA graph a token" : "kernel by kernel");
    fprintf(stderr, "rotary: prefill %zu tokens at %.1f tok/s, decode %d tokens at %.1f tok/s%s\n",
            n_prompt, n_prompt / (t1 - t0 + 1e-12), made, made / (t2 - t1 + 1e-12), how);
    if (*why) fprintf(stderr, "rotary: note: %s\n", why);
done:
    free(ids);
    free(all);
    rotary_sampler_free(&smp);
    rotary_decoder_free(&dec.cpu);
    cuda_decoder_free(dec.gpu);
    cuda_model_free(g);
    free(dec.glogits);
    rotary_tokenizer_free(tok);
    rotary_model_free(&m);
    return rc;
}
