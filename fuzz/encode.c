/* encode.c: rotary_tokenizer_encode and _decode of every tokenizer kind on
 * any bytes.
 *
 * The tokenizers are fixed (loaded once from fuzz/data/, made by
 * fuzz/make_corpus.c): bytes; our BPE (bpe.json, 512 ids); SentencePiece
 * from llama2.c's tok512.bin; SentencePiece from a GGUF (the first 2000
 * tokens of llama.cpp's Llama vocabulary: control, byte and normal types);
 * GPT-2 byte-level BPE from a GGUF (the first 2000 tokens of GPT-2's
 * vocabulary and the merges among them, PCRE2 pre-tokenizer). Each encodes
 * the input, and the round trip must be exact: decode(encode(x)) == x for
 * bytes, BPE and GPT-2; " " + x with U+2581 read as a space for
 * SentencePiece (its space prefix and escaped space; every byte has a
 * <0xXX> token in these vocabularies). The input is also decoded as a list
 * of 16-bit ids, which must succeed exactly when every id is in range. */
#include "fuzz_common.h"

enum { K_BYTES, K_BPE, K_LLAMA2C, K_SPM_GGUF, K_GPT2, N_KINDS };
static rotary_tokenizer *toks[N_KINDS];
static const char *const kind_name[N_KINDS] = {"bytes", "bpe", "llama2c spm", "gguf spm",
                                               "gguf gpt2"};

static rotary_tokenizer *from_gguf(const char *file) {
    char p[1024];
    rotary_gguf *g = NULL;
    rotary_tokenizer *t = NULL;
    if (rotary_gguf_open(&g, fuzz_data_path(file, p, sizeof p)) != ROTARY_OK ||
        rotary_tokenizer_from_gguf(&t, g) != ROTARY_OK) {
        fprintf(stderr, "fuzz encode: cannot load %s: %s\n", p, rotary_last_error());
        abort();
    }
    rotary_gguf_close(g);
    return t;
}

static void init(void) {
    char p[1024];
    if (rotary_tokenizer_bytes(&toks[K_BYTES]) != ROTARY_OK ||
        rotary_tokenizer_load(&toks[K_BPE], fuzz_data_path("bpe.json", p, sizeof p)) !=
            ROTARY_OK ||
        rotary_tokenizer_load_llama2c(&toks[K_LLAMA2C], fuzz_data_path("tok512.bin", p, sizeof p),
                                      0) != ROTARY_OK) {
        fprintf(stderr, "fuzz encode: cannot load the tokenizers in fuzz/data (%s)\n",
                rotary_last_error());
        abort();
    }
    toks[K_SPM_GGUF] = from_gguf("llama-spm.gguf");
    toks[K_GPT2] = from_gguf("gpt2.gguf");
}

static unsigned char want[2 * 65536];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!toks[0]) init();
    if (size > 65536) return 0;
    for (int k = 0; k < N_KINDS; k++) {
        const rotary_tokenizer *t = toks[k];
        size_t m = 0;
        if (rotary_tokenizer_space_prefix(t)) {
            if (size) want[m++] = ' ';
            for (size_t i = 0; i < size;) {
                if (i + 3 <= size && !memcmp(data + i, "\xE2\x96\x81", 3)) {
                    want[m++] = ' ';
                    i += 3;
                } else {
                    want[m++] = data[i++];
                }
            }
        } else {
            memcpy(want, data, size);
            m = size;
        }
        fuzz_round_trip(t, kind_name[k], data, size, want, m, 0);

        /* The input as little-endian 16-bit ids. */
        size_t n_ids = size / 2;
        int *ids = malloc((n_ids ? n_ids : 1) * sizeof *ids);
        FUZZ_CHECK(ids != NULL, "malloc");
        const int vocab = rotary_tokenizer_vocab_size(t);
        int in_range = 1;
        for (size_t i = 0; i < n_ids; i++) {
            ids[i] = (int)(int16_t)(data[2 * i] | data[2 * i + 1] << 8);
            in_range &= ids[i] >= 0 && ids[i] < vocab;
        }
        unsigned char *out = NULL;
        size_t n_out = 0;
        int rc = rotary_tokenizer_decode(t, ids, n_ids, &out, &n_out);
        FUZZ_CHECK((rc == ROTARY_OK) == in_range, "%s: decode rc %d, ids in range %d",
                   kind_name[k], rc, in_range);
        if (rc == ROTARY_OK) fuzz_touch(out, n_out);
        free(out);
        free(ids);
    }
    return 0;
}
