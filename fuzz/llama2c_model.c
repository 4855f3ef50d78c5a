/* llama2c_model.c: rotary_model_load_llama2c on any bytes.
 *
 * Covers: the 7-int header (ranges, head and kv-head divisibility, sizes
 * that overflow), the exact file size the header implies, the copy of every
 * weight array into our layout. A model that loads must be valid and, when
 * small, run one decoding step. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file("llama2c_model", data, size);
    rotary_model m;
    if (rotary_model_load_llama2c(&m, path) != ROTARY_OK) return 0;
    FUZZ_CHECK(rotary_config_validate(&m.cfg) == ROTARY_OK, "loaded an invalid config: %s",
               rotary_last_error());
    fuzz_touch(m.params, m.n_params * sizeof(float));
    fuzz_decode_step(&m);
    rotary_model_free(&m);
    return 0;
}
