/* safetensors.c: rotary_st_open and the checkpoint loader on any bytes.
 *
 * Covers: the 8-byte header length, the JSON header (cJSON), dtypes,
 * shapes, data_offsets and their bounds, __metadata__, duplicate names;
 * then rotary_checkpoint_load (the model config in the metadata, its
 * validation, the tensor table against the config) and
 * rotary_checkpoint_load_optim. An accepted file must hand out tensors
 * that lie inside the mapping. */
#include "fuzz_common.h"

/* Names a checkpoint of a small model has, and a few that files in the
 * corpus use. */
static const char *const NAMES[] = {
    "tok_emb.weight", "pos_emb.weight", "norm_f.weight", "norm_f.bias", "lm_head.weight",
    "layers.0.attn.q.weight", "layers.0.norm1.weight", "layers.0.mlp.down.weight",
    "rel_bias.weight", "optim.m", "optim.v", "a", "b", "x", "ids",
};
static const char *const KEYS[] = {"format", "format_version", "n_layer", "d_model", "vocab",
                                   "rope_scaling", "optim.step", "pos", "attn"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file("safetensors", data, size);
    rotary_st_file *f = NULL;
    if (rotary_st_open(&f, path) == ROTARY_OK) {
        for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++) {
            rotary_st_tensor t;
            if (rotary_st_find(f, NAMES[i], &t) != ROTARY_OK) continue;
            FUZZ_CHECK(t.ndim >= 0 && t.ndim <= 4, "ndim %d", t.ndim);
            size_t numel = 1;
            for (int d = 0; d < t.ndim; d++) {
                FUZZ_CHECK(t.shape[d] >= 0, "negative dim");
                numel *= (size_t)t.shape[d];
            }
            fuzz_touch(t.data, numel * 4);
        }
        for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++) {
            const char *v = rotary_st_meta(f, KEYS[i]);
            if (v) fuzz_touch(v, strlen(v));
        }
        rotary_st_close(f);
    } else {
        FUZZ_CHECK(f == NULL, "failed open left a file");
    }

    rotary_model m;
    if (rotary_checkpoint_load(path, &m) == ROTARY_OK) {
        FUZZ_CHECK(rotary_config_validate(&m.cfg) == ROTARY_OK, "loaded an invalid config: %s",
                   rotary_last_error());
        fuzz_touch(m.params, m.n_params * sizeof(float));
        rotary_adamw opt;
        if (rotary_adamw_init(&opt, m.n_params) == ROTARY_OK) {
            (void)rotary_checkpoint_load_optim(path, &m, &opt);
            rotary_adamw_free(&opt);
        }
        rotary_model_free(&m);
    }
    return 0;
}
