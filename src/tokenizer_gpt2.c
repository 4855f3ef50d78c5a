/* tokenizer_gpt2.c: GPT-2's byte-level BPE, and the GGUF side of every
 * tokenizer: rotary_tokenizer_from_gguf (models "llama", "gpt2", and our own
 * tokenizers written as "gpt2" with pre-tokenizer "rotary-v1") and
 * rotary_tokenizer_to_gguf. docs/tokenizer.md has the rules.
 *
 * GPT-2 spells every byte as a printable character (its byte-to-unicode
 * alphabet) so that tokens and merges are text. Encoding cuts the text with
 * the pre-tokenizer's pattern (PCRE2, Unicode properties), then runs BPE on
 * the bytes of each word: the adjacent pair with the lowest merge rank
 * (leftmost on ties) is merged until no pair has a rank. Pieces are the
 * bytes, not the spelling. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer_internal.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------- the byte alphabet */

/* Bytes that are printable stand for themselves; the other 68 (controls,
 * space, DEL, NBSP, soft hyphen...) take U+0100 onwards, in byte order. */
static int printable(int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

static uint32_t byte_cp(int b) {
    if (printable(b)) return (uint32_t)b;
    int k = 0;
    for (int i = 0; i < b; i++) k += !printable(i);
    return 256 + (uint32_t)k;
}

/* The byte a code point of the alphabet stands for, or -1. */
static int cp_byte(uint32_t cp) {
    if (cp < 256) return printable((int)cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    int k = (int)cp - 256;
    for (int b = 0; b < 256; b++)
        if (!printable(b) && k-- == 0) return b;
    return -1;
}

/* Spell n bytes in the alphabet into out (room for 2 n bytes); returns the length. */
size_t tok_gpt2_spell(unsigned char *out, const unsigned char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = byte_cp(s[i]);
        if (cp < 0x80) out[o++] = (unsigned char)cp;
        else {
            out[o++] = (unsigned char)(0xC0 | (cp >> 6));
            out[o++] = (unsigned char)(0x80 | (cp & 0x3F));
        }
    }
    return o;
}

/* The bytes that spelling s[0..n) stands for, into out (room for n bytes);
 * returns the length, or -1 with *bad set to the offending code point
 * (0xFFFFFFFF: not UTF-8). */
static long unspell(unsigned char *out, const unsigned char *s, size_t n, uint32_t *bad) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        const char *why;
        int k = tok_utf8_next(s + i, n - i, &cp, &why);
        if (!k) {
            *bad = 0xFFFFFFFFu;
            return -1;
        }
        int b = cp_byte(cp);
        if (b < 0) {
            *bad = cp;
            return -1;
        }
        out[o++] = (unsigned char)b;
        i += (size_t)k;
    }
    return (long)o;
}

static int fail_spelling(const char *what, const char *item, uint64_t i, const unsigned char *s,
                         size_t n, uint32_t bad) {
    int show = n > 40 ? 40 : (int)n;
    if (bad == 0xFFFFFFFFu)
        return rotary_fail(ROTARY_EFORMAT, "%s: %s %llu ('%.*s') is not valid UTF-8", what, item,
                           (unsigned long long)i, show, (const char *)s);
    return rotary_fail(ROTARY_EFORMAT, "%s: %s %llu ('%.*s') has U+%04X, which is not in GPT-2's "
                       "byte alphabet", what, item, (unsigned long long)i, show, (const char *)s,
                       (unsigned)bad);
}

/* ----------------------------------------------------- pre-tokenizers */

/* GPT-2's pattern: contractions, an optional space and a run of letters, of
 * numbers or of other non-space characters, then white space (a last space
 * before a non-space is left to lead the next word). */
static const char *const GPT2_PATTERN =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Llama 3's pattern (its tokenizer.json): contractions in any case, a run of
 * letters with at most one leading non-letter, non-digit that is not a line
 * break, numbers cut into groups of at most three digits, punctuation runs
 * with their line breaks, and white space as GPT-2's plus line breaks alone. */
static const char *const LLAMA3_PATTERN =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* ignore_merges: a word that is a token as a whole is that token, without
 * BPE (Llama 3's tokenizer; its merges do not always rebuild such words). */
static const struct {
    const char *name, *pattern;
    int ignore_merges;
} PRETOKENIZERS[] = {
    {"gpt-2", GPT2_PATTERN, 0},     {"gpt2", GPT2_PATTERN, 0},
    {"llama-bpe", LLAMA3_PATTERN, 1}, {"llama3", LLAMA3_PATTERN, 1},
    {"llama-v3", LLAMA3_PATTERN, 1},
};

static void gpt2_free_ext(rotary_tokenizer *t) {
    if (t->re) pcre2_code_free((pcre2_code *)t->re);
    t->re = NULL;
}

/* ------------------------------------------------------------- encoding */

typedef struct {
    int sid, len;   /* string index (every symbol is interned); len 0: merged away */
    int prev, next;
} bpe_sym;

typedef struct {
    int rank, left, right, sid_l, sid_r;
} bpe_pair;

typedef struct {
    const rotary_tokenizer *t;
    bpe_sym *sym;
    bpe_pair *heap;
    size_t n_heap;
    pcre2_match_data *md;
    tok_ids out;
} bpe_work;

/* x leaves the heap before y: lower rank, then further left. */
static int bpe_before(const void *ctx, const void *x, const void *y) {
    const bpe_pair *a = x, *b = y;
    (void)ctx;
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

/* Queue the pair (l, r) if it is a merge. */
static void bpe_try(bpe_work *w, int l, int r) {
    if (l < 0 || r < 0) return;
    int rank = tok_pair_map_get(&w->t->rank, w->sym[l].sid, w->sym[r].sid);
    if (rank < 0) return;
    bpe_pair p = {rank, l, r, w->sym[l].sid, w->sym[r].sid};
    /* capacity: 3 per byte, reserved by the caller */
    tok_heap_push(w->heap, &w->n_heap, &p, sizeof p, bpe_before, NULL);
}

/* BPE over the bytes of one word. */
static int bpe_word(bpe_work *w, const unsigned char *s, size_t n) {
    const rotary_tokenizer *t = w->t;
    if (t->ignore_merges) {
        int k = tok_strtab_find(&t->str, s, n);
        if (k >= 0 && t->str_token[k] >= 0) return tok_ids_push(&w->out, t->str_token[k]);
    }
    int m = (int)n;
    for (int i = 0; i < m; i++) w->sym[i] = (bpe_sym){s[i], 1, i - 1, i + 1 < m ? i + 1 : -1};
    w->n_heap = 0;
    for (int i = 0; i + 1 < m; i++) bpe_try(w, i, i + 1);
    while (w->n_heap) {
        bpe_pair p;
        tok_heap_pop(w->heap, &w->n_heap, &p, sizeof p, bpe_before, NULL);
        bpe_sym *a = &w->sym[p.left], *b = &w->sym[p.right];
        if (!a->len || !b->len || a->next != p.right || a->sid != p.sid_l || b->sid != p.sid_r)
            continue; /* out of date */
        a->sid = t->bpe[3 * p.rank + 2];
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (b->next >= 0) w->sym[b->next].prev = p.left;
        bpe_try(w, a->prev, p.left);
        bpe_try(w, p.left, a->next);
    }
    int at = 0;
    for (int i = 0; i >= 0 && m; i = w->sym[i].next) {
        const bpe_sym *a = &w->sym[i];
        int id = t->str_token[a->sid];
        if (id >= 0) {
            if (tok_ids_push(&w->out, id)) return ROTARY_ENOMEM;
        } else { /* a merge result that is not a token: its bytes one by one */
            for (int j = 0; j < a->len; j++) {
                id = t->byte_token[s[at + j]] >= 0 ? t->byte_token[s[at + j]] : t->unk;
                if (id < 0)
                    return rotary_fail(ROTARY_EINVAL, "tokenizer encode: byte 0x%02X has no token "
                                       "and the vocabulary has no unknown token", s[at + j]);
                if (tok_ids_push(&w->out, id)) return ROTARY_ENOMEM;
            }
        }
        at += a->len;
    }
    return ROTARY_OK;
}

/* Words of a stretch of valid UTF-8: the pattern's matches (and whatever it
 * leaves between them, which for GPT-2's pattern is nothing). */
static int bpe_valid(bpe_work *w, const unsigned char *s, size_t n) {
    const pcre2_code *re = w->t->re;
    size_t at = 0;
    while (at < n) {
        int rc = pcre2_match(re, s, n, at, PCRE2_NO_UTF_CHECK, w->md, NULL);
        size_t a = n, b = n;
        if (rc >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
            a = ov[0];
            b = ov[1];
        } else if (rc != PCRE2_ERROR_NOMATCH) {
            return rotary_fail(ROTARY_EINVAL, "tokenizer encode: pattern match failed (PCRE2 "
                               "error %d)", rc);
        }
        if (a > at && (rc = bpe_word(w, s + at, a - at))) return rc;
        if (b == a && a < n) { /* an empty match: take one character */
            uint32_t cp;
            const char *why;
            int k = tok_utf8_next(s + a, n - a, &cp, &why);
            b = a + (size_t)(k ? k : 1);
        }
        if (b > a && (rc = bpe_word(w, s + a, b - a))) return rc;
        at = b;
    }
    return ROTARY_OK;
}

static int bpe_emit(void *ctx, int id, const unsigned char *s, size_t n) {
    bpe_work *w = ctx;
    if (id >= 0) return tok_ids_push(&w->out, id);
    while (n) { /* valid stretches go to the pattern; each run of invalid bytes is one word */
        size_t k = tok_utf8_valid_prefix(s, n);
        int rc = k ? bpe_valid(w, s, k) : ROTARY_OK;
        if (rc) return rc;
        s += k;
        n -= k;
        size_t j = 0;
        while (j < n && tok_utf8_valid_prefix(s + j, n - j) == 0) j++;
        if (j && (rc = bpe_word(w, s, j))) return rc;
        s += j;
        n -= j;
    }
    return ROTARY_OK;
}

static int gpt2_encode(const rotary_tokenizer *t, const unsigned char *text, size_t n, int **ids,
                       size_t *n_ids) {
    if (n > (size_t)INT32_MAX / 4)
        return rotary_fail(ROTARY_EINVAL, "tokenizer encode: %zu bytes is too long", n);
    bpe_work w = {.t = t};
    w.sym = malloc((n + 1) * sizeof *w.sym);
    w.heap = malloc(3 * (n + 1) * sizeof *w.heap); /* n - 1 pairs, then two per merge */
    w.md = pcre2_match_data_create_from_pattern((const pcre2_code *)t->re, NULL);
    int rc = ROTARY_OK;
    if (!w.sym || !w.heap || !w.md)
        rc = rotary_fail(ROTARY_ENOMEM, "tokenizer encode: out of memory");
    else rc = tok_split_user(t, text, n, bpe_emit, &w);
    free(w.sym);
    free(w.heap);
    pcre2_match_data_free(w.md);
    return tok_ids_finish(&w.out, rc, ids, n_ids);
}

/* ------------------------------------------------------------- building */

int tok_build_gpt2(rotary_tokenizer **out, const tok_gpt2_spec *sp, const char *what) {
    *out = NULL;
    int n = sp->n, rc = ROTARY_OK;
    rotary_tokenizer *t = tok_alloc(TOK_GPT2, n, what);
    if (!t) return ROTARY_ENOMEM;
    unsigned char *tmp = NULL;
    rc = tok_set_special(t, sp->bos, sp->eos, sp->unk, sp->add_bos, what);
    if (rc != ROTARY_OK) goto fail;

    const char *pattern = NULL;
    for (size_t i = 0; i < sizeof PRETOKENIZERS / sizeof *PRETOKENIZERS; i++)
        if (!strcmp(sp->pre, PRETOKENIZERS[i].name)) {
            pattern = PRETOKENIZERS[i].pattern;
            t->ignore_merges = PRETOKENIZERS[i].ignore_merges;
        }
    if (!pattern || strlen(sp->pre) >= sizeof t->pre) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: pre-tokenizer '%.40s' is not supported (this build "
                         "knows gpt-2, llama-bpe (Llama 3) and rotary-v1)", what, sp->pre);
        goto fail;
    }
    strcpy(t->pre, sp->pre);
    int err;
    PCRE2_SIZE erroff;
    t->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                          &erroff, NULL);
    t->free_ext = gpt2_free_ext;
    if (!t->re) {
        rc = rotary_fail(ROTARY_EINVAL, "%s: cannot compile the pattern of pre-tokenizer %s "
                         "(PCRE2 error %d at %zu)", what, sp->pre, err, (size_t)erroff);
        goto fail;
    }
    (void)pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* faster where JIT exists; optional */

    /* Spelling, type and piece of every token. */
    size_t total;
    rc = tok_total_len(sp->len, n, UINT32_MAX, &total, what);
    if (rc != ROTARY_OK) goto fail;
    t->text_off = malloc((size_t)n * sizeof(uint32_t));
    t->text_len = malloc((size_t)n * sizeof(uint32_t));
    t->text = malloc(total + 1);
    t->pieces = malloc(total + 1);
    if (!t->text_off || !t->text_len || !t->text || !t->pieces) goto oom;
    size_t to = 0, po = 0;
    for (int i = 0; i < n; i++) {
        const unsigned char *s = (const unsigned char *)sp->tokens[i];
        size_t len = sp->len[i];
        int type = sp->types ? sp->types[i] : TT_NORMAL;
        if (type < TT_NORMAL || type > TT_BYTE) {
            rc = rotary_fail(ROTARY_EFORMAT, "%s: token %d has type %d (types are 1 to 6)", what,
                             i, type);
            goto fail;
        }
        t->type[i] = (unsigned char)type;
        t->text_off[i] = (uint32_t)to;
        t->text_len[i] = (uint32_t)len;
        memcpy(t->text + to, s, len);
        to += len;
        t->piece_off[i] = (uint32_t)po;
        if (type == TT_NORMAL || type == TT_BYTE) {
            uint32_t bad;
            long k = unspell(t->pieces + po, s, len, &bad);
            if (k < 0) {
                rc = fail_spelling(what, "token", (uint64_t)i, s, len, bad);
                goto fail;
            }
            po += (size_t)k;
        } else if (type == TT_USER) { /* written as itself, not in the alphabet */
            memcpy(t->pieces + po, s, len);
            po += len;
        }
        t->piece_len[i] = (uint32_t)(po - t->piece_off[i]);
    }

    /* Strings: the 256 bytes first (string b is byte b), then the pieces of
     * normal tokens, then the parts and results of merges. */
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        if (tok_strtab_intern(&t->str, &c, 1, NULL) != b) goto oom;
    }
    for (int i = 0; i < n; i++)
        if ((t->type[i] == TT_NORMAL || t->type[i] == TT_BYTE) && t->piece_len[i] &&
            tok_strtab_intern(&t->str, t->pieces + t->piece_off[i], t->piece_len[i], NULL) < 0)
            goto oom;
    if (sp->n_merges > (uint64_t)INT32_MAX / 4) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: %llu merges is too many", what,
                         (unsigned long long)sp->n_merges);
        goto fail;
    }
    int nm = (int)sp->n_merges;
    t->bpe = malloc(3 * (size_t)nm * sizeof(int) + 1);
    tmp = malloc(2 * TOK_MAX_PIECE + 2);
    if (!t->bpe || !tmp || tok_pair_map_reserve(&t->rank, (size_t)nm)) goto oom;
    for (int r = 0; r < nm; r++) {
        const unsigned char *s = (const unsigned char *)sp->merges[r];
        size_t len = sp->merge_len[r], sep = 1;
        while (sep < len && s[sep] != ' ') sep++;
        if (len > 2 * TOK_MAX_PIECE || sep + 1 >= len) {
            rc = rotary_fail(ROTARY_EFORMAT, "%s: merge %d ('%.*s') is not two tokens separated by "
                             "a space", what, r, (int)(len > 40 ? 40 : len), (const char *)s);
            goto fail;
        }
        uint32_t bad;
        long kl = unspell(tmp, s, sep, &bad);
        long kr = kl < 0 ? -1 : unspell(tmp + kl, s + sep + 1, len - sep - 1, &bad);
        if (kr < 0) {
            rc = fail_spelling(what, "merge", (uint64_t)r, s, len, bad);
            goto fail;
        }
        int sl = tok_strtab_find(&t->str, tmp, (size_t)kl);
        int sr = tok_strtab_find(&t->str, tmp + kl, (size_t)kr);
        int so = tok_strtab_find(&t->str, tmp, (size_t)(kl + kr));
        if (sl < 0 || sr < 0 || so < 0) {
            const char *which = sl < 0 ? "its left part" : sr < 0 ? "its right part" : "the result";
            rc = rotary_fail(ROTARY_EFORMAT, "%s: merge %d ('%.*s'): %s is not a token", what, r,
                             (int)(len > 40 ? 40 : len), (const char *)s, which);
            goto fail;
        }
        t->bpe[3 * r] = sl;
        t->bpe[3 * r + 1] = sr;
        t->bpe[3 * r + 2] = so;
        tok_pair_map_put(&t->rank, sl, sr, r); /* a repeated merge keeps its first rank */
    }
    t->n_bpe = nm;
    t->str_token = malloc((size_t)t->str.n * sizeof(int));
    if (!t->str_token) goto oom;
    for (int k = 0; k < t->str.n; k++) t->str_token[k] = -1;
    for (int i = 0; i < n; i++) /* first id wins */
        if ((t->type[i] == TT_NORMAL || t->type[i] == TT_BYTE) && t->piece_len[i]) {
            int k = tok_strtab_find(&t->str, t->pieces + t->piece_off[i], t->piece_len[i]);
            if (t->str_token[k] < 0) t->str_token[k] = i;
        }
    for (int b = 0; b < 256; b++) t->byte_token[b] = t->str_token[b];
    if (tok_collect_user(t)) goto oom;
    free(tmp);
    t->encode = gpt2_encode;
    *out = t;
    return ROTARY_OK;
oom:
    rc = rotary_fail(ROTARY_ENOMEM, "%s: out of memory", what);
fail:
    free(tmp);
    rotary_tokenizer_free(t);
    return rc;
}

/* ------------------------------------------------------------ from GGUF */

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_PRE "tokenizer.ggml.pre"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_MERGES "tokenizer.ggml.merges"
#define KEY_MERGE_IDS "rotary.tokenizer.merges" /* ours: (left, right) ids of each merge */
#define PRE_ROTARY "rotary-v1"

/* A string array: pointers into the mapping. Missing: *n = 0 unless required. */
static int read_strings(const rotary_gguf *g, const char *key, int required, const char ***s,
                        size_t **len, uint64_t *n, uint64_t max) {
    *s = NULL;
    *len = NULL;
    *n = 0;
    if (rotary_gguf_find(g, key) < 0) {
        if (required) return rotary_fail(ROTARY_EFORMAT, "gguf tokenizer: no %s", key);
        return ROTARY_OK;
    }
    int et;
    int rc = rotary_gguf_get_array(g, key, &et, n);
    if (rc) return rc;
    if (et != ROTARY_GGUF_STRING)
        return rotary_fail(ROTARY_EFORMAT, "gguf tokenizer: %s is an array of type %d, not of "
                           "strings", key, et);
    if (*n > max)
        return rotary_fail(ROTARY_EFORMAT, "gguf tokenizer: %s has %llu entries (at most %llu)",
                           key, (unsigned long long)*n, (unsigned long long)max);
    *s = malloc((size_t)(*n ? *n : 1) * sizeof **s);
    *len = malloc((size_t)(*n ? *n : 1) * sizeof **len);
    if (!*s || !*len) return rotary_fail(ROTARY_ENOMEM, "gguf tokenizer: out of memory");
    for (uint64_t i = 0; i < *n; i++)
        if ((rc = rotary_gguf_array_string(g, key, i, &(*s)[i], &(*len)[i]))) return rc;
    return ROTARY_OK;
}

/* An optional numeric array of exactly n entries; *out NULL when missing. */
static int read_numbers(const rotary_gguf *g, const char *key, uint64_t n, int as_float,
                        void **out) {
    *out = NULL;
    if (rotary_gguf_find(g, key) < 0) return ROTARY_OK;
    int et;
    uint64_t m;
    int rc = rotary_gguf_get_array(g, key, &et, &m);
    if (rc) return rc;
    if (et == ROTARY_GGUF_STRING || et == ROTARY_GGUF_ARRAY || et == ROTARY_GGUF_BOOL)
        return rotary_fail(ROTARY_EFORMAT, "gguf tokenizer: %s is an array of type %d, not of "
                           "numbers", key, et);
    if (m != n)
        return rotary_fail(ROTARY_EFORMAT, "gguf tokenizer: %s has %llu entries but there are "
                           "%llu %s", key, (unsigned long long)m, (unsigned long long)n,
                           strcmp(key, KEY_MERGE_IDS) ? "tokens" : "merge ids (2 per merge)");
    void *p = malloc((size_t)(n ? n : 1) * (as_float ? sizeof(float) : sizeof(int)));
    if (!p) return rotary_fail(ROTARY_ENOMEM, "gguf tokenizer: out of memory");
    for (uint64_t i = 0; i < n; i++) {
        if (as_float) {
            double d;
            if ((rc = rotary_gguf_array_float(g, key, i, &d))) break;
            ((float *)p)[i] = (float)d;
        } else {
            int64_t v;
            if ((rc = rotary_gguf_array_int(g, key, i, &v))) break;
            if (v < INT32_MIN || v > INT32_MAX) {
                rc = rotary_fail(ROTARY_EFORMAT, "gguf tokenizer: %s[%llu] = %lld is out of range",
                                 key, (unsigned long long)i, (long long)v);
                break;
            }
            ((int *)p)[i] = (int)v;
        }
    }
    if (rc) free(p);
    else *out = p;
    return rc;
}

/* A token id key: def when missing, -1 for "none" (-1 or UINT32_MAX). */
static int read_id(const rotary_gguf *g, const char *key, int n, int def, int *out) {
    *out = def;
    if (rotary_gguf_find(g, key) < 0) return ROTARY_OK;
    int64_t v;
    int rc = rotary_gguf_get_int(g, key, &v);
    if (rc) return rc;
    if (v == -1 || v == (int64_t)UINT32_MAX) {
        *out = -1;
        return ROTARY_OK;
    }
    if (v < 0 || v >= n)
        return rotary_fail(ROTARY_EFORMAT, "gguf tokenizer: %s = %lld is outside the vocabulary "
                           "[0, %d)", key, (long long)v, n);
    *out = (int)v;
    return ROTARY_OK;
}

static int read_flag(const rotary_gguf *g, const char *key, int def, int *out) {
    *out = def;
    if (rotary_gguf_find(g, key) < 0) return ROTARY_OK;
    int64_t v;
    int rc = rotary_gguf_get_int(g, key, &v);
    if (!rc) *out = v != 0;
    return rc;
}

/* Our own tokenizer from its GGUF spelling (see rotary_tokenizer_to_gguf). */
static int from_rotary(rotary_tokenizer **out, const rotary_gguf *g, const char **tok,
                       const size_t *len, int n) {
    const char *what = "gguf tokenizer (rotary-v1)";
    const char **ms = NULL;
    size_t *ml = NULL;
    int *ids = NULL, rc;
    unsigned char buf[8];
    tok_strtab spelled = {0};
    uint64_t nm;
    if ((rc = read_strings(g, KEY_MERGES, 0, &ms, &ml, &nm, 65536))) goto done;
    if (n < 256 || (uint64_t)n != 256 + nm) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: %d tokens and %llu merges (expected 256 + merges, "
                         "at most 65536)", what, n, (unsigned long long)nm);
        goto done;
    }
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        size_t k = tok_gpt2_spell(buf, &c, 1);
        if (len[b] != k || memcmp(tok[b], buf, k)) {
            rc = rotary_fail(ROTARY_EFORMAT, "%s: token %d is not byte %d spelled in GPT-2's "
                             "alphabet", what, b, b);
            goto done;
        }
    }
    if ((rc = read_numbers(g, KEY_MERGE_IDS, 2 * nm, 0, (void **)&ids))) goto done;
    if (!ids) { /* no ids: find each part by its spelling among the earlier tokens */
        ids = malloc(2 * (size_t)nm * sizeof(int) + 1);
        int *first = malloc((size_t)n * sizeof(int));
        if (!ids || !first) {
            free(first);
            rc = rotary_fail(ROTARY_ENOMEM, "%s: out of memory", what);
            goto done;
        }
        for (int i = 0; i < n; i++) first[i] = -1;
        for (int i = 0; i < n && !rc; i++) {
            int added, k = tok_strtab_intern(&spelled, tok[i], len[i], &added);
            if (k < 0) rc = rotary_fail(ROTARY_ENOMEM, "%s: out of memory", what);
            else if (added) first[k] = i;
            else first[k] = -2; /* spelled twice: a merge naming it is ambiguous */
        }
        for (uint64_t r = 0; r < nm && !rc; r++) {
            const char *s = ms[r], *sp = memchr(s, ' ', ml[r]);
            int a = -1, b = -1;
            if (sp) {
                int ka = tok_strtab_find(&spelled, s, (size_t)(sp - s));
                int kb = tok_strtab_find(&spelled, sp + 1, ml[r] - (size_t)(sp - s) - 1);
                a = ka < 0 ? -1 : first[ka];
                b = kb < 0 ? -1 : first[kb];
            }
            if (a < 0 || b < 0)
                rc = rotary_fail(ROTARY_EFORMAT, "%s: merge %llu ('%.*s') does not name two tokens "
                                 "unambiguously", what, (unsigned long long)r,
                                 (int)(ml[r] > 40 ? 40 : ml[r]), s);
            ids[2 * r] = a;
            ids[2 * r + 1] = b;
        }
        free(first);
        if (rc) goto done;
    }
    if ((rc = tok_build_bpe(out, nm == 0, ids, (int)nm, what))) goto done;
    /* The file must say the same thing three ways: check pieces and merges. */
    unsigned char *sp = malloc(2 * 2 * TOK_MAX_PIECE + 2);
    if (!sp) {
        rc = rotary_fail(ROTARY_ENOMEM, "%s: out of memory", what);
        goto done;
    }
    for (int i = 256; i < n && !rc; i++) {
        int pl, ql;
        const unsigned char *p = rotary_tokenizer_piece(*out, i, &pl);
        size_t k = tok_gpt2_spell(sp, p, (size_t)pl);
        if (len[i] != k || memcmp(tok[i], sp, k)) {
            rc = rotary_fail(ROTARY_EFORMAT, "%s: token %d is not the concatenation of its merge",
                             what, i);
            break;
        }
        p = rotary_tokenizer_piece(*out, ids[2 * (i - 256)], &pl);
        k = tok_gpt2_spell(sp, p, (size_t)pl);
        sp[k++] = ' ';
        const unsigned char *q = rotary_tokenizer_piece(*out, ids[2 * (i - 256) + 1], &ql);
        k += tok_gpt2_spell(sp + k, q, (size_t)ql);
        if (ml[i - 256] != k || memcmp(ms[i - 256], sp, k))
            rc = rotary_fail(ROTARY_EFORMAT, "%s: merge %d does not match %s", what, i - 256,
                             KEY_MERGE_IDS);
    }
    free(sp);
    if (rc) {
        rotary_tokenizer_free(*out);
        *out = NULL;
    }
done:
    tok_strtab_free(&spelled);
    free(ms);
    free(ml);
    free(ids);
    return rc;
}

int rotary_tokenizer_from_gguf(rotary_tokenizer **out, const rotary_gguf *g) {
    if (!out || !g) return rotary_fail(ROTARY_EINVAL, "gguf tokenizer: NULL argument");
    *out = NULL;
    const char *model, *pre = "";
    size_t model_len, pre_len = 0;
    int rc = rotary_gguf_get_string(g, KEY_MODEL, &model, &model_len);
    if (rc) return rc;
    if (rotary_gguf_find(g, KEY_PRE) >= 0 &&
        (rc = rotary_gguf_get_string(g, KEY_PRE, &pre, &pre_len)))
        return rc;
    char name[64], pre_name[64];
    snprintf(name, sizeof name, "%.*s", (int)(model_len < 63 ? model_len : 63), model);
    snprintf(pre_name, sizeof pre_name, "%.*s", (int)(pre_len < 63 ? pre_len : 63), pre);
    int is_llama = model_len == 5 && !memcmp(model, "llama", 5);
    int is_gpt2 = model_len == 4 && !memcmp(model, "gpt2", 4);
    if ((!is_llama && !is_gpt2) || memchr(model, 0, model_len))
        return rotary_fail(ROTARY_EFORMAT, "gguf tokenizer: %s '%s' is not supported (this build "
                           "reads llama and gpt2)", KEY_MODEL, name);
    if (memchr(pre, 0, pre_len) || pre_len >= 32)
        return rotary_fail(ROTARY_EFORMAT, "gguf tokenizer: %s '%s' is not supported", KEY_PRE,
                           pre_name);

    const char **tok = NULL, **ms = NULL;
    size_t *len = NULL, *ml = NULL;
    float *scores = NULL;
    int *types = NULL;
    uint64_t n, nm = 0;
    if ((rc = read_strings(g, KEY_TOKENS, 1, &tok, &len, &n, TOK_MAX_VOCAB))) goto done;
    if (n == 0) {
        rc = rotary_fail(ROTARY_EFORMAT, "gguf tokenizer: %s is empty", KEY_TOKENS);
        goto done;
    }
    if (is_gpt2 && !strcmp(pre_name, PRE_ROTARY)) {
        rc = from_rotary(out, g, tok, len, (int)n);
        goto done;
    }
    if ((rc = read_numbers(g, KEY_SCORES, n, 1, (void **)&scores))) goto done;
    if ((rc = read_numbers(g, KEY_TYPES, n, 0, (void **)&types))) goto done;
    int bos, eos, unk, add_bos;
    int N = (int)n;
    if ((rc = read_id(g, "tokenizer.ggml.bos_token_id", N, is_llama && N > 1 ? 1 : -1, &bos)) ||
        (rc = read_id(g, "tokenizer.ggml.eos_token_id", N, is_llama && N > 2 ? 2 : -1, &eos)) ||
        (rc = read_id(g, "tokenizer.ggml.unknown_token_id", N, is_llama ? 0 : -1, &unk)) ||
        (rc = read_id(g, "tokenizer.ggml.padding_token_id", N, -1, &(int){0})) ||
        (rc = read_flag(g, "tokenizer.ggml.add_bos_token", is_llama, &add_bos)))
        goto done;
    if (is_llama) {
        int space;
        if ((rc = read_flag(g, "tokenizer.ggml.add_space_prefix", 1, &space))) goto done;
        tok_spm_spec spec = {
            .n = N, .tokens = tok, .len = len, .scores = scores, .types = types, .bos = bos,
            .eos = eos, .unk = unk, .add_bos = add_bos, .add_space_prefix = space,
            .spaces_escaped = 1,
        };
        rc = tok_build_spm(out, &spec, "gguf tokenizer (llama)");
    } else {
        if ((rc = read_strings(g, KEY_MERGES, 1, &ms, &ml, &nm, (uint64_t)INT32_MAX / 4)))
            goto done;
        tok_gpt2_spec spec = {
            .n = N, .tokens = tok, .len = len, .types = types, .merges = ms, .merge_len = ml,
            .n_merges = nm, .bos = bos, .eos = eos, .unk = unk, .add_bos = add_bos,
            .pre = pre_len ? pre_name : "gpt-2",
        };
        rc = tok_build_gpt2(out, &spec, "gguf tokenizer (gpt2)");
    }
done:
    free(tok);
    free(len);
    free(ms);
    free(ml);
    free(scores);
    free(types);
    return rc;
}

/* -------------------------------------------------------------- to GGUF */

static int put_id(rotary_gguf_writer *w, const char *key, int id) {
    return id < 0 ? ROTARY_OK : rotary_gguf_set_u32(w, key, (uint32_t)id);
}

/* Our tokenizers: bytes and merges spelled in GPT-2's alphabet. */
static int to_rotary(const rotary_tokenizer *t, rotary_gguf_writer *w) {
    int n = t->vocab, nm = t->n_merges, rc;
    size_t total = 0;
    for (int i = 0; i < n; i++) total += 2 * (size_t)t->piece_len[i];
    for (int r = 0; r < nm; r++) total += 2 * (size_t)t->piece_len[256 + r] + 1;
    unsigned char *buf = malloc(total + 1);
    const char **s = malloc((size_t)(n + nm) * sizeof *s);
    size_t *len = malloc((size_t)(n + nm) * sizeof *len);
    int32_t *types = malloc((size_t)n * sizeof *types);
    if (!buf || !s || !len || !types) {
        rc = rotary_fail(ROTARY_ENOMEM, "tokenizer to gguf: out of memory");
        goto done;
    }
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        s[i] = (const char *)buf + o;
        len[i] = tok_gpt2_spell(buf + o, t->pieces + t->piece_off[i], t->piece_len[i]);
        o += len[i];
        types[i] = TT_NORMAL;
    }
    for (int r = 0; r < nm; r++) {
        int a = t->merges[2 * r], b = t->merges[2 * r + 1];
        s[n + r] = (const char *)buf + o;
        size_t k = tok_gpt2_spell(buf + o, t->pieces + t->piece_off[a], t->piece_len[a]);
        buf[o + k++] = ' ';
        k += tok_gpt2_spell(buf + o + k, t->pieces + t->piece_off[b], t->piece_len[b]);
        len[n + r] = k;
        o += k;
    }
    if ((rc = rotary_gguf_set_string(w, KEY_MODEL, "gpt2", 4)) ||
        (rc = rotary_gguf_set_string(w, KEY_PRE, PRE_ROTARY, strlen(PRE_ROTARY))) ||
        (rc = rotary_gguf_set_strings(w, KEY_TOKENS, s, len, (uint64_t)n)) ||
        (rc = rotary_gguf_set_array(w, KEY_TYPES, ROTARY_GGUF_I32, types, (uint64_t)n)))
        goto done;
    if (nm && ((rc = rotary_gguf_set_strings(w, KEY_MERGES, s + n, len + n, (uint64_t)nm)) ||
               (rc = rotary_gguf_set_array(w, KEY_MERGE_IDS, ROTARY_GGUF_I32, t->merges,
                                           2 * (uint64_t)nm))))
        goto done;
    rc = rotary_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", 0);
done:
    free(buf);
    free(s);
    free(len);
    free(types);
    return rc;
}

/* A model tokenizer: its own spelling, types and scores or merges back. */
static int to_model(const rotary_tokenizer *t, rotary_gguf_writer *w) {
    int n = t->vocab, nm = t->kind == TOK_GPT2 ? t->n_bpe : 0, rc;
    const char **s = malloc((size_t)(n + nm) * sizeof *s);
    size_t *len = malloc((size_t)(n + nm) * sizeof *len);
    int32_t *types = malloc((size_t)n * sizeof *types);
    size_t total = 0;
    for (int r = 0; r < nm; r++)
        total += 2 * (size_t)(t->str.len[t->bpe[3 * r]] + t->str.len[t->bpe[3 * r + 1]]) + 1;
    unsigned char *buf = malloc(total + 1);
    if (!s || !len || !types || !buf) {
        rc = rotary_fail(ROTARY_ENOMEM, "tokenizer to gguf: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        s[i] = (const char *)t->text + t->text_off[i];
        len[i] = t->text_len[i];
        types[i] = t->type[i];
    }
    size_t o = 0;
    for (int r = 0; r < nm; r++) {
        int a = t->bpe[3 * r], b = t->bpe[3 * r + 1];
        s[n + r] = (const char *)buf + o;
        size_t k = tok_gpt2_spell(buf + o, tok_strtab_str(&t->str, a), t->str.len[a]);
        buf[o + k++] = ' ';
        k += tok_gpt2_spell(buf + o + k, tok_strtab_str(&t->str, b), t->str.len[b]);
        len[n + r] = k;
        o += k;
    }
    int llama = t->kind == TOK_SPM;
    const char *pre = llama ? "default" : t->pre;
    if ((rc = rotary_gguf_set_string(w, KEY_MODEL, llama ? "llama" : "gpt2", llama ? 5 : 4)) ||
        (rc = rotary_gguf_set_string(w, KEY_PRE, pre, strlen(pre))) ||
        (rc = rotary_gguf_set_strings(w, KEY_TOKENS, s, len, (uint64_t)n)) ||
        (llama && (rc = rotary_gguf_set_array(w, KEY_SCORES, ROTARY_GGUF_F32, t->score,
                                               (uint64_t)n))) ||
        (rc = rotary_gguf_set_array(w, KEY_TYPES, ROTARY_GGUF_I32, types, (uint64_t)n)) ||
        (nm && (rc = rotary_gguf_set_strings(w, KEY_MERGES, s + n, len + n, (uint64_t)nm))) ||
        (rc = put_id(w, "tokenizer.ggml.bos_token_id", t->bos)) ||
        (rc = put_id(w, "tokenizer.ggml.eos_token_id", t->eos)) ||
        (rc = put_id(w, "tokenizer.ggml.unknown_token_id", t->unk)) ||
        (rc = rotary_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos)) ||
        (llama && (rc = rotary_gguf_set_bool(w, "tokenizer.ggml.add_space_prefix",
                                             t->add_space_prefix))))
        goto done;
done:
    free(s);
    free(len);
    free(types);
    free(buf);
    return rc;
}

int rotary_tokenizer_to_gguf(const rotary_tokenizer *t, rotary_gguf_writer *w) {
    if (!t || !w) return rotary_fail(ROTARY_EINVAL, "tokenizer to gguf: NULL argument");
    return t->kind == TOK_BYTES || t->kind == TOK_BPE ? to_rotary(t, w) : to_model(t, w);
}
