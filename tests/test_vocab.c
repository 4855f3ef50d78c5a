/* test_vocab.c: the tokenizers of existing models.
 *
 * - llama2.c tokenizer.bin (tok512.bin, the 32000-entry Llama 2 tokenizer.bin):
 *   known encodings, pieces, BOS/EOS, round trips, speed;
 * - llama.cpp's tokenizer test vectors (gguf/ggml-vocab-*.gguf with .inp and
 *   .out): every input must encode to exactly the expected ids, through the
 *   GGUF reader, and for the Llama vocabulary also through tokenizer.bin;
 * - our own tokenizers through GGUF (to_gguf, write, open, from_gguf) and
 *   the model tokenizers likewise;
 * - bad files: clear errors, never a crash (run it under ASan too).
 *
 * The shared copies of the two ggml-vocab files were damaged on their way
 * here: every byte that is not valid UTF-8 was replaced by U+FFFD (EF BF BD),
 * in counts, lengths and floats alike, so no GGUF reader can open them. The
 * test then salvages them (salvage() below): it walks the damaged file,
 * treating each U+FFFD in a binary field as one lost byte and finding array
 * ends from the next key, keeps every key it can rebuild exactly, replaces
 * the Llama scores (all floats, destroyed) with tokenizer.bin's scores after
 * checking that damaging those in the same way gives the very bytes in the
 * file, and writes a clean GGUF with our writer (kept in the working directory
 * as test_vocab_ggml-vocab-*.gguf when ROTARY_KEEP_SALVAGED is set). An
 * intact copy is used as is.
 *
 * Data: $ROTARY_DATA_DIR or argv[1] (default ../../shared/data from the build
 * dir). Exit 0 when every check passes. */
#define _POSIX_C_SOURCE 200809L
#define CHECK_NAME_WIDTH 52
#include "check.h"
#include "tokenizer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char dir[1024];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0, k;
    unsigned char *b = malloc(cap);
    while (b && (k = fread(b + len, 1, cap - len, f)) > 0) {
        len += k;
        if (len == cap) {
            unsigned char *nb = realloc(b, cap *= 2);
            if (!nb) free(b);
            b = nb;
        }
    }
    fclose(f);
    if (b) b[len < cap ? len : cap - 1] = 0;
    *n = len;
    return b;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        printf("FAIL cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static char *data_path(const char *name) {
    static char buf[4][1200];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

/* " 1 2 3" (llama.cpp's .out format) into out. */
static void ids_str(char *out, size_t cap, const int *ids, size_t n) {
    size_t o = 0;
    out[0] = 0;
    for (size_t i = 0; i < n && o + 16 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, " %d", ids[i]);
}

static int encode_str(const rotary_tokenizer *t, const char *s, char *out, size_t cap) {
    int *ids;
    size_t n;
    if (rotary_tokenizer_encode(t, (const unsigned char *)s, strlen(s), &ids, &n)) {
        snprintf(out, cap, "error: %s", rotary_last_error());
        return -1;
    }
    ids_str(out, cap, ids, n);
    free(ids);
    return 0;
}

/* decode(encode(s)) == want; pieces concatenate to the same bytes. */
static int round_trip(const rotary_tokenizer *t, const unsigned char *s, size_t n,
                      const unsigned char *want, size_t want_n) {
    int *ids;
    unsigned char *back;
    size_t m, nb;
    if (rotary_tokenizer_encode(t, s, n, &ids, &m)) return 0;
    if (rotary_tokenizer_decode(t, ids, m, &back, &nb)) {
        free(ids);
        return 0;
    }
    int ok = nb == want_n && (!nb || !memcmp(back, want, nb));
    size_t o = 0;
    for (size_t i = 0; i < m && ok; i++) {
        int len;
        const unsigned char *p = rotary_tokenizer_piece(t, ids[i], &len);
        ok = p && o + (size_t)len <= want_n && !memcmp(p, want + o, (size_t)len);
        o += (size_t)len;
    }
    free(ids);
    free(back);
    return ok && o == want_n;
}

/* round_trip where decoding gives a space and then s (llama2.c's tokenizers
 * put a space in front of the text). */
static int round_trip_spaced(const rotary_tokenizer *t, const char *s, size_t n) {
    unsigned char *want = malloc(n + 1);
    if (!want) return 0;
    want[0] = ' ';
    memcpy(want + 1, s, n);
    int ok = round_trip(t, (const unsigned char *)s, n, want, n + 1);
    free(want);
    return ok;
}

/* ------------------------------------------------------- test vectors */

/* Run llama.cpp's vectors: inputs end at each "\n__ggml_vocab_test__\n"
 * (the newline before the marker is not part of the input), and line i of
 * the .out file holds the ids of input i. Prints every mismatch. */
static void run_vectors(const rotary_tokenizer *t, const char *name, const char *inp_path,
                        const char *out_path) {
    size_t ni, no;
    char *inp = (char *)read_all(inp_path, &ni), *out = (char *)read_all(out_path, &no);
    if (!inp || !out) {
        check(0, name, "cannot read %s or %s", inp_path, out_path);
        free(inp);
        free(out);
        return;
    }
    static const char sep[] = "\n__ggml_vocab_test__\n";
    char *p = inp, *q = out, *s;
    int total = 0, pass = 0;
    static char got[1 << 16];
    while ((s = strstr(p, sep))) {
        char *nl = strchr(q, '\n');
        if (!nl) {
            check(0, name, "%s has fewer lines than there are inputs", out_path);
            break;
        }
        *nl = 0;
        *s = 0;
        total++;
        if (encode_str(t, p, got, sizeof got) == 0 && !strcmp(got, q)) {
            pass++;
        } else {
            printf("     mismatch, input %d: \"%s\"\n       expected:%s\n       got:     %s\n",
                   total, p, q, got);
        }
        p = s + sizeof sep - 1;
        q = nl + 1;
    }
    check(total > 0 && pass == total, name, "%d of %d vectors", pass, total);
    free(inp);
    free(out);
}

/* ------------------------------------------------------------- salvage */

/* What Python's bytes.decode('utf-8', 'replace').encode() makes of s: each
 * maximal ill-formed subsequence becomes U+FFFD. out needs 3 n bytes. */
static size_t mangle(const unsigned char *s, size_t n, unsigned char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        int need = c < 0x80 ? 0 : c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2
                 : c >= 0xF0 && c <= 0xF4 ? 3 : -1;
        if (need == 0) {
            out[o++] = s[i++];
            continue;
        }
        size_t j = 1;
        if (need > 0) {
            unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
            unsigned hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
            while ((int)j <= need && i + j < n && s[i + j] >= (j == 1 ? lo : 0x80) &&
                   s[i + j] <= (j == 1 ? hi : 0xBF))
                j++;
        }
        if (need > 0 && (int)j == need + 1) { /* valid */
            memcpy(out + o, s + i, j);
            o += j;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
        }
        i += j;
    }
    return o;
}

typedef struct {
    const unsigned char *p;
    size_t n;
} blob;

static int is_fffd(const blob *b, size_t o) {
    return o + 3 <= b->n && b->p[o] == 0xEF && b->p[o + 1] == 0xBF && b->p[o + 2] == 0xBD;
}

/* k logical bytes of a little-endian field at *o; each U+FFFD is one lost
 * byte (read as 0, its bit set in *lost). -1 past the end. */
static int lfixed(const blob *b, size_t *o, int k, uint64_t *v, unsigned *lost) {
    *v = 0;
    *lost = 0;
    for (int i = 0; i < k; i++) {
        if (is_fffd(b, *o)) {
            *lost |= 1u << i;
            *o += 3;
        } else if (*o < b->n) {
            *v |= (uint64_t)b->p[(*o)++] << (8 * i);
        } else {
            return -1;
        }
    }
    return 0;
}

/* Does a key/value start at o (or does the file end there)? */
static int kv_at(const blob *b, size_t o) {
    if (o == b->n) return 1;
    uint64_t len, type;
    unsigned lost;
    if (lfixed(b, &o, 8, &len, &lost) || lost || len < 3 || len > 200 || o + len > b->n) return 0;
    int dot = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = b->p[o + i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.')) return 0;
        dot |= c == '.';
    }
    o += len;
    return dot && !lfixed(b, &o, 4, &type, &lost) && !lost && type <= 12;
}

/* Could count c have been damaged into (v, lost)? Lost bytes were >= 0x80. */
static int count_fits(uint64_t c, uint64_t v, unsigned lost) {
    for (int i = 0; i < 8; i++) {
        unsigned byte = (unsigned)(c >> (8 * i)) & 0xFF;
        if (lost >> i & 1 ? byte < 0x80 : byte != ((v >> (8 * i)) & 0xFF)) return 0;
    }
    return 1;
}

static int valid_utf8(const unsigned char *s, size_t n) {
    unsigned char tmp[3 * 256];
    while (n) { /* valid iff mangling changes nothing; in slices that never cut a character */
        size_t k = n > 200 ? 200 : n;
        while (k < n && k > 1 && (s[k] & 0xC0) == 0x80) k--;
        if (mangle(s, k, tmp) != k || memcmp(tmp, s, k)) return 0;
        s += k;
        n -= k;
    }
    return 1;
}

/* A string of a string array at *o: its length may have lost its low byte;
 * take the length whose string is valid UTF-8 and is followed by another
 * plausible length or a key. */
static int salvage_string(const blob *b, size_t *o, const unsigned char **s, size_t *len) {
    uint64_t v;
    unsigned lost;
    if (lfixed(b, o, 8, &v, &lost)) return -1;
    if (!lost) {
        if (v > b->n - *o) return -1;
        *s = b->p + *o;
        *len = (size_t)v;
        *o += (size_t)v;
        return 0;
    }
    if (lost != 1 || v > 0xFFFFFFu) return -1;
    for (uint64_t c = v | 0x80; c <= (v | 0xFF); c++) {
        if (c > b->n - *o || !valid_utf8(b->p + *o, (size_t)c)) continue;
        size_t e = *o + (size_t)c, e2 = e;
        uint64_t nv;
        unsigned nl;
        if (kv_at(b, e) || (!lfixed(b, &e2, 8, &nv, &nl) && nv < 0x10000)) {
            *s = b->p + *o;
            *len = (size_t)c;
            *o = e;
            return 0;
        }
    }
    return -1;
}

typedef struct {
    const char *key;
    const float *values; /* replaces a damaged F32 array of this key */
    size_t n;
} substitute;

/* Rebuild the tokenizer keys of a damaged GGUF into w. report gets a line
 * per key that was dropped or replaced. Returns 0 on success. */
static int salvage(const char *path, rotary_gguf_writer *w, const substitute *sub, char *report,
                   size_t report_cap) {
    size_t size;
    unsigned char *data = read_all(path, &size);
    if (!data) return -1;
    blob b = {data, size};
    size_t o = 8, ro = 0;
    uint64_t n_tensors, n_kv;
    unsigned lost, lost2;
    report[0] = 0;
    int rc = -1, line = 0;
#define FAIL_AT                                                                                    \
    do {                                                                                           \
        line = __LINE__;                                                                           \
        goto done;                                                                                 \
    } while (0)
    if (size < 24 || memcmp(data, "GGUF", 4) || lfixed(&b, &o, 8, &n_tensors, &lost) || lost ||
        lfixed(&b, &o, 8, &n_kv, &lost2) || lost2 || n_tensors)
        FAIL_AT;
    for (uint64_t i = 0; i < n_kv; i++) {
        uint64_t klen, type, v;
        if (lfixed(&b, &o, 8, &klen, &lost) || lost || klen > 200 || o + klen > size) FAIL_AT;
        char key[256];
        memcpy(key, data + o, klen);
        key[klen] = 0;
        o += klen;
        if (lfixed(&b, &o, 4, &type, &lost) || lost) FAIL_AT;
        int keep = !strncmp(key, "tokenizer.", 10);
        static const int scalar_size[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        if (type == ROTARY_GGUF_STRING) {
            const unsigned char *s;
            size_t len;
            if (salvage_string(&b, &o, &s, &len)) FAIL_AT;
            if (keep && rotary_gguf_set_string(w, key, (const char *)s, len)) FAIL_AT;
        } else if (type != ROTARY_GGUF_ARRAY) {
            if (type > 12) FAIL_AT;
            if (lfixed(&b, &o, scalar_size[type], &v, &lost)) FAIL_AT;
            if (keep && lost) {
                ro += (size_t)snprintf(report + ro, report_cap - ro, "%s%s (damaged, dropped)",
                                       ro ? ", " : "", key);
            } else if (keep) {
                unsigned char raw[8];
                for (int k = 0; k < 8; k++) raw[k] = (unsigned char)(v >> (8 * k));
                if (rotary_gguf_set_scalar(w, key, (int)type, raw)) FAIL_AT;
            }
        } else {
            uint64_t et, count;
            if (lfixed(&b, &o, 4, &et, &lost) || lost || et > 12) FAIL_AT;
            if (lfixed(&b, &o, 8, &count, &lost)) FAIL_AT;
            if (et == ROTARY_GGUF_STRING) {
                size_t cap = 1024, m = 0;
                const char **s = malloc(cap * sizeof *s);
                size_t *len = malloc(cap * sizeof *len);
                int ok = s && len;
                while (ok) {
                    if (lost ? count_fits(m, count, lost) && kv_at(&b, o) : m == count) break;
                    if (m == cap) {
                        cap *= 2;
                        const char **s2 = realloc(s, cap * sizeof *s);
                        size_t *l2 = realloc(len, cap * sizeof *len);
                        if (s2) s = s2;
                        if (l2) len = l2;
                        if (!s2 || !l2) ok = 0;
                        if (!ok) break;
                    }
                    const unsigned char *p;
                    if (salvage_string(&b, &o, &p, &len[m])) ok = 0;
                    else s[m++] = (const char *)p;
                }
                if (ok && keep) ok = !rotary_gguf_set_strings(w, key, s, len, m);
                if (ok && keep && lost)
                    ro += (size_t)snprintf(report + ro, report_cap - ro, "%s%s (count %zu from the "
                                           "next key)", ro ? ", " : "", key, m);
                free(s);
                free(len);
                if (!ok) FAIL_AT;
            } else {
                if (et == ROTARY_GGUF_ARRAY || et == ROTARY_GGUF_BOOL) FAIL_AT;
                size_t es = (size_t)scalar_size[et], start = o, end = o;
                /* The end: the next key (or the end of the file). */
                if (!lost && count <= (size - o) / es && kv_at(&b, o + count * es) &&
                    !memchr(data + o, 0xEF, count * es)) {
                    end = o + count * es;
                } else {
                    while (end <= size && !kv_at(&b, end)) end++;
                    if (end > size) FAIL_AT;
                }
                size_t nbytes = end - start;
                int damaged = 0;
                for (size_t k = start; k + 3 <= end; k++) damaged |= is_fffd(&b, k);
                if (!damaged && !lost) {
                    if (keep && rotary_gguf_set_array(w, key, (int)et, data + start, count))
                        FAIL_AT;
                } else if (!damaged && nbytes % es == 0 && count_fits(nbytes / es, count, lost)) {
                    if (keep && rotary_gguf_set_array(w, key, (int)et, data + start, nbytes / es))
                        FAIL_AT;
                    if (keep)
                        ro += (size_t)snprintf(report + ro, report_cap - ro, "%s%s (count %zu from "
                                               "the next key)", ro ? ", " : "", key, nbytes / es);
                } else if (keep) { /* damaged values: only a verified substitute will do */
                    int done_sub = 0;
                    for (const substitute *u = sub; u && u->key; u++) {
                        if (strcmp(u->key, key) || et != ROTARY_GGUF_F32 || lost || u->n != count)
                            continue;
                        unsigned char *m = malloc(3 * 4 * u->n + 1);
                        size_t mn = m ? mangle((const unsigned char *)u->values, 4 * u->n, m) : 0;
                        int same = m && mn == nbytes && !memcmp(m, data + start, mn);
                        free(m);
                        if (same &&
                            !rotary_gguf_set_array(w, key, ROTARY_GGUF_F32, u->values, u->n)) {
                            ro += (size_t)snprintf(report + ro, report_cap - ro,
                                                   "%s%s (values "
                                                   "destroyed; replaced by a source whose damaged "
                                                   "bytes match the file's exactly)",
                                                   ro ? ", " : "", key);
                            done_sub = 1;
                        }
                    }
                    if (!done_sub) {
                        ro += (size_t)snprintf(report + ro, report_cap - ro, "%s%s (values "
                                               "destroyed, dropped)", ro ? ", " : "", key);
                    }
                }
                o = end;
            }
        }
        if (ro >= report_cap) ro = report_cap - 1;
    }
    rc = o == size ? 0 : -1;
    if (rc) line = __LINE__;
done:
    if (rc) snprintf(report, report_cap, "gave up at byte %zu (test_vocab.c line %d)", o, line);
#undef FAIL_AT
    free(data);
    return rc;
}

/* Open a vocabulary GGUF; when the reader refuses it, salvage it into a
 * clean file in the build directory and open that. */
static rotary_tokenizer *load_vocab(const char *name, const substitute *sub) {
    const char *path = data_path(name);
    rotary_gguf *g = NULL;
    rotary_tokenizer *t = NULL;
    char clean[256];
    if (rotary_gguf_open(&g, path) == ROTARY_OK) {
        check(1, name, "opened as is");
    } else {
        printf("     %s: %s\n", name, rotary_last_error());
        size_t n;
        unsigned char *d = read_all(path, &n);
        size_t fffd = 0;
        for (size_t i = 0; d && i + 3 <= n; i++)
            fffd += d[i] == 0xEF && d[i + 1] == 0xBF && d[i + 2] == 0xBD;
        free(d);
        printf(
            "     the file holds %zu U+FFFD sequences: damaged by a UTF-8 round trip; salvaging\n",
            fffd);
        rotary_gguf_writer *w;
        char report[2048];
        if (rotary_gguf_writer_new(&w)) {
            check(0, name, "writer: %s", rotary_last_error());
            return NULL;
        }
        const char *base = strrchr(name, '/');
        snprintf(clean, sizeof clean, "test_vocab_%s", base ? base + 1 : name);
        int ok = salvage(path, w, sub, report, sizeof report) == 0;
        ok = ok && rotary_gguf_write(w, clean) == ROTARY_OK;
        rotary_gguf_writer_free(w);
        check(ok, name, "salvaged: %s", report);
        const char *keep = getenv("ROTARY_KEEP_SALVAGED"); /* set: leave the clean copy */
        if (!ok || rotary_gguf_open(&g, clean)) {
            check(0, name, "cannot open the salvaged copy: %s", rotary_last_error());
            remove(clean);
            return NULL;
        }
        if (keep && *keep) printf("     kept the salvaged copy as %s\n", clean);
        else remove(clean);
    }
    if (rotary_tokenizer_from_gguf(&t, g)) check(0, name, "from_gguf: %s", rotary_last_error());
    rotary_gguf_close(g);
    return t;
}

/* Random byte strings (ASCII, UTF-8 and stray bytes mixed): decode(encode(x))
 * is x, or for SentencePiece " " + x with U+2581 read as a space. */
static void random_round_trips(const rotary_tokenizer *t, const char *name, int spm) {
    rotary_rng r;
    rotary_rng_seed(&r, 7);
    static const char *const bits[] = {"a",
                                       "e",
                                       " ",
                                       "  ",
                                       "the",
                                       "\n",
                                       "\t",
                                       "7",
                                       "\xC3\xA9",
                                       "\xE6\x97\x8B",
                                       "\xF0\x9F\x98\x80",
                                       "\xE2\x96\x81",
                                       "'s",
                                       ".",
                                       "\xFF",
                                       "\xC3",
                                       "\x80",
                                       "\xED\xA0\x80",
                                       "<s>",
                                       "<0x41>"};
    int ok = 1, trials = 300;
    unsigned char x[2048], want[2048];
    for (int k = 0; k < trials && ok; k++) {
        size_t n = 0, parts = rotary_rng_next(&r) % 64;
        for (size_t i = 0; i < parts; i++) {
            const char *b = bits[rotary_rng_next(&r) % (sizeof bits / sizeof *bits)];
            if (rotary_rng_next(&r) % 8 == 0) x[n++] = (unsigned char)rotary_rng_next(&r);
            else {
                memcpy(x + n, b, strlen(b));
                n += strlen(b);
            }
        }
        size_t m = 0;
        if (spm && n) want[m++] = ' ';
        for (size_t i = 0; i < n;) {
            if (spm && i + 3 <= n && !memcmp(x + i, "\xE2\x96\x81", 3)) {
                want[m++] = ' ';
                i += 3;
            } else {
                want[m++] = x[i++];
            }
        }
        ok = round_trip(t, x, n, want, m);
        if (!ok) printf("     failed on a string of %zu bytes (trial %d)\n", n, k);
    }
    check(ok, name, "%d random strings, exact", trials);
}

/* Flip random bytes of a valid GGUF tokenizer file: the reader or the
 * tokenizer must refuse it, or what loads must encode and decode. */
static void fuzz_gguf(const rotary_tokenizer *t, const char *name) {
    rotary_gguf_writer *w;
    if (rotary_gguf_writer_new(&w)) return;
    int rc = rotary_tokenizer_to_gguf(t, w);
    if (!rc) rc = rotary_gguf_write(w, "test_vocab_fuzz.gguf");
    rotary_gguf_writer_free(w);
    size_t n;
    unsigned char *orig = rc ? NULL : read_all("test_vocab_fuzz.gguf", &n);
    if (!orig) {
        check(0, name, "cannot write the file: %s", rotary_last_error());
        return;
    }
    unsigned char *buf = malloc(n);
    rotary_rng r;
    rotary_rng_seed(&r, 11);
    int loaded = 0, refused = 0, trials = 400;
    for (int k = 0; k < trials; k++) {
        memcpy(buf, orig, n);
        int flips = 1 + (int)(rotary_rng_next(&r) % 4);
        for (int f = 0; f < flips; f++) {
            size_t at = 24 + rotary_rng_next(&r) % (n - 24); /* past the header counts */
            buf[at] = k % 2 ? (unsigned char)rotary_rng_next(&r)
                            : buf[at] ^ (unsigned char)(1u << (rotary_rng_next(&r) % 8));
        }
        write_bytes("test_vocab_fuzz.gguf", buf, n);
        rotary_gguf *g;
        rotary_tokenizer *u = NULL;
        if (rotary_gguf_open(&g, "test_vocab_fuzz.gguf")) {
            refused++;
            continue;
        }
        if (rotary_tokenizer_from_gguf(&u, g) == ROTARY_OK) {
            static const char text[] = "ab b \xC3\xA9 <s> x\xFF";
            int *ids;
            size_t m;
            if (rotary_tokenizer_encode(u, (const unsigned char *)text, sizeof text - 1, &ids,
                                        &m) == 0) {
                unsigned char *back;
                size_t nb;
                if (rotary_tokenizer_decode(u, ids, m, &back, &nb) == 0) free(back);
                free(ids);
            }
            rotary_tokenizer_free(u);
            loaded++;
        } else {
            refused++;
        }
        rotary_gguf_close(g);
    }
    remove("test_vocab_fuzz.gguf");
    free(buf);
    free(orig);
    check(loaded + refused == trials, name, "%d damaged copies: %d refused, %d loaded and encode",
          trials, refused, loaded);
}

/* ---------------------------------------------------------- bad input */

static void expect_fail(int rc, const char *name, const char *want) {
    const char *msg = rotary_last_error();
    check(rc != ROTARY_OK && strstr(msg, want), name, "%s", rc ? msg : "accepted");
}

/* A llama2.c tokenizer file from (score, piece) entries. */
static size_t llama2c_file(unsigned char *buf, int max_len, const char *const *pieces, int n) {
    size_t o = 0;
    memcpy(buf, &max_len, 4);
    o += 4;
    for (int i = 0; i < n; i++) {
        float s = (float)-i;
        int32_t l = (int32_t)strlen(pieces[i]);
        memcpy(buf + o, &s, 4);
        memcpy(buf + o + 4, &l, 4);
        memcpy(buf + o + 8, pieces[i], (size_t)l);
        o += 8 + (size_t)l;
    }
    return o;
}

static void bad_llama2c(void) {
    static const char *const pieces[] = {"<unk>", "\n<s>\n", "\n</s>\n", " a", "b", "ab"};
    unsigned char buf[512];
    size_t n = llama2c_file(buf, 6, pieces, 6);
    const char *path = "test_vocab_bad.bin";
    rotary_tokenizer *t = NULL;

    write_bytes(path, buf, n);
    int rc = rotary_tokenizer_load_llama2c(&t, path, 6);
    check(rc == ROTARY_OK && rotary_tokenizer_vocab_size(t) == 6, "llama2.c: a small valid file",
          "%s", rc ? rotary_last_error() : "6 tokens");
    rotary_tokenizer_free(t);
    t = NULL;
    rc = rotary_tokenizer_load_llama2c(&t, path, 0);
    check(rc == ROTARY_OK && rotary_tokenizer_vocab_size(t) == 6,
          "llama2.c: vocab size 0 reads all", "%s", rc ? rotary_last_error() : "6 tokens");
    rotary_tokenizer_free(t);
    t = NULL;
    expect_fail(rotary_tokenizer_load_llama2c(&t, path, 7), "llama2.c: fewer entries than vocab",
                "needs 7");
    write_bytes(path, buf, n - 1);
    expect_fail(rotary_tokenizer_load_llama2c(&t, path, 6), "llama2.c: truncated piece",
                "past the end");
    write_bytes(path, buf, n - 3 - 4);
    expect_fail(rotary_tokenizer_load_llama2c(&t, path, 6), "llama2.c: truncated header",
                "truncated");
    write_bytes(path, buf, 2);
    expect_fail(rotary_tokenizer_load_llama2c(&t, path, 6), "llama2.c: 2-byte file", "too short");
    unsigned char bad[512];
    memcpy(bad, buf, n);
    int32_t neg = -5;
    memcpy(bad + 4 + 4, &neg, 4); /* token 0's length */
    write_bytes(path, bad, n);
    expect_fail(rotary_tokenizer_load_llama2c(&t, path, 6), "llama2.c: negative length",
                "length -5");
    int32_t huge = 0x7FFFFFFF;
    memcpy(bad + 4 + 4, &huge, 4);
    write_bytes(path, bad, n);
    expect_fail(rotary_tokenizer_load_llama2c(&t, path, 6), "llama2.c: huge length",
                "max_token_length");
    memcpy(bad, &huge, 4);
    write_bytes(path, bad, n);
    expect_fail(rotary_tokenizer_load_llama2c(&t, path, 6), "llama2.c: huge max_token_length",
                "max_token_length");
    memcpy(bad, buf, n);
    float nan_score = NAN;
    memcpy(bad + 4 + 8 + 5, &nan_score, 4); /* token 1's score */
    write_bytes(path, bad, n);
    expect_fail(rotary_tokenizer_load_llama2c(&t, path, 6), "llama2.c: NaN score", "not a number");
    expect_fail(rotary_tokenizer_load_llama2c(&t, "no/such/file.bin", 6), "llama2.c: missing file",
                "cannot open");
    expect_fail(rotary_tokenizer_load_llama2c(&t, path, -1), "llama2.c: negative vocab size",
                "vocab size");
    remove(path);
    check(t == NULL, "llama2.c: *t stays NULL on failure", "%s", t ? "set" : "NULL");
}

/* A GGUF with a tokenizer, from parts; NULL parts are left out. */
typedef struct {
    const char *model, *pre;
    const char *const *tokens;
    int n_tokens;
    const float *scores;
    int n_scores;
    const int32_t *types;
    int n_types;
    const char *const *merges;
    int n_merges;
    int bos; /* -2: leave out */
    const char *extra_key;
    int32_t extra_value;
} gguf_parts;

static int gguf_try(const gguf_parts *p, rotary_tokenizer **t) {
    rotary_gguf_writer *w;
    *t = NULL;
    if (rotary_gguf_writer_new(&w)) return -100;
    if (p->model) rotary_gguf_set_string(w, "tokenizer.ggml.model", p->model, strlen(p->model));
    if (p->pre) rotary_gguf_set_string(w, "tokenizer.ggml.pre", p->pre, strlen(p->pre));
    if (p->tokens)
        rotary_gguf_set_strings(w, "tokenizer.ggml.tokens", p->tokens, NULL, (uint64_t)p->n_tokens);
    if (p->scores)
        rotary_gguf_set_array(w, "tokenizer.ggml.scores", ROTARY_GGUF_F32, p->scores,
                              (uint64_t)p->n_scores);
    if (p->types)
        rotary_gguf_set_array(w, "tokenizer.ggml.token_type", ROTARY_GGUF_I32, p->types,
                              (uint64_t)p->n_types);
    if (p->merges)
        rotary_gguf_set_strings(w, "tokenizer.ggml.merges", p->merges, NULL, (uint64_t)p->n_merges);
    if (p->bos != -2) rotary_gguf_set_i32(w, "tokenizer.ggml.bos_token_id", p->bos);
    if (p->extra_key) rotary_gguf_set_i32(w, p->extra_key, p->extra_value);
    const char *path = "test_vocab_bad.gguf";
    int rc = rotary_gguf_write(w, path);
    rotary_gguf_writer_free(w);
    if (rc) return -101;
    rotary_gguf *g;
    rc = rotary_gguf_open(&g, path);
    remove(path);
    if (rc) return -102;
    rc = rotary_tokenizer_from_gguf(t, g);
    rotary_gguf_close(g);
    return rc;
}

static void bad_gguf(void) {
    static const char *const spm_tok[] = {"<unk>", "<s>", "</s>", "\xE2\x96\x81" "a", "b",
                                          "\xE2\x96\x81" "ab"};
    static const float spm_score[] = {0, 0, 0, -1, -2, -3, -4};
    static const int32_t spm_type[] = {2, 3, 3, 1, 1, 1, 1};
    /* GPT-2 spelling: \xC4\xA0 is U+0120, the space. */
    static const char *const g_tok[] = {"a", "b", "\xC4\xA0", "ab", "\xC4\xA0" "ab", "<|end|>"};
    static const int32_t g_type[] = {1, 1, 1, 1, 1, 3};
    static const char *const g_merges[] = {"a b", "\xC4\xA0 ab"};
    rotary_tokenizer *t;
    gguf_parts ok_spm = {"llama", NULL, spm_tok, 6, spm_score, 6, spm_type, 6, NULL, 0, 1, NULL, 0};
    gguf_parts ok_gpt2 = {"gpt2", "gpt-2", g_tok, 6, NULL, 0, g_type, 6, g_merges, 2, 5, NULL, 0};
    gguf_parts p;

    int rc = gguf_try(&ok_spm, &t);
    char got[256] = "";
    if (!rc) encode_str(t, "ab b", got, sizeof got);
    check(rc == 0 && !strcmp(got, " 5 0 4"), "gguf llama: small vocabulary, unk for ' '", "%s",
          rc ? rotary_last_error() : got);
    if (!rc) fuzz_gguf(t, "gguf llama: damaged files");
    rotary_tokenizer_free(t);
    rc = gguf_try(&ok_gpt2, &t);
    got[0] = 0;
    if (!rc) encode_str(t, "ab ab", got, sizeof got);
    check(rc == 0 && !strcmp(got, " 3 4"), "gguf gpt2: a small valid vocabulary", "%s",
          rc ? rotary_last_error() : got);
    if (!rc) {
        int *ids;
        size_t n;
        rc = rotary_tokenizer_encode(t, (const unsigned char *)"abc", 3, &ids, &n);
        check(rc != 0 && strstr(rotary_last_error(), "0x63"), "gguf gpt2: a byte without a token",
              "%s", rc ? rotary_last_error() : "encoded");
        if (!rc) free(ids);
        fuzz_gguf(t, "gguf gpt2: damaged files");
    }
    rotary_tokenizer_free(t);

    p = ok_spm, p.model = "bert";
    expect_fail(gguf_try(&p, &t), "gguf: unknown model", "'bert' is not supported");
    p = ok_spm, p.model = NULL;
    expect_fail(gguf_try(&p, &t), "gguf: no model key", "tokenizer.ggml.model");
    p = ok_spm, p.tokens = NULL;
    expect_fail(gguf_try(&p, &t), "gguf: no tokens", "tokenizer.ggml.tokens");
    p = ok_spm, p.n_scores = 5;
    expect_fail(gguf_try(&p, &t), "gguf: scores count != tokens", "has 5 entries but there are 6");
    p = ok_spm, p.n_types = 7;
    expect_fail(gguf_try(&p, &t), "gguf: types count != tokens", "has 7 entries but there are 6");
    p = ok_gpt2, p.n_types = 5;
    expect_fail(gguf_try(&p, &t), "gguf gpt2: types count != tokens", "has 5 entries");
    p = ok_spm, p.bos = 6;
    expect_fail(gguf_try(&p, &t), "gguf: BOS id out of range", "outside the vocabulary");
    p = ok_gpt2, p.bos = -7;
    expect_fail(gguf_try(&p, &t), "gguf: negative BOS id", "outside the vocabulary");
    p = ok_spm, p.extra_key = "tokenizer.ggml.unknown_token_id", p.extra_value = 99;
    expect_fail(gguf_try(&p, &t), "gguf: unknown id out of range", "unknown_token_id");
    static const int32_t bad_type[] = {2, 3, 3, 1, 9, 1};
    p = ok_spm, p.types = bad_type;
    expect_fail(gguf_try(&p, &t), "gguf: token type 9", "type 9");
    static const char *const bad_byte[] = {"<unk>", "<s>", "</s>", "<0xZZ>", "b", "ab"};
    static const int32_t byte_type[] = {2, 3, 3, 6, 1, 1};
    p = ok_spm, p.tokens = bad_byte, p.types = byte_type;
    expect_fail(gguf_try(&p, &t), "gguf llama: byte token not <0xXX>", "not <0xXX>");
    static const char *const g_bad_merge[] = {"a b", "\xC4\xA0 zz"};
    p = ok_gpt2, p.merges = g_bad_merge;
    expect_fail(gguf_try(&p, &t), "gguf gpt2: merge names an unknown token", "not a token");
    static const char *const g_nospace[] = {"a b", "ab"};
    p = ok_gpt2, p.merges = g_nospace;
    expect_fail(gguf_try(&p, &t), "gguf gpt2: merge without a space", "separated by a space");
    p = ok_gpt2, p.merges = NULL;
    expect_fail(gguf_try(&p, &t), "gguf gpt2: no merges", "tokenizer.ggml.merges");
    static const char *const g_utf8[] = {"a", "b", "\xC4", "ab", "\xC4\xA0" "ab", "<|end|>"};
    p = ok_gpt2, p.tokens = g_utf8;
    expect_fail(gguf_try(&p, &t), "gguf gpt2: token not valid UTF-8", "not valid UTF-8");
    static const char *const g_alpha[] = {"a", "b", " ", "ab", " ab", "<|end|>"};
    p = ok_gpt2, p.tokens = g_alpha;
    expect_fail(gguf_try(&p, &t), "gguf gpt2: token outside the byte alphabet", "U+0020");
    p = ok_gpt2, p.pre = "qwen2";
    expect_fail(gguf_try(&p, &t), "gguf gpt2: unknown pre-tokenizer", "'qwen2' is not supported");
    /* rotary-v1 that is not ours */
    p = ok_gpt2, p.pre = "rotary-v1";
    expect_fail(gguf_try(&p, &t), "gguf rotary-v1: wrong token count", "256 + merges");
}

/* ------------------------------------------------------------ our own */

static int same_tokenizer(const rotary_tokenizer *a, const rotary_tokenizer *b,
                          const unsigned char *const *texts, const size_t *lens, int n_texts) {
    int va = rotary_tokenizer_vocab_size(a), vb = rotary_tokenizer_vocab_size(b);
    if (va != vb || rotary_tokenizer_is_bytes(a) != rotary_tokenizer_is_bytes(b) ||
        rotary_tokenizer_bos(a) != rotary_tokenizer_bos(b) ||
        rotary_tokenizer_eos(a) != rotary_tokenizer_eos(b) ||
        rotary_tokenizer_add_bos(a) != rotary_tokenizer_add_bos(b))
        return 0;
    for (int i = 0; i < va; i++) {
        int la, lb;
        const unsigned char *pa = rotary_tokenizer_piece(a, i, &la),
                            *pb = rotary_tokenizer_piece(b, i, &lb);
        if (la != lb || memcmp(pa, pb, (size_t)la)) return 0;
    }
    for (int k = 0; k < n_texts; k++) {
        int *ia, *ib;
        size_t na, nb;
        if (rotary_tokenizer_encode(a, texts[k], lens[k], &ia, &na)) return 0;
        if (rotary_tokenizer_encode(b, texts[k], lens[k], &ib, &nb)) {
            free(ia);
            return 0;
        }
        int same = na == nb && !memcmp(ia, ib, na * sizeof(int));
        free(ia);
        free(ib);
        if (!same) return 0;
    }
    return 1;
}

/* t -> GGUF file -> tokenizer. */
static rotary_tokenizer *through_gguf(const rotary_tokenizer *t) {
    rotary_gguf_writer *w;
    rotary_tokenizer *back = NULL;
    if (rotary_gguf_writer_new(&w)) return NULL;
    int rc = rotary_tokenizer_to_gguf(t, w);
    if (!rc) rc = rotary_gguf_write(w, "test_vocab_rt.gguf");
    rotary_gguf_writer_free(w);
    rotary_gguf *g;
    if (!rc && !(rc = rotary_gguf_open(&g, "test_vocab_rt.gguf"))) {
        rc = rotary_tokenizer_from_gguf(&back, g);
        rotary_gguf_close(g);
    }
    remove("test_vocab_rt.gguf");
    if (rc) printf("     through gguf: %s\n", rotary_last_error());
    return back;
}

static const char english[] =
    "The rotary embedding turns each pair of coordinates by an angle that grows with the "
    "position, so that a dot product between a query and a key depends only on how far apart "
    "they are. It's simple; it costs nothing to learn, and 1024 or 65536 positions are alike.\n";
static const char mixed[] =
    "Caf\xC3\xA9 na\xC3\xAFve \xE2\x80\x94 \xE6\x97\x8B\xE8\xBD\xAC\xE4\xBD\x8D\xE7\xBD\xAE "
    "\xF0\x9F\x98\x80 \xD0\xBF\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82\t\ttabs\r\n  x ";
static const char invalid[] = "ok \xFF\xFE bad \xC3 half \xED\xA0\x80 surrogate \xE2\x96 end\x80";

/* Llama 3's pre-tokenizer (llama-bpe) emits a word that is a token whole
 * even where the merges cannot build it (ignore_merges); GPT-2's runs BPE.
 * Vocabulary: the 256 bytes, "ab", "abc"; one merge "a b". Also through
 * GGUF, which must keep the pre-tokenizer. (Its pattern is checked against
 * Python's regex module by tests/pretok_ref.py.) */
static void llama_bpe(void) {
    char *tok[258];
    size_t len[258];
    unsigned char b[2];
    for (int i = 0; i < 256; i++) {
        b[0] = (unsigned char)i;
        tok[i] = malloc(3);
        len[i] = tok_gpt2_spell((unsigned char *)tok[i], b, 1);
    }
    tok[256] = "ab", len[256] = 2, tok[257] = "abc", len[257] = 3;
    const char *merges[] = {"a b"};
    const size_t merge_len[] = {3};
    const char *pre[] = {"gpt-2", "llama-bpe"};
    const char *want[] = {" 256 99 32 256", " 257 32 256"};
    for (int k = 0; k < 2; k++) {
        tok_gpt2_spec sp = {.n = 258, .tokens = (const char *const *)tok, .len = len,
                            .merges = merges, .merge_len = merge_len, .n_merges = 1, .bos = -1,
                            .eos = -1, .unk = -1, .pre = pre[k]};
        rotary_tokenizer *t = NULL, *back = NULL;
        char got[64] = "", got_back[64] = "";
        if (!tok_build_gpt2(&t, &sp, "llama_bpe test")) {
            encode_str(t, "abc ab", got, sizeof got);
            if ((back = through_gguf(t))) encode_str(back, "abc ab", got_back, sizeof got_back);
        }
        check(!strcmp(got, want[k]) && !strcmp(got_back, want[k]), pre[k],
              "'abc ab' -> %s, through GGUF %s (want %s)", got, got_back, want[k]);
        rotary_tokenizer_free(t);
        rotary_tokenizer_free(back);
    }
    for (int i = 0; i < 256; i++) free(tok[i]);
}

static void our_tokenizers(void) {
    const unsigned char *texts[] = {(const unsigned char *)english, (const unsigned char *)mixed,
                                    (const unsigned char *)invalid, (const unsigned char *)""};
    size_t lens[] = {sizeof english - 1, sizeof mixed - 1, sizeof invalid - 1, 0};
    rotary_tokenizer *bytes, *bpe, *back;
    if (rotary_tokenizer_bytes(&bytes)) {
        check(0, "ours: byte tokenizer", "%s", rotary_last_error());
        return;
    }
    /* Train on English and the mixed line, repeated so pairs recur. */
    size_t n = 0;
    unsigned char *corpus = malloc(64 * (sizeof english + sizeof mixed));
    for (int r = 0; r < 32; r++) {
        memcpy(corpus + n, english, sizeof english - 1);
        n += sizeof english - 1;
        memcpy(corpus + n, mixed, sizeof mixed - 1);
        n += sizeof mixed - 1;
    }
    if (rotary_tokenizer_train(&bpe, corpus, n, 600, NULL, NULL)) {
        check(0, "ours: train", "%s", rotary_last_error());
        free(corpus);
        rotary_tokenizer_free(bytes);
        return;
    }
    free(corpus);
    back = through_gguf(bpe);
    check(back && same_tokenizer(bpe, back, texts, lens, 4), "ours: bpe -> gguf -> bpe",
          "vocab %d, same pieces and encodings (invalid UTF-8 included)",
          rotary_tokenizer_vocab_size(bpe));
    if (back) check(round_trip(back, texts[2], lens[2], texts[2], lens[2]),
                    "ours: loaded bpe round-trips invalid UTF-8", "exact");
    rotary_tokenizer_free(back);
    fuzz_gguf(bpe, "ours: damaged rotary-v1 files");
    check(rotary_tokenizer_space_prefix(bpe) == 0, "ours: no space prefix", "%d",
          rotary_tokenizer_space_prefix(bpe));
    back = through_gguf(bytes);
    check(back && same_tokenizer(bytes, back, texts, lens, 4) && rotary_tokenizer_is_bytes(back),
          "ours: bytes -> gguf -> bytes", "256 ids");
    rotary_tokenizer_free(back);

    /* The same file without our merge ids: merges found by their spelling. */
    rotary_gguf_writer *w;
    rotary_gguf *g;
    int rc = rotary_gguf_writer_new(&w);
    if (!rc) rc = rotary_tokenizer_to_gguf(bpe, w);
    int nm = rotary_tokenizer_vocab_size(bpe) - 256;
    int32_t *wrong = malloc(2 * (size_t)nm * sizeof *wrong);
    if (!rc) { /* replace the ids with wrong ones: the check must notice */
        for (int i = 0; i < nm; i++) { /* valid ids, but not the merges the strings name */
            wrong[2 * i] = i % 256;
            wrong[2 * i + 1] = (7 * i + 1) % 256;
        }
        rc = rotary_gguf_set_array(w, "rotary.tokenizer.merges", ROTARY_GGUF_I32, wrong,
                                   2 * (uint64_t)nm);
    }
    if (!rc) rc = rotary_gguf_write(w, "test_vocab_rt.gguf");
    rotary_gguf_writer_free(w);
    free(wrong);
    back = NULL;
    if (!rc && !(rc = rotary_gguf_open(&g, "test_vocab_rt.gguf"))) {
        rc = rotary_tokenizer_from_gguf(&back, g);
        rotary_gguf_close(g);
    }
    expect_fail(rc, "ours: merge ids that contradict the merges", "not the concatenation");
    rotary_tokenizer_free(back);
    remove("test_vocab_rt.gguf");

    rc = rotary_tokenizer_save(bpe, "test_vocab_x.json");
    check(rc == 0, "ours: JSON save still works", "%s", rc ? rotary_last_error() : "saved");
    remove("test_vocab_x.json");
    check(rotary_tokenizer_bos(bpe) == -1 && rotary_tokenizer_eos(bpe) == -1 &&
          !rotary_tokenizer_add_bos(bpe), "ours: no BOS, no EOS", "bos %d eos %d add_bos %d",
          rotary_tokenizer_bos(bpe), rotary_tokenizer_eos(bpe), rotary_tokenizer_add_bos(bpe));
    rotary_tokenizer_free(bpe);
    rotary_tokenizer_free(bytes);
}

/* ---------------------------------------------------------------- main */

static void llama2c(rotary_tokenizer **llama_out) {
    rotary_tokenizer *t = NULL;
    char got[4096];
    int rc = rotary_tokenizer_load_llama2c(&t, data_path("tok512.bin"), 512);
    if (rc) {
        check(0, "tok512.bin", "%s", rotary_last_error());
    } else {
        encode_str(t, "Once upon a time", got, sizeof got);
        check(!strcmp(got, " 403 407 261 378"), "tok512: \"Once upon a time\"", "%s", got);
        int len;
        const unsigned char *p = rotary_tokenizer_piece(t, 403, &len);
        check(len == 5 && !memcmp(p, " Once", 5), "tok512: piece 403 is \" Once\"", "%.*s", len, p);
        p = rotary_tokenizer_piece(t, 13, &len);
        check(len == 1 && p[0] == '\n', "tok512: piece 13 (<0x0A>) is a newline", "%d byte(s)",
              len);
        rotary_tokenizer_piece(t, 1, &len);
        int l0, l2;
        rotary_tokenizer_piece(t, 0, &l0);
        rotary_tokenizer_piece(t, 2, &l2);
        check(len == 0 && l0 == 0 && l2 == 0, "tok512: BOS, EOS, unk pieces are empty", "%d %d %d",
              l0, len, l2);
        check(rotary_tokenizer_bos(t) == 1 && rotary_tokenizer_eos(t) == 2 &&
              rotary_tokenizer_add_bos(t), "tok512: BOS 1, EOS 2, add_bos", "%d %d %d",
              rotary_tokenizer_bos(t), rotary_tokenizer_eos(t), rotary_tokenizer_add_bos(t));
        encode_str(t, "", got, sizeof got);
        check(!strcmp(got, ""), "tok512: empty text, no ids (no dummy space)", "'%s'", got);
        static const char *const rt[] = {english, mixed, "\xE2\x9C\x85 \xF0\x9F\xA6\x99 x\x01y"};
        int all = 1;
        for (int i = 0; i < 3; i++) all &= round_trip_spaced(t, rt[i], strlen(rt[i]));
        check(all, "tok512: decode(encode(x)) == \" \" + x", "English, accents, CJK, emoji, "
              "control bytes (byte fallback)");
        rotary_tokenizer_free(t);
    }

    rc = rotary_tokenizer_load_llama2c(&t, data_path("tokenizer.bin"), 32000);
    if (rc) {
        check(0, "tokenizer.bin", "%s", rotary_last_error());
        return;
    }
    encode_str(t, "Hello world", got, sizeof got);
    check(!strcmp(got, " 15043 3186"), "tokenizer.bin: \"Hello world\"", "%s", got);
    encode_str(t, "The quick brown fox jumps over the lazy dog.", got, sizeof got);
    check(!strcmp(got, " 450 4996 17354 1701 29916 432 17204 975 278 17366 11203 29889"),
          "tokenizer.bin: the quick brown fox", "%s", got);
    const char *ascii[] = {english, "  two  spaces, trailing \n", "x",
                           "\t\n\r!\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~\x7f"};
    int all = 1;
    for (int i = 0; i < 4; i++) all &= round_trip_spaced(t, ascii[i], strlen(ascii[i]));
    check(all, "tokenizer.bin: ASCII: decode(encode(x)) == \" \" + x", "4 texts");
    {
        check(round_trip_spaced(t, mixed, sizeof mixed - 1), "tokenizer.bin: UTF-8 round trip",
              "accents, CJK, emoji");
        check(round_trip_spaced(t, invalid, sizeof invalid - 1),
              "tokenizer.bin: invalid UTF-8 round trip", "byte fallback keeps every byte");
        /* U+2581 is SentencePiece's space: it comes back as ' '. */
        const char *vis = "a\xE2\x96\x81" "b";
        char g2[256];
        encode_str(t, vis, got, sizeof got);
        encode_str(t, "a b", g2, sizeof g2);
        check(!strcmp(got, g2), "tokenizer.bin: U+2581 encodes as a space", "%s", got);
    }
    /* Speed: a few KB of text, and a few KB with nothing to cut on. */
    size_t n = 8192;
    unsigned char *big = malloc(n), *same = malloc(n);
    for (size_t i = 0; i < n; i++) {
        big[i] = (unsigned char)english[i % (sizeof english - 1)];
        same[i] = 'a';
    }
    int *ids;
    size_t m, m2;
    double t0 = now();
    rc = rotary_tokenizer_encode(t, big, n, &ids, &m);
    if (!rc) free(ids);
    rc |= rotary_tokenizer_encode(t, same, n, &ids, &m2);
    if (!rc) free(ids);
    double dt = now() - t0;
    check(!rc && dt < 1.0, "tokenizer.bin: 8 KB of text + 8 KB of 'a'", "%.1f ms, %zu and %zu ids",
          1e3 * dt, m, m2);
    free(big);
    free(same);

    random_round_trips(t, "tokenizer.bin: random round trips", 1);
    check(rotary_tokenizer_space_prefix(t) == 1, "tokenizer.bin: space prefix", "%d",
          rotary_tokenizer_space_prefix(t));
    run_vectors(t, "llama-spm vectors via tokenizer.bin",
                data_path("gguf/ggml-vocab-llama-spm.gguf.inp"),
                data_path("gguf/ggml-vocab-llama-spm.gguf.out"));
    *llama_out = t;
}

int main(int argc, char **argv) {
    const char *env = getenv("ROTARY_DATA_DIR");
    snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : env && *env ? env : "../../shared/data");

    rotary_tokenizer *llama = NULL;
    llama2c(&llama);

    /* Llama's scores, from tokenizer.bin, for the salvage. */
    float *scores = NULL;
    int n_llama = llama ? rotary_tokenizer_vocab_size(llama) : 0;
    {
        size_t n;
        unsigned char *d = read_all(data_path("tokenizer.bin"), &n);
        if (d && n_llama) {
            scores = malloc((size_t)n_llama * sizeof *scores);
            size_t o = 4;
            for (int i = 0; i < n_llama; i++) {
                int32_t l;
                memcpy(&scores[i], d + o, 4);
                memcpy(&l, d + o + 4, 4);
                o += 8 + (size_t)l;
            }
        }
        free(d);
    }
    substitute sub[] = {{"tokenizer.ggml.scores", scores, (size_t)n_llama}, {NULL, NULL, 0}};
    rotary_tokenizer *spm = load_vocab("gguf/ggml-vocab-llama-spm.gguf", sub);
    if (spm) {
        run_vectors(spm, "llama-spm vectors via GGUF",
                    data_path("gguf/ggml-vocab-llama-spm.gguf.inp"),
                    data_path("gguf/ggml-vocab-llama-spm.gguf.out"));
        check(rotary_tokenizer_bos(spm) == 1 && rotary_tokenizer_eos(spm) == 2 &&
              rotary_tokenizer_add_bos(spm), "llama-spm: BOS 1, EOS 2, add_bos", "%d %d %d",
              rotary_tokenizer_bos(spm), rotary_tokenizer_eos(spm), rotary_tokenizer_add_bos(spm));
        int same = rotary_tokenizer_vocab_size(spm) == n_llama;
        for (int i = 0; same && i < n_llama; i++) {
            int la, lb;
            const unsigned char *a = rotary_tokenizer_piece(spm, i, &la);
            const unsigned char *b = rotary_tokenizer_piece(llama, i, &lb);
            same = la == lb && !memcmp(a, b, (size_t)la);
        }
        check(same, "llama-spm: same pieces as tokenizer.bin", "%d ids", n_llama);
    }
    free(scores);
    rotary_tokenizer *gpt2 = load_vocab("gguf/ggml-vocab-gpt-2.gguf", NULL);
    if (gpt2) {
        run_vectors(gpt2, "gpt-2 vectors via GGUF", data_path("gguf/ggml-vocab-gpt-2.gguf.inp"),
                    data_path("gguf/ggml-vocab-gpt-2.gguf.out"));
        const unsigned char *texts[] = {(const unsigned char *)english,
                                        (const unsigned char *)mixed,
                                        (const unsigned char *)invalid};
        size_t lens[] = {sizeof english - 1, sizeof mixed - 1, sizeof invalid - 1};
        int all = 1;
        for (int i = 0; i < 3; i++) all &= round_trip(gpt2, texts[i], lens[i], texts[i], lens[i]);
        check(all, "gpt-2: decode(encode(x)) == x", "UTF-8 and invalid bytes");
        random_round_trips(gpt2, "gpt-2: random round trips", 0);
        check(rotary_tokenizer_space_prefix(gpt2) == 0, "gpt-2: no space prefix", "%d",
              rotary_tokenizer_space_prefix(gpt2));
        char got[256];
        encode_str(gpt2, "<|endoftext|>", got, sizeof got);
        check(strcmp(got, " 50256") != 0, "gpt-2: special tokens in text stay text", "%s", got);
        size_t n = 8192;
        unsigned char *big = malloc(n);
        for (size_t i = 0; i < n; i++) big[i] = i % 3 ? 'a' : 'b';
        int *ids;
        size_t m;
        double t0 = now();
        int rc = rotary_tokenizer_encode(gpt2, big, n, &ids, &m);
        double dt = now() - t0;
        if (!rc) free(ids);
        check(!rc && dt < 1.0, "gpt-2: 8 KB word without a break", "%.1f ms, %zu ids", 1e3 * dt, m);
        free(big);
    }

    /* Model tokenizers survive to_gguf -> from_gguf. */
    const unsigned char *texts[] = {(const unsigned char *)english, (const unsigned char *)mixed,
                                    (const unsigned char *)invalid};
    size_t lens[] = {sizeof english - 1, sizeof mixed - 1, sizeof invalid - 1};
    rotary_tokenizer *models[] = {llama, spm, gpt2};
    const char *names[] = {"tokenizer.bin -> gguf -> tokenizer", "llama-spm -> gguf -> tokenizer",
                           "gpt-2 -> gguf -> tokenizer"};
    for (int k = 0; k < 3; k++) {
        if (!models[k]) continue;
        rotary_tokenizer *back = through_gguf(models[k]);
        check(back && same_tokenizer(models[k], back, texts, lens, 3), names[k],
              "same pieces, ids, BOS/EOS");
        rotary_tokenizer_free(back);
    }
    rotary_tokenizer_free(llama);
    rotary_tokenizer_free(spm);
    rotary_tokenizer_free(gpt2);

    our_tokenizers();
    llama_bpe();
    bad_llama2c();
    bad_gguf();

    return check_summary("test_vocab");
}
