/* gguf_model.c: rotary_model_load_gguf on any bytes.
 *
 * Covers: general.architecture, the llama.* hyperparameters (ranges, head
 * divisibility, rope dimension count, rope scaling keys, per-pair factors
 * in rope_freqs.weight), the presence,
 * shape and type of every tensor, and the conversion of F32, F16, BF16 and
 * Q8_0 tensors. A model that loads must be valid and, when small, run one
 * decoding step. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file("gguf_model", data, size);
    rotary_gguf *g = NULL;
    if (rotary_gguf_open(&g, path) != ROTARY_OK) return 0;
    rotary_model m;
    if (rotary_model_load_gguf(&m, g) == ROTARY_OK) {
        FUZZ_CHECK(rotary_config_validate(&m.cfg) == ROTARY_OK, "loaded an invalid config: %s",
                   rotary_last_error());
        fuzz_touch(m.params, m.n_params * sizeof(float));
        fuzz_decode_step(&m);
        rotary_model_free(&m);
    }
    rotary_gguf_close(g);
    return 0;
}
