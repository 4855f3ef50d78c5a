/* make_corpus.c: writes the seed corpora (fuzz/corpus/NAME/) and the fixed
 * tokenizers of the encode harness (fuzz/data/) with our own writers, and
 * copies or trims the real files of ../shared/data.
 *
 *   make_corpus FUZZ_DIR SHARED_DATA [CLEAN_GPT2_GGUF CLEAN_SPM_GGUF]
 *
 * The two ggml-vocab GGUF files in shared/data are damaged (see
 * tests/test_vocab.c); test_vocab writes clean copies when run with
 * ROTARY_KEEP_SALVAGED=1 (test_vocab_ggml-vocab-*.gguf in its working
 * directory): pass those to get the trimmed GPT-2 and Llama vocabularies.
 * Everything is deterministic; the outputs are committed, so this only
 * needs to run again to change the seeds. Not part of any build or test. */
#define _POSIX_C_SOURCE 200809L
#include "rotary.h"

#include "half.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *fuzz_dir, *shared;

static void die(const char *what) {
    fprintf(stderr, "make_corpus: %s: %s\n", what, rotary_last_error());
    exit(1);
}

static const char *path(const char *sub, const char *file) {
    static char buf[8][2048];
    static int k;
    char *p = buf[k++ & 7];
    snprintf(p, 2048, "%s/%s/%s", fuzz_dir, sub, file);
    return p;
}

static void mkdirs(const char *sub) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", fuzz_dir, sub);
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        perror(p);
        exit(1);
    }
}

static unsigned char *read_all(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    rewind(f);
    unsigned char *b = malloc((size_t)sz + 1);
    if (!b || fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(b);
        return NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void write_file(const char *p, const void *a, size_t na, const void *b, size_t nb) {
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(a, 1, na, f) != na || (nb && fwrite(b, 1, nb, f) != nb) || fclose(f)) {
        perror(p);
        exit(1);
    }
}

/* A file with one selector byte in front (the llama2c_tokenizer harness). */
static void with_prefix(const char *p, unsigned char first, const void *b, size_t nb) {
    write_file(p, &first, 1, b, nb);
}

static const char *shared_path(const char *file) {
    static char buf[2048];
    snprintf(buf, sizeof buf, "%s/%s", shared, file);
    return buf;
}

/* ---------------------------------------------------------- tiny models */

static void tiny_config(rotary_config *c, int dim, int vocab) {
    rotary_config_default(c);
    c->n_layer = 1, c->n_head = 2, c->n_kv_head = 1;
    c->d_model = dim, c->d_ff = dim, c->ctx = 8, c->vocab = vocab;
}

static void build(rotary_model *m, const rotary_config *c, uint64_t seed) {
    if (rotary_model_build(m, c)) die("model build");
    rotary_model_init(m, seed);
}

static void safetensors_corpus(void) {
    mkdirs("corpus/safetensors");
    rotary_config c;
    rotary_model m;
    /* RoPE with YaRN scaling, GQA, optimizer state. */
    tiny_config(&c, 8, 16);
    c.rope_scaling.type = ROTARY_ROPE_SCALING_YARN;
    c.rope_scaling.factor = 2.0, c.rope_scaling.original_ctx = 4;
    build(&m, &c, 1);
    rotary_adamw o;
    if (rotary_adamw_init(&o, m.n_params)) die("adamw");
    o.step = 3;
    const char *extra[] = {"note", "seed corpus"};
    if (rotary_checkpoint_save_state(path("corpus/safetensors", "rope-yarn-optim.safetensors"), &m,
                                     &o, extra, 1))
        die("checkpoint");
    rotary_adamw_free(&o);
    rotary_model_free(&m);
    /* T5 bias, LayerNorm, GELU, biases, untied head, half pairing. */
    tiny_config(&c, 8, 16);
    c.pos = ROTARY_POS_T5, c.norm = ROTARY_NORM_LAYER, c.mlp = ROTARY_MLP_GELU;
    c.bias = 1, c.tied = 0, c.t5_buckets = 4, c.t5_max_distance = 8;
    build(&m, &c, 2);
    if (rotary_checkpoint_save(path("corpus/safetensors", "t5-layernorm.safetensors"), &m, NULL, 0))
        die("checkpoint");
    rotary_model_free(&m);
    /* Learned positions, linear attention. */
    tiny_config(&c, 8, 16);
    c.pos = ROTARY_POS_LEARNED, c.attn = ROTARY_ATTN_LINEAR;
    build(&m, &c, 3);
    if (rotary_checkpoint_save(path("corpus/safetensors", "learned-linear.safetensors"), &m, NULL,
                               0))
        die("checkpoint");
    rotary_model_free(&m);
    /* Plain safetensors: I32, a 0-dim and an empty tensor, metadata. */
    int32_t ids[6] = {1, 2, 3, -4, 5, 6};
    float x = 1.5f;
    rotary_st_tensor t[3] = {
        {"ids", ROTARY_I32, 2, {2, 3}, ids},
        {"x", ROTARY_F32, 0, {0}, &x},
        {"empty", ROTARY_F32, 1, {0}, NULL},
    };
    const char *meta[] = {"format", "pt", "k", "v"};
    if (rotary_st_write(path("corpus/safetensors", "plain.safetensors"), t, 3, meta, 2))
        die("st_write");
}

/* A llama2.c checkpoint of the given header with deterministic weights. */
static void llama2c_file(const char *p, int dim, int hidden, int layers, int heads, int kv,
                         int vocab, int seq) {
    int32_t h[7] = {dim, hidden, layers, heads, kv, vocab, seq};
    const size_t V = (size_t)abs(vocab), D = (size_t)dim, H = (size_t)hidden, L = (size_t)layers;
    const size_t KV = (size_t)kv * (D / (size_t)heads), hs = D / (size_t)heads;
    size_t n = V * D + L * D + L * D * D + 2 * L * KV * D + L * D * D + L * D + 3 * L * H * D + D +
               (size_t)seq * hs + (vocab < 0 ? V * D : 0);
    float *w = malloc(n * sizeof *w);
    rotary_rng r;
    rotary_rng_seed(&r, 5);
    for (size_t i = 0; i < n; i++) w[i] = 0.1f * rotary_rng_normal(&r);
    write_file(p, h, sizeof h, w, n * sizeof *w);
    free(w);
}

static void llama2c_corpus(void) {
    mkdirs("corpus/llama2c_model");
    llama2c_file(path("corpus/llama2c_model", "tiny-tied.bin"), 8, 16, 1, 2, 1, 16, 4);
    llama2c_file(path("corpus/llama2c_model", "tiny-untied.bin"), 8, 12, 2, 4, 2, -12, 6);
    /* The real header of stories260K (the file itself is 1 MB): refused on
     * its size, but the fuzzer starts from real numbers. */
    size_t n;
    unsigned char *b = read_all(shared_path("stories260K.bin"), &n);
    if (b) write_file(path("corpus/llama2c_model", "stories260K-head.bin"), b, 64, NULL, 0);
    free(b);

    mkdirs("corpus/llama2c_tokenizer");
    b = read_all(shared_path("tok512.bin"), &n);
    if (!b) die("tok512.bin");
    with_prefix(path("corpus/llama2c_tokenizer", "tok512.bin"), 0, b, n);
    with_prefix(path("corpus/llama2c_tokenizer", "tok512-vocab512.bin"), 7, b, n);
    mkdirs("data");
    write_file(path("data", "tok512.bin"), b, n, NULL, 0);
    free(b);
    b = read_all(shared_path("aidreams_tok512.bin"), &n);
    if (b) with_prefix(path("corpus/llama2c_tokenizer", "aidreams_tok512.bin"), 0, b, n);
    free(b);
    /* The first 400 entries of the Llama 2 tokenizer.bin. */
    b = read_all(shared_path("tokenizer.bin"), &n);
    if (b) {
        size_t o = 4;
        for (int i = 0; i < 400 && o + 8 <= n; i++) {
            int32_t l;
            memcpy(&l, b + o + 4, 4);
            o += 8 + (size_t)l;
        }
        with_prefix(path("corpus/llama2c_tokenizer", "tokenizer-400.bin"), 0, b, o);
    }
    free(b);
    /* Three entries, vocab_size 3. */
    unsigned char small[64];
    size_t o = 0;
    int32_t max_len = 3;
    memcpy(small, &max_len, 4), o = 4;
    const char *p[3] = {"a", "bc", "\xE2\x96\x81"};
    for (int i = 0; i < 3; i++) {
        float s = -(float)i;
        int32_t l = (int32_t)strlen(p[i]);
        memcpy(small + o, &s, 4), memcpy(small + o + 4, &l, 4), o += 8;
        memcpy(small + o, p[i], (size_t)l), o += (size_t)l;
    }
    with_prefix(path("corpus/llama2c_tokenizer", "three.bin"), 5, small, o);
}

/* ------------------------------------------------------------ tokenizers */

static rotary_tokenizer *train_bpe(int vocab, size_t text_bytes) {
    size_t n;
    unsigned char *b = read_all(shared_path("tinyshakespeare.txt"), &n);
    if (!b) die("tinyshakespeare.txt");
    static const char extra[] = " caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E "
                                "\xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80\xF0\x9F\x98\x80 1234 "
                                "  \t\n\n";
    if (text_bytes > n) text_bytes = n;
    unsigned char *t = malloc(text_bytes + 8 * sizeof extra);
    memcpy(t, b, text_bytes);
    size_t m = text_bytes;
    for (int i = 0; i < 8; i++) memcpy(t + m, extra, sizeof extra - 1), m += sizeof extra - 1;
    rotary_tokenizer *tok;
    if (rotary_tokenizer_train(&tok, t, m, vocab, NULL, NULL)) die("train");
    free(t);
    free(b);
    return tok;
}

static void write_tok_gguf(const rotary_tokenizer *t, const char *p) {
    rotary_gguf_writer *w;
    if (rotary_gguf_writer_new(&w) || rotary_tokenizer_to_gguf(t, w) ||
        rotary_gguf_set_string(w, "general.architecture", "llama", 5) || rotary_gguf_write(w, p))
        die(p);
    rotary_gguf_writer_free(w);
}

/* ------------------------------------------------------------- GGUF copy */

typedef struct {
    const char **s;
    size_t *len;
    int n;
} strset;

static int str_cmp(const void *a, const void *b) {
    const char *const *x = a, *const *y = b;
    /* strings are stored as "len\0bytes" below; compare by (len, bytes) */
    size_t lx, ly;
    memcpy(&lx, *x, sizeof lx), memcpy(&ly, *y, sizeof ly);
    if (lx != ly) return lx < ly ? -1 : 1;
    return memcmp(*x + sizeof lx, *y + sizeof ly, lx);
}

/* Packed copies (length then bytes) so one comparator serves. */
static char *pack(const char *s, size_t len) {
    char *p = malloc(sizeof len + len + 1);
    memcpy(p, &len, sizeof len);
    memcpy(p + sizeof len, s, len);
    return p;
}

static int has(char **sorted, int n, const char *s, size_t len) {
    char *k = pack(s, len);
    int found = bsearch(&k, sorted, (size_t)n, sizeof *sorted, str_cmp) != NULL;
    free(k);
    return found;
}

/* Copy every key of g into w; the tokenizer arrays keep their first
 * n_tok entries (0: all), merges only among those tokens, and ids past
 * them are dropped. Arrays of arrays are skipped. */
/* When set, copy_kvs writes this pre-tokenizer name instead of the file's. */
static const char *override_pre;

static void copy_kvs(const rotary_gguf *g, rotary_gguf_writer *w, uint64_t n_tok) {
    char **sorted = NULL;
    int n_sorted = 0;
    uint64_t nt = 0;
    int et;
    if (n_tok && rotary_gguf_get_array(g, "tokenizer.ggml.tokens", &et, &nt) == ROTARY_OK) {
        if (nt > n_tok) nt = n_tok;
        sorted = malloc(nt * sizeof *sorted);
        for (uint64_t i = 0; i < nt; i++) {
            const char *s;
            size_t len;
            if (rotary_gguf_array_string(g, "tokenizer.ggml.tokens", i, &s, &len)) die("tokens");
            sorted[n_sorted++] = pack(s, len);
        }
        qsort(sorted, (size_t)n_sorted, sizeof *sorted, str_cmp);
    }
    for (int i = 0; i < rotary_gguf_n_kv(g); i++) {
        const char *key = rotary_gguf_kv_key(g, i);
        int type = rotary_gguf_kv_type(g, i);
        const void *val;
        size_t nb;
        rotary_gguf_kv_value(g, i, &val, &nb);
        if (n_tok && strstr(key, "_token_id")) {
            int64_t id;
            if (rotary_gguf_get_int(g, key, &id) == ROTARY_OK && (uint64_t)id >= n_tok) continue;
        }
        if (type == ROTARY_GGUF_STRING) {
            const char *s;
            size_t len;
            rotary_gguf_get_string(g, key, &s, &len);
            if (override_pre && !strcmp(key, "tokenizer.ggml.pre"))
                s = override_pre, len = strlen(override_pre);
            if (rotary_gguf_set_string(w, key, s, len)) die(key);
        } else if (type != ROTARY_GGUF_ARRAY) {
            if (rotary_gguf_set_scalar(w, key, type, val)) die(key);
        } else {
            uint64_t n;
            rotary_gguf_get_array(g, key, &et, &n);
            if (et == ROTARY_GGUF_ARRAY) continue;
            int is_merges = !strcmp(key, "tokenizer.ggml.merges");
            int is_tok = !strncmp(key, "tokenizer.ggml.", 15) && !is_merges;
            if (n_tok && is_tok && n > n_tok) n = n_tok;
            if (et == ROTARY_GGUF_STRING) {
                const char **s = malloc((n ? n : 1) * sizeof *s);
                size_t *len = malloc((n ? n : 1) * sizeof *len);
                uint64_t k = 0;
                for (uint64_t j = 0; j < n; j++) {
                    rotary_gguf_array_string(g, key, j, &s[k], &len[k]);
                    if (n_tok && is_merges) {
                        const char *sp = memchr(s[k], ' ', len[k]);
                        if (!sp) continue;
                        size_t la = (size_t)(sp - s[k]), lb = len[k] - la - 1;
                        char *both = malloc(la + lb + 1);
                        memcpy(both, s[k], la), memcpy(both + la, sp + 1, lb);
                        int keep = has(sorted, n_sorted, s[k], la) &&
                                   has(sorted, n_sorted, sp + 1, lb) &&
                                   has(sorted, n_sorted, both, la + lb);
                        free(both);
                        if (!keep) continue;
                    }
                    k++;
                }
                if (rotary_gguf_set_strings(w, key, s, len, k)) die(key);
                free(s);
                free(len);
            } else {
                if (rotary_gguf_set_array(w, key, et, (const unsigned char *)val + 12, n))
                    die(key);
            }
        }
    }
    for (int i = 0; i < n_sorted; i++) free(sorted[i]);
    free(sorted);
}

static void trim_vocab(const char *src, uint64_t n_tok, const char *dst) {
    rotary_gguf *g;
    rotary_gguf_writer *w;
    if (rotary_gguf_open(&g, src)) die(src);
    if (rotary_gguf_writer_new(&w)) die("writer");
    copy_kvs(g, w, n_tok);
    if (rotary_gguf_write(w, dst)) die(dst);
    rotary_gguf_writer_free(w);
    /* It must load. */
    rotary_gguf *h;
    rotary_tokenizer *t;
    if (rotary_gguf_open(&h, dst) || rotary_tokenizer_from_gguf(&t, h)) die(dst);
    rotary_tokenizer_free(t);
    rotary_gguf_close(h);
    rotary_gguf_close(g);
}

/* ---------------------------------------------------------- GGUF models */

/* Re-write a GGUF model with its matrices as Q8_0, F16 and BF16 in turn. */
static void requantize(const char *src, const char *dst) {
    rotary_gguf *g;
    rotary_gguf_writer *w;
    if (rotary_gguf_open(&g, src) || rotary_gguf_writer_new(&w)) die(src);
    copy_kvs(g, w, 0);
    int nt = rotary_gguf_n_tensors(g);
    void **bufs = calloc((size_t)nt, sizeof *bufs);
    for (int i = 0; i < nt; i++) {
        const rotary_gguf_tensor *t = rotary_gguf_tensor_at(g, i);
        const float *x = t->data;
        size_t n = (size_t)t->n_elements;
        int type = t->n_dims == 1 ? ROTARY_GGML_F32 : (int[]){ROTARY_GGML_Q8_0, ROTARY_GGML_F16,
                                                              ROTARY_GGML_BF16}[i % 3];
        if (type == ROTARY_GGML_Q8_0 && t->ne[0] % 32) type = ROTARY_GGML_F16;
        const void *data = t->data;
        if (type == ROTARY_GGML_Q8_0) {
            bufs[i] = malloc(n / 32 * 34);
            rotary_q8_0_quantize(bufs[i], x, n);
            data = bufs[i];
        } else if (type != ROTARY_GGML_F32) {
            uint16_t *h = malloc(n * 2);
            for (size_t k = 0; k < n; k++)
                h[k] = type == ROTARY_GGML_F16 ? rotary_f32_to_f16(x[k]) : rotary_f32_to_bf16(x[k]);
            bufs[i] = h;
            data = h;
        }
        if (rotary_gguf_add_tensor(w, t->name, type, t->n_dims, t->ne, data)) die(t->name);
    }
    if (rotary_gguf_write(w, dst)) die(dst);
    for (int i = 0; i < nt; i++) free(bufs[i]);
    free(bufs);
    rotary_gguf_writer_free(w);
    rotary_gguf_close(g);
}

/* Every key/value type, nested arrays aside, and a tensor of each type. */
static void all_types(const char *p) {
    rotary_gguf_writer *w;
    if (rotary_gguf_writer_new(&w)) die("writer");
    const uint8_t u8 = 200;
    const int8_t i8 = -100;
    const uint16_t u16 = 60000;
    const int16_t i16 = -30000;
    const uint64_t u64 = 1ull << 63;
    const int64_t i64 = -(1ll << 40);
    const double f64 = 3.25;
    const uint8_t b = 1;
    rotary_gguf_set_scalar(w, "t.u8", ROTARY_GGUF_U8, &u8);
    rotary_gguf_set_scalar(w, "t.i8", ROTARY_GGUF_I8, &i8);
    rotary_gguf_set_scalar(w, "t.u16", ROTARY_GGUF_U16, &u16);
    rotary_gguf_set_scalar(w, "t.i16", ROTARY_GGUF_I16, &i16);
    rotary_gguf_set_u32(w, "general.alignment", 64);
    rotary_gguf_set_i32(w, "t.i32", -7);
    rotary_gguf_set_f32(w, "t.f32", 0.5f);
    rotary_gguf_set_scalar(w, "t.bool", ROTARY_GGUF_BOOL, &b);
    rotary_gguf_set_string(w, "t.string", "h\0llo", 5);
    rotary_gguf_set_scalar(w, "t.u64", ROTARY_GGUF_U64, &u64);
    rotary_gguf_set_scalar(w, "t.i64", ROTARY_GGUF_I64, &i64);
    rotary_gguf_set_scalar(w, "t.f64", ROTARY_GGUF_F64, &f64);
    const int32_t ai[4] = {1, -2, 3, -4};
    const float af[3] = {1.0f, NAN, -INFINITY};
    const uint8_t ab[3] = {0, 1, 1};
    rotary_gguf_set_array(w, "a.i32", ROTARY_GGUF_I32, ai, 4);
    rotary_gguf_set_array(w, "a.f32", ROTARY_GGUF_F32, af, 3);
    rotary_gguf_set_array(w, "a.bool", ROTARY_GGUF_BOOL, ab, 3);
    rotary_gguf_set_array(w, "a.empty", ROTARY_GGUF_U64, NULL, 0);
    const char *ss[3] = {"x", "", "\xE2\x96\x81y"};
    rotary_gguf_set_strings(w, "a.str", ss, NULL, 3);
    static float f[64];
    static uint16_t h[64], bf[64];
    static unsigned char q[2 * 34];
    for (int i = 0; i < 64; i++) {
        f[i] = (float)(i - 32) / 8.0f;
        h[i] = rotary_f32_to_f16(f[i]);
        bf[i] = rotary_f32_to_bf16(f[i]);
    }
    rotary_q8_0_quantize(q, f, 64);
    const int64_t ne2[2] = {32, 2}, ne1[1] = {5}, ne4[4] = {2, 2, 2, 2};
    rotary_gguf_add_tensor(w, "f32", ROTARY_GGML_F32, 1, ne1, f);
    rotary_gguf_add_tensor(w, "f16", ROTARY_GGML_F16, 2, ne2, h);
    rotary_gguf_add_tensor(w, "bf16", ROTARY_GGML_BF16, 4, ne4, bf);
    rotary_gguf_add_tensor(w, "q8_0", ROTARY_GGML_Q8_0, 2, ne2, q);
    if (rotary_gguf_write(w, p)) die(p);
    rotary_gguf_writer_free(w);
}

static void gguf_corpus(const char *clean_gpt2, const char *clean_spm) {
    mkdirs("corpus/gguf");
    mkdirs("corpus/gguf_tokenizer");
    mkdirs("corpus/gguf_model");
    mkdirs("corpus/tokenizer_json");
    mkdirs("data");

    rotary_tokenizer *bytes, *bpe, *bpe300, *l2c;
    if (rotary_tokenizer_bytes(&bytes)) die("bytes");
    bpe = train_bpe(512, 200000);
    bpe300 = train_bpe(300, 20000);
    if (rotary_tokenizer_save(bpe, path("data", "bpe.json"))) die("save");
    if (rotary_tokenizer_save(bpe300, path("corpus/tokenizer_json", "bpe300.json"))) die("save");
    if (rotary_tokenizer_save(bytes, path("corpus/tokenizer_json", "bytes.json"))) die("save");
    if (rotary_tokenizer_load_llama2c(&l2c, shared_path("tok512.bin"), 0)) die("tok512");

    write_tok_gguf(bytes, path("corpus/gguf_tokenizer", "bytes.gguf"));
    write_tok_gguf(bpe300, path("corpus/gguf_tokenizer", "bpe300.gguf"));
    write_tok_gguf(l2c, path("corpus/gguf_tokenizer", "tok512-llama.gguf"));
    write_tok_gguf(bpe300, path("corpus/gguf", "bpe300.gguf"));
    all_types(path("corpus/gguf", "all-types.gguf"));
    if (clean_gpt2) {
        trim_vocab(clean_gpt2, 2000, path("data", "gpt2.gguf"));
        trim_vocab(clean_gpt2, 400, path("corpus/gguf_tokenizer", "gpt2-400.gguf"));
        override_pre = "llama-bpe"; /* the same words under Llama 3's rules */
        trim_vocab(clean_gpt2, 400, path("corpus/gguf_tokenizer", "gpt2-400-llama-bpe.gguf"));
        override_pre = NULL;
        trim_vocab(clean_gpt2, 300, path("corpus/gguf", "gpt2-300.gguf"));
    }
    if (clean_spm) {
        trim_vocab(clean_spm, 2000, path("data", "llama-spm.gguf"));
        trim_vocab(clean_spm, 400, path("corpus/gguf_tokenizer", "llama-spm-400.gguf"));
    }

    /* Models: tiny llama-architecture exports, one re-typed. */
    rotary_config c;
    rotary_model m;
    tiny_config(&c, 32, 256);
    build(&m, &c, 4);
    if (rotary_model_export_gguf(&m, bytes, path("corpus/gguf_model", "tied-f32.tmp")))
        die("export");
    requantize(path("corpus/gguf_model", "tied-f32.tmp"),
               path("corpus/gguf_model", "tied-q8-f16-bf16.gguf"));
    remove(path("corpus/gguf_model", "tied-f32.tmp"));
    rotary_model_free(&m);
    tiny_config(&c, 8, 256);
    c.tied = 0, c.rope_pairing = ROTARY_ROPE_HALF, c.rotary_dim = 2;
    c.rope_scaling.type = ROTARY_ROPE_SCALING_YARN;
    c.rope_scaling.factor = 4.0, c.rope_scaling.original_ctx = 8;
    build(&m, &c, 5);
    if (rotary_model_export_gguf(&m, bytes, path("corpus/gguf_model", "untied-yarn-bytes.gguf")))
        die("export");
    if (rotary_model_export_gguf(&m, bytes, path("corpus/gguf", "untied-yarn-bytes.gguf")))
        die("export");
    rotary_model_free(&m);
    /* Per-pair RoPE factors (rope_freqs.weight), as Llama 3.1 files carry. */
    tiny_config(&c, 16, 256);
    c.rotary_dim = 6;
    c.rope_scaling.type = ROTARY_ROPE_SCALING_FACTORS, c.rope_scaling.n_factors = 3;
    c.rope_scaling.freq_factors[0] = 1, c.rope_scaling.freq_factors[1] = 2.5f;
    c.rope_scaling.freq_factors[2] = 8;
    build(&m, &c, 6);
    if (rotary_model_export_gguf(&m, bytes, path("corpus/gguf_model", "rope-freqs.gguf")))
        die("export");
    rotary_model_free(&m);

    rotary_tokenizer_free(bytes);
    rotary_tokenizer_free(bpe);
    rotary_tokenizer_free(bpe300);
    rotary_tokenizer_free(l2c);
}

/* ---------------------------------------------------- tokens, config, text */

static void tokens_corpus(void) {
    mkdirs("corpus/tokens");
    int ids[40];
    for (int i = 0; i < 40; i++) ids[i] = (i * 37) % 300;
    if (rotary_tokens_save(path("corpus/tokens", "vocab300.tok"), ids, 40, 300)) die("tokens");
    for (int i = 0; i < 40; i++) ids[i] = (i * 7919) % 70000;
    if (rotary_tokens_save(path("corpus/tokens", "vocab70000.tok"), ids, 12, 70000)) die("tokens");
    if (rotary_tokens_save(path("corpus/tokens", "empty.tok"), ids, 0, 1)) die("tokens");
}

static void text_corpus(void) {
    mkdirs("corpus/encode");
    size_t n;
    unsigned char *b = read_all(shared_path("tinyshakespeare.txt"), &n);
    if (b) write_file(path("corpus/encode", "shakespeare.txt"), b + 5000, 600, NULL, 0);
    free(b);
    const char *inp[2] = {"gguf/ggml-vocab-llama-spm.gguf.inp", "gguf/ggml-vocab-gpt-2.gguf.inp"};
    const char *out[2] = {"llama-spm-vectors.txt", "gpt-2-vectors.txt"};
    for (int i = 0; i < 2; i++) {
        b = read_all(shared_path(inp[i]), &n);
        if (b) write_file(path("corpus/encode", out[i]), b, n, NULL, 0);
        free(b);
    }
    static const char mixed[] =
        "\xE4\xBA\xBA\xE7\x94\x9F\xE8\x8B\xA6\xE7\x9F\xAD\xEF\xBC\x8C  caf\xC3\xA9\t\xF0\x9F\x98\x80"
        " \xE2\x96\x81\xE2\x96\x81x <s></s><unk><0x41> <|endoftext|> 3.14159 I'm \r\n";
    write_file(path("corpus/encode", "mixed.txt"), mixed, sizeof mixed - 1, NULL, 0);
    static const unsigned char invalid[] = {0xFF, 0xFE, 'a', 0xC3, 0x28, 0xE2, 0x82, ' ',
                                            0xED, 0xA0, 0x80, 0xF4, 0x90, 0x80, 0x80, 0x00,
                                            0xC0, 0xAF, '\n', 0x80};
    write_file(path("corpus/encode", "invalid.bin"), invalid, sizeof invalid, NULL, 0);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: make_corpus FUZZ_DIR SHARED_DATA [CLEAN_GPT2_GGUF CLEAN_SPM_GGUF]\n");
        return 2;
    }
    fuzz_dir = argv[1], shared = argv[2];
    mkdirs("corpus");
    safetensors_corpus();
    llama2c_corpus();
    gguf_corpus(argc > 3 ? argv[3] : NULL, argc > 4 ? argv[4] : NULL);
    tokens_corpus();
    text_corpus();
    return 0;
}
