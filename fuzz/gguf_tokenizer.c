/* gguf_tokenizer.c: rotary_tokenizer_from_gguf on any bytes.
 *
 * Covers: tokenizer.ggml.model (llama, gpt2, our rotary-v1), the tokens,
 * token types, scores, merges (and our merge ids), bos/eos/unk/padding ids,
 * add_bos and add_space_prefix flags, the pre-tokenizer name; then a
 * tokenizer that loads must encode and decode a fixed text and a slice of
 * the input, ids in range, and write itself back to GGUF. */
#include "fuzz_common.h"

static const uint8_t TEXT[] =
    "Hello world, it's 2024! \xE2\x96\x81 caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC "
    "\xF0\x9F\x98\x80 \xFF\xC3 <s> <|endoftext|>\n\n  x";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file("gguf_tokenizer", data, size);
    rotary_gguf *g = NULL;
    if (rotary_gguf_open(&g, path) != ROTARY_OK) return 0;
    rotary_tokenizer *t = NULL;
    if (rotary_tokenizer_from_gguf(&t, g) == ROTARY_OK) {
        const int vocab = rotary_tokenizer_vocab_size(t);
        FUZZ_CHECK(vocab > 0, "vocab %d", vocab);
        const int bos = rotary_tokenizer_bos(t), eos = rotary_tokenizer_eos(t);
        FUZZ_CHECK(bos >= -1 && bos < vocab && eos >= -1 && eos < vocab, "bos %d eos %d", bos,
                   eos);
        fuzz_round_trip(t, "gguf tokenizer", TEXT, sizeof TEXT - 1, NULL, 0, 1);
        size_t k = size < 512 ? size : 512;
        fuzz_round_trip(t, "gguf tokenizer", data + size - k, k, NULL, 0, 1);
        /* Writing it back must work for whatever we accepted. */
        rotary_gguf_writer *w = NULL;
        if (rotary_gguf_writer_new(&w) == ROTARY_OK) {
            int rc = rotary_tokenizer_to_gguf(t, w);
            FUZZ_CHECK(rc == ROTARY_OK, "to_gguf of a loaded tokenizer: %s", rotary_last_error());
            rotary_gguf_writer_free(w);
        }
        rotary_tokenizer_free(t);
    } else {
        FUZZ_CHECK(t == NULL, "failed load left a tokenizer");
    }
    rotary_gguf_close(g);
    return 0;
}
