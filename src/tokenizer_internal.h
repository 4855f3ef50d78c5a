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
    uint64_t *rank_key;   /* open addressing: pair key + 1 (0 = empty) */
    int *rank_val;        /* merge index of that pair */
    size_t rank_cap;      /* power of two */

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
    uint64_t *bpe_key;    /* open addressing: (left, right) key + 1 */
    int *bpe_val;         /* rank */
    size_t bpe_cap;
    char pre[32];         /* pre-tokenizer name */
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
/* Our own tokenizers from merges (copied): kind TOK_BYTES (n == 0) or TOK_BPE. */
int tok_build_bpe(rotary_tokenizer **out, int is_bytes, const int *merges, int n,
                  const char *what);

/* Cut s[0..n) where user-defined tokens occur (SentencePiece's rule: at each
 * position the longest user-defined piece that starts there, scanning left
 * to right) and call emit for every stretch of plain text (id -1) and every
 * user-defined token (its id, s and n its piece in the text). */
int tok_split_user(const rotary_tokenizer *t, const unsigned char *s, size_t n,
                   int (*emit)(void *ctx, int id, const unsigned char *s, size_t n), void *ctx);
/* Sort t->user (already filled) longest piece first; fills user_first. */
int tok_sort_user(rotary_tokenizer *t);

/* Growable id array. */
typedef struct {
    int *v;
    size_t n, cap;
} tok_ids;
int tok_ids_push(tok_ids *a, int id);

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

#endif
