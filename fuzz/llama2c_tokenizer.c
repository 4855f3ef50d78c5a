/* llama2c_tokenizer.c: rotary_tokenizer_load_llama2c on any bytes.
 *
 * The first input byte picks the vocab_size argument (0: read to the end of
 * the file; otherwise a small count), the rest is the file. Covers:
 * max_token_length, every (score, length, bytes) entry, truncation, the
 * SentencePiece construction (byte tokens <0xXX>, duplicates, scores). A
 * tokenizer that loads must encode and decode a fixed text and a slice of
 * the input with every id in range. */
#include "fuzz_common.h"

static const uint8_t TEXT[] = "Once upon a time, \xE2\x96\x81 caf\xC3\xA9 \xFF<0x41> <s>\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const int VOCABS[8] = {0, 0, 0, 0, 1, 3, 259, 512};
    int vocab = VOCABS[data[0] & 7];
    const char *path = fuzz_input_file("llama2c_tokenizer", data + 1, size - 1);
    rotary_tokenizer *t = NULL;
    if (rotary_tokenizer_load_llama2c(&t, path, vocab) != ROTARY_OK) {
        FUZZ_CHECK(t == NULL, "failed load left a tokenizer");
        return 0;
    }
    FUZZ_CHECK(vocab == 0 || rotary_tokenizer_vocab_size(t) == vocab, "vocab %d, asked %d",
               rotary_tokenizer_vocab_size(t), vocab);
    fuzz_round_trip(t, "llama2.c tokenizer", TEXT, sizeof TEXT - 1, NULL, 0, 1);
    size_t k = size - 1 < 256 ? size - 1 : 256;
    fuzz_round_trip(t, "llama2.c tokenizer", data + 1, k, NULL, 0, 1);
    rotary_tokenizer_free(t);
    return 0;
}
