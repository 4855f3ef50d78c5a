/* test_llama2c: the llama2.c checkpoint reader on files we write here
 * (every weight lands in the right tensor) and on bad files (each a clean
 * error, never a crash or a read past the end). */
#include "check.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *PATH = "test_llama2c.bin";

static void write_file(const int32_t h[7], const float *w, size_t n, size_t cut) {
    FILE *f = fopen(PATH, "wb");
    unsigned char *buf = malloc(28 + n * 4);
    if (!f || !buf) {
        fprintf(stderr, "test_llama2c: cannot write %s\n", PATH);
        exit(1);
    }
    memcpy(buf, h, 28);
    memcpy(buf + 28, w, n * 4);
    size_t len = 28 + n * 4;
    fwrite(buf, 1, cut < len ? cut : len, f);
    fclose(f);
    free(buf);
}

/* Floats after the header for this shape. */
static size_t floats(int D, int H, int L, int nh, int nkv, int V, int S) {
    size_t kv = (size_t)nkv * (D / nh), hs = D / nh;
    size_t n = (size_t)abs(V) * D + L * D + (size_t)L * D * D * 2 + (size_t)L * kv * D * 2 +
               L * D + (size_t)L * D * H * 3 + D + (size_t)S * hs;
    return n + (V < 0 ? (size_t)-V * D : 0);
}

static float value_at(size_t i) { return (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f; }

int main(void) {
    /* A shape with GQA and an unshared classifier. */
    const int D = 16, H = 24, L = 2, nh = 4, nkv = 2, V = -40, S = 8, hs = D / nh, kv = nkv * hs;
    int32_t h[7] = {D, H, L, nh, nkv, V, S};
    size_t n = floats(D, H, L, nh, nkv, V, S);
    float *w = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) w[i] = value_at(i);
    write_file(h, w, n, SIZE_MAX);
    rotary_model m;
    int rc = rotary_model_load_llama2c(&m, PATH);
    EXPECT(rc == 0, "load: %s", rotary_last_error());
    if (rc == 0) {
        EXPECT(m.cfg.n_kv_head == 2 && !m.cfg.tied && m.cfg.vocab == 40 && m.cfg.ctx == S,
               "config");
        /* Spot-check one element of each array against its file position. */
        size_t off = 0;
        struct { const char *name; size_t per_layer; int layers; } a[] = {
            {"tok_emb.weight", (size_t)40 * D, 0}, {"layers.%d.norm1.weight", D, L},
            {"layers.%d.attn.q.weight", (size_t)D * D, L},
            {"layers.%d.attn.k.weight", (size_t)kv * D, L},
            {"layers.%d.attn.v.weight", (size_t)kv * D, L},
            {"layers.%d.attn.o.weight", (size_t)D * D, L}, {"layers.%d.norm2.weight", D, L},
            {"layers.%d.mlp.gate.weight", (size_t)H * D, L},
            {"layers.%d.mlp.down.weight", (size_t)D * H, L},
            {"layers.%d.mlp.up.weight", (size_t)H * D, L}, {"norm_f.weight", D, 0},
            {NULL, (size_t)S * hs, 0}, {"lm_head.weight", (size_t)40 * D, 0}};
        for (size_t k = 0; k < sizeof a / sizeof a[0]; k++) {
            int nl = a[k].layers ? a[k].layers : 1;
            for (int l = 0; l < nl; l++) {
                if (a[k].name) {
                    char name[64];
                    snprintf(name, sizeof name, a[k].name, l);
                    const rotary_tensor *t = rotary_model_tensor(&m, name);
                    EXPECT(t && t->numel == a[k].per_layer, "%s missing or mis-sized", name);
                    for (size_t j = 0; t && j < t->numel; j += 7)
                        if (m.params[t->offset + j] != value_at(off + j)) {
                            EXPECT(0, "%s[%zu] is not file float %zu", name, j, off + j);
                            break;
                        }
                }
                off += a[k].per_layer;
            }
        }
        EXPECT(off == n, "walked %zu of %zu floats", off, n);
        EXPECT(rotary_model_backward(&m) != 0, "backward on an inference-only model must fail");
        rotary_model_free(&m);
    }
    /* Truncated anywhere: a clean error. */
    size_t len = 28 + n * 4;
    for (size_t cut = 0; cut < len; cut += cut < 64 ? 1 : 97) {
        write_file(h, w, n, cut);
        EXPECT(rotary_model_load_llama2c(&m, PATH) != 0, "truncated at %zu accepted", cut);
    }
    /* Bad headers (file contents otherwise the same size). */
    const int32_t bad[][7] = {
        {0, H, L, nh, nkv, V, S},          {D, H, L, nh, nkv, 0, S},
        {D, H, L, 5, nkv, V, S},           {D, H, L, nh, 3, V, S},
        {D, -1, L, nh, nkv, V, S},         {1 << 30, H, L, nh, nkv, V, S},
        {D, H, 1 << 24, nh, nkv, V, S},    {D, H, L, nh, nkv, INT32_MIN, S},
        {D, H, L, nh, nkv, V, 1 << 24},    {18, H, L, 6, 3, V, S}, /* odd head size 3 */
        {D, H, L, nh, nkv, -V, S},         /* claims a shared classifier: size differs */
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        write_file(bad[k], w, n, SIZE_MAX);
        rc = rotary_model_load_llama2c(&m, PATH);
        EXPECT(rc != 0 && *rotary_last_error(), "bad header %zu accepted", k);
    }
    /* Trailing bytes. */
    float *w2 = calloc(n + 1, sizeof(float));
    memcpy(w2, w, n * sizeof(float));
    write_file(h, w2, n + 1, SIZE_MAX);
    EXPECT(rotary_model_load_llama2c(&m, PATH) != 0, "trailing bytes accepted");
    EXPECT(rotary_model_load_llama2c(&m, "/nonexistent/x.bin") == ROTARY_EIO, "missing file");
    EXPECT(rotary_model_load_llama2c(&m, ".") != 0, "a directory");
    remove(PATH);
    free(w);
    free(w2);
    return check_summary("test_llama2c");
}
