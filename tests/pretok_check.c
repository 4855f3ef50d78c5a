/* pretok_check: a pre-tokenizer's cuts against an outside oracle.
 * tests/pretok_ref.py cuts test strings into words with Python's `regex`
 * module and the pattern from Llama 3's tokenizer.json, and writes them to
 * our stdin:
 *   S <hex of a text>
 *   W <hex of a word>      (the text's words, in order)
 * We build a GPT-2-style tokenizer with the pre-tokenizer named in argv[1]
 * whose vocabulary is the 256 bytes and every word seen, and no merges. With
 * ignore_merges (llama-bpe) a word that is a token is emitted whole, so each
 * text must encode to exactly the ids of its oracle words; a different cut
 * gives other ids. Prints every mismatch; exit 1 on any, 2 on bad input. */
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE (1 << 16)

static int unhex(const char *h, unsigned char *out) {
    size_t n = strlen(h);
    if (n % 2) return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(h + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (unsigned char)v;
    }
    return (int)(n / 2);
}

typedef struct {
    unsigned char *text;
    int n, *words, n_words; /* words: string indices */
} test_case;

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: pretok_check PRE-TOKENIZER < cases\n");
        return 2;
    }
    char *line = malloc(2 * MAX_LINE + 4);
    unsigned char *buf = malloc(MAX_LINE);
    test_case *cases = NULL;
    int n_cases = 0;
    tok_strtab words = {0};
    for (int b = 0; b < 256; b++) /* string b is byte b */
        if (tok_strtab_intern(&words, &(unsigned char){(unsigned char)b}, 1, NULL) != b) return 2;
    while (fgets(line, 2 * MAX_LINE + 4, stdin)) {
        line[strcspn(line, "\n")] = 0;
        int n = unhex(line + 2, buf);
        if (n < 0 || (line[0] != 'S' && line[0] != 'W') || (line[0] == 'W' && !n_cases)) {
            fprintf(stderr, "pretok_check: bad line '%.40s'\n", line);
            return 2;
        }
        if (line[0] == 'S') {
            cases = realloc(cases, (size_t)(n_cases + 1) * sizeof *cases);
            cases[n_cases++] = (test_case){memcpy(malloc((size_t)n + 1), buf, (size_t)n), n,
                                           NULL, 0};
        } else {
            test_case *c = &cases[n_cases - 1];
            c->words = realloc(c->words, (size_t)(c->n_words + 1) * sizeof(int));
            c->words[c->n_words++] = tok_strtab_intern(&words, buf, (size_t)n, NULL);
        }
    }
    /* The vocabulary: string i spelled in the byte alphabet is token i. */
    const int V = words.n;
    char **tok = malloc((size_t)V * sizeof *tok);
    size_t *len = malloc((size_t)V * sizeof *len);
    for (int i = 0; i < V; i++) {
        tok[i] = malloc(2 * (size_t)words.len[i] + 1);
        len[i] = tok_gpt2_spell((unsigned char *)tok[i], tok_strtab_str(&words, i), words.len[i]);
    }
    tok_gpt2_spec spec = {.n = V, .tokens = (const char *const *)tok, .len = len, .bos = -1,
                          .eos = -1, .unk = -1, .pre = argv[1]};
    rotary_tokenizer *t;
    if (tok_build_gpt2(&t, &spec, "pretok_check")) {
        fprintf(stderr, "pretok_check: %s\n", rotary_last_error());
        return 2;
    }
    int bad = 0, n_words = 0;
    for (int c = 0; c < n_cases; c++) {
        int *ids;
        size_t n_ids;
        if (rotary_tokenizer_encode(t, cases[c].text, (size_t)cases[c].n, &ids, &n_ids)) {
            fprintf(stderr, "pretok_check: case %d: %s\n", c, rotary_last_error());
            return 2;
        }
        int same = n_ids == (size_t)cases[c].n_words;
        for (size_t i = 0; same && i < n_ids; i++) same = ids[i] == cases[c].words[i];
        n_words += cases[c].n_words;
        if (!same) {
            bad++;
            printf("FAIL case %d (%d bytes): %zu words here, %d from the oracle:", c,
                   cases[c].n, n_ids, cases[c].n_words);
            for (size_t i = 0; i < n_ids; i++)
                printf(" [%.*s]", (int)words.len[ids[i]], tok_strtab_str(&words, ids[i]));
            printf("\n");
        }
        free(ids);
    }
    printf("pretok_check %s: %d of %d texts cut as the oracle cuts them (%d words)\n", argv[1],
           n_cases - bad, n_cases, n_words);
    for (int c = 0; c < n_cases; c++) free(cases[c].text), free(cases[c].words);
    for (int i = 0; i < V; i++) free(tok[i]);
    free(cases), free(tok), free(len), free(line), free(buf);
    tok_strtab_free(&words);
    rotary_tokenizer_free(t);
    return bad || !n_cases ? 1 : 0;
}
