/* tokenizer_json.c: rotary_tokenizer_load (our JSON tokenizer file) on any
 * bytes.
 *
 * Covers: the JSON parse, format, version, type (bytes | bpe), pretokenizer,
 * vocab_size against the merge count, every merge (a pair of earlier ids),
 * duplicate merges. Ours promise an exact round trip for any bytes, so a
 * tokenizer that loads must give decode(encode(x)) == x for a fixed text
 * and for the input itself, and save and load back to the same ids. */
#include "fuzz_common.h"

static const uint8_t TEXT[] = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
                              "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 \xFF\xC3\x28";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file("tokenizer_json", data, size);
    rotary_tokenizer *t = NULL;
    if (rotary_tokenizer_load(&t, path) != ROTARY_OK) {
        FUZZ_CHECK(t == NULL, "failed load left a tokenizer");
        return 0;
    }
    const int vocab = rotary_tokenizer_vocab_size(t);
    FUZZ_CHECK(vocab >= 256 && vocab <= 65536, "vocab %d", vocab);
    fuzz_round_trip(t, "tokenizer json", TEXT, sizeof TEXT - 1, TEXT, sizeof TEXT - 1, 0);
    size_t k = size < 2048 ? size : 2048;
    fuzz_round_trip(t, "tokenizer json", data, k, data, k, 0);
    rotary_tokenizer_free(t);
    return 0;
}
