/* common.c: helpers shared by the subcommands: files, corpora, tokenizers,
 * loading a model from a run directory. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int cli_read_file(const char *path, unsigned char **buf, size_t *n) {
    *buf = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        char why[256];
        snprintf(why, sizeof why, "cannot open: %s", strerror(errno));
        if (f) fclose(f);
        return cli_fail(path, why);
    }
    if (!S_ISREG(st.st_mode)) {
        fclose(f);
        return cli_fail(path, "not a regular file");
    }
    if (st.st_size == 0) {
        fclose(f);
        return cli_fail(path, "the file is empty");
    }
    *buf = malloc((size_t)st.st_size + 1);
    if (!*buf || fread(*buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        fclose(f);
        free(*buf);
        *buf = NULL;
        return cli_fail(path, "cannot read");
    }
    fclose(f);
    (*buf)[st.st_size] = 0;
    *n = (size_t)st.st_size;
    return 0;
}

/* What a file is, from its first bytes. */
typedef enum { FILE_OTHER, FILE_GGUF, FILE_SAFETENSORS, FILE_JSON } file_kind;

static file_kind sniff(const char *path) {
    unsigned char b[16] = {0};
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(b, 1, sizeof b, f) : 0;
    if (f) fclose(f);
    if (n >= 4 && !memcmp(b, "GGUF", 4)) return FILE_GGUF;
    /* safetensors: u64 header length, then the JSON header */
    if (n >= 9 && b[8] == '{') return FILE_SAFETENSORS;
    for (size_t i = 0; i < n; i++)
        if (b[i] != ' ' && b[i] != '\n' && b[i] != '\t' && b[i] != '\r')
            return b[i] == '{' ? FILE_JSON : FILE_OTHER;
    return FILE_OTHER;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int cli_load_tokenizer(const char *spec, int vocab, rotary_tokenizer **t) {
    int rc;
    if (!strcmp(spec, "bytes")) {
        rc = rotary_tokenizer_bytes(t);
    } else {
        file_kind k = sniff(spec);
        if (k == FILE_GGUF) {
            rotary_gguf *g = NULL;
            rc = rotary_gguf_open(&g, spec);
            if (rc == ROTARY_OK) rc = rotary_tokenizer_from_gguf(t, g);
            rotary_gguf_close(g);
        } else if (k == FILE_JSON || vocab <= 0) {
            rc = rotary_tokenizer_load(t, spec);
        } else {
            rc = rotary_tokenizer_load_llama2c(t, spec, vocab);
        }
    }
    return rc ? cli_fail("tokenizer", rotary_last_error()) : 0;
}

int cli_load_model(const char *path, const char *tok_spec, rotary_model *m,
                   rotary_tokenizer **tok) {
    if (!path) return cli_fail("model", "give a model: a run directory or a model file");
    char ckpt[4096], tpath[4096];
    int rc = 0;
    rotary_gguf *g = NULL;
    file_kind k = FILE_OTHER;
    if (is_dir(path)) {
        snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", path);
        snprintf(tpath, sizeof tpath, "%s/tokenizer.json", path);
        if (!tok_spec) tok_spec = tpath;
        rc = rotary_checkpoint_load(ckpt, m);
    } else if ((k = sniff(path)) == FILE_GGUF) {
        rc = rotary_gguf_open(&g, path);
        if (rc == ROTARY_OK) rc = rotary_model_load_gguf(m, g);
    } else if (k == FILE_SAFETENSORS) {
        rc = rotary_checkpoint_load(path, m);
    } else {
        rc = rotary_model_load_llama2c(m, path);
        if (rc == ROTARY_OK && !tok_spec) {
            rotary_model_free(m);
            return cli_fail(path, "a llama2.c checkpoint has no tokenizer inside: give -z "
                            "tokenizer.bin");
        }
    }
    if (rc) {
        rotary_gguf_close(g);
        return cli_fail("model", rotary_last_error());
    }
    if (g && !tok_spec) { /* the GGUF's own tokenizer */
        rc = rotary_tokenizer_from_gguf(tok, g);
        rotary_gguf_close(g);
        if (rc) {
            rotary_model_free(m);
            return cli_fail("tokenizer", rotary_last_error());
        }
    } else {
        rotary_gguf_close(g);
        if (cli_load_tokenizer(tok_spec ? tok_spec : "bytes", m->cfg.vocab, tok)) {
            rotary_model_free(m);
            return 1;
        }
    }
    if (rotary_tokenizer_vocab_size(*tok) != m->cfg.vocab) {
        char why[160];
        snprintf(why, sizeof why, "the tokenizer has %d ids but the model's vocabulary is %d",
                 rotary_tokenizer_vocab_size(*tok), m->cfg.vocab);
        rotary_tokenizer_free(*tok);
        rotary_model_free(m);
        return cli_fail("tokenizer", why);
    }
    return 0;
}

/* ------------------------------------------------------- rope scaling flags */

void cli_rope_args_default(cli_rope_args *a) {
    memset(a, 0, sizeof *a);
    a->yarn_alpha = 1.0f;
    a->yarn_beta = 32.0f;
}

int cli_rope_specs(arg_spec *s, cli_rope_args *a) {
    s[0] = (arg_spec){"--rope-scaling", ARG_STR, &a->type, 0, 0,
                      "RoPE frequency scaling: none, linear, ntk, dynamic-ntk, yarn, llama3", 0};
    s[1] = (arg_spec){"--rope-factor", ARG_FLOAT, &a->factor, 0, 1e6,
                      "scaling factor s >= 1 (new context / original context; 0 = not given)", 0};
    s[2] = (arg_spec){"--rope-original-ctx", ARG_INT, &a->original_ctx, 0, 1 << 30,
                      "context the model was trained at (default: the model's ctx)", 0};
    s[3] = (arg_spec){"--yarn-alpha", ARG_FLOAT, &a->yarn_alpha, 0, 1e9,
                      "YaRN: pairs with fewer turns than this over the original context are interpolated", 0};
    s[4] = (arg_spec){"--yarn-beta", ARG_FLOAT, &a->yarn_beta, 0, 1e9,
                      "YaRN: pairs with more turns than this are kept", 0};
    return CLI_ROPE_N_SPECS;
}

int cli_rope_scaling(const cli_rope_args *a, arg_spec *specs, int n, int ctx,
                     rotary_rope_scaling *s) {
    rotary_rope_scaling_default(s);
    if (!a->type || !*a->type) { /* "" is how a run's config.json says "not given" */
        const char *deps[] = {"--rope-factor", "--rope-original-ctx", "--yarn-alpha", "--yarn-beta"};
        for (int i = 0; i < 4; i++) {
            const arg_spec *d = args_find(specs, n, deps[i]);
            if (d && d->seen) return cli_fail(deps[i], "needs --rope-scaling TYPE");
        }
        return 0;
    }
    s->type = rotary_rope_scaling_parse(a->type);
    if (s->type < 0)
        return cli_fail("--rope-scaling", "unknown type (none, linear, ntk, dynamic-ntk, yarn, llama3)");
    if (s->type == ROTARY_ROPE_SCALING_FACTORS)
        return cli_fail("--rope-scaling", "factors cannot be given here: they come with a GGUF "
                        "file, as its tensor rope_freqs.weight");
    if (s->type == ROTARY_ROPE_SCALING_NONE) return 0;
    /* Dynamic NTK takes its factor from the length; the others need one. */
    if (a->factor == 0 && s->type != ROTARY_ROPE_SCALING_DYNAMIC_NTK)
        return cli_fail("--rope-scaling", "needs --rope-factor S");
    s->factor = a->factor ? a->factor : 1.0;
    s->original_ctx = a->original_ctx ? a->original_ctx : ctx;
    if (s->original_ctx <= 0) return cli_fail("--rope-scaling", "needs --rope-original-ctx N");
    s->yarn_alpha = a->yarn_alpha;
    s->yarn_beta = a->yarn_beta;
    if (rotary_rope_scaling_validate(s)) return cli_fail("--rope-scaling", rotary_last_error());
    return 0;
}

int cli_apply_rope_scaling(rotary_model *m, const cli_rope_args *a, arg_spec *specs, int n) {
    rotary_rope_scaling s;
    if (cli_rope_scaling(a, specs, n, m->cfg.ctx, &s)) return 1;
    if (!a->type || !*a->type) return 0;
    const char *was = rotary_rope_scaling_name(m->cfg.rope_scaling.type);
    if (rotary_model_set_rope_scaling(m, &s)) return cli_fail("--rope-scaling", rotary_last_error());
    if (s.type == ROTARY_ROPE_SCALING_NONE)
        fprintf(stderr, "rotary: rope scaling none (the checkpoint has %s)\n", was ? was : "?");
    else if (s.type == ROTARY_ROPE_SCALING_DYNAMIC_NTK)
        fprintf(stderr, "rotary: rope scaling dynamic-ntk, factor max(1, length / %d) (the "
                "checkpoint has %s)\n", s.original_ctx, was ? was : "?");
    else
        fprintf(stderr, "rotary: rope scaling %s, factor %g, original ctx %d, attention factor "
                "%g (the checkpoint has %s)\n", rotary_rope_scaling_name(s.type), s.factor,
                s.original_ctx, rotary_rope_scaling_mscale(&s), was ? was : "?");
    return 0;
}

char *cli_run_option(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *root = cJSON_Parse(buf);
    const cJSON *o = root ? cJSON_GetObjectItemCaseSensitive(root, "options") : NULL;
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, name) : NULL;
    char *out = cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
    cJSON_Delete(root);
    return out;
}

const char *cli_data_path(const char *spec, char *buf, size_t cap) {
    if (strcmp(spec, "english") != 0 && strcmp(spec, "chinese") != 0) return spec;
    return cli_corpus_path(spec, buf, cap) ? NULL : buf;
}

/* Where the held-out end of a text starts: the last `frac` of its bytes,
 * moved forward to a character boundary. */
static size_t val_split(const unsigned char *text, size_t n, float frac) {
    size_t at = (size_t)((double)n * (1.0 - frac));
    while (at < n && (text[at] & 0xC0) == 0x80) at++;
    return at;
}

int cli_load_split(const char *spec, const rotary_tokenizer *tok, float frac, int **train,
                   size_t *n_train, int **val, size_t *n_val) {
    char path[4096];
    const char *file = cli_data_path(spec, path, sizeof path);
    if (!file) return 1;
    *train = *val = NULL;
    int is_tok = rotary_tokens_is_file(file);
    if (is_tok < 0) return cli_fail("--data", rotary_last_error());
    if (is_tok) {
        int *ids, vocab;
        size_t n;
        if (rotary_tokens_load(file, &ids, &n, &vocab)) return cli_fail("--data", rotary_last_error());
        if (vocab != rotary_tokenizer_vocab_size(tok)) {
            free(ids);
            return cli_fail(file, "its vocabulary size differs from the tokenizer's");
        }
        size_t at = (size_t)((double)n * (1.0 - frac));
        *val = malloc((n - at + 1) * sizeof(int));
        if (!*val) {
            free(ids);
            return cli_fail("--data", "out of memory");
        }
        memcpy(*val, ids + at, (n - at) * sizeof(int));
        *train = ids, *n_train = at, *n_val = n - at;
        return 0;
    }
    unsigned char *text;
    size_t n;
    if (cli_read_file(file, &text, &n)) return 1;
    size_t at = val_split(text, n, frac);
    int rc = rotary_tokenizer_encode(tok, text, at, train, n_train) ||
             rotary_tokenizer_encode(tok, text + at, n - at, val, n_val);
    free(text);
    if (rc) {
        free(*train);
        *train = NULL;
        return cli_fail("--data", rotary_last_error());
    }
    return 0;
}
