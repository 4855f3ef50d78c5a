/* tokenizer.c: `rotary tokenizer train|encode`: learn a byte-level BPE
 * vocabulary from a text file, or measure how well one compresses a file. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int usage(int status) {
    fprintf(status ? stderr : stdout,
            "usage: rotary tokenizer train --vocab N [-o TOK.json] FILE\n"
            "       rotary tokenizer encode TOK.json FILE\n"
            "train: learn byte-level BPE merges from FILE (UTF-8 text) up to N ids\n"
            "       (256..65536; default output tokenizer.json)\n"
            "encode: print the token count of FILE and its bytes per token\n");
    return status;
}

/* Read a whole file; 0 on success, else 1 with the error printed. */
static int read_file(const char *path, unsigned char **data, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        char why[256];
        snprintf(why, sizeof why, "cannot open '%s': %s", path, strerror(errno));
        return cli_fail("tokenizer", why);
    }
    size_t cap = 1 << 20, len = 0;
    unsigned char *p = malloc(cap);
    while (p) {
        len += fread(p + len, 1, cap - len, f);
        if (len < cap) break;
        unsigned char *q = realloc(p, cap * 2);
        if (!q) {
            free(p);
            p = NULL;
        } else {
            p = q;
            cap *= 2;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (!p || err) {
        char why[256];
        snprintf(why, sizeof why, "cannot read '%s'%s", path, p ? "" : ": out of memory");
        free(p);
        return cli_fail("tokenizer", why);
    }
    *data = p;
    *n = len;
    return 0;
}

typedef struct {
    double t0;
    int last; /* last merge count printed */
} progress_state;

static void progress(void *ctx, int done, int total) {
    progress_state *s = ctx;
    int step = total / 20 > 0 ? total / 20 : 1; /* about every 5% */
    if (done - s->last >= step || done == total) {
        fprintf(stderr, "  merges %6d / %d  (%3.0f%%)  %.1fs\n", done, total, 100.0 * done / total,
                now() - s->t0);
        s->last = done;
    }
}

static int train(int argc, char **argv) {
    int vocab = 0;
    const char *out = "tokenizer.json", *in = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(0);
        if (!strcmp(a, "--vocab") || !strcmp(a, "-o")) {
            if (i + 1 >= argc) return cli_fail(a, "missing value");
            const char *v = argv[++i];
            if (!strcmp(a, "-o")) {
                out = v;
                continue;
            }
            char *end;
            errno = 0;
            long n = strtol(v, &end, 10);
            if (errno || *end || end == v || n < 256 || n > 65536)
                return cli_fail("--vocab", "expects an integer in [256, 65536]");
            vocab = (int)n;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "rotary: tokenizer train: unknown option '%s'\n", a);
            return usage(2);
        } else if (in) {
            return cli_fail("tokenizer train", "expects one input FILE");
        } else {
            in = a;
        }
    }
    if (!in || !vocab) return usage(2);
    unsigned char *text;
    size_t n;
    if (read_file(in, &text, &n)) return 1;
    fprintf(stderr, "training BPE on %s (%zu bytes) to %d ids\n", in, n, vocab);
    progress_state ps = {now(), 0};
    rotary_tokenizer *tok;
    if (rotary_tokenizer_train(&tok, text, n, vocab, progress, &ps)) {
        free(text);
        return cli_fail(in, rotary_last_error());
    }
    double train_s = now() - ps.t0;
    int *ids = NULL;
    size_t n_ids = 0;
    int rc = rotary_tokenizer_encode(tok, text, n, &ids, &n_ids);
    if (!rc) rc = rotary_tokenizer_save(tok, out);
    free(text);
    free(ids);
    if (rc) {
        rotary_tokenizer_free(tok);
        return cli_fail("tokenizer", rotary_last_error());
    }
    const int got = rotary_tokenizer_vocab_size(tok);
    if (got < vocab)
        fprintf(stderr, "note: stopped at %d ids, not %d: no pair of adjacent tokens occurs "
                "twice any more in %s (a larger text gives more)\n", got, vocab, in);
    printf("%s: vocab %d, %zu bytes -> %zu tokens (%.2f bytes/token), trained in %.1fs\n", out,
           got, n, n_ids, n_ids ? (double)n / n_ids : 0.0, train_s);
    rotary_tokenizer_free(tok);
    return 0;
}

static int encode(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return usage(0);
    if (argc != 3) return usage(2);
    rotary_tokenizer *tok;
    if (rotary_tokenizer_load(&tok, argv[1])) return cli_fail("tokenizer", rotary_last_error());
    unsigned char *text;
    size_t n;
    if (read_file(argv[2], &text, &n)) {
        rotary_tokenizer_free(tok);
        return 1;
    }
    double t0 = now();
    int *ids;
    size_t n_ids;
    int rc = rotary_tokenizer_encode(tok, text, n, &ids, &n_ids);
    free(text);
    if (rc) {
        rotary_tokenizer_free(tok);
        return cli_fail(argv[2], rotary_last_error());
    }
    printf("%s: %zu bytes -> %zu tokens (%.2f bytes/token, vocab %d), encoded in %.2fs\n", argv[2],
           n, n_ids, n_ids ? (double)n / n_ids : 0.0, rotary_tokenizer_vocab_size(tok), now() - t0);
    free(ids);
    rotary_tokenizer_free(tok);
    return 0;
}

int cmd_tokenizer(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
        return usage(argc < 2 ? 2 : 0);
    if (!strcmp(argv[1], "train")) return train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "encode")) return encode(argc - 1, argv + 1);
    fprintf(stderr, "rotary: tokenizer: unknown subcommand '%s'\n", argv[1]);
    return usage(2);
}
