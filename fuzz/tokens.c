/* tokens.c: rotary_tokens_load and rotary_tokens_is_file on any bytes.
 *
 * Covers: the 32-byte header (magic, vocab, bytes per token, count), the
 * count against the file size, every id against the vocabulary. What loads
 * must hold count ids, each in [0, vocab). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file("tokens", data, size);
    int is = rotary_tokens_is_file(path);
    FUZZ_CHECK(is == (size >= 8 && memcmp(data, "RTOKENS1", 8) == 0), "is_file %d", is);
    int *ids = NULL, vocab = 0;
    size_t n = 0;
    if (rotary_tokens_load(path, &ids, &n, &vocab) != ROTARY_OK) {
        FUZZ_CHECK(ids == NULL && n == 0, "failed load left ids");
        return 0;
    }
    FUZZ_CHECK(is == 1, "loaded a file without the magic");
    FUZZ_CHECK(vocab >= 1 && n <= size, "vocab %d, %zu ids from %zu bytes", vocab, n, size);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab, "id %d at %zu, vocab %d", ids[i], i, vocab);
    free(ids);
    return 0;
}
