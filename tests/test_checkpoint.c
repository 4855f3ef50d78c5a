/* test_checkpoint.c: safetensors I/O and model checkpoints.
 *
 * (a) rotary_st_write / rotary_st_open round trip (F32 and I32, ranks 0..4,
 *     metadata); (b) checkpoint round trips over several configs; (c) bad
 *     input: every malformed file must fail with a code and a message that
 *     names the problem; (d) atomic saving. Exit status 0 when all pass. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE

#include "check.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

/* ------------------------------------------------------------- file helpers */

/* tmpdir/name in one of 8 rotating buffers: copy it to keep it longer. */
static const char *tpath(const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    if (n && fwrite(data, 1, n, f) != n) {
        perror(path);
        exit(2);
    }
    fclose(f);
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    if (fread(b, 1, (size_t)len, f) != (size_t)len) {
        free(b);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* A safetensors-like file: u64 header length (hlen, or the JSON length when
 * hlen == 0), then the header JSON, then data. */
static void write_st_raw(const char *path, uint64_t hlen, const char *json, const void *data,
                         size_t data_len) {
    size_t jl = strlen(json);
    if (hlen == 0) hlen = jl;
    size_t total = 8 + jl + data_len;
    unsigned char *b = malloc(total);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8, json, jl);
    if (data_len) memcpy(b + 8 + jl, data, data_len);
    write_bytes(path, b, total);
    free(b);
}

/* Like write_st_raw but pads the JSON with spaces to a multiple of 8. */
static void write_st(const char *path, const char *json, const void *data, size_t data_len) {
    size_t jl = strlen(json), pl = (jl + 7) & ~(size_t)7;
    char *j = malloc(pl + 1);
    memcpy(j, json, jl);
    memset(j + jl, ' ', pl - jl);
    j[pl] = '\0';
    write_st_raw(path, 0, j, data, data_len);
    free(j);
}

static int contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++) {
        size_t i = 0;
        while (i < n && p[i] && tolower((unsigned char)p[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n) return 1;
    }
    return n == 0;
}

/* Count directory entries whose name contains s. */
static int count_entries(const char *dir, const char *s) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, s)) n++;
    closedir(d);
    return n;
}

static void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        chmod(path, 0755);
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d))) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
                char sub[1024];
                snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
                remove_tree(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* ------------------------------------------------------------ expectations */

/* rotary_st_open must fail with a message containing needle. */
static void expect_open_fail(const char *label, const char *path, const char *needle) {
    rotary_st_file *f = (rotary_st_file *)1;
    int rc = rotary_st_open(&f, path);
    const char *msg = rotary_last_error();
    printf("  %-34s rc=%d msg=\"%s\"\n", label, rc, msg);
    EXPECT(rc != 0, "%s: open succeeded", label);
    EXPECT(f == NULL, "%s: *f not NULL after failure", label);
    EXPECT(msg[0] != '\0', "%s: empty error message", label);
    EXPECT(contains_ci(msg, needle), "%s: message lacks \"%s\"", label, needle);
    if (rc == 0 && f) rotary_st_close(f);
}

static int model_is_empty(const rotary_model *m) {
    return m->params == NULL && m->grads == NULL && m->tensors == NULL && m->n_tensors == 0 &&
           m->n_params == 0;
}

/* rotary_checkpoint_load must fail, name the problem and leave *m empty. */
static void expect_load_fail(const char *label, const char *path, const char *needle,
                             const char *needle2) {
    rotary_model m;
    memset(&m, 0xAB, sizeof m); /* garbage in: load must not trust it */
    int rc = rotary_checkpoint_load(path, &m);
    const char *msg = rotary_last_error();
    printf("  %-34s rc=%d msg=\"%s\"\n", label, rc, msg);
    EXPECT(rc != 0, "%s: load succeeded", label);
    EXPECT(msg[0] != '\0', "%s: empty error message", label);
    EXPECT(contains_ci(msg, needle), "%s: message lacks \"%s\"", label, needle);
    if (needle2) EXPECT(contains_ci(msg, needle2), "%s: message lacks \"%s\"", label, needle2);
    EXPECT(model_is_empty(&m), "%s: model not left empty", label);
    if (rc == 0) rotary_model_free(&m);
}

/* ------------------------------------------------------ (a) st round trip */

static void test_st_roundtrip(void) {
    printf("(a) safetensors round trip\n");
    float scalar = 3.25f;
    int32_t i1[5] = {0, -1, 2147483647, -2147483647 - 1, 42};
    float f2[12];
    for (int i = 0; i < 12; i++) f2[i] = (float)i * 0.1f - 0.5f;
    f2[3] = -0.0f;
    f2[4] = INFINITY;
    f2[5] = NAN;
    f2[6] = 1e-45f; /* denormal */
    int32_t i3[12];
    for (int i = 0; i < 12; i++) i3[i] = i * i - 7;
    float f4[2 * 1 * 3 * 2];
    for (int i = 0; i < 12; i++) f4[i] = (float)(i + 100);
    float empty_dummy = 0.0f;

    rotary_st_tensor t[6] = {
        {"scalar", ROTARY_F32, 0, {0}, &scalar},
        {"ints.1d", ROTARY_I32, 1, {5}, i1},
        {"floats.2d", ROTARY_F32, 2, {3, 4}, f2},
        {"ints.3d", ROTARY_I32, 3, {2, 3, 2}, i3},
        {"floats.4d", ROTARY_F32, 4, {2, 1, 3, 2}, f4},
        {"empty", ROTARY_F32, 2, {0, 7}, &empty_dummy},
    };
    const char *meta[] = {"purpose", "test", "quote", "a \"quoted\"\nline\\ and \xc3\xa9",
                          "empty", ""};
    const char *path = tpath("round.safetensors");
    int rc = rotary_st_write(path, t, 6, meta, 3);
    printf("  write rc=%d %s\n", rc, rc ? rotary_last_error() : "");
    EXPECT(rc == 0, "st_write failed: %s", rotary_last_error());

    /* Layout: data starts 8-byte aligned, length prefix is little-endian. */
    size_t n = 0;
    unsigned char *raw = read_all(path, &n);
    EXPECT(raw != NULL, "cannot read back %s", path);
    if (raw) {
        uint64_t hl = 0;
        for (int i = 0; i < 8; i++) hl |= (uint64_t)raw[i] << (8 * i);
        size_t data_bytes = 4 + 20 + 48 + 48 + 48 + 0;
        printf("  file %zu bytes, header %llu bytes, data %zu bytes\n", n,
               (unsigned long long)hl, data_bytes);
        EXPECT((8 + hl) % 8 == 0, "data start %llu not 8-aligned", (unsigned long long)(8 + hl));
        EXPECT(8 + hl + data_bytes == n, "size %zu != 8 + %llu + %zu", n, (unsigned long long)hl,
               data_bytes);
        EXPECT(raw[8] == '{', "header does not start with '{'");
        free(raw);
    }

    rotary_st_file *f = NULL;
    rc = rotary_st_open(&f, path);
    EXPECT(rc == 0 && f, "st_open failed: %s", rotary_last_error());
    if (!f) return;
    for (int i = 0; i < 6; i++) {
        rotary_st_tensor got;
        rc = rotary_st_find(f, t[i].name, &got);
        EXPECT(rc == 0, "find %s: %s", t[i].name, rotary_last_error());
        if (rc) continue;
        size_t numel = 1;
        int same_shape = got.ndim == t[i].ndim;
        for (int d = 0; d < t[i].ndim; d++) {
            numel *= (size_t)t[i].shape[d];
            if (same_shape && got.shape[d] != t[i].shape[d]) same_shape = 0;
        }
        int same_bits = numel == 0 || memcmp(got.data, t[i].data, numel * 4) == 0;
        printf("  %-10s dtype=%d ndim=%d numel=%zu shape %s, bits %s\n", got.name, got.dtype,
               got.ndim, numel, same_shape ? "same" : "DIFFERENT",
               same_bits ? "same" : "DIFFERENT");
        EXPECT(strcmp(got.name, t[i].name) == 0, "name %s != %s", got.name, t[i].name);
        EXPECT(got.dtype == t[i].dtype, "%s dtype %d != %d", t[i].name, got.dtype, t[i].dtype);
        EXPECT(same_shape, "%s shape differs", t[i].name);
        EXPECT(same_bits, "%s data differs", t[i].name);
        EXPECT(((uintptr_t)got.data & 3) == 0, "%s data not 4-byte aligned", t[i].name);
    }
    for (int i = 0; i < 3; i++) {
        const char *v = rotary_st_meta(f, meta[2 * i]);
        printf("  meta %s = \"%s\"\n", meta[2 * i], v ? v : "(null)");
        EXPECT(v && strcmp(v, meta[2 * i + 1]) == 0, "meta %s wrong", meta[2 * i]);
    }
    EXPECT(rotary_st_meta(f, "nope") == NULL, "absent meta key found");
    rotary_st_tensor got;
    rc = rotary_st_find(f, "missing.tensor", &got);
    printf("  find absent tensor: rc=%d msg=\"%s\"\n", rc, rotary_last_error());
    EXPECT(rc == ROTARY_EFORMAT, "find of an absent tensor returned %d", rc);
    EXPECT(contains_ci(rotary_last_error(), "missing.tensor"), "message lacks the name");
    rotary_st_close(f);

    /* No tensors, no metadata: still a valid file. */
    rc = rotary_st_write(tpath("empty.safetensors"), NULL, 0, NULL, 0);
    EXPECT(rc == 0, "write of an empty file: %s", rotary_last_error());
    rc = rotary_st_open(&f, tpath("empty.safetensors"));
    EXPECT(rc == 0, "open of an empty file: %s", rotary_last_error());
    if (rc == 0) rotary_st_close(f);

    /* Bad arguments to write. */
    rotary_st_tensor dup[2] = {t[0], t[0]};
    rc = rotary_st_write(tpath("dup.safetensors"), dup, 2, NULL, 0);
    printf("  write duplicate names: rc=%d msg=\"%s\"\n", rc, rotary_last_error());
    EXPECT(rc != 0 && contains_ci(rotary_last_error(), "twice"), "duplicate names accepted");
    rotary_st_tensor bad = t[2];
    bad.dtype = 7;
    rc = rotary_st_write(tpath("bad.safetensors"), &bad, 1, NULL, 0);
    printf("  write bad dtype: rc=%d msg=\"%s\"\n", rc, rotary_last_error());
    EXPECT(rc != 0 && contains_ci(rotary_last_error(), "dtype"), "bad dtype accepted");
    bad = t[2];
    bad.shape[0] = -3;
    rc = rotary_st_write(tpath("bad.safetensors"), &bad, 1, NULL, 0);
    printf("  write negative shape: rc=%d msg=\"%s\"\n", rc, rotary_last_error());
    EXPECT(rc != 0 && contains_ci(rotary_last_error(), "shape"), "negative shape accepted");
    bad = t[2];
    bad.name = "this.name.is.much.longer.than.sixty.three.bytes.which.is.our.limit.x";
    rc = rotary_st_write(tpath("bad.safetensors"), &bad, 1, NULL, 0);
    printf("  write long name: rc=%d msg=\"%s\"\n", rc, rotary_last_error());
    EXPECT(rc != 0 && contains_ci(rotary_last_error(), "name"), "long name accepted");
    EXPECT(access(tpath("bad.safetensors"), F_OK) != 0, "a failed write left a file");
    EXPECT(count_entries(tmpdir, ".tmp.") == 0, "temp files left behind");
}

/* ------------------------------------------------- (b) checkpoint round trip */

static void small_config(rotary_config *c) {
    rotary_config_default(c);
    c->n_layer = 2;
    c->n_head = 4;
    c->n_kv_head = 4;
    c->d_model = 32;
    c->d_ff = 48;
    c->ctx = 16;
    c->vocab = 40;
}

static int same_config(const rotary_config *a, const rotary_config *b) {
    int ok = 1;
#define SAME(field)                                                   \
    if (memcmp(&a->field, &b->field, sizeof a->field) != 0) {         \
        printf("    config field %s differs\n", #field);             \
        ok = 0;                                                       \
    }
    SAME(n_layer) SAME(n_head) SAME(n_kv_head) SAME(d_model) SAME(d_ff) SAME(ctx) SAME(vocab)
    SAME(norm) SAME(mlp) SAME(pos) SAME(rope_pairing) SAME(rope_base) SAME(rotary_dim)
    SAME(tied) SAME(bias) SAME(norm_eps) SAME(init_std) SAME(sin_amplitude)
    SAME(rope_scaling) SAME(attn) SAME(t5_buckets) SAME(t5_max_distance)
#undef SAME
    return ok;
}

static int same_model(const rotary_model *a, const rotary_model *b) {
    if (!same_config(&a->cfg, &b->cfg)) return 0;
    if (a->n_params != b->n_params || a->n_tensors != b->n_tensors) {
        printf("    sizes differ: %zu/%d vs %zu/%d\n", a->n_params, a->n_tensors, b->n_params,
               b->n_tensors);
        return 0;
    }
    for (int i = 0; i < a->n_tensors; i++) {
        const rotary_tensor *x = &a->tensors[i], *y = &b->tensors[i];
        if (strcmp(x->name, y->name) || x->ndim != y->ndim || x->shape[0] != y->shape[0] ||
            x->shape[1] != y->shape[1] || x->offset != y->offset) {
            printf("    tensor %d differs: %s vs %s\n", i, x->name, y->name);
            return 0;
        }
    }
    if (memcmp(a->params, b->params, a->n_params * sizeof(float)) != 0) {
        printf("    parameters differ\n");
        return 0;
    }
    return 1;
}

typedef struct {
    const char *label;
    void (*tweak)(rotary_config *c);
} variant;

static void v_default(rotary_config *c) { (void)c; }
static void v_learned(rotary_config *c) {
    c->pos = ROTARY_POS_LEARNED;
    c->norm = ROTARY_NORM_LAYER;
    c->mlp = ROTARY_MLP_GELU;
    c->bias = 1;
    c->tied = 0;
    c->init_std = 0.01f;
}
static void v_gqa_half(rotary_config *c) {
    c->n_kv_head = 2;
    c->rotary_dim = 4;
    c->rope_pairing = ROTARY_ROPE_HALF;
    c->rope_base = 500000.123456789;
    c->norm_eps = 1e-6f;
    c->bias = 1;
}
static void v_yarn(rotary_config *c) {
    c->rope_scaling.type = ROTARY_ROPE_SCALING_YARN;
    c->rope_scaling.factor = 4.125;
    c->rope_scaling.original_ctx = 12;
    c->rope_scaling.yarn_alpha = 0.5;
    c->rope_scaling.yarn_beta = 24.25;
    c->rope_scaling.mscale = 1.0625;
}
static void v_llama3(rotary_config *c) {
    c->rope_pairing = ROTARY_ROPE_HALF;
    c->rope_scaling.type = ROTARY_ROPE_SCALING_LLAMA3;
    c->rope_scaling.factor = 8;
    c->rope_scaling.original_ctx = 16;
    c->rope_scaling.low_freq_factor = 1.5;
    c->rope_scaling.high_freq_factor = 3.1;
}
/* Per-pair factors as a GGUF file brings them: floats whose shortest
 * decimal forms need up to 8 digits. */
static void v_factors(rotary_config *c) {
    const float f[4] = {1.0f, 1.0f / 3.0f, 3.14159274f, 8.000001f};
    c->rope_scaling.type = ROTARY_ROPE_SCALING_FACTORS;
    c->rope_scaling.n_factors = 4; /* head_dim 8 */
    memcpy(c->rope_scaling.freq_factors, f, sizeof f);
}
static void v_t5(rotary_config *c) {
    c->pos = ROTARY_POS_T5;
    c->n_kv_head = 2;
    c->t5_buckets = 12;
    c->t5_max_distance = 40;
}
static void v_linear(rotary_config *c) {
    c->attn = ROTARY_ATTN_LINEAR;
    c->rope_pairing = ROTARY_ROPE_HALF;
}
static void v_alibi(rotary_config *c) {
    c->pos = ROTARY_POS_ALIBI;
    c->n_kv_head = 1;
    c->tied = 0;
}
static void v_sin(rotary_config *c) {
    c->pos = ROTARY_POS_SINUSOIDAL;
    c->sin_amplitude = 0.75f;
    c->mlp = ROTARY_MLP_GELU;
}
static void v_none(rotary_config *c) {
    c->pos = ROTARY_POS_NONE;
    c->norm = ROTARY_NORM_LAYER;
    c->bias = 0;
    c->n_layer = 1;
}

static void test_checkpoint_roundtrip(void) {
    printf("(b) checkpoint round trip\n");
    const variant vs[] = {{"default", v_default},   {"learned+ln+gelu+bias+untied", v_learned},
                          {"gqa+half+rd4+bias", v_gqa_half}, {"rope yarn x4.125", v_yarn},
                          {"rope half llama3 x8", v_llama3}, {"alibi+mqa+untied", v_alibi},
                          {"sinusoidal+gelu", v_sin}, {"nope+ln", v_none},
                          {"t5 12 buckets+gqa", v_t5}, {"linear attention+rope half", v_linear},
                          {"rope factors (4 pairs)", v_factors}};
    for (size_t k = 0; k < sizeof vs / sizeof vs[0]; k++) {
        rotary_config c;
        small_config(&c);
        vs[k].tweak(&c);
        rotary_model a, b;
        int rc = rotary_model_build(&a, &c);
        EXPECT(rc == 0, "%s: build: %s", vs[k].label, rotary_last_error());
        if (rc) continue;
        rotary_model_init(&a, 1234 + k);
        const char *path = tpath("ck.safetensors");
        const char *extra[] = {"step", "77", "note", "hello"};
        rc = rotary_checkpoint_save(path, &a, extra, 2);
        EXPECT(rc == 0, "%s: save: %s", vs[k].label, rotary_last_error());
        rc = rotary_checkpoint_load(path, &b);
        EXPECT(rc == 0, "%s: load: %s", vs[k].label, rotary_last_error());
        if (rc == 0) {
            int same = same_model(&a, &b);
            printf("  %-28s %d tensors, %zu params: %s\n", vs[k].label, b.n_tensors,
                   b.n_params, same ? "config and params identical" : "DIFFERENT");
            EXPECT(same, "%s: round trip differs", vs[k].label);
            rotary_model_free(&b);
        }
        rotary_st_file *f = NULL;
        if (rotary_st_open(&f, path) == 0) {
            const char *fmt = rotary_st_meta(f, "format");
            const char *step = rotary_st_meta(f, "step");
            const char *pos = rotary_st_meta(f, "pos");
            EXPECT(fmt && !strcmp(fmt, "rotary"), "format metadata missing");
            EXPECT(step && !strcmp(step, "77"), "extra metadata missing");
            EXPECT(pos && !strcmp(pos, rotary_pos_name(c.pos)), "pos metadata wrong");
            /* The scaling keys are optional: written only when there is a scaling. */
            const char *sc = rotary_st_meta(f, "rope_scaling");
            if (c.rope_scaling.type == ROTARY_ROPE_SCALING_NONE)
                EXPECT(!sc && !rotary_st_meta(f, "rope_factor"),
                       "%s: scaling keys written for none", vs[k].label);
            else
                EXPECT(sc && !strcmp(sc, rotary_rope_scaling_name(c.rope_scaling.type)) &&
                          rotary_st_meta(f, "rope_original_ctx"),
                       "%s: scaling metadata missing", vs[k].label);
            const char *ff = rotary_st_meta(f, "rope_freq_factors");
            if (c.rope_scaling.type == ROTARY_ROPE_SCALING_FACTORS)
                EXPECT(ff && !strcmp(ff, "1,0.33333334,3.1415927,8.000001"),
                       "%s: rope_freq_factors is '%s'", vs[k].label, ff ? ff : "(missing)");
            else
                EXPECT(!ff, "%s: rope_freq_factors written", vs[k].label);
            /* Names the docs promise, for the variant that has them all. */
            if (vs[k].tweak == v_learned) {
                const char *names[] = {"tok_emb.weight", "pos_emb.weight",
                                       "layers.0.norm1.bias", "layers.1.attn.q.bias",
                                       "layers.1.attn.o.bias", "layers.0.mlp.up.bias",
                                       "layers.0.mlp.down.bias", "norm_f.bias",
                                       "lm_head.weight"};
                for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
                    rotary_st_tensor t;
                    EXPECT(rotary_st_find(f, names[i], &t) == 0, "%s missing", names[i]);
                }
            }
            rotary_st_close(f);
        } else {
            EXPECT(0, "reopen: %s", rotary_last_error());
        }
        rotary_model_free(&a);
    }
    EXPECT(count_entries(tmpdir, ".tmp.") == 0, "temp files left behind");
}

/* ------------------------------------------------------------ (c) bad input */

static void test_bad_st_files(void) {
    printf("(c) bad safetensors files\n");
    float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};

    expect_open_fail("nonexistent path", tpath("does/not/exist.st"), "cannot open");
    write_bytes(tpath("zero.st"), "", 0);
    expect_open_fail("empty file", tpath("zero.st"), "not a safetensors file");
    write_bytes(tpath("four.st"), "\x10\0\0\0", 4);
    expect_open_fail("4-byte file", tpath("four.st"), "not a safetensors file");
    write_st_raw(tpath("hlen_big.st"), 1000, "{}      ", NULL, 0);
    expect_open_fail("header length > file", tpath("hlen_big.st"), "header length 1000");
    write_st_raw(tpath("hlen_2_63.st"), (uint64_t)1 << 63, "{}      ", NULL, 0);
    expect_open_fail("header length 2^63", tpath("hlen_2_63.st"), "9223372036854775808");
    write_st(tpath("notjson.st"), "{\"a\": [1, 2", NULL, 0);
    expect_open_fail("header not JSON", tpath("notjson.st"), "not valid JSON");
    write_st(tpath("array.st"), "[1, 2, 3]", NULL, 0);
    expect_open_fail("JSON not an object", tpath("array.st"), "not a JSON object");
    write_st(tpath("string.st"), "\"hello\"", NULL, 0);
    expect_open_fail("JSON a string", tpath("string.st"), "not a JSON object");
    write_st(tpath("trailing.st"), "{} x", NULL, 0);
    expect_open_fail("trailing bytes after JSON", tpath("trailing.st"), "trailing");

    /* A valid file cut short by 5 bytes. */
    rotary_st_tensor t[2] = {{"a", ROTARY_F32, 1, {4}, data}, {"b", ROTARY_F32, 2, {2, 2}, data + 4}};
    int rc = rotary_st_write(tpath("full.st"), t, 2, NULL, 0);
    EXPECT(rc == 0, "write: %s", rotary_last_error());
    size_t n = 0;
    unsigned char *raw = read_all(tpath("full.st"), &n);
    if (raw) {
        write_bytes(tpath("cut.st"), raw, n - 5);
        free(raw);
    }
    expect_open_fail("truncated data", tpath("cut.st"), "past end of data");

    write_st(tpath("past.st"),
             "{\"x\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", data, 32);
    expect_open_fail("data_offsets past end", tpath("past.st"), "[0, 400] past end of data (32 bytes)");
    write_st(tpath("mismatch.st"),
             "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", data, 32);
    expect_open_fail("end-begin != shape", tpath("mismatch.st"), "needs 16");
    write_st(tpath("backwards.st"),
             "{\"x\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,8]}}", data, 32);
    expect_open_fail("begin > end", tpath("backwards.st"), "begin after end");
    write_st(tpath("overlap.st"),
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[12,28]}}", data, 32);
    expect_open_fail("tensors share bytes", tpath("overlap.st"), "'a' and 'b' overlap");
    write_st(tpath("adjacent.st"),
             "{\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]},"
             "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,16]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", data, 32);
    {
        rotary_st_file *f = NULL;
        check(rotary_st_open(&f, tpath("adjacent.st")) == ROTARY_OK, "adjacent tensors open",
              "a, an empty one, b");
        if (f) rotary_st_close(f);
    }
    write_st(tpath("negshape.st"),
             "{\"x\":{\"dtype\":\"F32\",\"shape\":[-2,2],\"data_offsets\":[0,16]}}", data, 32);
    expect_open_fail("negative shape entry", tpath("negshape.st"), "not a non-negative integer");
    write_st(tpath("fracshape.st"),
             "{\"x\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", data, 32);
    expect_open_fail("fractional shape entry", tpath("fracshape.st"), "not a non-negative integer");
    write_st(tpath("huge.st"),
             "{\"x\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],"
             "\"data_offsets\":[0,16]}}",
             data, 32);
    expect_open_fail("huge shape 2^40 x 2^40", tpath("huge.st"), "overflows");
    write_st(tpath("rank5.st"),
             "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", data, 32);
    expect_open_fail("rank 5", tpath("rank5.st"), "dims");
    write_st(tpath("f16.st"),
             "{\"x\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", data, 32);
    expect_open_fail("F16 dtype", tpath("f16.st"), "unsupported dtype F16");
    write_st(tpath("bf16.st"),
             "{\"x\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", data, 32);
    expect_open_fail("BF16 dtype", tpath("bf16.st"), "unsupported dtype BF16");
    write_st(tpath("q7.st"),
             "{\"x\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", data, 32);
    expect_open_fail("unknown dtype string", tpath("q7.st"), "unknown dtype 'Q7'");
    write_st(tpath("nodtype.st"), "{\"x\":{\"shape\":[2],\"data_offsets\":[0,8]}}", data, 32);
    expect_open_fail("missing dtype", tpath("nodtype.st"), "dtype");
    write_st(tpath("nooffs.st"), "{\"x\":{\"dtype\":\"F32\",\"shape\":[2]}}", data, 32);
    expect_open_fail("missing data_offsets", tpath("nooffs.st"), "data_offsets");
    write_st(tpath("entry.st"), "{\"x\": 5}", data, 32);
    expect_open_fail("entry not an object", tpath("entry.st"), "not a JSON object");
    write_st(tpath("meta.st"), "{\"__metadata__\":{\"k\":5}}", NULL, 0);
    expect_open_fail("metadata value not a string", tpath("meta.st"), "not a string");
    write_st(tpath("metadup.st"), "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", NULL, 0);
    expect_open_fail("duplicate metadata key", tpath("metadup.st"), "appears twice");
    write_st(tpath("metaarr.st"), "{\"__metadata__\":[\"k\"]}", NULL, 0);
    expect_open_fail("metadata not an object", tpath("metaarr.st"), "__metadata__");
    write_st(tpath("dupname.st"),
             "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
             data, 32);
    expect_open_fail("duplicate tensor name", tpath("dupname.st"), "twice");
    write_st(tpath("longname.st"),
             "{\"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmn\":"
             "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             data, 32);
    expect_open_fail("tensor name > 63 bytes", tpath("longname.st"), "max 63");
    /* Header of 13 bytes: the data buffer starts at file offset 21. */
    write_st_raw(tpath("misaligned.st"), 0,
                 "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 32);
    expect_open_fail("misaligned data", tpath("misaligned.st"), "not 4-byte aligned");

    const char *text = "This is a plain text file, not a checkpoint.\nSecond line.\n";
    write_bytes(tpath("text.txt"), text, strlen(text));
    expect_open_fail("plain text file", tpath("text.txt"), "not a safetensors file");
    write_bytes(tpath("short.txt"), "hello world\n", 12);
    expect_open_fail("short text file", tpath("short.txt"), "not a safetensors file");
    expect_open_fail("a directory", tmpdir, "not a regular file");
}

/* Every prefix of a small valid file, and random byte changes in its header:
 * rotary_st_open must either succeed (and then every tensor it hands out
 * lies inside the file) or fail with a message, never crash. */
static void test_mutations(void) {
    printf("(c) truncations and random header mutations\n");
    float data[6] = {1, 2, 3, 4, 5, 6};
    int32_t ints[3] = {7, 8, 9};
    rotary_st_tensor t[3] = {{"w", ROTARY_F32, 2, {2, 3}, data},
                             {"i", ROTARY_I32, 1, {3}, ints},
                             {"s", ROTARY_F32, 0, {0}, data}};
    const char *meta[] = {"format", "rotary"};
    char src[512];
    snprintf(src, sizeof src, "%s", tpath("small.st"));
    EXPECT(rotary_st_write(src, t, 3, meta, 1) == 0, "write: %s", rotary_last_error());
    size_t n = 0;
    unsigned char *raw = read_all(src, &n);
    if (!raw) return;
    const char *p = tpath("mut.st");
    int prefix_ok = 0, prefix_fail = 0, silent = 0;
    for (size_t len = 0; len < n; len++) {
        write_bytes(p, raw, len);
        rotary_st_file *f = NULL;
        if (rotary_st_open(&f, p) == 0) {
            prefix_ok++;
            rotary_st_close(f);
        } else {
            prefix_fail++;
            if (!rotary_last_error()[0]) silent++;
        }
    }
    printf("  %zu prefixes of a %zu-byte file: %d opened, %d refused, %d without a message\n",
           n, n, prefix_ok, prefix_fail, silent);
    EXPECT(prefix_ok == 0, "a truncated file opened");
    EXPECT(silent == 0, "a failure without a message");

    rotary_rng rng;
    rotary_rng_seed(&rng, 99);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)raw[i] << (8 * i);
    unsigned char *mut = malloc(n);
    int opened = 0, refused = 0;
    silent = 0;
    const char *chars = "{}[]\":,0123456789-.eE \\aFIU";
    for (int trial = 0; trial < 2000; trial++) {
        memcpy(mut, raw, n);
        int edits = 1 + (int)(rotary_rng_next(&rng) % 3);
        for (int e = 0; e < edits; e++) {
            size_t at = 8 + (size_t)(rotary_rng_next(&rng) % hl);
            mut[at] = (unsigned char)chars[rotary_rng_next(&rng) % strlen(chars)];
        }
        write_bytes(p, mut, n);
        rotary_st_file *f = NULL;
        if (rotary_st_open(&f, p) == 0) {
            opened++;
            const char *names[] = {"w", "i", "s"};
            for (int k = 0; k < 3; k++) {
                rotary_st_tensor x;
                if (rotary_st_find(f, names[k], &x) != 0) continue;
                size_t numel = 1;
                for (int d = 0; d < x.ndim; d++) numel *= (size_t)x.shape[d];
                const unsigned char *b = x.data;
                unsigned sum = 0;
                for (size_t q = 0; q < numel * 4; q++) sum += b[q]; /* ASan checks this */
                (void)sum;
            }
            rotary_st_close(f);
        } else {
            refused++;
            if (!rotary_last_error()[0]) silent++;
        }
    }
    printf("  2000 mutated headers: %d opened, %d refused, %d without a message\n", opened,
           refused, silent);
    EXPECT(silent == 0, "a failure without a message");
    free(mut);
    free(raw);
}

/* Rewrite model m's checkpoint with changes: metadata key `mkey` set to
 * `mval` (or removed when mval is NULL), tensor `drop` left out, tensor
 * `reshape` given a wrong first dimension, tensor `as_i32` stored as I32,
 * an extra tensor when `extra` is set. Returns 0 on success. */
typedef struct {
    const char *mkey, *mval;
    int remove_key;
    const char *drop, *reshape, *as_i32, *extra;
    int no_format;
} mutation;

static const char *const ck_keys[] = {
    "format", "format_version", "n_layer", "n_head", "n_kv_head", "d_model", "d_ff", "ctx",
    "vocab", "norm", "mlp", "pos", "rope_pairing", "rope_base", "rotary_dim", "tied", "bias",
    "norm_eps", "init_std", "sin_amplitude", "rope_scaling", "rope_factor", "rope_original_ctx",
    "rope_yarn_alpha", "rope_yarn_beta", "rope_low_freq_factor", "rope_high_freq_factor",
    "rope_mscale", "rope_freq_factors", "attn", "t5_buckets", "t5_max_distance"};
#define N_CK_KEYS ((int)(sizeof ck_keys / sizeof ck_keys[0]))

static int write_mutated(const char *path, const rotary_model *m, const char *good,
                         const mutation *mu) {
    rotary_st_file *f = NULL;
    if (rotary_st_open(&f, good) != 0) return -1;
    const char *meta[2 * (N_CK_KEYS + 1)];
    int n_meta = 0;
    int found_key = 0;
    for (int i = 0; i < N_CK_KEYS; i++) {
        const char *v = rotary_st_meta(f, ck_keys[i]);
        if (!v) continue;
        if (mu->no_format && (!strcmp(ck_keys[i], "format") || !strcmp(ck_keys[i], "format_version")))
            continue;
        if (mu->mkey && !strcmp(ck_keys[i], mu->mkey)) {
            found_key = 1;
            if (mu->remove_key) continue;
            v = mu->mval;
        }
        meta[2 * n_meta] = ck_keys[i];
        meta[2 * n_meta + 1] = v;
        n_meta++;
    }
    if (mu->mkey && !found_key && !mu->remove_key) {
        meta[2 * n_meta] = mu->mkey;
        meta[2 * n_meta + 1] = mu->mval;
        n_meta++;
    }
    rotary_st_tensor *t = calloc((size_t)m->n_tensors + 1, sizeof *t);
    float *shrunk = NULL;
    int n = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const rotary_tensor *mt = &m->tensors[i];
        if (mu->drop && !strcmp(mt->name, mu->drop)) continue;
        rotary_st_tensor *x = &t[n++];
        x->name = mt->name;
        x->dtype = mu->as_i32 && !strcmp(mt->name, mu->as_i32) ? ROTARY_I32 : ROTARY_F32;
        x->ndim = mt->ndim;
        x->shape[0] = mt->shape[0];
        x->shape[1] = mt->shape[1];
        x->data = m->params + mt->offset;
        if (mu->reshape && !strcmp(mt->name, mu->reshape)) x->shape[0] -= 1;
    }
    if (mu->extra) {
        static const float one = 1.0f;
        t[n++] = (rotary_st_tensor){mu->extra, ROTARY_F32, 1, {1}, &one};
    }
    int rc = rotary_st_write(path, t, n, meta, n_meta);
    free(t);
    free(shrunk);
    rotary_st_close(f);
    return rc;
}

static void test_bad_checkpoints(void) {
    printf("(c) bad checkpoints\n");
    rotary_config c;
    small_config(&c);
    rotary_model m;
    if (rotary_model_build(&m, &c) != 0) {
        EXPECT(0, "build: %s", rotary_last_error());
        return;
    }
    rotary_model_init(&m, 7);
    char good[512];
    snprintf(good, sizeof good, "%s", tpath("good.ck"));
    EXPECT(rotary_checkpoint_save(good, &m, NULL, 0) == 0, "save: %s", rotary_last_error());

    expect_load_fail("nonexistent path", tpath("nope.ck"), "cannot open", NULL);
    write_bytes(tpath("text.ck"), "just some words in a file\n", 26);
    expect_load_fail("plain text file", tpath("text.ck"), "not a safetensors file", NULL);

    struct {
        const char *label;
        mutation mu;
        const char *needle, *needle2;
    } cases[] = {
        {"no format metadata", {.no_format = 1}, "not a rotary checkpoint", NULL},
        {"format = 'other'", {.mkey = "format", .mval = "other"}, "not a rotary checkpoint", "other"},
        {"format_version = '2'", {.mkey = "format_version", .mval = "2"}, "format_version", NULL},
        {"n_layer missing", {.mkey = "n_layer", .remove_key = 1}, "n_layer", "lacks"},
        {"vocab missing", {.mkey = "vocab", .remove_key = 1}, "vocab", "lacks"},
        {"n_layer = 'abc'", {.mkey = "n_layer", .mval = "abc"}, "n_layer", "not an integer"},
        {"n_layer = '-3'", {.mkey = "n_layer", .mval = "-3"}, "n_layer", "out of range"},
        {"n_layer = '2x'", {.mkey = "n_layer", .mval = "2x"}, "n_layer", "not an integer"},
        {"n_layer = ' 2'", {.mkey = "n_layer", .mval = " 2"}, "n_layer", "not an integer"},
        {"n_layer = ''", {.mkey = "n_layer", .mval = ""}, "n_layer", "not an integer"},
        {"d_model = 2^40", {.mkey = "d_model", .mval = "1099511627776"}, "d_model", "out of range"},
        {"tied = '2'", {.mkey = "tied", .mval = "2"}, "tied", "out of range"},
        {"norm = 'batchnorm'", {.mkey = "norm", .mval = "batchnorm"}, "norm", "batchnorm"},
        {"pos = 'magic'", {.mkey = "pos", .mval = "magic"}, "pos", "magic"},
        {"rope_pairing = 'spiral'", {.mkey = "rope_pairing", .mval = "spiral"}, "rope_pairing", NULL},
        {"rope_base = '1e999'", {.mkey = "rope_base", .mval = "1e999"}, "rope_base", "out of range"},
        {"rope_base = 'nan'", {.mkey = "rope_base", .mval = "nan"}, "rope_base", "not a number"},
        {"rope_scaling = 'warp'", {.mkey = "rope_scaling", .mval = "warp"}, "rope_scaling", "warp"},
        {"rope_scaling linear, no factor", {.mkey = "rope_scaling", .mval = "linear"}, "rope_factor",
         "lacks"},
        {"norm_eps = '1e-5junk'", {.mkey = "norm_eps", .mval = "1e-5junk"}, "norm_eps", "not a number"},
        {"init_std = '1e300'", {.mkey = "init_std", .mval = "1e300"}, "init_std", "float range"},
        {"n_head = '3' (invalid config)", {.mkey = "n_head", .mval = "3"}, "config", "n_head"},
        {"tensor shape changed", {.reshape = "layers.1.attn.k.weight"}, "layers.1.attn.k.weight",
         "[31, 32] in the file but the model expects [32, 32]"},
        {"tensor removed", {.drop = "layers.0.mlp.gate.weight"}, "lacks tensor",
         "layers.0.mlp.gate.weight"},
        {"extra tensor", {.extra = "layers.9.attn.q.weight"}, "unexpected tensor",
         "layers.9.attn.q.weight"},
        {"I32 model tensor", {.as_i32 = "norm_f.weight"}, "norm_f.weight", "dtype I32"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *p = tpath("bad.ck");
        int rc = write_mutated(p, &m, good, &cases[k].mu);
        EXPECT(rc == 0, "%s: cannot write the test file: %s", cases[k].label, rotary_last_error());
        if (rc == 0) expect_load_fail(cases[k].label, p, cases[k].needle, cases[k].needle2);
    }

    /* An F16 tensor: write it as I32 then patch the dtype bytes. */
    {
        mutation mu = {.as_i32 = "tok_emb.weight"};
        const char *p = tpath("f16.ck");
        EXPECT(write_mutated(p, &m, good, &mu) == 0, "write: %s", rotary_last_error());
        size_t n = 0;
        unsigned char *raw = read_all(p, &n);
        int patched = 0;
        for (size_t i = 0; raw && i + 5 < n && !patched; i++)
            if (!memcmp(raw + i, "\"I32\"", 5)) {
                memcpy(raw + i, "\"F16\"", 5);
                patched = 1;
            }
        EXPECT(patched, "could not patch the dtype");
        if (raw) write_bytes(p, raw, n);
        free(raw);
        expect_load_fail("F16 model tensor", p, "unsupported dtype F16", "tok_emb.weight");
    }
    /* A file cut short. */
    {
        size_t n = 0;
        unsigned char *raw = read_all(good, &n);
        if (raw) {
            write_bytes(tpath("cut.ck"), raw, n - 100);
            free(raw);
        }
        expect_load_fail("truncated checkpoint", tpath("cut.ck"), "past end of data", NULL);
    }
    /* The good one still loads (the mutations did not touch it). */
    rotary_model b;
    int rc = rotary_checkpoint_load(good, &b);
    EXPECT(rc == 0 && same_model(&m, &b), "good checkpoint no longer loads: %s",
           rotary_last_error());
    if (rc == 0) rotary_model_free(&b);
    rotary_model_free(&m);
}

/* ------------------------------------------------------------- (d) atomicity */

static void test_atomicity(void) {
    printf("(d) atomic saving\n");
    rotary_config c;
    small_config(&c);
    rotary_model m1, m2, got;
    if (rotary_model_build(&m1, &c) || rotary_model_build(&m2, &c)) {
        EXPECT(0, "build: %s", rotary_last_error());
        return;
    }
    rotary_model_init(&m1, 1);
    rotary_model_init(&m2, 2);

    /* Missing directory. */
    const char *p = tpath("no_such_dir/ck.safetensors");
    int rc = rotary_checkpoint_save(p, &m1, NULL, 0);
    printf("  save into a missing directory: rc=%d msg=\"%s\"\n", rc, rotary_last_error());
    EXPECT(rc == ROTARY_EIO, "expected ROTARY_EIO, got %d", rc);
    EXPECT(rotary_last_error()[0] != '\0', "empty message");
    EXPECT(access(p, F_OK) != 0, "file created anyway");

    /* Overwrite: the new contents win, no temp files stay. */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/atomic", tmpdir);
    mkdir(dir, 0755);
    char path[600];
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    EXPECT(rotary_checkpoint_save(path, &m1, NULL, 0) == 0, "save 1: %s", rotary_last_error());
    EXPECT(rotary_checkpoint_save(path, &m2, NULL, 0) == 0, "save 2: %s", rotary_last_error());
    rc = rotary_checkpoint_load(path, &got);
    int same2 = rc == 0 && same_model(&m2, &got);
    if (rc == 0) rotary_model_free(&got);
    int n_tmp = count_entries(dir, ".tmp.");
    printf("  overwrite: load rc=%d, matches the second save: %s, temp files left: %d\n", rc,
           same2 ? "yes" : "NO", n_tmp);
    EXPECT(same2, "overwritten checkpoint does not hold the new model");
    EXPECT(n_tmp == 0, "temp files left behind after overwrite");
    struct stat st;
    EXPECT(stat(path, &st) == 0 && (st.st_mode & 0444) == 0444,
           "checkpoint is not readable by all");

    /* A failing save (bad extra metadata) leaves the old file as it was. */
    const char *clash[] = {"n_layer", "99"};
    rc = rotary_checkpoint_save(path, &m1, clash, 1);
    printf("  save with a clashing extra key: rc=%d msg=\"%s\"\n", rc, rotary_last_error());
    EXPECT(rc != 0 && contains_ci(rotary_last_error(), "n_layer"), "clashing key accepted");
    rc = rotary_checkpoint_load(path, &got);
    EXPECT(rc == 0 && same_model(&m2, &got), "old file damaged by a failed save");
    if (rc == 0) rotary_model_free(&got);

    /* The rename fails (the destination is a non-empty directory): the temp
     * file must be removed and the directory left alone. */
    char blocker[700], inside[800];
    snprintf(blocker, sizeof blocker, "%s/blocker", dir);
    snprintf(inside, sizeof inside, "%s/keep", blocker);
    mkdir(blocker, 0755);
    write_bytes(inside, "x", 1);
    rc = rotary_checkpoint_save(blocker, &m1, NULL, 0);
    n_tmp = count_entries(dir, ".tmp.");
    printf("  save onto a directory: rc=%d msg=\"%s\", temp files left: %d\n", rc,
           rotary_last_error(), n_tmp);
    EXPECT(rc == ROTARY_EIO, "save onto a directory returned %d", rc);
    EXPECT(n_tmp == 0, "temp file left after a failed rename");
    EXPECT(access(inside, F_OK) == 0, "directory contents disturbed");

    /* Read-only directory: the save fails and the old file is intact. */
    chmod(dir, 0555);
    if (access(dir, W_OK) == 0) {
        printf("  read-only directory: skipped (still writable, running as root?)\n");
    } else {
        rc = rotary_checkpoint_save(path, &m1, NULL, 0);
        printf("  save into a read-only directory: rc=%d msg=\"%s\"\n", rc, rotary_last_error());
        EXPECT(rc != 0 && rotary_last_error()[0], "save into a read-only directory succeeded");
        rc = rotary_checkpoint_load(path, &got);
        EXPECT(rc == 0 && same_model(&m2, &got), "old file damaged by a failed save");
        if (rc == 0) rotary_model_free(&got);
        EXPECT(count_entries(dir, ".tmp.") == 0, "temp files left behind");
    }
    chmod(dir, 0755);

    /* Saving an unbuilt model fails cleanly. */
    rotary_model empty;
    memset(&empty, 0, sizeof empty);
    rc = rotary_checkpoint_save(tpath("empty.ck"), &empty, NULL, 0);
    printf("  save an unbuilt model: rc=%d msg=\"%s\"\n", rc, rotary_last_error());
    EXPECT(rc == ROTARY_EINVAL, "unbuilt model saved");

    rotary_model_free(&m1);
    rotary_model_free(&m2);
}

/* (d) the RoPE scaling keys are optional: a checkpoint without them (as
 * written before they existed) loads as no scaling; bad values are refused. */
static void test_rope_scaling_keys(void) {
    printf("(c) rope scaling metadata (optional keys)\n");
    rotary_config c;
    small_config(&c);
    c.rope_scaling.type = ROTARY_ROPE_SCALING_LINEAR;
    c.rope_scaling.factor = 4;
    c.rope_scaling.original_ctx = 16;
    rotary_model m, b;
    if (rotary_model_build(&m, &c) != 0) {
        EXPECT(0, "build: %s", rotary_last_error());
        return;
    }
    rotary_model_init(&m, 9);
    char good[512];
    snprintf(good, sizeof good, "%s", tpath("scaled.ck"));
    EXPECT(rotary_checkpoint_save(good, &m, NULL, 0) == 0, "save: %s", rotary_last_error());

    mutation old = {.mkey = "rope_scaling", .remove_key = 1};
    const char *p = tpath("old.ck");
    EXPECT(write_mutated(p, &m, good, &old) == 0, "write: %s", rotary_last_error());
    int rc = rotary_checkpoint_load(p, &b);
    EXPECT(rc == 0, "no rope_scaling key: load: %s", rotary_last_error());
    if (rc == 0) {
        EXPECT(b.cfg.rope_scaling.type == ROTARY_ROPE_SCALING_NONE && b.rope.mscale == 1.0 &&
                  b.rope.inv_freq[1] == pow(c.rope_base, -2.0 / (c.d_model / c.n_head)),
               "a checkpoint without rope_scaling is not loaded as none");
        printf("  %-34s loads as none\n", "no rope_scaling key");
        rotary_model_free(&b);
    }
    const struct {
        const char *label;
        mutation mu;
        const char *needle, *needle2;
    } cases[] = {
        {"rope_factor = '0.5'", {.mkey = "rope_factor", .mval = "0.5"}, "factor", "0.5"},
        {"rope_factor = 'big'", {.mkey = "rope_factor", .mval = "big"}, "rope_factor", "not a number"},
        {"rope_original_ctx = '0'", {.mkey = "rope_original_ctx", .mval = "0"}, "original_ctx", NULL},
        {"rope_original_ctx missing", {.mkey = "rope_original_ctx", .remove_key = 1},
         "rope_original_ctx", "lacks"},
        {"rope_scaling = 'yarn', beta < alpha", {.mkey = "rope_yarn_beta", .mval = "0.5"}, "yarn",
         "alpha"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        mutation mu = cases[k].mu;
        if (k == 4) { /* first make the checkpoint a YaRN one */
            mutation to_yarn = {.mkey = "rope_scaling", .mval = "yarn"};
            EXPECT(write_mutated(tpath("yarn.ck"), &m, good, &to_yarn) == 0, "write yarn");
            rc = write_mutated(p, &m, tpath("yarn.ck"), &mu);
        } else {
            rc = write_mutated(p, &m, good, &mu);
        }
        EXPECT(rc == 0, "%s: cannot write the test file: %s", cases[k].label, rotary_last_error());
        if (rc == 0) expect_load_fail(cases[k].label, p, cases[k].needle, cases[k].needle2);
    }
    rotary_model_free(&m);

    /* Per-pair factors: a list of plain numbers, one per pair, each > 0. */
    v_factors(&c);
    if (rotary_model_build(&m, &c) != 0) {
        EXPECT(0, "build factors: %s", rotary_last_error());
        return;
    }
    snprintf(good, sizeof good, "%s", tpath("factors.ck"));
    EXPECT(rotary_checkpoint_save(good, &m, NULL, 0) == 0, "save: %s", rotary_last_error());
    const struct {
        const char *label, *val, *needle, *needle2;
    } fcases[] = {
        {"rope_freq_factors missing", NULL, "rope_freq_factors", "lacks"},
        {"rope_freq_factors = ''", "", "rope_freq_factors", "value 0"},
        {"rope_freq_factors = '1,2,x,4'", "1,2,x,4", "rope_freq_factors", "value 2"},
        {"rope_freq_factors = '1,2,,4'", "1,2,,4", "rope_freq_factors", "value 2"},
        {"rope_freq_factors = '1,2,3,4,'", "1,2,3,4,", "rope_freq_factors", "value 4"},
        {"rope_freq_factors = '1, 2,3,4'", "1, 2,3,4", "rope_freq_factors", "value 1"},
        {"rope_freq_factors = '1,nan,3,4'", "1,nan,3,4", "rope_freq_factors", "value 1"},
        {"rope_freq_factors = '1,0,3,4'", "1,0,3,4", "factor 1 is 0", NULL},
        {"rope_freq_factors = '1,2,-3,4'", "1,2,-3,4", "factor 2 is -3", NULL},
        {"rope_freq_factors = '1,2,1e999,4'", "1,2,1e999,4", "factor 2 is inf", NULL},
        {"rope_freq_factors = '1,2,3' (3 pairs)", "1,2,3", "3 factors", "4 pairs"},
    };
    for (size_t k = 0; k < sizeof fcases / sizeof fcases[0]; k++) {
        mutation mu = {.mkey = "rope_freq_factors", .mval = fcases[k].val,
                       .remove_key = fcases[k].val == NULL};
        rc = write_mutated(p, &m, good, &mu);
        EXPECT(rc == 0, "%s: cannot write the test file: %s", fcases[k].label, rotary_last_error());
        if (rc == 0) expect_load_fail(fcases[k].label, p, fcases[k].needle, fcases[k].needle2);
    }
    /* 129 values: more than any rope has pairs. */
    char many[129 * 2 + 1];
    for (int i = 0; i < 129; i++) many[2 * i] = '1', many[2 * i + 1] = ',';
    many[2 * 129 - 1] = '\0';
    mutation mu = {.mkey = "rope_freq_factors", .mval = many};
    EXPECT(write_mutated(p, &m, good, &mu) == 0, "write 129 factors");
    expect_load_fail("rope_freq_factors with 129 values", p, "more than 128", NULL);
    rotary_model_free(&m);
}

/* The attention and T5 keys are optional too: without "attn" a checkpoint
 * is softmax, without the T5 keys it has T5's default buckets. */
static void test_arch_keys(void) {
    printf("(c) attn and t5 metadata (optional keys)\n");
    const struct {
        const char *label;
        int pos, attn, buckets, remove_same; /* remove_same: loads as the same model */
        const char *key;
    } cases[] = {
        {"softmax, no attn key", ROTARY_POS_ROPE, ROTARY_ATTN_SOFTMAX, 32, 1, "attn"},
        {"t5 32 buckets, no t5_buckets key", ROTARY_POS_T5, ROTARY_ATTN_SOFTMAX, 32, 1, "t5_buckets"},
        {"t5, no t5_max_distance key", ROTARY_POS_T5, ROTARY_ATTN_SOFTMAX, 32, 1, "t5_max_distance"},
        {"linear, no attn key", ROTARY_POS_ROPE, ROTARY_ATTN_LINEAR, 32, 0, "attn"},
        {"t5 16 buckets, no t5_buckets key", ROTARY_POS_T5, ROTARY_ATTN_SOFTMAX, 16, 0, "t5_buckets"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        rotary_config c;
        small_config(&c);
        c.pos = cases[k].pos, c.attn = cases[k].attn, c.t5_buckets = cases[k].buckets;
        rotary_model m, b;
        if (rotary_model_build(&m, &c) != 0) {
            EXPECT(0, "%s: build: %s", cases[k].label, rotary_last_error());
            continue;
        }
        rotary_model_init(&m, 3);
        const char *good = tpath("arch.ck"), *p = tpath("arch_old.ck");
        EXPECT(rotary_checkpoint_save(good, &m, NULL, 0) == 0, "save: %s", rotary_last_error());
        rotary_st_file *f = NULL;
        if (rotary_st_open(&f, good) == 0) {
            const char *a = rotary_st_meta(f, "attn"), *tb = rotary_st_meta(f, "t5_buckets");
            EXPECT(a && !strcmp(a, c.attn ? "linear" : "softmax"), "%s: attn key", cases[k].label);
            EXPECT((tb != NULL) == (c.pos == ROTARY_POS_T5), "%s: t5 keys only for t5",
                   cases[k].label);
            rotary_st_close(f);
        }
        mutation mu = {.mkey = cases[k].key, .remove_key = 1};
        EXPECT(write_mutated(p, &m, good, &mu) == 0, "write: %s", rotary_last_error());
        int rc = rotary_checkpoint_load(p, &b);
        if (cases[k].remove_same) {
            EXPECT(rc == 0 && same_model(&m, &b), "%s: does not load as the same model: %s",
                   cases[k].label, rotary_last_error());
            printf("  %-34s loads as before\n", cases[k].label);
        } else if (c.attn == ROTARY_ATTN_LINEAR) {
            /* The same tensors: only the key tells the kinds apart. */
            EXPECT(rc == 0 && b.cfg.attn == ROTARY_ATTN_SOFTMAX, "%s: not read as softmax",
                   cases[k].label);
            printf("  %-34s loads as softmax (the default)\n", cases[k].label);
        } else {
            EXPECT(rc != 0 && contains_ci(rotary_last_error(), "rel_bias.weight"),
                   "%s: loaded with the wrong table shape", cases[k].label);
            printf("  %-34s -> %s\n", cases[k].label, rotary_last_error());
        }
        if (rc == 0) rotary_model_free(&b);
        rotary_model_free(&m);
    }
    rotary_config c;
    small_config(&c);
    rotary_model m;
    if (rotary_model_build(&m, &c) == 0) {
        rotary_model_init(&m, 4);
        const char *good = tpath("arch.ck"), *p = tpath("arch_bad.ck");
        EXPECT(rotary_checkpoint_save(good, &m, NULL, 0) == 0, "save: %s", rotary_last_error());
        mutation bad[] = {{.mkey = "attn", .mval = "quadratic"}, {.mkey = "t5_buckets", .mval = "many"}};
        const char *needles[][2] = {{"attn", "quadratic"}, {"t5_buckets", "not an integer"}};
        for (int k = 0; k < 2; k++) {
            EXPECT(write_mutated(p, &m, good, &bad[k]) == 0, "write: %s", rotary_last_error());
            expect_load_fail(bad[k].mval, p, needles[k][0], needles[k][1]);
        }
        const char *extra[] = {"attn", "linear"};
        EXPECT(rotary_checkpoint_save(p, &m, extra, 1) != 0 &&
                  contains_ci(rotary_last_error(), "reserved"), "extra key 'attn' accepted");
        rotary_model_free(&m);
    }
}

int main(void) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/rotary_ckpt_XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    printf("temp dir %s\n", tmpdir);
    test_st_roundtrip();
    test_checkpoint_roundtrip();
    test_bad_st_files();
    test_mutations();
    test_bad_checkpoints();
    test_rope_scaling_keys();
    test_arch_keys();
    test_atomicity();
    remove_tree(tmpdir);
    return check_summary("test_checkpoint");
}
