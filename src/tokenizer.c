/* tokenizer.c: byte-level tokenizer and byte-level BPE (train, encode, decode,
 * save, load). See docs/tokenizer.md for the rules and the file format.
 *
 * Round trips are exact by construction: chunks partition the input, every
 * token is a byte string, and a chunk's tokens concatenate to the chunk. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* mkstemp, fchmod */
#include "tokenizer_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PRETOKENIZER "rotary-v1"
#define MAX_CHUNK 64                 /* bytes; longer runs are cut (at a character boundary) */
#define MAX_PIECE 4096               /* bytes of one token in a loaded file */
#define MAX_FILE ((size_t)64 * 1024 * 1024) /* tokenizer JSON size limit */

/* ------------------------------------------------------------------ UTF-8 */

/* Length of the valid UTF-8 sequence at s (n bytes left) and its code point,
 * or 0 with *why set. Rejects overlongs, surrogates, > U+10FFFF, truncation. */
int tok_utf8_next(const unsigned char *s, size_t n, uint32_t *cp, const char **why) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0xC0) { *why = "unexpected continuation byte"; return 0; }
    if (c < 0xC2) { *why = "overlong encoding"; return 0; }
    if (c < 0xE0) len = 2;
    else if (c < 0xF0) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;      /* below: overlong */
        else if (c == 0xED) hi = 0x9F; /* above: UTF-16 surrogate */
    } else if (c < 0xF5) {
        len = 4;
        if (c == 0xF0) lo = 0x90;      /* below: overlong */
        else if (c == 0xF4) hi = 0x8F; /* above: > U+10FFFF */
    } else {
        *why = "byte that never occurs in UTF-8";
        return 0;
    }
    if (n < (size_t)len) { *why = "truncated sequence"; return 0; }
    if (s[1] < lo || s[1] > hi) {
        if (s[1] < 0x80 || s[1] > 0xBF) *why = "truncated sequence";
        else if (c == 0xED) *why = "UTF-16 surrogate";
        else if (c == 0xF4) *why = "code point above U+10FFFF";
        else *why = "overlong encoding";
        return 0;
    }
    uint32_t v = c & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) { *why = "truncated sequence"; return 0; }
        v = (v << 6) | (s[i] & 0x3F);
    }
    *cp = v;
    return len;
}

static int utf8_check(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        const char *why = "";
        int k = tok_utf8_next(s + i, n - i, &cp, &why);
        if (!k)
            return rotary_fail(ROTARY_EINVAL, "tokenizer train: text is not valid UTF-8 at byte %zu "
                               "(0x%02X): %s", i, s[i], why);
        i += (size_t)k;
    }
    return ROTARY_OK;
}

/* ------------------------------------------------------- pre-tokenization */

enum { C_SPACE, C_LETTER, C_DIGIT, C_PUNCT, C_CJK, C_BAD };

static int cp_class(uint32_t c) {
    if (c < 0x80) {
        if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return C_SPACE;
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return C_LETTER;
        if (c >= '0' && c <= '9') return C_DIGIT;
        return C_PUNCT; /* ASCII punctuation and control characters */
    }
    if (c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
        c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000)
        return C_SPACE;
    /* Scripts written without spaces: runs of them form one chunk. */
    if ((c >= 0x3040 && c <= 0x30FF) || (c >= 0x3400 && c <= 0x4DBF) ||
        (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xF900 && c <= 0xFAFF) ||
        (c >= 0x20000 && c <= 0x3FFFF) || c == 0x3005 || c == 0x3007)
        return C_CJK;
    if (c >= 0xFF10 && c <= 0xFF19) return C_DIGIT; /* fullwidth digits */
    if ((c >= 0xFF21 && c <= 0xFF3A) || (c >= 0xFF41 && c <= 0xFF5A)) return C_LETTER;
    if (c < 0xA0 || (c >= 0xA1 && c <= 0xBF) || c == 0xD7 || c == 0xF7 ||
        (c >= 0x2000 && c <= 0x2BFF) || (c >= 0x3000 && c <= 0x303F) ||
        (c >= 0xFE10 && c <= 0xFE1F) || (c >= 0xFE30 && c <= 0xFE6F) ||
        (c >= 0xFF00 && c <= 0xFF65) || (c >= 0x1F000 && c <= 0x1FAFF))
        return C_PUNCT; /* C1 controls, symbols, CJK and fullwidth punctuation, emoji */
    return C_LETTER;    /* every other script's characters */
}

/* Class and length of the character at s; invalid bytes are C_BAD, length 1. */
static int char_at(const unsigned char *s, size_t n, int *len) {
    uint32_t cp;
    const char *why;
    int k = tok_utf8_next(s, n, &cp, &why);
    if (!k) {
        *len = 1;
        return C_BAD;
    }
    *len = k;
    return cp_class(cp);
}

/* End of the chunk that starts at s[0] (n > 0 bytes left). Chunks are: an
 * optional single space followed by a run of one class (letters, digits,
 * punctuation, CJK); a run of white space, leaving a final ' ' to the next
 * chunk; one invalid byte. A run stops at MAX_CHUNK bytes. */
static size_t chunk_len(const unsigned char *s, size_t n) {
    int k, cls = char_at(s, n, &k);
    size_t i = (size_t)k;
    if (cls == C_BAD) return 1;
    if (s[0] == ' ' && n > 1) {
        int k2, c2 = char_at(s + 1, n - 1, &k2);
        if (c2 != C_SPACE && c2 != C_BAD) {
            cls = c2;
            i += (size_t)k2;
        }
    }
    while (i < n) {
        int c = char_at(s + i, n - i, &k);
        if (c != cls || i + (size_t)k > MAX_CHUNK) break;
        if (cls == C_SPACE && s[i] == ' ' && i + 1 < n) {
            int k2, c2 = char_at(s + i + 1, n - i - 1, &k2);
            if (c2 != C_SPACE && c2 != C_BAD) break; /* this space leads the next chunk */
        }
        i += (size_t)k;
    }
    return i;
}

/* ------------------------------------------------------------- hash maps */

static uint64_t hash_bytes(const unsigned char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xC2B2AE3D27D4EB4Full;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    for (size_t j = 0; i < n; i++, j++) w |= (uint64_t)s[i] << (8 * j);
    h = (h ^ w) * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 32;
    return h;
}

/* Chunk map: byte strings (views into a text that outlives the map) -> int. */
typedef struct {
    size_t off;
    uint32_t len;
    int val; /* -1: empty slot */
} chunk_slot;

typedef struct {
    chunk_slot *slot;
    size_t cap, used; /* cap: power of two */
    const unsigned char *text;
} chunk_map;

static int chunk_map_init(chunk_map *m, const unsigned char *text, size_t cap) {
    m->cap = cap;
    m->used = 0;
    m->text = text;
    m->slot = malloc(cap * sizeof *m->slot);
    if (!m->slot) return rotary_fail(ROTARY_ENOMEM, "tokenizer: out of memory (chunk table)");
    for (size_t i = 0; i < cap; i++) m->slot[i].val = -1;
    return ROTARY_OK;
}

static chunk_slot *chunk_map_find(const chunk_map *m, size_t off, size_t len) {
    const unsigned char *k = m->text + off;
    for (size_t i = hash_bytes(k, len) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        chunk_slot *e = &m->slot[i];
        if (e->val < 0 || (e->len == len && !memcmp(m->text + e->off, k, len))) return e;
    }
}

/* Make room for one more entry (load factor <= 1/2). */
static int chunk_map_reserve(chunk_map *m) {
    if (2 * (m->used + 1) <= m->cap) return ROTARY_OK;
    chunk_map old = *m;
    if (chunk_map_init(m, old.text, old.cap * 2)) {
        *m = old;
        return ROTARY_ENOMEM;
    }
    m->used = old.used;
    for (size_t i = 0; i < old.cap; i++)
        if (old.slot[i].val >= 0) *chunk_map_find(m, old.slot[i].off, old.slot[i].len) = old.slot[i];
    free(old.slot);
    return ROTARY_OK;
}

int tok_pair_map_reserve(tok_pair_map *m, size_t n) {
    if (n > SIZE_MAX / 8) return -1;
    size_t cap = m->cap ? m->cap : 16;
    while (cap < 2 * n + 2) cap *= 2;
    if (cap == m->cap) return 0;
    uint64_t *k = calloc(cap, sizeof *k);
    int *v = malloc(cap * sizeof *v);
    if (!k || !v) {
        free(k);
        free(v);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->key[i]) continue;
        size_t j = tok_hash_u64(m->key[i]) & (cap - 1);
        while (k[j]) j = (j + 1) & (cap - 1);
        k[j] = m->key[i];
        v[j] = m->val[i];
    }
    free(m->key);
    free(m->val);
    m->key = k;
    m->val = v;
    m->cap = cap;
    return 0;
}

int tok_pair_map_put(tok_pair_map *m, int a, int b, int v) {
    const uint64_t key = tok_pair_key(a, b);
    size_t j = tok_hash_u64(key) & (m->cap - 1);
    while (m->key[j] && m->key[j] != key) j = (j + 1) & (m->cap - 1);
    if (m->key[j]) return m->val[j];
    m->key[j] = key;
    m->val[j] = v;
    m->used++;
    return v;
}

void tok_pair_map_free(tok_pair_map *m) {
    free(m->key);
    free(m->val);
    *m = (tok_pair_map){0};
}

/* ------------------------------------------------------------ the object */

void rotary_tokenizer_free(rotary_tokenizer *t) {
    if (!t) return;
    if (t->free_ext) t->free_ext(t);
    free(t->merges);
    free(t->piece_off);
    free(t->piece_len);
    free(t->pieces);
    tok_pair_map_free(&t->rank);
    free(t->type);
    free(t->score);
    tok_strtab_free(&t->str);
    free(t->str_token);
    free(t->user);
    free(t->text_off);
    free(t->text_len);
    free(t->text);
    free(t->bpe);
    free(t);
}

int tok_set_special(rotary_tokenizer *t, int bos, int eos, int unk, int add_bos,
                    const char *what) {
    const int ids[3] = {bos, eos, unk};
    static const char *const names[3] = {"BOS", "EOS", "unknown token"};
    for (int k = 0; k < 3; k++)
        if (ids[k] < -1 || ids[k] >= t->vocab)
            return rotary_fail(ROTARY_EFORMAT, "%s: the %s id %d is outside the vocabulary "
                               "[0, %d)", what, names[k], ids[k], t->vocab);
    t->bos = bos;
    t->eos = eos;
    t->unk = unk;
    t->add_bos = add_bos;
    return ROTARY_OK;
}

int tok_total_len(const size_t *len, int n, size_t max_total, size_t *total, const char *what) {
    size_t sum = 0;
    for (int i = 0; i < n; i++) {
        if (len[i] > TOK_MAX_PIECE)
            return rotary_fail(ROTARY_EFORMAT, "%s: token %d is %zu bytes long (at most %d)",
                               what, i, len[i], TOK_MAX_PIECE);
        sum += len[i];
    }
    if (sum > max_total)
        return rotary_fail(ROTARY_EFORMAT, "%s: the tokens add up to %zu bytes (at most %zu)",
                           what, sum, max_total);
    *total = sum;
    return ROTARY_OK;
}

rotary_tokenizer *tok_alloc(int kind, int vocab, const char *what) {
    if (vocab < 1 || vocab > TOK_MAX_VOCAB) {
        rotary_fail(ROTARY_EFORMAT, "%s: %d tokens (a vocabulary has 1 to %d)", what, vocab,
                    TOK_MAX_VOCAB);
        return NULL;
    }
    rotary_tokenizer *t = calloc(1, sizeof *t);
    if (t) {
        t->kind = kind;
        t->vocab = vocab;
        t->bos = t->eos = t->unk = -1;
        for (int i = 0; i < 256; i++) t->byte_token[i] = -1;
        t->piece_off = calloc((size_t)vocab, sizeof(uint32_t));
        t->piece_len = calloc((size_t)vocab, sizeof(uint32_t));
        t->type = malloc((size_t)vocab);
        if (t->type) memset(t->type, TT_NORMAL, (size_t)vocab);
    }
    if (!t || !t->piece_off || !t->piece_len || !t->type) {
        rotary_tokenizer_free(t);
        rotary_fail(ROTARY_ENOMEM, "%s: out of memory (%d tokens)", what, vocab);
        return NULL;
    }
    return t;
}

/* Build a tokenizer from n merges (copied); checks that each merge refers to
 * earlier ids, is not a repeat, and makes a piece of at most MAX_PIECE bytes. */
int tok_build_bpe(rotary_tokenizer **out, int is_bytes, const int *merges, int n,
                  const char *what) {
    *out = NULL;
    if (n < 0 || n > 65536 - 256 || (is_bytes && n))
        return rotary_fail(ROTARY_EFORMAT, "%s: %d merges (at most %d, none for bytes)", what, n,
                           65536 - 256);
    int vocab = 256 + n;
    rotary_tokenizer *t = tok_alloc(is_bytes ? TOK_BYTES : TOK_BPE, vocab, what);
    if (!t) return ROTARY_ENOMEM;
    t->n_merges = n;
    t->merges = malloc(2 * (size_t)n * sizeof(int) + 1);
    if (!t->merges || tok_pair_map_reserve(&t->rank, (size_t)n)) goto oom;
    if (n) memcpy(t->merges, merges, 2 * (size_t)n * sizeof(int));

    size_t total = 256;
    for (int i = 0; i < 256; i++) {
        t->piece_off[i] = (uint32_t)i;
        t->piece_len[i] = 1;
    }
    for (int i = 0; i < n; i++) {
        int a = merges[2 * i], b = merges[2 * i + 1];
        if (a < 0 || b < 0 || a >= 256 + i || b >= 256 + i) {
            rotary_tokenizer_free(t);
            return rotary_fail(ROTARY_EFORMAT, "%s: merge %d is [%d, %d], but a merge may only "
                               "refer to ids below %d (bytes and earlier merges)", what, i, a, b,
                               256 + i);
        }
        int first = tok_pair_map_put(&t->rank, a, b, i);
        if (first != i) {
            rotary_tokenizer_free(t);
            return rotary_fail(ROTARY_EFORMAT, "%s: merge %d [%d, %d] repeats merge %d", what, i,
                               a, b, first);
        }
        size_t len = (size_t)t->piece_len[a] + t->piece_len[b];
        if (len > MAX_PIECE) {
            rotary_tokenizer_free(t);
            return rotary_fail(ROTARY_EFORMAT, "%s: merge %d makes a token of %zu bytes (at most %d)",
                               what, i, len, MAX_PIECE);
        }
        t->piece_off[256 + i] = (uint32_t)total;
        t->piece_len[256 + i] = (uint32_t)len;
        total += len; /* <= 65280 * 4096 + 256: fits uint32 */
    }
    t->pieces = malloc(total);
    if (!t->pieces) goto oom;
    for (int i = 0; i < 256; i++) t->pieces[i] = (unsigned char)i;
    for (int i = 0; i < n; i++) {
        int a = merges[2 * i], b = merges[2 * i + 1];
        unsigned char *p = t->pieces + t->piece_off[256 + i];
        memcpy(p, t->pieces + t->piece_off[a], t->piece_len[a]);
        memcpy(p + t->piece_len[a], t->pieces + t->piece_off[b], t->piece_len[b]);
    }
    *out = t;
    return ROTARY_OK;
oom:
    rotary_tokenizer_free(t);
    return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", what);
}

int rotary_tokenizer_bytes(rotary_tokenizer **t) {
    if (!t) return rotary_fail(ROTARY_EINVAL, "tokenizer: NULL argument");
    return tok_build_bpe(t, 1, NULL, 0, "byte tokenizer");
}

int rotary_tokenizer_vocab_size(const rotary_tokenizer *t) { return t ? t->vocab : 0; }
int rotary_tokenizer_is_bytes(const rotary_tokenizer *t) { return t ? t->kind == TOK_BYTES : 0; }
int rotary_tokenizer_bos(const rotary_tokenizer *t) { return t ? t->bos : -1; }
int rotary_tokenizer_eos(const rotary_tokenizer *t) { return t ? t->eos : -1; }
int rotary_tokenizer_add_bos(const rotary_tokenizer *t) { return t && t->bos >= 0 && t->add_bos; }
int rotary_tokenizer_space_prefix(const rotary_tokenizer *t) {
    return t && t->kind == TOK_SPM && t->add_space_prefix;
}

int rotary_tokenizer_special(const rotary_tokenizer *t, const char *text) {
    if (!t || !text || !t->text || !t->type) return -1;
    const size_t n = strlen(text);
    for (int i = 0; i < t->vocab; i++)
        if ((t->type[i] == TT_CONTROL || t->type[i] == TT_USER) && t->text_len[i] == n &&
            !memcmp(t->text + t->text_off[i], text, n))
            return i;
    return -1;
}

const unsigned char *rotary_tokenizer_piece(const rotary_tokenizer *t, int id, int *len) {
    if (!t || id < 0 || id >= t->vocab) return NULL;
    if (len) *len = (int)t->piece_len[id];
    return t->pieces ? t->pieces + t->piece_off[id] : (const unsigned char *)"";
}

/* ------------------------------------------------ shared with the models */

size_t tok_utf8_valid_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        const char *why;
        int k = s[i] < 0x80 ? 1 : tok_utf8_next(s + i, n - i, &cp, &why);
        if (!k) break;
        i += (size_t)k;
    }
    return i;
}

void tok_strtab_free(tok_strtab *st) {
    free(st->buf);
    free(st->off);
    free(st->len);
    free(st->slot);
    memset(st, 0, sizeof *st);
}

int tok_strtab_find(const tok_strtab *st, const void *s, size_t n) {
    if (!st->slot_cap) return -1;
    for (size_t i = hash_bytes(s, n) & (st->slot_cap - 1);; i = (i + 1) & (st->slot_cap - 1)) {
        int k = st->slot[i] - 1;
        if (k < 0) return -1;
        if (st->len[k] == n && !memcmp(st->buf + st->off[k], s, n)) return k;
    }
}

int tok_strtab_intern(tok_strtab *st, const void *s, size_t n, int *added) {
    if (added) *added = 0;
    int k = tok_strtab_find(st, s, n);
    if (k >= 0) return k;
    if (n > UINT32_MAX || st->n >= INT32_MAX / 2) return -1;
    if (2 * ((size_t)st->n + 1) > st->slot_cap) { /* grow and rehash */
        size_t cap = st->slot_cap ? 2 * st->slot_cap : 1024;
        int *slot = calloc(cap, sizeof *slot);
        if (!slot) return -1;
        for (int i = 0; i < st->n; i++) {
            size_t j = hash_bytes(st->buf + st->off[i], st->len[i]) & (cap - 1);
            while (slot[j]) j = (j + 1) & (cap - 1);
            slot[j] = i + 1;
        }
        free(st->slot);
        st->slot = slot;
        st->slot_cap = cap;
    }
    if (st->n == st->cap) { /* off and len share cap */
        int cap = st->cap ? 2 * st->cap : 1024;
        uint32_t *off = realloc(st->off, (size_t)cap * sizeof(uint32_t));
        if (!off) return -1;
        st->off = off;
        uint32_t *len = realloc(st->len, (size_t)cap * sizeof(uint32_t));
        if (!len) return -1;
        st->len = len;
        st->cap = cap;
    }
    if (st->buf_len + n > UINT32_MAX) return -1;
    if (st->buf_len + n > st->buf_cap) {
        size_t cap = st->buf_cap ? st->buf_cap : 4096;
        while (cap < st->buf_len + n) cap *= 2;
        unsigned char *b = realloc(st->buf, cap);
        if (!b) return -1;
        st->buf = b;
        st->buf_cap = cap;
    }
    if (n) memcpy(st->buf + st->buf_len, s, n);
    k = st->n++;
    st->off[k] = (uint32_t)st->buf_len;
    st->len[k] = (uint32_t)n;
    st->buf_len += n;
    size_t j = hash_bytes(s, n) & (st->slot_cap - 1);
    while (st->slot[j]) j = (j + 1) & (st->slot_cap - 1);
    st->slot[j] = k + 1;
    if (added) *added = 1;
    return k;
}

int tok_ids_push(tok_ids *a, int id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 256;
        int *v = realloc(a->v, cap * sizeof *v);
        if (!v) return rotary_fail(ROTARY_ENOMEM, "tokenizer encode: out of memory");
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return ROTARY_OK;
}

int tok_ids_finish(tok_ids *a, int rc, int **ids, size_t *n_ids) {
    if (!rc && !a->v && !(a->v = malloc(sizeof(int))))
        rc = rotary_fail(ROTARY_ENOMEM, "tokenizer encode: out of memory");
    if (rc) {
        free(a->v);
        *a = (tok_ids){0};
        return rc;
    }
    *ids = a->v;
    *n_ids = a->n;
    return ROTARY_OK;
}

typedef struct {
    uint32_t len;
    int id;
} user_key;

static int by_len_desc(const void *x, const void *y) {
    const user_key *a = x, *b = y;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

int tok_collect_user(rotary_tokenizer *t) {
    memset(t->user_first, 0, sizeof t->user_first);
    free(t->user);
    t->user = NULL;
    t->n_user = 0;
    for (int i = 0; i < t->vocab; i++) t->n_user += t->type[i] == TT_USER && t->piece_len[i];
    if (!t->n_user) return ROTARY_OK;
    t->user = malloc((size_t)t->n_user * sizeof(int));
    user_key *k = malloc((size_t)t->n_user * sizeof *k);
    if (!t->user || !k) {
        free(k);
        return rotary_fail(ROTARY_ENOMEM, "tokenizer: out of memory");
    }
    for (int i = 0, u = 0; i < t->vocab; i++)
        if (t->type[i] == TT_USER && t->piece_len[i]) t->user[u++] = i;
    for (int i = 0; i < t->n_user; i++) k[i] = (user_key){t->piece_len[t->user[i]], t->user[i]};
    qsort(k, (size_t)t->n_user, sizeof *k, by_len_desc);
    for (int i = 0; i < t->n_user; i++) {
        t->user[i] = k[i].id;
        unsigned char c = t->pieces[t->piece_off[k[i].id]];
        t->user_first[c >> 3] |= (unsigned char)(1u << (c & 7));
    }
    free(k);
    return ROTARY_OK;
}

int tok_split_user(const rotary_tokenizer *t, const unsigned char *s, size_t n,
                   int (*emit)(void *ctx, int id, const unsigned char *s, size_t n), void *ctx) {
    if (!t->n_user) return n ? emit(ctx, -1, s, n) : ROTARY_OK;
    size_t start = 0, i = 0;
    while (i < n) {
        int hit = -1;
        for (int u = 0; u < t->n_user && (t->user_first[s[i] >> 3] >> (s[i] & 7) & 1); u++) {
            /* longest first */
            int id = t->user[u];
            size_t len = t->piece_len[id];
            if (len && len <= n - i && !memcmp(s + i, t->pieces + t->piece_off[id], len)) {
                hit = id;
                break;
            }
        }
        if (hit < 0) {
            i++;
            continue;
        }
        int rc;
        if (i > start && (rc = emit(ctx, -1, s + start, i - start))) return rc;
        if ((rc = emit(ctx, hit, s + i, t->piece_len[hit]))) return rc;
        i += t->piece_len[hit];
        start = i;
    }
    return start < n ? emit(ctx, -1, s + start, n - start) : ROTARY_OK;
}

/* -------------------------------------------------------------- training */

/* One distinct pair of adjacent ids, with its count over all words (weighted
 * by how often each word occurs) and the words it may occur in (a superset:
 * entries go stale as words change and are rechecked when used). */
typedef struct {
    int a, b;
    int64_t count;
    int *words;
    int n_words, cap_words;
    int stamp; /* merge that last pushed it to the heap */
} pair_t;

typedef struct {
    int64_t count;
    int pair;
} heap_ent;

typedef struct {
    /* words: unique chunks */
    int n_words;
    int *sym;       /* the words' symbols, back to back */
    size_t *off;    /* (n_words) start of each word in sym */
    int *len;       /* (n_words) current number of symbols */
    int64_t *count; /* (n_words) occurrences in the text */
    int *visited;   /* (n_words) last merge that processed the word */
    /* pairs */
    pair_t *pairs;
    int n_pairs, cap_pairs;
    tok_pair_map pair_id; /* (a, b) -> index in pairs */
    /* max-heap by (count desc, a asc, b asc), lazily updated */
    heap_ent *heap;
    size_t n_heap, cap_heap;
    int *touched; /* pairs created or grown by the current merge */
    int n_touched, cap_touched;
} trainer;

static int grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 4;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* Index of pair (a, b), created with count 0 if new; -1 on allocation failure. */
static int pair_get(trainer *tr, int a, int b) {
    int id = tok_pair_map_get(&tr->pair_id, a, b);
    if (id >= 0) return id;
    if (tok_pair_map_reserve(&tr->pair_id, tr->pair_id.used + 1) ||
        grow((void **)&tr->pairs, &tr->cap_pairs, tr->n_pairs + 1, sizeof(pair_t)))
        return -1;
    id = tr->n_pairs++;
    tr->pairs[id] = (pair_t){.a = a, .b = b, .stamp = -1};
    tok_pair_map_put(&tr->pair_id, a, b, id);
    return id;
}

/* Add delta occurrences of (a, b) found in word w. */
static int pair_add(trainer *tr, int a, int b, int64_t delta, int w) {
    int p = pair_get(tr, a, b);
    if (p < 0) return -1;
    pair_t *q = &tr->pairs[p];
    q->count += delta;
    if (delta > 0 && (q->n_words == 0 || q->words[q->n_words - 1] != w)) {
        if (grow((void **)&q->words, &q->cap_words, q->n_words + 1, sizeof(int))) return -1;
        q->words[q->n_words++] = w;
    }
    return p;
}

/* x leaves the heap before y: higher count, then lower a, then lower b. */
static int heap_before(const void *ctx, const void *px, const void *py) {
    const trainer *tr = ctx;
    const heap_ent *x = px, *y = py;
    if (x->count != y->count) return x->count > y->count;
    const pair_t *p = &tr->pairs[x->pair], *q = &tr->pairs[y->pair];
    if (p->a != q->a) return p->a < q->a;
    return p->b < q->b;
}

static int heap_push(trainer *tr, int pair) {
    if (tr->n_heap == tr->cap_heap) {
        size_t cap = tr->cap_heap ? 2 * tr->cap_heap : 1024;
        heap_ent *h = realloc(tr->heap, cap * sizeof *h);
        if (!h) return -1;
        tr->heap = h;
        tr->cap_heap = cap;
    }
    heap_ent e = {tr->pairs[pair].count, pair};
    tok_heap_push(tr->heap, &tr->n_heap, &e, sizeof e, heap_before, tr);
    return 0;
}

static heap_ent heap_pop(trainer *tr) {
    heap_ent top;
    tok_heap_pop(tr->heap, &tr->n_heap, &top, sizeof top, heap_before, tr);
    return top;
}

static void trainer_free(trainer *tr) {
    free(tr->sym);
    free(tr->off);
    free(tr->len);
    free(tr->count);
    free(tr->visited);
    for (int i = 0; i < tr->n_pairs; i++) free(tr->pairs[i].words);
    free(tr->pairs);
    tok_pair_map_free(&tr->pair_id);
    free(tr->heap);
    free(tr->touched);
}

/* Count the distinct chunks of text into tr's words. */
static int collect_words(trainer *tr, const unsigned char *text, size_t n) {
    chunk_map map;
    if (chunk_map_init(&map, text, 1 << 16)) return ROTARY_ENOMEM;
    int cap = 0;
    size_t n_sym = 0;
    for (size_t i = 0; i < n;) {
        size_t k = chunk_len(text + i, n - i);
        if (chunk_map_reserve(&map)) goto oom;
        chunk_slot *e = chunk_map_find(&map, i, k);
        if (e->val < 0) {
            if (tr->n_words == INT32_MAX - 1) goto oom;
            if (grow((void **)&tr->count, &cap, tr->n_words + 1, sizeof(int64_t))) goto oom;
            *e = (chunk_slot){i, (uint32_t)k, tr->n_words};
            tr->count[tr->n_words++] = 0;
            map.used++;
            n_sym += k;
        }
        tr->count[e->val]++;
        i += k;
    }
    tr->sym = malloc(n_sym * sizeof(int) + 1);
    tr->off = malloc((size_t)tr->n_words * sizeof(size_t) + 1);
    tr->len = malloc((size_t)tr->n_words * sizeof(int) + 1);
    tr->visited = malloc((size_t)tr->n_words * sizeof(int) + 1);
    if (!tr->sym || !tr->off || !tr->len || !tr->visited) goto oom;
    for (size_t i = 0; i < map.cap; i++) {
        chunk_slot *e = &map.slot[i];
        if (e->val >= 0) tr->len[e->val] = (int)e->len;
    }
    size_t o = 0;
    for (int w = 0; w < tr->n_words; w++) {
        tr->off[w] = o;
        tr->visited[w] = -1;
        o += (size_t)tr->len[w];
    }
    for (size_t i = 0; i < map.cap; i++) {
        chunk_slot *e = &map.slot[i];
        if (e->val < 0) continue;
        int *s = tr->sym + tr->off[e->val];
        for (uint32_t j = 0; j < e->len; j++) s[j] = text[e->off + j];
    }
    free(map.slot);
    return ROTARY_OK;
oom:
    free(map.slot);
    return rotary_fail(ROTARY_ENOMEM, "tokenizer train: out of memory counting chunks");
}

/* Note that pair p involves the new id of merge m (to be pushed afterwards). */
static int touch(trainer *tr, int p, int m) {
    if (p < 0) return -1;
    if (tr->pairs[p].stamp == m) return 0;
    tr->pairs[p].stamp = m;
    if (grow((void **)&tr->touched, &tr->cap_touched, tr->n_touched + 1, sizeof(int))) return -1;
    tr->touched[tr->n_touched++] = p;
    return 0;
}

/* Replace (a, b) by c in every word that has it, updating pair counts only
 * around the replaced positions. Merge index m = c - 256. */
static int apply_merge(trainer *tr, int a, int b, int c, int m) {
    int old[MAX_CHUNK];
    unsigned char start[MAX_CHUNK], fresh[MAX_CHUNK];
    pair_t *p = &tr->pairs[pair_get(tr, a, b)];
    int *words = p->words, n_words = p->n_words;
    p->words = NULL;
    p->n_words = p->cap_words = 0;
    tr->n_touched = 0;
    int rc = ROTARY_OK;
    for (int wi = 0; wi < n_words && rc == ROTARY_OK; wi++) {
        int w = words[wi];
        if (tr->visited[w] == m) continue;
        tr->visited[w] = m;
        int *s = tr->sym + tr->off[w], L = tr->len[w];
        int64_t cnt = tr->count[w];
        int found = 0;
        memset(start, 0, (size_t)L);
        for (int i = 0; i + 1 < L; i++)
            if (s[i] == a && s[i + 1] == b) {
                start[i] = 1;
                found = 1;
                i++; /* non-overlapping, left to right */
            }
        if (!found) continue;
        memcpy(old, s, (size_t)L * sizeof(int));
        /* Pairs that touch a replaced position disappear... */
        for (int i = 0; i + 1 < L; i++) {
            int hit = start[i] || start[i + 1] || (i > 0 && start[i - 1]);
            if (hit && pair_add(tr, old[i], old[i + 1], -cnt, w) < 0) rc = ROTARY_ENOMEM;
        }
        int j = 0;
        for (int i = 0; i < L; j++) {
            fresh[j] = start[i];
            s[j] = start[i] ? c : old[i];
            i += start[i] ? 2 : 1;
        }
        tr->len[w] = j;
        /* ...and pairs that touch a new c appear. */
        for (int i = 0; i + 1 < j; i++)
            if ((fresh[i] || fresh[i + 1]) && touch(tr, pair_add(tr, s[i], s[i + 1], cnt, w), m))
                rc = ROTARY_ENOMEM;
    }
    free(words);
    if (rc) return rotary_fail(ROTARY_ENOMEM, "tokenizer train: out of memory");
    for (int i = 0; i < tr->n_touched; i++)
        if (tr->pairs[tr->touched[i]].count > 0 && heap_push(tr, tr->touched[i]))
            return rotary_fail(ROTARY_ENOMEM, "tokenizer train: out of memory");
    return ROTARY_OK;
}

int rotary_tokenizer_train(rotary_tokenizer **out, const unsigned char *text, size_t n,
                           int vocab_size,
                           void (*progress)(void *ctx, int merges_done, int merges_total),
                           void *ctx) {
    if (!out) return rotary_fail(ROTARY_EINVAL, "tokenizer train: NULL argument");
    *out = NULL;
    if (vocab_size < 256 || vocab_size > 65536)
        return rotary_fail(ROTARY_EINVAL, "tokenizer train: vocab size %d is outside [256, 65536]",
                           vocab_size);
    if (!text || n == 0) return rotary_fail(ROTARY_EINVAL, "tokenizer train: empty text");
    int rc = utf8_check(text, n);
    if (rc) return rc;

    trainer tr;
    memset(&tr, 0, sizeof tr);
    int total = vocab_size - 256, done = 0;
    int *merges = malloc(2 * (size_t)total * sizeof(int) + 1);
    if (!merges) return rotary_fail(ROTARY_ENOMEM, "tokenizer train: out of memory");
    rc = collect_words(&tr, text, n);
    for (int w = 0; w < tr.n_words && !rc; w++) {
        const int *s = tr.sym + tr.off[w];
        for (int i = 0; i + 1 < tr.len[w]; i++)
            if (pair_add(&tr, s[i], s[i + 1], tr.count[w], w) < 0) {
                rc = rotary_fail(ROTARY_ENOMEM, "tokenizer train: out of memory");
                break;
            }
    }
    for (int p = 0; p < tr.n_pairs && !rc; p++)
        if (heap_push(&tr, p)) rc = rotary_fail(ROTARY_ENOMEM, "tokenizer train: out of memory");

    while (!rc && done < total && tr.n_heap) {
        heap_ent e = heap_pop(&tr);
        pair_t *p = &tr.pairs[e.pair];
        if (p->count != e.count) { /* stale entry: requeue at its true count */
            if (p->count > 0 && heap_push(&tr, e.pair))
                rc = rotary_fail(ROTARY_ENOMEM, "tokenizer train: out of memory");
            continue;
        }
        if (e.count < 2) break; /* a pair seen once teaches nothing */
        int a = p->a, b = p->b;
        merges[2 * done] = a;
        merges[2 * done + 1] = b;
        rc = apply_merge(&tr, a, b, 256 + done, done);
        done++;
        if (!rc && progress) progress(ctx, done, total);
    }
    trainer_free(&tr);
    if (!rc) rc = tok_build_bpe(out, 0, merges, done, "tokenizer train");
    free(merges);
    return rc;
}

/* -------------------------------------------------------------- encoding */

/* Append the BPE ids of chunk s[0..n) (n <= MAX_CHUNK) to ids; returns count. */
static int encode_chunk(const rotary_tokenizer *t, const unsigned char *s, size_t n, int *ids) {
    int L = (int)n;
    for (int i = 0; i < L; i++) ids[i] = s[i];
    while (L > 1) {
        int best = -1;
        for (int i = 0; i + 1 < L; i++) {
            int r = tok_pair_map_get(&t->rank, ids[i], ids[i + 1]);
            if (r >= 0 && (best < 0 || r < best)) best = r;
        }
        if (best < 0) break;
        /* Merges apply in rank order, each to all its non-overlapping
         * occurrences left to right: what training did to the same chunk. */
        int a = t->merges[2 * best], b = t->merges[2 * best + 1], j = 0;
        for (int i = 0; i < L; j++) {
            if (i + 1 < L && ids[i] == a && ids[i + 1] == b) {
                ids[j] = 256 + best;
                i += 2;
            } else {
                ids[j] = ids[i++];
            }
        }
        L = j;
    }
    return L;
}

int rotary_tokenizer_encode(const rotary_tokenizer *t, const unsigned char *text, size_t n,
                            int **ids_out, size_t *n_out) {
    if (!t || !ids_out || !n_out || (!text && n))
        return rotary_fail(ROTARY_EINVAL, "tokenizer encode: NULL argument");
    *ids_out = NULL;
    *n_out = 0;
    if (t->encode) return t->encode(t, text, n, ids_out, n_out);
    size_t bytes;
    if (rotary_mul_size(n ? n : 1, sizeof(int), &bytes))
        return rotary_fail(ROTARY_ENOMEM, "tokenizer encode: %zu bytes is too long", n);
    int *ids = malloc(bytes); /* a token covers at least one byte */
    if (!ids) return rotary_fail(ROTARY_ENOMEM, "tokenizer encode: out of memory");
    if (t->kind == TOK_BYTES || t->n_merges == 0) {
        for (size_t i = 0; i < n; i++) ids[i] = text[i];
        *ids_out = ids;
        *n_out = n;
        return ROTARY_OK;
    }
    /* Cache: chunk -> where its ids were first written in ids (and how many),
     * so a repeated chunk is a copy, not a new BPE run. */
    chunk_map map;
    if (chunk_map_init(&map, text, 1 << 12)) {
        free(ids);
        return ROTARY_ENOMEM;
    }
    struct cached { size_t at; int count; } *seen = NULL;
    int n_seen = 0, cap_seen = 0;
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        size_t k = chunk_len(text + i, n - i);
        if (k == 1) { /* a single byte is its own id */
            ids[m++] = text[i++];
            continue;
        }
        if (chunk_map_reserve(&map) || grow((void **)&seen, &cap_seen, n_seen + 1, sizeof *seen))
            goto oom;
        chunk_slot *e = chunk_map_find(&map, i, k);
        if (e->val >= 0) {
            memcpy(ids + m, ids + seen[e->val].at, (size_t)seen[e->val].count * sizeof(int));
            m += (size_t)seen[e->val].count;
        } else {
            *e = (chunk_slot){i, (uint32_t)k, n_seen};
            map.used++;
            seen[n_seen++] = (struct cached){m, encode_chunk(t, text + i, k, ids + m)};
            m += (size_t)seen[n_seen - 1].count;
        }
        i += k;
    }
    free(map.slot);
    free(seen);
    *ids_out = ids;
    *n_out = m;
    return ROTARY_OK;
oom:
    free(map.slot);
    free(seen);
    free(ids);
    return rotary_fail(ROTARY_ENOMEM, "tokenizer encode: out of memory");
}

int rotary_tokenizer_decode(const rotary_tokenizer *t, const int *ids, size_t n,
                            unsigned char **out, size_t *n_out) {
    if (!t || !out || !n_out || (!ids && n))
        return rotary_fail(ROTARY_EINVAL, "tokenizer decode: NULL argument");
    *out = NULL;
    *n_out = 0;
    int vocab = t->vocab;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= vocab)
            return rotary_fail(ROTARY_EINVAL, "tokenizer decode: id %d at position %zu is outside "
                               "the vocabulary [0, %d)", ids[i], i, vocab);
        if (total > SIZE_MAX - TOK_MAX_PIECE)
            return rotary_fail(ROTARY_ENOMEM, "tokenizer decode: output too long");
        total += t->piece_len[ids[i]];
    }
    unsigned char *p = malloc(total ? total : 1);
    if (!p) return rotary_fail(ROTARY_ENOMEM, "tokenizer decode: out of memory (%zu bytes)", total);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(p + o, t->pieces + t->piece_off[ids[i]], t->piece_len[ids[i]]);
        o += t->piece_len[ids[i]];
    }
    *out = p;
    *n_out = total;
    return ROTARY_OK;
}

/* ------------------------------------------------------------ save, load */

int rotary_tokenizer_save(const rotary_tokenizer *t, const char *path) {
    if (!t || !path || !path[0]) return rotary_fail(ROTARY_EINVAL, "tokenizer save: no path");
    if (t->kind != TOK_BYTES && t->kind != TOK_BPE)
        return rotary_fail(ROTARY_EINVAL, "%s: only our own tokenizers (bytes, bpe) are saved as "
                           "JSON; a model's tokenizer stays with its model file", path);
    int is_bytes = t->kind == TOK_BYTES;
    cJSON *root = cJSON_CreateObject(), *merges = cJSON_CreateArray();
    if (!root || !merges) goto oom;
    cJSON_AddItemToObject(root, "format", cJSON_CreateString("rotary-tokenizer"));
    cJSON_AddItemToObject(root, "version", cJSON_CreateNumber(1));
    cJSON_AddItemToObject(root, "type", cJSON_CreateString(is_bytes ? "bytes" : "bpe"));
    cJSON_AddItemToObject(root, "vocab_size", cJSON_CreateNumber(256 + t->n_merges));
    cJSON_AddItemToObject(root, "pretokenizer",
                          cJSON_CreateString(is_bytes ? "none" : PRETOKENIZER));
    cJSON_AddItemToObject(root, "merges", merges);
    for (int i = 0; i < t->n_merges; i++) {
        cJSON *m = cJSON_CreateIntArray(t->merges + 2 * i, 2);
        if (!m) goto oom;
        cJSON_AddItemToArray(merges, m);
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", path);
    size_t n = strlen(json);
    char *text = malloc(n + 2);
    if (!text) {
        free(json);
        return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", path);
    }
    memcpy(text, json, n);
    text[n++] = '\n';
    free(json);
    int rc = rotary_write_file(path, text, n);
    free(text);
    return rc;
oom:
    if (!root) cJSON_Delete(merges);
    cJSON_Delete(root);
    return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", path);
}

/* An integer-valued JSON number in [lo, hi], or fail. */
static int json_int(const cJSON *v, double lo, double hi, int *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= lo && d <= hi) || d != (double)(long)d) return -1;
    *out = (int)d;
    return 0;
}

static int load_json(rotary_tokenizer **out, const char *path, const char *text, size_t n) {
    cJSON *root = cJSON_ParseWithLength(text, n);
    if (!root) return rotary_fail(ROTARY_EFORMAT, "%s: not a tokenizer file (not JSON)", path);
    int rc = ROTARY_EFORMAT, vocab, version;
    int *merges = NULL;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    const cJSON *vs = cJSON_GetObjectItemCaseSensitive(root, "vocab_size");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pretokenizer");
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(root, "merges");
    if (!cJSON_IsObject(root) || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, "rotary-tokenizer")) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: not a tokenizer file (\"format\" is not "
                         "\"rotary-tokenizer\")", path);
        goto done;
    }
    if (json_int(ver, 0, 1e9, &version) || version != 1) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: unsupported tokenizer version (this build reads "
                         "version 1)", path);
        goto done;
    }
    int is_bytes;
    if (cJSON_IsString(type) && !strcmp(type->valuestring, "bytes")) is_bytes = 1;
    else if (cJSON_IsString(type) && !strcmp(type->valuestring, "bpe")) is_bytes = 0;
    else {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: \"type\" must be \"bytes\" or \"bpe\"", path);
        goto done;
    }
    const char *want = is_bytes ? "none" : PRETOKENIZER;
    if (!cJSON_IsString(pre) || strcmp(pre->valuestring, want)) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: \"pretokenizer\" must be \"%s\" for type %s", path,
                         want, is_bytes ? "bytes" : "bpe");
        goto done;
    }
    if (json_int(vs, 256, 65536, &vocab)) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: \"vocab_size\" must be an integer in [256, 65536]",
                         path);
        goto done;
    }
    if (!cJSON_IsArray(ms)) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: \"merges\" must be an array", path);
        goto done;
    }
    int n_merges = cJSON_GetArraySize(ms);
    if (vocab != 256 + n_merges) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: \"vocab_size\" is %d but there are %d merges "
                         "(expected 256 + merges = %d)", path, vocab, n_merges, 256 + n_merges);
        goto done;
    }
    if (is_bytes && n_merges) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: a \"bytes\" tokenizer has no merges", path);
        goto done;
    }
    merges = malloc(2 * (size_t)n_merges * sizeof(int) + 1);
    if (!merges) {
        rc = rotary_fail(ROTARY_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, ms) {
        if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) != 2 ||
            json_int(cJSON_GetArrayItem(m, 0), 0, 65535, &merges[2 * i]) ||
            json_int(cJSON_GetArrayItem(m, 1), 0, 65535, &merges[2 * i + 1])) {
            rc = rotary_fail(ROTARY_EFORMAT, "%s: merge %d is not a pair of integer ids", path, i);
            goto done;
        }
        i++;
    }
    rc = tok_build_bpe(out, is_bytes, merges, n_merges, path);
done:
    free(merges);
    cJSON_Delete(root);
    return rc;
}

int rotary_tokenizer_load(rotary_tokenizer **out, const char *path) {
    if (!out || !path) return rotary_fail(ROTARY_EINVAL, "tokenizer load: NULL argument");
    *out = NULL;
    char *text;
    size_t n;
    int rc = rotary_read_file(path, MAX_FILE, "tokenizer file", &text, &n);
    if (rc != ROTARY_OK) return rc;
    rc = load_json(out, path, text, n);
    free(text);
    return rc;
}
