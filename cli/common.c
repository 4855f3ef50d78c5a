/* common.c: helpers shared by the subcommands: files, corpora, tokenizers,
 * loading a model from a run directory. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

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

int cli_load_tokenizer(const char *spec, rotary_tokenizer **t) {
    int rc = !strcmp(spec, "bytes") ? rotary_tokenizer_bytes(t) : rotary_tokenizer_load(t, spec);
    return rc ? cli_fail("tokenizer", rotary_last_error()) : 0;
}

int cli_load_model(const char *run, const char *ckpt, const char *tok_spec, rotary_model *m,
                   rotary_tokenizer **tok) {
    char path[4096], tpath[4096];
    if (run) {
        snprintf(path, sizeof path, "%s/checkpoint.safetensors", run);
        snprintf(tpath, sizeof tpath, "%s/tokenizer.json", run);
        ckpt = path;
        if (!tok_spec) tok_spec = tpath;
    }
    if (!ckpt) return cli_fail("model", "give --run DIR or --checkpoint FILE");
    if (rotary_checkpoint_load(ckpt, m)) return cli_fail("checkpoint", rotary_last_error());
    if (cli_load_tokenizer(tok_spec ? tok_spec : "bytes", tok)) {
        rotary_model_free(m);
        return 1;
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
