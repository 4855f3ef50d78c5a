/* gguf_list FILE: print a canonical listing of a GGUF file, read with
 * librotary, as JSON lines; tests/gguf_npm/list.mjs prints the same listing
 * with @huggingface/gguf and tests/gguf_npm/compare.sh diffs the two.
 *
 *   {"version":3,"tensor_count":2,"kv_count":5}
 *   {"key":"a.b","type":"U32","value":7}                one per key, sorted
 *   {"key":"t","type":"ARRAY","elem":"STRING","n":3,"head":[..],"tail":[..],"fnv":".."}
 *   {"tensor":"w","type":8,"shape":[64,2],"fnv":".."}   in file order
 *
 * Values: integers in decimal, bools true/false, floats as the 16 hex digits
 * of their float64 bits (a float32 widened exactly) or "nan", strings as JSON
 * strings. Text is decoded as a WHATWG TextDecoder does (what the JS side
 * gets): invalid UTF-8 becomes U+FFFD and a leading byte-order mark is
 * dropped. Arrays show their length, first and last 3 elements and the
 * FNV-1a 64 hash of all elements (each element's text + "\n"); arrays of
 * arrays only their length. Shapes are in ggml order (ne[0] first, as the
 * file stores them and as @huggingface/gguf returns them). Tensor "fnv"
 * hashes the tensor's data bytes. Keys are sorted by their JSON text.
 * On a file our reader refuses: "error: <message>" on stderr and exit 1. */
#include "rotary.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growing text buffer. */
typedef struct {
    char *p;
    size_t n, cap;
} text;

static void t_put(text *t, const void *s, size_t n) {
    if (t->n + n + 1 > t->cap) {
        t->cap = (t->n + n + 1) * 2;
        t->p = realloc(t->p, t->cap);
        if (!t->p) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
    memcpy(t->p + t->n, s, n);
    t->n += n;
    t->p[t->n] = '\0';
}

static void t_str(text *t, const char *s) { t_put(t, s, strlen(s)); }

static void t_fmt(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void t_fmt(text *t, const char *fmt, ...) {
    char b[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    t_str(t, b);
}

static void put_cp(text *t, uint32_t cp) {
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) {
        /* JSON.stringify's escapes */
        switch (cp) {
        case '"': t_str(t, "\\\""); return;
        case '\\': t_str(t, "\\\\"); return;
        case '\b': t_str(t, "\\b"); return;
        case '\f': t_str(t, "\\f"); return;
        case '\n': t_str(t, "\\n"); return;
        case '\r': t_str(t, "\\r"); return;
        case '\t': t_str(t, "\\t"); return;
        }
        if (cp < 0x20) {
            t_fmt(t, "\\u%04x", (unsigned)cp);
            return;
        }
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xc0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xe0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xf0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    t_put(t, b, n);
}

/* bytes as a JSON string, decoded like the WHATWG UTF-8 decoder. */
static void t_json(text *t, const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    if (len >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) i = 3; /* BOM */
    t_str(t, "\"");
    uint32_t cp = 0;
    int need = 0, seen = 0;
    unsigned lo = 0x80, hi = 0xbf;
    while (i < len) {
        unsigned b = p[i];
        if (need == 0) {
            i++;
            if (b < 0x80) put_cp(t, b);
            else if (b >= 0xc2 && b <= 0xdf) need = 1, cp = b & 0x1f;
            else if (b >= 0xe0 && b <= 0xef) {
                if (b == 0xe0) lo = 0xa0;
                if (b == 0xed) hi = 0x9f;
                need = 2, cp = b & 0x0f;
            } else if (b >= 0xf0 && b <= 0xf4) {
                if (b == 0xf0) lo = 0x90;
                if (b == 0xf4) hi = 0x8f;
                need = 3, cp = b & 0x07;
            } else put_cp(t, 0xfffd);
            continue;
        }
        if (b < lo || b > hi) { /* the byte starts over; no advance */
            need = seen = 0;
            lo = 0x80, hi = 0xbf;
            put_cp(t, 0xfffd);
            continue;
        }
        i++;
        lo = 0x80, hi = 0xbf;
        cp = (cp << 6) | (b & 0x3f);
        if (++seen == need) {
            put_cp(t, cp);
            need = seen = 0;
        }
    }
    if (need) put_cp(t, 0xfffd);
    t_str(t, "\"");
}

static void t_double(text *t, double d) {
    if (isnan(d)) {
        t_str(t, "\"nan\"");
        return;
    }
    uint64_t u;
    memcpy(&u, &d, 8);
    t_fmt(t, "\"%016" PRIx64 "\"", u);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}
#define FNV0 0xcbf29ce484222325ull

static const char *type_name(int t) {
    static const char *const names[] = {"U8",     "I8",    "U16", "I16",  "U32", "I32", "F32",
                                        "BOOL",   "STRING", "ARRAY", "U64", "I64", "F64"};
    return t >= 0 && t <= 12 ? names[t] : "?";
}

static void fail(const char *what) {
    fprintf(stderr, "error: %s: %s\n", what, rotary_last_error());
    exit(1);
}

/* Element i of array key (elem type et) as text. */
static void elem_text(text *t, const rotary_gguf *g, int kv, const char *key, int et, uint64_t i) {
    if (et == ROTARY_GGUF_STRING) {
        const char *s;
        size_t len;
        if (rotary_gguf_array_string(g, key, i, &s, &len)) fail(key);
        t_json(t, s, len);
    } else if (et == ROTARY_GGUF_F32 || et == ROTARY_GGUF_F64) {
        double d;
        if (rotary_gguf_array_float(g, key, i, &d)) fail(key);
        t_double(t, d);
    } else if (et == ROTARY_GGUF_BOOL) {
        int64_t v;
        if (rotary_gguf_array_int(g, key, i, &v)) fail(key);
        t_str(t, v ? "true" : "false");
    } else if (et == ROTARY_GGUF_U64) {
        const void *raw;
        size_t n;
        uint64_t v;
        if (rotary_gguf_kv_value(g, kv, &raw, &n)) fail(key);
        memcpy(&v, (const char *)raw + 12 + 8 * i, 8);
        t_fmt(t, "%" PRIu64, v);
    } else {
        int64_t v;
        if (rotary_gguf_array_int(g, key, i, &v)) fail(key);
        t_fmt(t, "%" PRId64, v);
    }
}

typedef struct {
    char *sort; /* the key's JSON text */
    char *line;
} entry;

static int entry_cmp(const void *a, const void *b) {
    return strcmp(((const entry *)a)->sort, ((const entry *)b)->sort);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gguf_list FILE.gguf\n");
        return 2;
    }
    rotary_gguf *g;
    if (rotary_gguf_open(&g, argv[1]) != ROTARY_OK) {
        fprintf(stderr, "error: %s\n", rotary_last_error());
        return 1;
    }
    printf("{\"version\":%d,\"tensor_count\":%d,\"kv_count\":%d}\n", rotary_gguf_version(g),
           rotary_gguf_n_tensors(g), rotary_gguf_n_kv(g));
    int nkv = rotary_gguf_n_kv(g);
    entry *e = calloc((size_t)(nkv ? nkv : 1), sizeof *e);
    for (int i = 0; i < nkv; i++) {
        const char *key = rotary_gguf_kv_key(g, i);
        int type = rotary_gguf_kv_type(g, i);
        text k = {0}, t = {0};
        t_json(&k, key, strlen(key));
        t_str(&t, "{\"key\":");
        t_str(&t, k.p);
        t_fmt(&t, ",\"type\":\"%s\"", type_name(type));
        if (type == ROTARY_GGUF_ARRAY) {
            int et;
            uint64_t n;
            if (rotary_gguf_get_array(g, key, &et, &n)) fail(key);
            t_fmt(&t, ",\"elem\":\"%s\",\"n\":%" PRIu64, type_name(et), n);
            if (et != ROTARY_GGUF_ARRAY) {
                uint64_t h = FNV0;
                text el = {0};
                t_str(&t, ",\"head\":[");
                for (uint64_t j = 0; j < n; j++) {
                    el.n = 0;
                    elem_text(&el, g, i, key, et, j);
                    if (j < 3) {
                        if (j) t_str(&t, ",");
                        t_put(&t, el.p, el.n);
                    }
                    h = fnv(h, el.p, el.n);
                    h = fnv(h, "\n", 1);
                }
                t_str(&t, "],\"tail\":[");
                const uint64_t start = n > 3 ? n - 3 : 0;
                for (uint64_t j = start; j < n; j++) {
                    if (j > start) t_str(&t, ",");
                    elem_text(&t, g, i, key, et, j);
                }
                t_fmt(&t, "],\"fnv\":\"%016" PRIx64 "\"", h);
                free(el.p);
            }
        } else {
            t_str(&t, ",\"value\":");
            int64_t v;
            double d;
            const char *s;
            size_t len;
            const void *raw;
            size_t rn;
            switch (type) {
            case ROTARY_GGUF_STRING:
                if (rotary_gguf_get_string(g, key, &s, &len)) fail(key);
                t_json(&t, s, len);
                break;
            case ROTARY_GGUF_F32:
            case ROTARY_GGUF_F64:
                if (rotary_gguf_get_float(g, key, &d)) fail(key);
                t_double(&t, d);
                break;
            case ROTARY_GGUF_BOOL:
                if (rotary_gguf_get_int(g, key, &v)) fail(key);
                t_str(&t, v ? "true" : "false");
                break;
            case ROTARY_GGUF_U64: {
                uint64_t u;
                if (rotary_gguf_kv_value(g, i, &raw, &rn) || rn != 8) fail(key);
                memcpy(&u, raw, 8);
                t_fmt(&t, "%" PRIu64, u);
                break;
            }
            default:
                if (rotary_gguf_get_int(g, key, &v)) fail(key);
                t_fmt(&t, "%" PRId64, v);
            }
        }
        t_str(&t, "}");
        e[i].sort = k.p;
        e[i].line = t.p;
    }
    qsort(e, (size_t)nkv, sizeof *e, entry_cmp);
    for (int i = 0; i < nkv; i++) {
        printf("%s\n", e[i].line);
        free(e[i].sort);
        free(e[i].line);
    }
    free(e);
    for (int i = 0; i < rotary_gguf_n_tensors(g); i++) {
        const rotary_gguf_tensor *ten = rotary_gguf_tensor_at(g, i);
        text t = {0};
        t_str(&t, "{\"tensor\":");
        t_json(&t, ten->name, strlen(ten->name));
        t_fmt(&t, ",\"type\":%d,\"shape\":[", ten->type);
        for (int d = 0; d < ten->n_dims; d++) t_fmt(&t, "%s%" PRId64, d ? "," : "", ten->ne[d]);
        t_fmt(&t, "],\"fnv\":\"%016" PRIx64 "\"}", fnv(FNV0, ten->data, ten->n_bytes));
        printf("%s\n", t.p);
        free(t.p);
    }
    rotary_gguf_close(g);
    return 0;
}
