/* cli.h: shared pieces of the `rotary` command. */
#ifndef ROTARY_CLI_H
#define ROTARY_CLI_H

#include "args.h"
#include "rotary.h"

/* Print "rotary: <what>: <why>" to stderr; returns 1 (the exit status). */
int cli_fail(const char *what, const char *why);

#include <stddef.h>

/* Read a whole regular, non-empty file (NUL-terminated copy); 0 or 1 after
 * printing the error. */
int cli_read_file(const char *path, unsigned char **buf, size_t *n);
/* "bytes" or a tokenizer file: ours (JSON), a GGUF file's, or llama2.c's
 * tokenizer.bin (which does not store its size: vocab > 0 gives it). */
int cli_load_tokenizer(const char *spec, int vocab, rotary_tokenizer **t);
/* A model and its tokenizer from a run directory or a model file (our
 * safetensors, GGUF, llama2.c .bin), told apart by their first bytes.
 * tok_spec NULL: the run's tokenizer, the GGUF's own, or bytes. */
int cli_load_model(const char *path, const char *tok_spec, rotary_model *m,
                   rotary_tokenizer **tok);
/* An option's value in DIR/config.json (a run directory), or NULL; free() it. */
char *cli_run_option(const char *dir, const char *name);
/* The file behind --data: a corpus name (english, chinese) resolves to its
 * extracted copy, anything else is a path. NULL after printing the error. */
const char *cli_data_path(const char *spec, char *buf, size_t cap);
/* The tokens of --data (a text, a token file, or a corpus name), split as
 * train and eval must agree: the last `frac` is held out (of a text, from
 * a character boundary, each part encoded on its own; of a token file, by
 * count); frac 0 puts everything in train. A token file must match the
 * tokenizer's vocabulary. Prints the error and returns 1 on failure;
 * the caller frees both arrays. */
int cli_load_split(const char *spec, const rotary_tokenizer *tok, float frac, int **train,
                   size_t *n_train, int **val, size_t *n_val);
/* Path of a corpus (english, chinese), extracted on first use. */
int cli_corpus_path(const char *name, char *path, size_t cap);

/* generate and chat: the sampling and decoding flags -t, --top-k, --top-p,
 * --seed, --threads, --ctx, --int8, --bf16, --ids, --device. The caller
 * sets the defaults. */
typedef struct {
    float temperature, top_p;
    int top_k, threads, ctx, int8, bf16, show_ids;
    long seed;
    const char *device; /* "cpu" (also when NULL) or "cuda" */
} cli_decode_args;
#define CLI_DECODE_N_SPECS 10
/* Fill s[0..CLI_DECODE_N_SPECS-1] with the flags; returns CLI_DECODE_N_SPECS. */
int cli_decode_specs(arg_spec *s, cli_decode_args *a);
/* Check the flags together (--int8 with --bf16, the device, a GPU to run
 * on); 0, or 1 after printing the error. */
int cli_decode_check(const cli_decode_args *a);

/* The decoder of generate and chat: the CPU's, or with --device cuda the
 * GPU's (gpu non-NULL, its logits landing in glogits), on the weights
 * --int8 or --bf16 ask for; n counts the tokens in its cache. */
typedef struct {
    rotary_decoder cpu;
    struct cuda_model *g;
    struct cuda_decoder *gpu;
    float *glogits;
    const char *weights; /* "int8", "bf16" or NULL (float32) */
    int n, max_T;
} cli_decoder;
/* A decoder of T positions for m (extended to T); 0, or 1 after printing
 * the error (d then holds nothing). what names the command. */
int cli_decoder_open(cli_decoder *d, rotary_model *m, int T, const cli_decode_args *a,
                     const char *what);
/* Feed a token; *logits (vocab) stay valid until the next step. */
int cli_decoder_step(cli_decoder *d, int token, const float **logits);
void cli_decoder_reset(cli_decoder *d);
/* How it decodes, for the speed line: "" or " (bf16, a CUDA graph a
 * token)" and the like, into buf; *note: why capture failed, or "". */
const char *cli_decoder_how(const cli_decoder *d, char *buf, size_t cap, const char **note);
void cli_decoder_close(cli_decoder *d); /* a zeroed one is fine */
/* generate and chat: print a token's bytes (or its id with show_ids). The
 * first piece of a SentencePiece text starts with the space the encoder
 * adds, which is not part of the text: after_bos drops it. */
void cli_emit_token(const rotary_tokenizer *tok, int id, int after_bos, int show_ids);
/* Refuse a context whose KV cache cannot fit in memory, before allocating;
 * 0, or 1 after printing the error. */
int cli_check_cache(const rotary_model *m, int T);

int cmd_demo(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_corpus(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_rope(int argc, char **argv);

/* --rope-scaling TYPE --rope-factor S --rope-original-ctx N --yarn-alpha A
 * --yarn-beta B, shared by train, eval, sample and rope decay. */
typedef struct {
    const char *type;  /* NULL: not given */
    float factor;      /* 0: not given */
    int original_ctx;  /* 0: the model's ctx */
    float yarn_alpha, yarn_beta;
} cli_rope_args;
#define CLI_ROPE_N_SPECS 5
void cli_rope_args_default(cli_rope_args *a);
/* Fill s[0..CLI_ROPE_N_SPECS-1] with the flags; returns CLI_ROPE_N_SPECS. */
int cli_rope_specs(arg_spec *s, cli_rope_args *a);
/* The scaling the flags ask for (none when --rope-scaling is absent); specs
 * are the parsed ones, so flags given without --rope-scaling are caught. ctx
 * is the default original context (0: --rope-original-ctx is required).
 * 0, or 1 after printing the error. */
int cli_rope_scaling(const cli_rope_args *a, arg_spec *specs, int n, int ctx,
                     rotary_rope_scaling *s);
/* eval and sample: when --rope-scaling is given, it replaces the checkpoint's
 * scaling (original ctx defaulting to the checkpoint's ctx) and the tables are
 * rebuilt; says so on stderr. 0, or 1 after printing the error. */
int cli_apply_rope_scaling(rotary_model *m, const cli_rope_args *a, arg_spec *specs, int n);

#endif
