/* tokenizer_internal.h: the tokenizer object and the helpers its four kinds
 * share (src/tokenizer.c, tokenizer_llama.c, tokenizer_gpt2.c). Not installed.
 *
 * Every kind keeps, for each id, the bytes it decodes to (its "piece"), so
 * decode, piece and vocab_size are the same code for all. Encoding is the
 * kind's own: bytes and bpe in tokenizer.c, the model tokenizers through the
 * `encode` pointer, which keeps tokenizer.c from depending on their files. */
#ifndef ROTARY_TOKENIZER_INTERNAL_H
#define ROTARY_TOKENIZER_INTERNAL_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { TOK_BYTES = 0, TOK_BPE = 1, TOK_SPM = 2, TOK_GPT2 = 3 };

/* GGUF's token types (tokenizer.ggml.token_type). */
enum {
    TT_NORMAL = 1,
    TT_UNKNOWN = 2,
    TT_CONTROL = 3,
    TT_USER = 4, /* user-defined: matched whole in the text before anything else */
    TT_UNUSED = 5,
    TT_BYTE = 6, /* <0xXX>: SentencePiece's byte fallback */
};

#define TOK_MAX_VOCAB (1 << 24) /* ids of a model tokenizer */
#define TOK_MAX_PIECE 4096      /* bytes of one model token */

/* Interned byte strings: each distinct string gets an index (0, 1, ...);
 * lookups by content go through an open-addressing hash table. */
typedef struct {
    unsigned char *buf;
    size_t buf_len, buf_cap;
    uint32_t *off, *len; /* (n) where string i lies in buf */
    int n, cap;
    int *slot;           /* (slot_cap) string index + 1, 0 = empty */
    size_t slot_cap;     /* power of two, at least 2 n */
} tok_strtab;

/* Index of s[0..n) or -1. */
int tok_strtab_find(const tok_strtab *st, const void *s, size_t n);
/* Index of s[0..n), added if new (*added set when non-NULL); -1 when out of memory. */
int tok_strtab_intern(tok_strtab *st, const void *s, size_t n, int *added);
void tok_strtab_free(tok_strtab *st);
static inline const unsigned char *tok_strtab_str(const tok_strtab *st, int i) {
    return st->buf + st->off[i];
}

/* 64-bit mix (the finaliser of MurmurHash3) for hash tables of integers. */
static inline uint64_t tok_hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    return x;
}

/* Open-addressing map from a pair of non-negative ints (a, b) to an int. */
typedef struct {
    uint64_t *key; /* (cap) tok_pair_key(a, b); 0 = empty */
    int *val;      /* (cap) */
    size_t cap;    /* 0 or a power of two, at least 2 used + 2 */
    size_t used;
} tok_pair_map;

static inline uint64_t tok_pair_key(int a, int b) {
    return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
}
/* Room for n pairs in all (the table grows, keeping its contents); -1 when
 * out of memory, with no message set. */
int tok_pair_map_reserve(tok_pair_map *m, size_t n);
/* Map (a, b) to v unless it is mapped already; returns the value it has
 * then (v when added). The caller has reserved room for it. */
int tok_pair_map_put(tok_pair_map *m, int a, int b, int v);
void tok_pair_map_free(tok_pair_map *m);
/* The value of (a, b), or -1. */
static inline int tok_pair_map_get(const tok_pair_map *m, int a, int b) {
    if (!m->cap) return -1;
    const uint64_t key = tok_pair_key(a, b);
    for (size_t i = tok_hash_u64(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->key[i] == key) return m->val[i];
        if (!m->key[i]) return -1;
    }
}

/* Binary heaps over arrays of `size`-byte elements, in the order of
 * before(ctx, x, y): x leaves the heap before y. The caller reserves room
 * for push. Inline, so that each caller's before() is inlined too. */
typedef int (*tok_heap_before)(const void *ctx, const void *x, const void *y);

static inline void tok_heap_push(void *heap, size_t *n, const void *e, size_t size,
                                 tok_heap_before before, const void *ctx) {
    unsigned char *h = heap;
    size_t i = (*n)++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!before(ctx, e, h + up * size)) break;
        memcpy(h + i * size, h + up * size, size);
        i = up;
    }
    memcpy(h + i * size, e, size);
}

/* Take the first element out into *top (*n > 0). */
static inline void tok_heap_pop(void *heap, size_t *n, void *top, size_t size,
                                tok_heap_before before, const void *ctx) {
    unsigned char *h = heap;
    memcpy(top, h, size);
    /* The last element stays at h[n] (past the new end) while its place is found. */
    const size_t m = --*n;
    const unsigned char *last = h + m * size;
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && before(ctx, h + (c + 1) * size, h + c * size)) c++;
        if (!before(ctx, h + c * size, last)) break;
        memcpy(h + i * size, h + c * size, size);
        i = c;
    }
    if (m) memcpy(h + i * size, last, size);
}

struct rotary_tokenizer {
    int kind; /* TOK_* */
    int vocab;
    uint32_t *piece_off;  /* (vocab) into pieces */
    uint32_t *piece_len;  /* (vocab) */
    unsigned char *pieces;
    int bos, eos, unk;    /* -1: none */
    int add_bos;

    /* bytes, bpe (tokenizer.c) */
    int n_merges;
    int *merges;          /* (n_merges, 2) left, right */
    tok_pair_map rank;    /* bpe: (left, right) id -> merge index; gpt2: (left,
                           * right) string index -> rank, the first of repeats */

    /* spm, gpt2 (tokenizer_llama.c, tokenizer_gpt2.c) */
    unsigned char *type;  /* (vocab) TT_* */
    float *score;         /* (vocab) spm merge priority, NULL for gpt2 */
    tok_strtab str;       /* spm: the pieces of mergeable tokens; gpt2: every
                           * merge part and result, and every token's piece */
    int *str_token;       /* (str.n) the token spelled by that string, or -1 */
    int byte_token[256];  /* the id that stands for one byte, or -1 */
    int add_space_prefix; /* spm: a space is put in front of non-empty text */
    int *user;            /* user-defined ids, longest piece first */
    int n_user;
    unsigned char user_first[32]; /* bit set: some user-defined piece starts with that byte */
    uint32_t *text_off, *text_len; /* (vocab) the model's spelling of each */
    unsigned char *text;           /* token (for writing it back to GGUF) */
    /* gpt2 */
    int n_bpe;            /* merges, by rank */
    int *bpe;             /* (n_bpe, 3) left, right, result: string indices */
    char pre[32];         /* pre-tokenizer name */
    int ignore_merges;    /* a word that is a token is that token (llama-bpe) */
    void *re;             /* its compiled pattern (pcre2_code) */

    int (*encode)(const rotary_tokenizer *t, const unsigned char *s, size_t n, int **ids,
                  size_t *n_ids);
    void (*free_ext)(rotary_tokenizer *t); /* releases re */
};

/* Length (1..4) of the valid UTF-8 character at s (n > 0 bytes left) with its
 * code point, or 0 with *why set (overlong, surrogate, > U+10FFFF, truncated). */
int tok_utf8_next(const unsigned char *s, size_t n, uint32_t *cp, const char **why);
/* Byte offset of the first invalid UTF-8 sequence in s, or n. */
size_t tok_utf8_valid_prefix(const unsigned char *s, size_t n);

/* A zeroed tokenizer of `kind` with `vocab` ids: pieces empty, type NORMAL,
 * bos/eos/unk -1, byte_token -1. NULL on failure (message set). */
rotary_tokenizer *tok_alloc(int kind, int vocab, const char *what);
/* Check that bos, eos and unk are ids of t or -1 (none), and set them and add_bos. */
int tok_set_special(rotary_tokenizer *t, int bos, int eos, int unk, int add_bos,
                    const char *what);
/* Sum of the n token lengths len[]; fails when one is over TOK_MAX_PIECE or
 * the sum over max_total. */
int tok_total_len(const size_t *len, int n, size_t max_total, size_t *total, const char *what);
/* Our own tokenizers from merges (copied): kind TOK_BYTES (n == 0) or TOK_BPE. */
int tok_build_bpe(rotary_tokenizer **out, int is_bytes, const int *merges, int n,
                  const char *what);

/* Cut s[0..n) where user-defined tokens occur (SentencePiece's rule: at each
 * position the longest user-defined piece that starts there, scanning left
 * to right) and call emit for every stretch of plain text (id -1) and every
 * user-defined token (its id, s and n its piece in the text). */
int tok_split_user(const rotary_tokenizer *t, const unsigned char *s, size_t n,
                   int (*emit)(void *ctx, int id, const unsigned char *s, size_t n), void *ctx);
/* Fill t->user with the user-defined ids (type TT_USER, non-empty piece),
 * longest piece first, and user_first. */
int tok_collect_user(rotary_tokenizer *t);

/* Growable id array. */
typedef struct {
    int *v;
    size_t n, cap;
} tok_ids;
int tok_ids_push(tok_ids *a, int id);
/* The end of an encode: on success hand a's ids out (a valid pointer even for
 * none: callers free() it); otherwise free them. Returns rc, or ROTARY_ENOMEM. */
int tok_ids_finish(tok_ids *a, int rc, int **ids, size_t *n_ids);

/* The model tokenizers' constructors (arrays are copied). tokens[i] is the
 * model's spelling (len[i] bytes), types may be NULL (inferred: see
 * tokenizer_llama.c), scores may be NULL (all 0). bos/eos/unk < 0: none. */
typedef struct {
    int n;
    const char *const *tokens;
    const size_t *len;
    const float *scores;
    const int *types;
    int bos, eos, unk, add_bos, add_space_prefix;
    int spaces_escaped; /* tokens spell spaces as U+2581 (GGUF), not ' ' (llama2.c) */
} tok_spm_spec;
int tok_build_spm(rotary_tokenizer **out, const tok_spm_spec *spec, const char *what);

/* GPT-2 byte-level BPE: tokens and merges ("left right") spelled in GPT-2's
 * byte alphabet; rank = index in merges. types may be NULL (all normal). */
typedef struct {
    int n;
    const char *const *tokens;
    const size_t *len;
    const int *types;
    const char *const *merges;
    const size_t *merge_len;
    uint64_t n_merges;
    int bos, eos, unk, add_bos;
    const char *pre; /* pre-tokenizer name: "gpt-2" */
} tok_gpt2_spec;
int tok_build_gpt2(rotary_tokenizer **out, const tok_gpt2_spec *spec, const char *what);
/* Spell n bytes in GPT-2's byte alphabet into out (room for 2 n bytes);
 * returns the length. */
size_t tok_gpt2_spell(unsigned char *out, const unsigned char *s, size_t n);

#endif
