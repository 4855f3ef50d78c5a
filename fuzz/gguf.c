/* gguf.c: rotary_gguf_open and every getter on any bytes.
 *
 * Covers: the header (magic, version, counts), every key/value (types,
 * strings, arrays, arrays of arrays, depth), general.alignment, the tensor
 * infos (names, dims, ggml types, offsets, sizes, overlap), and then, for an
 * accepted file: kv_key/kv_type/kv_value/find of every key, the typed
 * getters on every key (scalars and the first and last element of arrays),
 * find_tensor and tensor_f32 of every tensor of up to 1M values. Whatever
 * the reader hands out must lie inside the file. */
#include "fuzz_common.h"

static float buf[1 << 20];

static void check_array(const rotary_gguf *g, const char *key, uint64_t n) {
    uint64_t idx[3] = {0, n / 2, n - 1};
    for (int k = 0; k < 3 && n > 0; k++) {
        int64_t iv;
        double dv;
        const char *s;
        size_t len;
        (void)rotary_gguf_array_int(g, key, idx[k], &iv);
        (void)rotary_gguf_array_float(g, key, idx[k], &dv);
        if (rotary_gguf_array_string(g, key, idx[k], &s, &len) == ROTARY_OK) fuzz_touch(s, len);
    }
    int64_t iv;
    FUZZ_CHECK(rotary_gguf_array_int(g, key, n, &iv) != ROTARY_OK, "index n accepted");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file("gguf", data, size);
    rotary_gguf *g = NULL;
    if (rotary_gguf_open(&g, path) != ROTARY_OK) {
        FUZZ_CHECK(g == NULL, "failed open left a handle");
        return 0;
    }
    const int v = rotary_gguf_version(g);
    FUZZ_CHECK(v == 2 || v == 3, "version %d", v);
    const int n_kv = rotary_gguf_n_kv(g);
    for (int i = 0; i < n_kv; i++) {
        const char *key = rotary_gguf_kv_key(g, i);
        FUZZ_CHECK(key != NULL, "key %d is NULL", i);
        fuzz_touch(key, strlen(key) + 1);
        FUZZ_CHECK(rotary_gguf_find(g, key) == i, "find(key %d) = %d", i, rotary_gguf_find(g, key));
        const int type = rotary_gguf_kv_type(g, i);
        FUZZ_CHECK(type >= 0 && type <= ROTARY_GGUF_F64, "type %d", type);
        const void *val = NULL;
        size_t n_bytes = 0;
        FUZZ_CHECK(rotary_gguf_kv_value(g, i, &val, &n_bytes) == ROTARY_OK, "kv_value %d", i);
        FUZZ_CHECK(val != NULL && n_bytes > 0, "empty value %d", i);
        fuzz_touch(val, n_bytes);
        int64_t iv;
        double dv;
        const char *s;
        size_t len;
        (void)rotary_gguf_get_int(g, key, &iv);
        (void)rotary_gguf_get_float(g, key, &dv);
        if (rotary_gguf_get_string(g, key, &s, &len) == ROTARY_OK) fuzz_touch(s, len);
        int et;
        uint64_t n;
        if (rotary_gguf_get_array(g, key, &et, &n) == ROTARY_OK) check_array(g, key, n);
    }
    FUZZ_CHECK(rotary_gguf_kv_key(g, n_kv) == NULL && rotary_gguf_kv_type(g, -1) == -1,
               "out-of-range index accepted");
    const int n_t = rotary_gguf_n_tensors(g);
    for (int i = 0; i < n_t; i++) {
        const rotary_gguf_tensor *t = rotary_gguf_tensor_at(g, i);
        FUZZ_CHECK(t && t->name, "tensor %d", i);
        FUZZ_CHECK(rotary_gguf_find_tensor(g, t->name) == t, "find_tensor(%s)", t->name);
        FUZZ_CHECK(t->n_dims >= 1 && t->n_dims <= 4, "n_dims %d", t->n_dims);
        fuzz_touch(t->data, t->n_bytes);
        if (t->n_elements <= (int64_t)(sizeof buf / sizeof buf[0]))
            (void)rotary_gguf_tensor_f32(t, buf);
    }
    FUZZ_CHECK(rotary_gguf_tensor_at(g, n_t) == NULL, "tensor_at(n) accepted");
    rotary_gguf_close(g);
    return 0;
}
