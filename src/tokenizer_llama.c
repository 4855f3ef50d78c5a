/* tokenizer_llama.c: SentencePiece-style BPE with scores and byte fallback,
 * the tokenizer of Llama 1/2 and of llama2.c: its tokenizer.bin reader, the
 * builder that GGUF's model "llama" shares (tokenizer_gpt2.c calls it), and
 * the encoder. docs/tokenizer.md, "Tokenizers of existing models", has the
 * rules; this file is written from them.
 *
 * Encoding, in short: the text gets a leading space; the characters U+2581
 * (SentencePiece's visible space) read as spaces; user-defined tokens are cut
 * out whole; the rest starts as one symbol per UTF-8 character, and the
 * adjacent pair whose concatenation is a token with the highest score
 * (leftmost on ties) is merged until no pair is a token. A symbol that is not
 * a token (a character outside the vocabulary) becomes its bytes' <0xXX>
 * tokens, or the unknown token when the vocabulary has no byte tokens. */
#define _POSIX_C_SOURCE 200809L
#include "tokenizer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LLAMA2C_MAX_FILE ((size_t)256 * 1024 * 1024)

static const unsigned char SPM_SPACE[3] = {0xE2, 0x96, 0x81}; /* U+2581 */

/* "<0xXX>" (upper- or lower-case hex): its byte, else -1. */
static int byte_piece(const unsigned char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        int c = s[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else return -1;
        v = 16 * v + d;
    }
    return v;
}

/* Copy s[0..n) to out, replacing every `from` (fn bytes) with `to` (tn
 * bytes); returns the length written. out must have room for n * 3 bytes. */
static size_t replace_all(unsigned char *out, const unsigned char *s, size_t n,
                          const unsigned char *from, size_t fn, const unsigned char *to,
                          size_t tn) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (i + fn <= n && !memcmp(s + i, from, fn)) {
            memcpy(out + o, to, tn);
            o += tn;
            i += fn;
        } else {
            out[o++] = s[i++];
        }
    }
    return o;
}

static int spm_encode(const rotary_tokenizer *t, const unsigned char *text, size_t n, int **ids,
                      size_t *n_ids);

/* ------------------------------------------------------------- building */

int tok_build_spm(rotary_tokenizer **out, const tok_spm_spec *sp, const char *what) {
    *out = NULL;
    int n = sp->n;
    rotary_tokenizer *t = tok_alloc(TOK_SPM, n, what);
    if (!t) return ROTARY_ENOMEM;
    int rc = tok_set_special(t, sp->bos, sp->eos, sp->unk, sp->add_bos, what);
    if (rc != ROTARY_OK) goto fail;
    t->add_space_prefix = sp->add_space_prefix;
    t->encode = NULL; /* set on success */

    /* The model's spelling (spaces as U+2581) and the piece (spaces as ' '). */
    size_t total_piece;
    rc = tok_total_len(sp->len, n, UINT32_MAX / 3, &total_piece, what);
    if (rc != ROTARY_OK) goto fail;
    const size_t total_text = 3 * total_piece; /* a space may become U+2581 */
    t->text_off = malloc((size_t)n * sizeof(uint32_t));
    t->text_len = malloc((size_t)n * sizeof(uint32_t));
    t->text = malloc(total_text + 1);
    t->pieces = malloc(total_piece + 1);
    t->score = malloc((size_t)n * sizeof(float));
    t->str_token = NULL;
    if (!t->text_off || !t->text_len || !t->text || !t->pieces || !t->score) goto oom;
    size_t to = 0, po = 0;
    for (int i = 0; i < n; i++) {
        const unsigned char *s = (const unsigned char *)sp->tokens[i];
        size_t len = sp->len[i];
        int type;
        if (sp->types) {
            type = sp->types[i];
            if (type < TT_NORMAL || type > TT_BYTE) {
                rc = rotary_fail(ROTARY_EFORMAT, "%s: token %d has type %d (types are 1 to 6)",
                                 what, i, type);
                goto fail;
            }
        } else if (i == sp->unk) type = TT_UNKNOWN;
        else if (i == sp->bos || i == sp->eos) type = TT_CONTROL;
        else if (byte_piece(s, len) >= 0) type = TT_BYTE;
        else type = TT_NORMAL;
        t->type[i] = (unsigned char)type;
        float score = sp->scores ? sp->scores[i] : 0.0f;
        if (isnan(score)) {
            rc = rotary_fail(ROTARY_EFORMAT, "%s: token %d has a score that is not a number",
                             what, i);
            goto fail;
        }
        t->score[i] = score;
        t->text_off[i] = (uint32_t)to;
        if (sp->spaces_escaped) {
            memcpy(t->text + to, s, len);
            to += len;
        } else {
            to += replace_all(t->text + to, s, len, (const unsigned char *)" ", 1, SPM_SPACE, 3);
        }
        t->text_len[i] = (uint32_t)(to - t->text_off[i]);
        t->piece_off[i] = (uint32_t)po;
        if (type == TT_NORMAL || type == TT_USER) {
            if (sp->spaces_escaped)
                po += replace_all(t->pieces + po, s, len, SPM_SPACE, 3, (const unsigned char *)" ",
                                  1);
            else {
                memcpy(t->pieces + po, s, len);
                po += len;
            }
        } else if (type == TT_BYTE) {
            int b = byte_piece(s, len);
            if (b < 0) {
                rc = rotary_fail(ROTARY_EFORMAT,
                                 "%s: token %d is a byte token but reads '%.*s', "
                                 "not <0xXX>",
                                 what, i, (int)(len > 16 ? 16 : len), (const char *)s);
                goto fail;
            }
            t->pieces[po++] = (unsigned char)b;
            if (t->byte_token[b] < 0) t->byte_token[b] = i;
        }
        t->piece_len[i] = (uint32_t)(po - t->piece_off[i]);
    }

    /* Lookup: the pieces of normal and user-defined tokens (first id wins). */
    int *map = malloc((size_t)n * sizeof(int));
    if (!map) goto oom;
    t->str_token = map;
    for (int i = 0; i < n; i++) {
        map[i] = -1;
        if ((t->type[i] != TT_NORMAL && t->type[i] != TT_USER) || !t->piece_len[i]) continue;
        int added, k = tok_strtab_intern(&t->str, t->pieces + t->piece_off[i], t->piece_len[i],
                                         &added);
        if (k < 0) goto oom;
        if (added) map[k] = i; /* str.n <= n, so map is large enough */
    }
    if (tok_collect_user(t)) goto oom;
    t->encode = spm_encode;
    *out = t;
    return ROTARY_OK;
oom:
    rc = rotary_fail(ROTARY_ENOMEM, "%s: out of memory", what);
fail:
    rotary_tokenizer_free(t);
    return rc;
}

/* ------------------------------------------------------------- encoding */

typedef struct {
    int start, len; /* bytes of the segment; len 0: merged into its left neighbour */
    int prev, next; /* -1 at the ends */
} spm_sym;

typedef struct {
    float score;
    int left, right, size;
} spm_pair;

typedef struct {
    const rotary_tokenizer *t;
    spm_sym *sym;
    spm_pair *heap;
    size_t n_heap, cap_heap;
    tok_ids out;
} spm_work;

/* x comes out of the heap before y: higher score, then further left. */
static int spm_before(const void *ctx, const void *x, const void *y) {
    const spm_pair *a = x, *b = y;
    (void)ctx;
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

/* Queue the pair (l, r) if their concatenation is a mergeable token. */
static void spm_try(spm_work *w, const unsigned char *s, int l, int r) {
    if (l < 0 || r < 0) return;
    const spm_sym *a = &w->sym[l], *b = &w->sym[r];
    int k = tok_strtab_find(&w->t->str, s + a->start, (size_t)(a->len + b->len));
    if (k < 0) return;
    spm_pair p = {w->t->score[w->t->str_token[k]], l, r, a->len + b->len};
    tok_heap_push(w->heap, &w->n_heap, &p, sizeof p, spm_before, NULL); /* room reserved */
}

static int spm_segment(spm_work *w, const unsigned char *s, size_t n) {
    const rotary_tokenizer *t = w->t;
    int m = 0;
    for (size_t i = 0; i < n; m++) { /* one symbol per character; an invalid byte alone */
        uint32_t cp;
        const char *why;
        int k = tok_utf8_next(s + i, n - i, &cp, &why);
        if (!k) k = 1;
        w->sym[m] = (spm_sym){(int)i, k, m - 1, -1};
        if (m) w->sym[m - 1].next = m;
        i += (size_t)k;
    }
    w->n_heap = 0;
    for (int i = 0; i + 1 < m; i++) spm_try(w, s, i, i + 1);
    while (w->n_heap) {
        spm_pair p;
        tok_heap_pop(w->heap, &w->n_heap, &p, sizeof p, spm_before, NULL);
        spm_sym *a = &w->sym[p.left], *b = &w->sym[p.right];
        if (!a->len || !b->len || a->len + b->len != p.size) continue; /* out of date */
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (b->next >= 0) w->sym[b->next].prev = p.left;
        spm_try(w, s, a->prev, p.left);
        spm_try(w, s, p.left, a->next);
    }
    for (int i = 0; i >= 0 && m; i = w->sym[i].next) {
        const spm_sym *a = &w->sym[i];
        int k = tok_strtab_find(&t->str, s + a->start, (size_t)a->len);
        if (k >= 0) {
            if (tok_ids_push(&w->out, t->str_token[k])) return ROTARY_ENOMEM;
            continue;
        }
        /* Not in the vocabulary (only single characters get here). */
        int have_bytes = 1;
        for (int j = 0; j < a->len; j++) have_bytes &= t->byte_token[s[a->start + j]] >= 0;
        if (have_bytes) {
            for (int j = 0; j < a->len; j++)
                if (tok_ids_push(&w->out, t->byte_token[s[a->start + j]])) return ROTARY_ENOMEM;
        } else if (t->unk >= 0) {
            if (tok_ids_push(&w->out, t->unk)) return ROTARY_ENOMEM;
        } else {
            return rotary_fail(ROTARY_EINVAL, "tokenizer encode: the character at byte %d is not "
                               "in the vocabulary, which has neither byte tokens nor an unknown "
                               "token", a->start);
        }
    }
    return ROTARY_OK;
}

static int spm_emit(void *ctx, int id, const unsigned char *s, size_t n) {
    spm_work *w = ctx;
    if (id >= 0) return tok_ids_push(&w->out, id);
    return spm_segment(w, s, n);
}

static int spm_encode(const rotary_tokenizer *t, const unsigned char *text, size_t n, int **ids,
                      size_t *n_ids) {
    if (n > (size_t)INT32_MAX / 4)
        return rotary_fail(ROTARY_EINVAL, "tokenizer encode: %zu bytes is too long", n);
    spm_work w = {.t = t};
    size_t cap = n + 1;
    unsigned char *buf = malloc(cap);
    w.sym = malloc(cap * sizeof *w.sym);
    w.cap_heap = 3 * cap; /* n - 1 first pairs, then at most two per merge */
    w.heap = malloc(w.cap_heap * sizeof *w.heap);
    if (!buf || !w.sym || !w.heap) {
        free(buf);
        free(w.sym);
        free(w.heap);
        return rotary_fail(ROTARY_ENOMEM, "tokenizer encode: out of memory");
    }
    /* Normalise: a leading space, and U+2581 read as a space. */
    size_t m = 0;
    if (n && t->add_space_prefix) buf[m++] = ' ';
    m += replace_all(buf + m, text, n, SPM_SPACE, 3, (const unsigned char *)" ", 1);
    int rc = tok_split_user(t, buf, m, spm_emit, &w);
    free(buf);
    free(w.sym);
    free(w.heap);
    return tok_ids_finish(&w.out, rc, ids, n_ids);
}

/* ------------------------------------------------------------- llama2.c */

static int32_t rd_i32(const unsigned char *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

int rotary_tokenizer_load_llama2c(rotary_tokenizer **out, const char *path, int vocab_size) {
    if (!out || !path) return rotary_fail(ROTARY_EINVAL, "llama2.c tokenizer: NULL argument");
    *out = NULL;
    if (vocab_size < 0 || vocab_size > TOK_MAX_VOCAB)
        return rotary_fail(ROTARY_EINVAL, "%s: vocab size %d is outside [0, %d]", path,
                           vocab_size, TOK_MAX_VOCAB);
    char *text;
    size_t size;
    int rc = rotary_read_file(path, LLAMA2C_MAX_FILE, "tokenizer file", &text, &size);
    if (rc != ROTARY_OK) return rc;
    const unsigned char *data = (const unsigned char *)text;

    int n = 0, cap = 0;
    const char **tok = NULL;
    size_t *len = NULL;
    float *score = NULL;
    if (size < 4) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: %zu bytes is too short for a llama2.c tokenizer "
                         "(it starts with an int32 max_token_length)", path, size);
        goto done;
    }
    int32_t max_len = rd_i32(data);
    if (max_len < 1 || max_len > TOK_MAX_PIECE) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: max_token_length %d is outside [1, %d]: not a "
                         "llama2.c tokenizer", path, max_len, TOK_MAX_PIECE);
        goto done;
    }
    size_t o = 4;
    while (vocab_size ? n < vocab_size : o < size) {
        if (size - o < 8) {
            if (vocab_size && o == size)
                rc = rotary_fail(ROTARY_EFORMAT, "%s: has %d tokens, but the model needs %d", path,
                                 n, vocab_size);
            else
                rc = rotary_fail(ROTARY_EFORMAT, "%s: truncated in the header of token %d (byte "
                                 "offset %zu)", path, n, o);
            goto done;
        }
        float s;
        memcpy(&s, data + o, 4);
        int32_t l = rd_i32(data + o + 4);
        o += 8;
        if (l < 0 || l > max_len) {
            rc = rotary_fail(ROTARY_EFORMAT, "%s: token %d has length %d, outside [0, "
                             "max_token_length %d]", path, n, l, max_len);
            goto done;
        }
        if ((size_t)l > size - o) {
            rc = rotary_fail(ROTARY_EFORMAT, "%s: token %d (%d bytes) runs past the end of the "
                             "file", path, n, l);
            goto done;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            if (cap > TOK_MAX_VOCAB) cap = TOK_MAX_VOCAB + 1;
            const char **t2 = realloc(tok, (size_t)cap * sizeof *tok);
            if (t2) tok = t2;
            size_t *l2 = realloc(len, (size_t)cap * sizeof *len);
            if (l2) len = l2;
            float *s2 = realloc(score, (size_t)cap * sizeof *score);
            if (s2) score = s2;
            if (!t2 || !l2 || !s2) {
                rc = rotary_fail(ROTARY_ENOMEM, "%s: out of memory", path);
                goto done;
            }
        }
        if (n >= TOK_MAX_VOCAB) {
            rc = rotary_fail(ROTARY_EFORMAT, "%s: more than %d tokens", path, TOK_MAX_VOCAB);
            goto done;
        }
        tok[n] = (const char *)data + o;
        len[n] = (size_t)l;
        score[n] = s;
        n++;
        o += (size_t)l;
    }
    if (n == 0) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: no tokens", path);
        goto done;
    }
    /* llama2.c's convention (SentencePiece's): 0 <unk>, 1 <s>, 2 </s>. Their
     * pieces in the file ("\n<s>\n") are not text; name them as SentencePiece does. */
    static const char *const special[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3 && i < n; i++) {
        tok[i] = special[i];
        len[i] = strlen(special[i]);
    }
    tok_spm_spec spec = {
        .n = n, .tokens = tok, .len = len, .scores = score, .types = NULL,
        .bos = n > 1 ? 1 : -1, .eos = n > 2 ? 2 : -1, .unk = 0, .add_bos = 1,
        .add_space_prefix = 1, .spaces_escaped = 0,
    };
    rc = tok_build_spm(out, &spec, path);
done:
    free(tok);
    free(len);
    free(score);
    free(text);
    return rc;
}
