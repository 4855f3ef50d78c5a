/* io_gguf.c: GGUF reading and writing (llama.cpp's file format).
 *
 * Layout of a version 2 or 3 file (little-endian; docs/formats.md):
 *   "GGUF" | u32 version | u64 tensor_count | u64 kv_count
 *   kv_count x  { string key | u32 type | value }
 *   tensor_count x { string name | u32 n_dims | n_dims x u64 ne | u32 ggml type
 *                    | u64 offset }
 *   zero padding to a multiple of the alignment (general.alignment, or 32)
 *   tensor data: each tensor at data_start + offset (offset aligned)
 * A string is u64 length + bytes (no terminator); an array is u32 element
 * type + u64 count + the elements. Version 1 used 32-bit counts and lengths.
 *
 * The reader maps the file read-only and walks the header once, checking
 * every length against the bytes left (with overflow-checked arithmetic)
 * before reading it; only then does it hand anything out. String arrays get
 * an index of element offsets so element i is found in O(1); keys and
 * tensor names get hash tables.
 *
 * The writer keeps the key/values serialized in memory, references tensor
 * data, and writes a temporary file that is fsynced and renamed into place. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE

#include "half.h"
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_HEADER 24           /* magic, version, tensor_count, kv_count */
#define GGUF_DEFAULT_ALIGN 32
#define GGUF_MAX_KEY 65535       /* bytes (the specification's limit) */
#define GGUF_MAX_NAME 64         /* bytes of a tensor name (ditto) */
#define GGUF_WRITE_MAX_NAME 63   /* what we write: ggml keeps names in char[64] */
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_DEPTH 8         /* arrays of arrays nested deeper are refused */
#define GGUF_MIN_KV 14           /* smallest key/value: 8 + 1 + 4 + 1 bytes */
#define GGUF_MIN_TENSOR 33       /* smallest tensor info: 8 + 1 + 4 + 8 + 4 + 8 */
#define PAR_MIN 65536            /* values above which conversion uses OpenMP */

/* ------------------------------------------------------------ type tables */

static const char *const kv_type_names[] = {"U8",     "I8",    "U16",   "I16",  "U32",
                                            "I32",    "F32",   "BOOL",  "STRING", "ARRAY",
                                            "U64",    "I64",   "F64"};

static const char *kv_type_name(uint32_t t) {
    return t < sizeof kv_type_names / sizeof kv_type_names[0] ? kv_type_names[t] : "?";
}

/* Bytes of one scalar of type t; 0 for STRING, ARRAY and unknown types. */
static size_t kv_scalar_size(uint32_t t) {
    switch (t) {
    case ROTARY_GGUF_U8: case ROTARY_GGUF_I8: case ROTARY_GGUF_BOOL: return 1;
    case ROTARY_GGUF_U16: case ROTARY_GGUF_I16: return 2;
    case ROTARY_GGUF_U32: case ROTARY_GGUF_I32: case ROTARY_GGUF_F32: return 4;
    case ROTARY_GGUF_U64: case ROTARY_GGUF_I64: case ROTARY_GGUF_F64: return 8;
    default: return 0;
    }
}

static int kv_type_known(uint32_t t) { return t <= ROTARY_GGUF_F64; }
static int kv_type_is_int(int t) {
    return t == ROTARY_GGUF_U8 || t == ROTARY_GGUF_I8 || t == ROTARY_GGUF_U16 ||
           t == ROTARY_GGUF_I16 || t == ROTARY_GGUF_U32 || t == ROTARY_GGUF_I32 ||
           t == ROTARY_GGUF_U64 || t == ROTARY_GGUF_I64;
}

/* ggml's tensor types: values per block and bytes per block, as ggml (and
 * the gguf-py constants) define them. Types with blck 0 are unassigned. */
typedef struct {
    const char *name;
    uint32_t blck, bytes;
} ggml_type_info;

static const ggml_type_info ggml_types[] = {
    [0] = {"F32", 1, 4},         [1] = {"F16", 1, 2},        [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},      [6] = {"Q5_0", 32, 22},     [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},      [9] = {"Q8_1", 32, 40},     [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144},  [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},  [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},        [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},        [27] = {"I64", 1, 8},       [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},   [30] = {"BF16", 1, 2},      [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},   [39] = {"MXFP4", 32, 17},   [40] = {"NVFP4", 64, 36},
    [41] = {"Q1_0", 128, 18},    [42] = {"Q2_0", 64, 18},
};

static const ggml_type_info *ggml_type(uint32_t t) {
    if (t >= sizeof ggml_types / sizeof ggml_types[0] || ggml_types[t].blck == 0) return NULL;
    return &ggml_types[t];
}

static const char *ggml_type_name(int t) {
    const ggml_type_info *ti = t >= 0 ? ggml_type((uint32_t)t) : NULL;
    return ti ? ti->name : "?";
}

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* little-endian loads from the mapping (the host is little-endian) */
static uint32_t ld_u32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t ld_u64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* FNV-1a over bytes, for the hash tables. */
static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* ------------------------------------------------------------------ reader */

typedef struct {
    char *key;        /* NUL-terminated copy */
    size_t key_len;
    int type;         /* rotary_gguf_type */
    int elem_type;    /* ARRAY: element type */
    uint64_t n;       /* ARRAY: element count */
    size_t at;        /* file offset of the key/value (its key length) */
    size_t val, end;  /* file offsets of the value and one past it */
    size_t first;     /* ARRAY: file offset of the first element */
    uint64_t *str;    /* STRING ARRAY: file offset of each element's length */
} gguf_kv;

/* Open addressing table of indices + 1 (0 = empty), capacity a power of 2. */
typedef struct {
    int32_t *slot;
    size_t mask;
} name_table;

struct rotary_gguf {
    char *path;
    const unsigned char *map;
    size_t size;
    int version;
    uint32_t alignment;
    size_t data_start;
    gguf_kv *kv;
    int n_kv;
    rotary_gguf_tensor *tensors;
    int n_tensors;
    name_table kv_index, tensor_index;
};

static int table_init(name_table *t, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    t->slot = calloc(cap, sizeof *t->slot);
    t->mask = cap - 1;
    return t->slot ? 0 : -1;
}

/* The slot for name: the one holding it, or the empty one where it goes. */
static int32_t *table_slot(const name_table *t, const char *name, size_t len,
                           const char *(*name_at)(const void *, int32_t, size_t *),
                           const void *ctx) {
    size_t i = (size_t)hash_bytes(name, len) & t->mask;
    for (;;) {
        int32_t s = t->slot[i];
        if (s == 0) return &t->slot[i];
        size_t l;
        const char *other = name_at(ctx, s - 1, &l);
        if (l == len && memcmp(other, name, len) == 0) return &t->slot[i];
        i = (i + 1) & t->mask;
    }
}

static const char *kv_name_at(const void *ctx, int32_t i, size_t *len) {
    const rotary_gguf *g = ctx;
    *len = g->kv[i].key_len;
    return g->kv[i].key;
}

static const char *tensor_name_at(const void *ctx, int32_t i, size_t *len) {
    const rotary_gguf *g = ctx;
    *len = strlen(g->tensors[i].name);
    return g->tensors[i].name;
}

void rotary_gguf_close(rotary_gguf *g) {
    if (!g) return;
    rotary_unmap_file(g->map, g->size);
    for (int i = 0; g->kv && i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].str);
    }
    free(g->kv);
    for (int i = 0; g->tensors && i < g->n_tensors; i++) free((char *)g->tensors[i].name);
    free(g->tensors);
    free(g->kv_index.slot);
    free(g->tensor_index.slot);
    free(g->path);
    free(g);
}

/* A cursor over the mapping; every read checks the bytes left first. */
typedef struct {
    const rotary_gguf *g;
    size_t off;
} cursor;

static size_t left(const cursor *c) { return c->g->size - c->off; }

static int truncated(const cursor *c, const char *what, uint64_t need) {
    return rotary_fail(ROTARY_EFORMAT,
                       "%s: truncated: %s at offset %zu needs %" PRIu64
                       " bytes but only %zu are left (file is %zu bytes)",
                       c->g->path, what, c->off, need, left(c), c->g->size);
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    if (left(c) < 4) return truncated(c, what, 4);
    *v = ld_u32(c->g->map + c->off);
    c->off += 4;
    return ROTARY_OK;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    if (left(c) < 8) return truncated(c, what, 8);
    *v = ld_u64(c->g->map + c->off);
    c->off += 8;
    return ROTARY_OK;
}

/* A string: its length (checked against the bytes left) and where its bytes
 * start. The cursor moves past it. */
static int rd_string(cursor *c, const char *what, size_t *start, uint64_t *len) {
    size_t at = c->off;
    int rc = rd_u64(c, len, what);
    if (rc) return rc;
    if (*len > left(c)) {
        rc = rotary_fail(ROTARY_EFORMAT,
                         "%s: %s at offset %zu has length %" PRIu64
                         " but only %zu bytes are left (file is %zu bytes)",
                         c->g->path, what, at, *len, left(c), c->g->size);
        c->off = at;
        return rc;
    }
    *start = c->off;
    c->off += (size_t)*len;
    return ROTARY_OK;
}

/* A key or tensor name: 1..max bytes, no NUL; a NUL-terminated copy. */
static int rd_name(cursor *c, const char *what, size_t max, char **out, size_t *out_len) {
    size_t at = c->off, start;
    uint64_t len;
    int rc = rd_string(c, what, &start, &len);
    if (rc) return rc;
    const char *p = (const char *)c->g->map + start;
    if (len == 0 || len > max)
        return rotary_fail(ROTARY_EFORMAT, "%s: %s at offset %zu is %" PRIu64
                           " bytes long (1..%zu allowed)",
                           c->g->path, what, at, len, max);
    if (memchr(p, '\0', (size_t)len))
        return rotary_fail(ROTARY_EFORMAT, "%s: %s at offset %zu ('%.*s') contains a NUL byte",
                           c->g->path, what, at, (int)(len < 64 ? len : 64), p);
    char *s = malloc((size_t)len + 1);
    if (!s) return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", c->g->path);
    memcpy(s, p, (size_t)len);
    s[len] = '\0';
    *out = s;
    *out_len = (size_t)len;
    return ROTARY_OK;
}

/* Skip (and check) one value of type t at the cursor. what names it for
 * messages. str_index, for a top-level STRING array, receives the offsets of
 * its elements (allocated here). */
static int skip_value(cursor *c, uint32_t t, int depth, const char *what, uint64_t **str_index,
                      int *elem_type, uint64_t *count, size_t *first) {
    const rotary_gguf *g = c->g;
    size_t at = c->off;
    if (!kv_type_known(t))
        return rotary_fail(ROTARY_EFORMAT, "%s: %s at offset %zu has unknown value type %" PRIu32
                           " (known: 0..12)", g->path, what, at, t);
    size_t sz = kv_scalar_size(t);
    if (sz) {
        if (left(c) < sz) return truncated(c, what, sz);
        if (t == ROTARY_GGUF_BOOL && g->map[c->off] > 1)
            return rotary_fail(ROTARY_EFORMAT, "%s: %s at offset %zu is a bool of value %u "
                               "(0 or 1 allowed)", g->path, what, at, g->map[c->off]);
        c->off += sz;
        return ROTARY_OK;
    }
    if (t == ROTARY_GGUF_STRING) {
        size_t start;
        uint64_t len;
        return rd_string(c, what, &start, &len);
    }
    /* ARRAY */
    if (depth >= GGUF_MAX_DEPTH)
        return rotary_fail(ROTARY_EFORMAT, "%s: %s at offset %zu: arrays nested more than %d "
                           "deep", g->path, what, at, GGUF_MAX_DEPTH);
    uint32_t et = 0;
    uint64_t n = 0;
    int rc;
    if ((rc = rd_u32(c, &et, what)) || (rc = rd_u64(c, &n, what))) return rc;
    if (!kv_type_known(et))
        return rotary_fail(ROTARY_EFORMAT, "%s: %s at offset %zu is an array of unknown type %"
                           PRIu32 " (known: 0..12)", g->path, what, at, et);
    /* Each element takes at least this many bytes: bounds n by the file. */
    size_t min = et == ROTARY_GGUF_STRING ? 8 : et == ROTARY_GGUF_ARRAY ? 12 : kv_scalar_size(et);
    if (n > left(c) / min)
        return rotary_fail(ROTARY_EFORMAT, "%s: %s at offset %zu claims %" PRIu64 " elements of "
                           "type %s, more than the %zu bytes left can hold", g->path, what, at,
                           n, kv_type_name(et), left(c));
    if (elem_type) *elem_type = (int)et;
    if (count) *count = n;
    if (first) *first = c->off;
    if (et != ROTARY_GGUF_STRING && et != ROTARY_GGUF_ARRAY) {
        const unsigned char *p = g->map + c->off;
        if (et == ROTARY_GGUF_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (p[i] > 1)
                    return rotary_fail(ROTARY_EFORMAT, "%s: %s element %" PRIu64 " at offset "
                                       "%zu is a bool of value %u (0 or 1 allowed)", g->path,
                                       what, i, c->off + (size_t)i, p[i]);
        c->off += (size_t)n * min;
        return ROTARY_OK;
    }
    uint64_t *index = NULL;
    if (str_index && et == ROTARY_GGUF_STRING) {
        index = malloc((size_t)(n ? n : 1) * sizeof *index);
        if (!index) return rotary_fail(ROTARY_ENOMEM, "%s: out of memory (index of %" PRIu64
                                       " strings)", g->path, n);
    }
    for (uint64_t i = 0; i < n; i++) {
        if (index) index[i] = c->off;
        if (et == ROTARY_GGUF_STRING && left(c) >= 8 && ld_u64(g->map + c->off) <= left(c) - 8) {
            c->off += 8 + (size_t)ld_u64(g->map + c->off); /* the common case, checked */
            continue;
        }
        char ewhat[200]; /* only formatted for nested arrays and failures */
        snprintf(ewhat, sizeof ewhat, "%.150s element %" PRIu64, what, i);
        rc = skip_value(c, et, depth + 1, ewhat, NULL, NULL, NULL, NULL);
        if (rc) {
            free(index);
            return rc;
        }
    }
    if (str_index) *str_index = index;
    return ROTARY_OK;
}

static int parse_kvs(rotary_gguf *g, cursor *c) {
    for (int i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        char what[200];
        kv->at = c->off;
        snprintf(what, sizeof what, "key %d", i);
        int rc = rd_name(c, what, GGUF_MAX_KEY, &kv->key, &kv->key_len);
        if (rc) return rc;
        int32_t *slot = table_slot(&g->kv_index, kv->key, kv->key_len, kv_name_at, g);
        if (*slot)
            return rotary_fail(ROTARY_EFORMAT, "%s: key '%.100s' at offset %zu appears twice "
                               "(first as key %d)", g->path, kv->key, kv->at, *slot - 1);
        *slot = i + 1;
        snprintf(what, sizeof what, "type of key '%.100s'", kv->key);
        uint32_t t = 0;
        if ((rc = rd_u32(c, &t, what))) return rc;
        snprintf(what, sizeof what, "value of key '%.100s'", kv->key);
        kv->type = (int)t;
        kv->val = c->off;
        rc = skip_value(c, t, 0, what, &kv->str, &kv->elem_type, &kv->n, &kv->first);
        if (rc) return rc;
        kv->end = c->off;
    }
    return ROTARY_OK;
}

/* general.alignment: optional, a U32 power of two. */
static int read_alignment(rotary_gguf *g) {
    g->alignment = GGUF_DEFAULT_ALIGN;
    int i = rotary_gguf_find(g, "general.alignment");
    if (i < 0) return ROTARY_OK;
    const gguf_kv *kv = &g->kv[i];
    if (kv->type != ROTARY_GGUF_U32)
        return rotary_fail(ROTARY_EFORMAT, "%s: general.alignment at offset %zu has type %s "
                           "(must be U32)", g->path, kv->at, kv_type_name((uint32_t)kv->type));
    uint32_t a = ld_u32(g->map + kv->val);
    if (a == 0 || (a & (a - 1)) != 0)
        return rotary_fail(ROTARY_EFORMAT, "%s: general.alignment at offset %zu is %" PRIu32
                           " (must be a non-zero power of two)", g->path, kv->at, a);
    g->alignment = a;
    return ROTARY_OK;
}

static int parse_tensor_info(rotary_gguf *g, cursor *c, int i, uint64_t *rel) {
    rotary_gguf_tensor *t = &g->tensors[i];
    size_t at = c->off, name_len;
    char what[200];
    snprintf(what, sizeof what, "name of tensor %d", i);
    char *name = NULL;
    int rc = rd_name(c, what, GGUF_MAX_NAME, &name, &name_len);
    if (rc) return rc;
    t->name = name;
    int32_t *slot = table_slot(&g->tensor_index, name, name_len, tensor_name_at, g);
    if (*slot)
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' at offset %zu appears twice (first "
                           "as tensor %d)", g->path, name, at, *slot - 1);
    *slot = i + 1;
    snprintf(what, sizeof what, "dimension count of tensor '%s'", name);
    uint32_t nd = 0;
    if ((rc = rd_u32(c, &nd, what))) return rc;
    if (nd < 1 || nd > GGUF_MAX_DIMS)
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' at offset %zu has %" PRIu32
                           " dimensions (1..%d allowed)", g->path, name, at, nd, GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    int64_t n = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        size_t dat = c->off;
        uint64_t v = 0;
        snprintf(what, sizeof what, "dimension %" PRIu32 " of tensor '%s'", d, name);
        if ((rc = rd_u64(c, &v, what))) return rc;
        if (v == 0 || v > (uint64_t)INT64_MAX)
            return rotary_fail(ROTARY_EFORMAT, "%s: %s at offset %zu is %" PRId64
                               " (must be >= 1)", g->path, what, dat, (int64_t)v);
        if ((int64_t)v > INT64_MAX / n)
            return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' at offset %zu: the element count "
                               "overflows 64 bits at dimension %" PRIu32, g->path, name, at, d);
        t->ne[d] = (int64_t)v;
        n *= (int64_t)v;
    }
    t->n_elements = n;
    size_t tat = c->off;
    uint32_t type = 0;
    snprintf(what, sizeof what, "type of tensor '%s'", name);
    if ((rc = rd_u32(c, &type, what))) return rc;
    const ggml_type_info *ti = ggml_type(type);
    if (!ti)
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' has unknown ggml type %" PRIu32
                           " (at offset %zu)", g->path, name, type, tat);
    t->type = (int)type;
    if (t->ne[0] % ti->blck != 0)
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' (at offset %zu) of type %s has ne[0] "
                           "= %" PRId64 ", not a multiple of its block of %" PRIu32, g->path,
                           name, at, ti->name, t->ne[0], ti->blck);
    /* bytes = n / blck * bytes per block, checked against size_t */
    size_t bytes;
    if ((uint64_t)(n / ti->blck) > SIZE_MAX ||
        rotary_mul_size((size_t)(n / ti->blck), ti->bytes, &bytes) != 0)
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' (at offset %zu): %" PRId64 " elements "
                           "of type %s are too many bytes", g->path, name, at, n, ti->name);
    t->n_bytes = bytes;
    size_t oat = c->off;
    snprintf(what, sizeof what, "data offset of tensor '%s'", name);
    if ((rc = rd_u64(c, rel, what))) return rc;
    if (*rel % g->alignment != 0)
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' data offset %" PRIu64 " (at offset "
                           "%zu) is not a multiple of the alignment %" PRIu32, g->path, name,
                           *rel, oat, g->alignment);
    return ROTARY_OK;
}

/* Each tensor owns its bytes (ggml writes them one after another). */
static int check_overlap(const rotary_gguf *g) {
    if (g->n_tensors < 2) return ROTARY_OK;
    rotary_span *s = malloc((size_t)g->n_tensors * sizeof *s);
    if (!s) return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", g->path);
    for (int k = 0; k < g->n_tensors; k++) {
        const rotary_gguf_tensor *t = &g->tensors[k];
        const size_t at = (size_t)((const unsigned char *)t->data - g->map);
        s[k] = (rotary_span){at, at + t->n_bytes, t->name};
    }
    const rotary_span *x, *y;
    int rc = ROTARY_OK;
    if (rotary_spans_overlap(s, g->n_tensors, &x, &y))
        rc = rotary_fail(ROTARY_EFORMAT, "%s: tensors '%s' and '%s' overlap", g->path, x->name,
                         y->name);
    free(s);
    return rc;
}

static int parse(rotary_gguf *g) {
    const unsigned char *m = g->map;
    if (g->size < 4 || memcmp(m, "GGUF", 4) != 0) {
        char got[24] = "";
        size_t used = 0;
        for (size_t i = 0; i < 4 && i < g->size; i++)
            used += (size_t)snprintf(got + used, sizeof got - used, "%s0x%02x", i ? " " : "", m[i]);
        return rotary_fail(ROTARY_EFORMAT, "%s: not a GGUF file (starts with %s, not \"GGUF\")",
                           g->path, g->size ? got : "nothing: the file is empty");
    }
    if (g->size < 8)
        return rotary_fail(ROTARY_EFORMAT, "%s: truncated: the version at offset 4 needs 4 bytes "
                           "but only %zu are left", g->path, g->size - 4);
    uint32_t v = ld_u32(m + 4);
    if (v == 1)
        return rotary_fail(ROTARY_EFORMAT, "%s: GGUF version 1 (32-bit counts, 2023) is not "
                           "supported; rotary reads versions 2 and 3", g->path);
    if (v != 2 && v != 3) {
        uint32_t sw = __builtin_bswap32(v);
        if (sw >= 1 && sw <= 3)
            return rotary_fail(ROTARY_EFORMAT, "%s: a big-endian GGUF file (version %" PRIu32
                               "); rotary reads little-endian files only", g->path, sw);
        return rotary_fail(ROTARY_EFORMAT, "%s: unsupported GGUF version %" PRIu32 " at offset 4 "
                           "(rotary reads versions 2 and 3)", g->path, v);
    }
    g->version = (int)v;
    cursor c = {g, 8};
    uint64_t nt = 0, nkv = 0;
    int rc;
    if ((rc = rd_u64(&c, &nt, "tensor count")) || (rc = rd_u64(&c, &nkv, "key/value count")))
        return rc;
    if (nkv > INT_MAX || nkv > left(&c) / GGUF_MIN_KV)
        return rotary_fail(ROTARY_EFORMAT, "%s: key/value count %" PRIu64 " at offset 16 is "
                           "impossible for a file of %zu bytes", g->path, nkv, g->size);
    if (nt > INT_MAX || nt > (left(&c) - (size_t)nkv * GGUF_MIN_KV) / GGUF_MIN_TENSOR)
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor count %" PRIu64 " at offset 8 is "
                           "impossible for a file of %zu bytes", g->path, nt, g->size);
    g->kv = calloc(nkv ? (size_t)nkv : 1, sizeof *g->kv);
    g->tensors = calloc(nt ? (size_t)nt : 1, sizeof *g->tensors);
    uint64_t *rel = calloc(nt ? (size_t)nt : 1, sizeof *rel);
    if (!g->kv || !g->tensors || !rel || table_init(&g->kv_index, (size_t)nkv) != 0 ||
        table_init(&g->tensor_index, (size_t)nt) != 0) {
        free(rel);
        return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", g->path);
    }
    g->n_kv = (int)nkv;
    g->n_tensors = (int)nt;
    rc = parse_kvs(g, &c);
    if (!rc) rc = read_alignment(g);
    for (int i = 0; !rc && i < g->n_tensors; i++) rc = parse_tensor_info(g, &c, i, &rel[i]);
    if (rc) {
        free(rel);
        return rc;
    }
    /* data section: the header end rounded up to the alignment */
    size_t a = g->alignment, end = c.off;
    g->data_start = end + (a - end % a) % a;
    if (g->data_start < end) g->data_start = SIZE_MAX; /* cannot happen: end < size */
    for (int i = 0; i < g->n_tensors; i++) {
        rotary_gguf_tensor *t = &g->tensors[i];
        size_t room = g->data_start <= g->size ? g->size - g->data_start : 0;
        if (g->data_start > g->size || rel[i] > room || t->n_bytes > room - (size_t)rel[i]) {
            rc = rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' data (%zu bytes at data offset %"
                             PRIu64 ", file offset %zu + %" PRIu64 ") runs past the end of the "
                             "file (%zu bytes)", g->path, t->name, t->n_bytes, rel[i],
                             g->data_start, rel[i], g->size);
            break;
        }
        t->data = g->map + g->data_start + (size_t)rel[i];
    }
    free(rel);
    return rc ? rc : check_overlap(g);
}

int rotary_gguf_open(rotary_gguf **out, const char *path) {
    if (!out) return rotary_fail(ROTARY_EINVAL, "rotary_gguf_open: NULL output");
    *out = NULL;
    if (!path || !path[0]) return rotary_fail(ROTARY_EINVAL, "gguf open: empty path");
    if (!host_is_little_endian())
        return rotary_fail(ROTARY_EINVAL, "%s: big-endian hosts are not supported", path);
    rotary_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", path);
    }
    const void *map;
    int rc = rotary_map_file(path, &map, &g->size);
    if (rc != ROTARY_OK) goto fail;
    g->map = map;
    /* A file shorter than the header fails in parse on the magic, the
     * version or a count, which says why precisely; the check after it is
     * a guard. */
    rc = parse(g);
    if (rc == ROTARY_OK && g->size < GGUF_HEADER)
        rc = rotary_fail(ROTARY_EFORMAT, "%s: truncated: %zu bytes, shorter than the %d-byte "
                         "GGUF header", path, g->size, GGUF_HEADER);
    if (rc != ROTARY_OK) goto fail;
    *out = g;
    return ROTARY_OK;
fail:
    rotary_gguf_close(g);
    return rc;
}

/* ------------------------------------------------------------- accessors */

int rotary_gguf_version(const rotary_gguf *g) { return g ? g->version : 0; }
int rotary_gguf_n_kv(const rotary_gguf *g) { return g ? g->n_kv : 0; }

const char *rotary_gguf_kv_key(const rotary_gguf *g, int i) {
    return g && i >= 0 && i < g->n_kv ? g->kv[i].key : NULL;
}

int rotary_gguf_kv_type(const rotary_gguf *g, int i) {
    return g && i >= 0 && i < g->n_kv ? g->kv[i].type : -1;
}

int rotary_gguf_find(const rotary_gguf *g, const char *key) {
    if (!g || !key) return -1;
    int32_t s = *table_slot(&g->kv_index, key, strlen(key), kv_name_at, g);
    return s - 1;
}

int rotary_gguf_kv_value(const rotary_gguf *g, int i, const void **data, size_t *n_bytes) {
    if (!g || i < 0 || i >= g->n_kv || !data || !n_bytes)
        return rotary_fail(ROTARY_EINVAL, "gguf: bad key/value index %d", i);
    *data = g->map + g->kv[i].val;
    *n_bytes = g->kv[i].end - g->kv[i].val;
    return ROTARY_OK;
}

/* The key/value for key, or NULL with the message set. */
static const gguf_kv *lookup(const rotary_gguf *g, const char *key, int *rc) {
    if (!g || !key) {
        *rc = rotary_fail(ROTARY_EINVAL, "gguf: NULL file or key");
        return NULL;
    }
    int i = rotary_gguf_find(g, key);
    if (i < 0) {
        *rc = rotary_fail(ROTARY_EFORMAT, "%s: key '%s' is missing", g->path, key);
        return NULL;
    }
    return &g->kv[i];
}

static int wrong_type(const rotary_gguf *g, const gguf_kv *kv, const char *want) {
    if (kv->type == ROTARY_GGUF_ARRAY)
        return rotary_fail(ROTARY_EFORMAT, "%s: key '%s' is an array of %s, expected %s", g->path,
                           kv->key, kv_type_name((uint32_t)kv->elem_type), want);
    return rotary_fail(ROTARY_EFORMAT, "%s: key '%s' has type %s, expected %s", g->path, kv->key,
                       kv_type_name((uint32_t)kv->type), want);
}

/* Integer (or bool) of type t at p into *out; -1 if a U64 exceeds INT64_MAX. */
static int load_int(int t, const unsigned char *p, int64_t *out) {
    switch (t) {
    case ROTARY_GGUF_U8: case ROTARY_GGUF_BOOL: *out = p[0]; return 0;
    case ROTARY_GGUF_I8: *out = (int8_t)p[0]; return 0;
    case ROTARY_GGUF_U16: { uint16_t v; memcpy(&v, p, 2); *out = v; return 0; }
    case ROTARY_GGUF_I16: { int16_t v; memcpy(&v, p, 2); *out = v; return 0; }
    case ROTARY_GGUF_U32: { uint32_t v; memcpy(&v, p, 4); *out = v; return 0; }
    case ROTARY_GGUF_I32: { int32_t v; memcpy(&v, p, 4); *out = v; return 0; }
    case ROTARY_GGUF_I64: { int64_t v; memcpy(&v, p, 8); *out = v; return 0; }
    case ROTARY_GGUF_U64: {
        uint64_t v;
        memcpy(&v, p, 8);
        if (v > (uint64_t)INT64_MAX) return -1;
        *out = (int64_t)v;
        return 0;
    }
    default: return -1;
    }
}

static double load_float(int t, const unsigned char *p) {
    if (t == ROTARY_GGUF_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    if (t == ROTARY_GGUF_F64) {
        double d;
        memcpy(&d, p, 8);
        return d;
    }
    if (t == ROTARY_GGUF_U64) {
        uint64_t v;
        memcpy(&v, p, 8);
        return (double)v;
    }
    int64_t v = 0;
    load_int(t, p, &v);
    return (double)v;
}

int rotary_gguf_get_int(const rotary_gguf *g, const char *key, int64_t *out) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (!out) return rotary_fail(ROTARY_EINVAL, "gguf: NULL output");
    if (!kv_type_is_int(kv->type) && kv->type != ROTARY_GGUF_BOOL)
        return wrong_type(g, kv, "an integer");
    if (load_int(kv->type, g->map + kv->val, out) != 0)
        return rotary_fail(ROTARY_EFORMAT, "%s: key '%s' = %" PRIu64 " does not fit int64",
                           g->path, key, ld_u64(g->map + kv->val));
    return ROTARY_OK;
}

int rotary_gguf_get_float(const rotary_gguf *g, const char *key, double *out) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (!out) return rotary_fail(ROTARY_EINVAL, "gguf: NULL output");
    if (!kv_type_is_int(kv->type) && kv->type != ROTARY_GGUF_F32 && kv->type != ROTARY_GGUF_F64)
        return wrong_type(g, kv, "a number");
    *out = load_float(kv->type, g->map + kv->val);
    return ROTARY_OK;
}

int rotary_gguf_get_string(const rotary_gguf *g, const char *key, const char **s, size_t *len) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (!s || !len) return rotary_fail(ROTARY_EINVAL, "gguf: NULL output");
    if (kv->type != ROTARY_GGUF_STRING) return wrong_type(g, kv, "a string");
    *len = (size_t)ld_u64(g->map + kv->val);
    *s = (const char *)g->map + kv->val + 8;
    return ROTARY_OK;
}

int rotary_gguf_get_array(const rotary_gguf *g, const char *key, int *elem_type, uint64_t *n) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != ROTARY_GGUF_ARRAY) return wrong_type(g, kv, "an array");
    if (elem_type) *elem_type = kv->elem_type;
    if (n) *n = kv->n;
    return ROTARY_OK;
}

/* The array for key with element i in range, or NULL with the message set. */
static const gguf_kv *array_elem(const rotary_gguf *g, const char *key, uint64_t i, int *rc) {
    const gguf_kv *kv = lookup(g, key, rc);
    if (!kv) return NULL;
    if (kv->type != ROTARY_GGUF_ARRAY) {
        *rc = wrong_type(g, kv, "an array");
        return NULL;
    }
    if (i >= kv->n) {
        *rc = rotary_fail(ROTARY_EINVAL, "%s: index %" PRIu64 " out of range for array '%s' of %"
                          PRIu64 " elements", g->path, i, key, kv->n);
        return NULL;
    }
    return kv;
}

int rotary_gguf_array_int(const rotary_gguf *g, const char *key, uint64_t i, int64_t *out) {
    int rc;
    const gguf_kv *kv = array_elem(g, key, i, &rc);
    if (!kv) return rc;
    if (!out) return rotary_fail(ROTARY_EINVAL, "gguf: NULL output");
    int et = kv->elem_type;
    if (!kv_type_is_int(et) && et != ROTARY_GGUF_BOOL)
        return wrong_type(g, kv, "an array of integers");
    const unsigned char *p = g->map + kv->first + (size_t)i * kv_scalar_size((uint32_t)et);
    if (load_int(et, p, out) != 0)
        return rotary_fail(ROTARY_EFORMAT, "%s: '%s'[%" PRIu64 "] = %" PRIu64 " does not fit "
                           "int64", g->path, key, i, ld_u64(p));
    return ROTARY_OK;
}

int rotary_gguf_array_float(const rotary_gguf *g, const char *key, uint64_t i, double *out) {
    int rc;
    const gguf_kv *kv = array_elem(g, key, i, &rc);
    if (!kv) return rc;
    if (!out) return rotary_fail(ROTARY_EINVAL, "gguf: NULL output");
    int et = kv->elem_type;
    if (!kv_type_is_int(et) && et != ROTARY_GGUF_F32 && et != ROTARY_GGUF_F64)
        return wrong_type(g, kv, "an array of numbers");
    *out = load_float(et, g->map + kv->first + (size_t)i * kv_scalar_size((uint32_t)et));
    return ROTARY_OK;
}

int rotary_gguf_array_string(const rotary_gguf *g, const char *key, uint64_t i, const char **s,
                             size_t *len) {
    int rc;
    const gguf_kv *kv = array_elem(g, key, i, &rc);
    if (!kv) return rc;
    if (!s || !len) return rotary_fail(ROTARY_EINVAL, "gguf: NULL output");
    if (kv->elem_type != ROTARY_GGUF_STRING) return wrong_type(g, kv, "an array of strings");
    size_t at = (size_t)kv->str[i];
    *len = (size_t)ld_u64(g->map + at);
    *s = (const char *)g->map + at + 8;
    return ROTARY_OK;
}

int rotary_gguf_n_tensors(const rotary_gguf *g) { return g ? g->n_tensors : 0; }

const rotary_gguf_tensor *rotary_gguf_tensor_at(const rotary_gguf *g, int i) {
    return g && i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const rotary_gguf_tensor *rotary_gguf_find_tensor(const rotary_gguf *g, const char *name) {
    if (!g || !name) return NULL;
    int32_t s = *table_slot(&g->tensor_index, name, strlen(name), tensor_name_at, g);
    return s ? &g->tensors[s - 1] : NULL;
}

/* ------------------------------------------------------------- conversion */

void rotary_q8_0_dequantize(float *out, const void *blocks, size_t n) {
    const unsigned char *b = blocks;
    const size_t nb = n / ROTARY_Q8_0_BLOCK;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < nb; k++) {
        const unsigned char *blk = b + k * ROTARY_Q8_0_BYTES;
        uint16_t dh;
        memcpy(&dh, blk, 2);
        const float d = rotary_f16_to_f32(dh);
        float *o = out + k * ROTARY_Q8_0_BLOCK;
        for (int j = 0; j < ROTARY_Q8_0_BLOCK; j++) o[j] = d * (float)(int8_t)blk[2 + j];
    }
}

void rotary_q8_0_quantize(void *out, const float *x, size_t n) {
    unsigned char *b = out;
    const size_t nb = n / ROTARY_Q8_0_BLOCK;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < nb; k++) {
        const float *v = x + k * ROTARY_Q8_0_BLOCK;
        unsigned char *blk = b + k * ROTARY_Q8_0_BYTES;
        float amax = 0.0f;
        for (int j = 0; j < ROTARY_Q8_0_BLOCK; j++) {
            float a = fabsf(v[j]);
            if (a > amax) amax = a;
        }
        const uint16_t dh = rotary_f32_to_f16(amax / 127.0f);
        const float d = rotary_f16_to_f32(dh);
        memcpy(blk, &dh, 2);
        for (int j = 0; j < ROTARY_Q8_0_BLOCK; j++) {
            float q = d > 0.0f ? roundf(v[j] / d) : 0.0f;
            if (!(q == q)) q = 0.0f;
            q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
            blk[2 + j] = (unsigned char)(int8_t)q;
        }
    }
}

/* out[i] = the 16-bit float at p + 2 i: float16, or bfloat16 when bf16. */
static void widen16(float *out, const unsigned char *p, size_t n, int bf16) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        out[i] = bf16 ? rotary_bf16_to_f32(h) : rotary_f16_to_f32(h);
    }
}

int rotary_gguf_tensor_f32(const rotary_gguf_tensor *t, float *out) {
    if (!t || !out || !t->data) return rotary_fail(ROTARY_EINVAL, "gguf: NULL tensor or output");
    const size_t n = (size_t)t->n_elements;
    const unsigned char *p = t->data;
    switch (t->type) {
    case ROTARY_GGML_F32:
        memcpy(out, p, n * sizeof(float));
        return ROTARY_OK;
    case ROTARY_GGML_F16:
    case ROTARY_GGML_BF16:
        widen16(out, p, n, t->type == ROTARY_GGML_BF16);
        return ROTARY_OK;
    case ROTARY_GGML_Q8_0:
        rotary_q8_0_dequantize(out, p, n);
        return ROTARY_OK;
    default:
        return rotary_fail(ROTARY_EFORMAT, "gguf: tensor '%s' has type %s (%d), which rotary "
                           "cannot convert to float32 (it reads F32, F16, BF16 and Q8_0)",
                           t->name ? t->name : "?", ggml_type_name(t->type), t->type);
    }
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    char *key;
    int type;
    unsigned char *val; /* the serialized value */
    size_t len;
} wkv;

typedef struct {
    char *name;
    int type, n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    const void *data;
    size_t n_bytes;
} wtensor;

struct rotary_gguf_writer {
    wkv *kv;
    int n_kv, cap_kv;
    wtensor *t;
    int n_t, cap_t;
};

int rotary_gguf_writer_new(rotary_gguf_writer **w) {
    if (!w) return rotary_fail(ROTARY_EINVAL, "gguf writer: NULL output");
    *w = calloc(1, sizeof **w);
    return *w ? ROTARY_OK : rotary_fail(ROTARY_ENOMEM, "gguf writer: out of memory");
}

void rotary_gguf_writer_free(rotary_gguf_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (int i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

/* Store key = (type, val of len bytes); takes ownership of val. */
static int set_kv(rotary_gguf_writer *w, const char *key, int type, unsigned char *val,
                  size_t len) {
    if (!w || !key) {
        free(val);
        return rotary_fail(ROTARY_EINVAL, "gguf writer: NULL writer or key");
    }
    size_t klen = strlen(key);
    if (klen == 0 || klen > GGUF_MAX_KEY) {
        free(val);
        return rotary_fail(ROTARY_EINVAL, "gguf writer: key '%.40s' is %zu bytes (1..%d allowed)",
                           key, klen, GGUF_MAX_KEY);
    }
    for (int i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].val);
            w->kv[i].type = type;
            w->kv[i].val = val;
            w->kv[i].len = len;
            return ROTARY_OK;
        }
    }
    if (w->n_kv == INT_MAX) {
        free(val);
        return rotary_fail(ROTARY_EINVAL, "gguf writer: too many keys");
    }
    if (w->n_kv == w->cap_kv) {
        int cap = w->cap_kv ? (w->cap_kv > INT_MAX / 2 ? INT_MAX : 2 * w->cap_kv) : 16;
        wkv *p = realloc(w->kv, (size_t)cap * sizeof *p);
        if (!p) {
            free(val);
            return rotary_fail(ROTARY_ENOMEM, "gguf writer: out of memory");
        }
        w->kv = p;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(val);
        return rotary_fail(ROTARY_ENOMEM, "gguf writer: out of memory");
    }
    w->kv[w->n_kv++] = (wkv){k, type, val, len};
    return ROTARY_OK;
}

int rotary_gguf_set_scalar(rotary_gguf_writer *w, const char *key, int type, const void *value) {
    size_t sz = type >= 0 ? kv_scalar_size((uint32_t)type) : 0;
    if (!sz)
        return rotary_fail(ROTARY_EINVAL, "gguf writer: key '%.100s': type %d is not a scalar "
                           "type", key ? key : "?", type);
    if (!value) return rotary_fail(ROTARY_EINVAL, "gguf writer: key '%.100s': NULL value",
                                   key ? key : "?");
    if (type == ROTARY_GGUF_BOOL && *(const unsigned char *)value > 1)
        return rotary_fail(ROTARY_EINVAL, "gguf writer: key '%.100s': bool value %u (0 or 1)",
                           key ? key : "?", *(const unsigned char *)value);
    unsigned char *val = malloc(sz);
    if (!val) return rotary_fail(ROTARY_ENOMEM, "gguf writer: out of memory");
    memcpy(val, value, sz);
    return set_kv(w, key, type, val, sz);
}

int rotary_gguf_set_u32(rotary_gguf_writer *w, const char *key, uint32_t v) {
    return rotary_gguf_set_scalar(w, key, ROTARY_GGUF_U32, &v);
}
int rotary_gguf_set_i32(rotary_gguf_writer *w, const char *key, int32_t v) {
    return rotary_gguf_set_scalar(w, key, ROTARY_GGUF_I32, &v);
}
int rotary_gguf_set_f32(rotary_gguf_writer *w, const char *key, float v) {
    return rotary_gguf_set_scalar(w, key, ROTARY_GGUF_F32, &v);
}
int rotary_gguf_set_bool(rotary_gguf_writer *w, const char *key, int v) {
    uint8_t b = v != 0;
    return rotary_gguf_set_scalar(w, key, ROTARY_GGUF_BOOL, &b);
}

int rotary_gguf_set_string(rotary_gguf_writer *w, const char *key, const char *s, size_t len) {
    if (!s && len) return rotary_fail(ROTARY_EINVAL, "gguf writer: key '%.100s': NULL string",
                                      key ? key : "?");
    if (len > SIZE_MAX - 8) return rotary_fail(ROTARY_ENOMEM, "gguf writer: string too long");
    unsigned char *val = malloc(8 + len);
    if (!val) return rotary_fail(ROTARY_ENOMEM, "gguf writer: out of memory");
    uint64_t l = len;
    memcpy(val, &l, 8);
    if (len) memcpy(val + 8, s, len);
    return set_kv(w, key, ROTARY_GGUF_STRING, val, 8 + len);
}

int rotary_gguf_set_array(rotary_gguf_writer *w, const char *key, int elem_type,
                          const void *data, uint64_t n) {
    size_t sz = elem_type >= 0 ? kv_scalar_size((uint32_t)elem_type) : 0, bytes;
    if (!sz)
        return rotary_fail(ROTARY_EINVAL, "gguf writer: key '%.100s': arrays of type %d are not "
                           "numeric (use rotary_gguf_set_strings for strings)", key ? key : "?",
                           elem_type);
    if (n > SIZE_MAX || rotary_mul_size((size_t)n, sz, &bytes) != 0 || bytes > SIZE_MAX - 12)
        return rotary_fail(ROTARY_ENOMEM, "gguf writer: key '%.100s': %" PRIu64 " elements is "
                           "too many", key ? key : "?", n);
    if (n && !data)
        return rotary_fail(ROTARY_EINVAL, "gguf writer: key '%.100s': NULL data", key ? key : "?");
    if (elem_type == ROTARY_GGUF_BOOL)
        for (uint64_t i = 0; i < n; i++)
            if (((const unsigned char *)data)[i] > 1)
                return rotary_fail(ROTARY_EINVAL, "gguf writer: key '%.100s': element %" PRIu64
                                   " is not a bool (0 or 1)", key ? key : "?", i);
    unsigned char *val = malloc(12 + bytes);
    if (!val) return rotary_fail(ROTARY_ENOMEM, "gguf writer: out of memory");
    uint32_t et = (uint32_t)elem_type;
    memcpy(val, &et, 4);
    memcpy(val + 4, &n, 8);
    if (bytes) memcpy(val + 12, data, bytes);
    return set_kv(w, key, ROTARY_GGUF_ARRAY, val, 12 + bytes);
}

int rotary_gguf_set_strings(rotary_gguf_writer *w, const char *key, const char *const *s,
                            const size_t *len, uint64_t n) {
    if (n && !s)
        return rotary_fail(ROTARY_EINVAL, "gguf writer: key '%.100s': NULL strings",
                           key ? key : "?");
    if (n > SIZE_MAX / 8)
        return rotary_fail(ROTARY_ENOMEM, "gguf writer: key '%.100s': too many strings",
                           key ? key : "?");
    size_t total = 12;
    for (uint64_t i = 0; i < n; i++) {
        size_t l = len ? len[i] : s[i] ? strlen(s[i]) : 0;
        if (!s[i] && l)
            return rotary_fail(ROTARY_EINVAL, "gguf writer: key '%.100s': string %" PRIu64
                               " is NULL", key ? key : "?", i);
        if (l > SIZE_MAX - 8 - total)
            return rotary_fail(ROTARY_ENOMEM, "gguf writer: key '%.100s': strings too long",
                               key ? key : "?");
        total += 8 + l;
    }
    unsigned char *val = malloc(total);
    if (!val) return rotary_fail(ROTARY_ENOMEM, "gguf writer: out of memory");
    uint32_t et = ROTARY_GGUF_STRING;
    memcpy(val, &et, 4);
    memcpy(val + 4, &n, 8);
    size_t off = 12;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l = len ? len[i] : s[i] ? strlen(s[i]) : 0;
        memcpy(val + off, &l, 8);
        if (l) memcpy(val + off + 8, s[i], (size_t)l);
        off += 8 + (size_t)l;
    }
    return set_kv(w, key, ROTARY_GGUF_ARRAY, val, total);
}

int rotary_gguf_add_tensor(rotary_gguf_writer *w, const char *name, int type, int n_dims,
                           const int64_t *ne, const void *data) {
    if (!w || !name) return rotary_fail(ROTARY_EINVAL, "gguf writer: NULL writer or name");
    size_t len = strlen(name);
    if (len == 0 || len > GGUF_WRITE_MAX_NAME)
        return rotary_fail(ROTARY_EINVAL, "gguf writer: tensor name '%.40s' is %zu bytes (1..%d "
                           "allowed, as llama.cpp reads them)", name, len, GGUF_WRITE_MAX_NAME);
    for (int i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return rotary_fail(ROTARY_EINVAL, "gguf writer: tensor '%s' added twice", name);
    if (type != ROTARY_GGML_F32 && type != ROTARY_GGML_F16 && type != ROTARY_GGML_BF16 &&
        type != ROTARY_GGML_Q8_0)
        return rotary_fail(ROTARY_EINVAL, "gguf writer: tensor '%s': type %s (%d) is not "
                           "written (F32, F16, BF16, Q8_0 are)", name, ggml_type_name(type), type);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne)
        return rotary_fail(ROTARY_EINVAL, "gguf writer: tensor '%s' has %d dimensions (1..%d)",
                           name, n_dims, GGUF_MAX_DIMS);
    const ggml_type_info *ti = ggml_type((uint32_t)type);
    int64_t n = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 1 || ne[d] > INT64_MAX / n)
            return rotary_fail(ROTARY_EINVAL, "gguf writer: tensor '%s': bad dimension %d = %"
                               PRId64, name, d, ne[d]);
        n *= ne[d];
    }
    if (ne[0] % ti->blck != 0)
        return rotary_fail(ROTARY_EINVAL, "gguf writer: tensor '%s' of type %s needs ne[0] (%"
                           PRId64 ") to be a multiple of %" PRIu32, name, ti->name, ne[0],
                           ti->blck);
    size_t bytes;
    if ((uint64_t)(n / ti->blck) > SIZE_MAX ||
        rotary_mul_size((size_t)(n / ti->blck), ti->bytes, &bytes) != 0)
        return rotary_fail(ROTARY_EINVAL, "gguf writer: tensor '%s' is too large", name);
    if (!data) return rotary_fail(ROTARY_EINVAL, "gguf writer: tensor '%s' has no data", name);
    if (w->n_t == w->cap_t) {
        if (w->cap_t > INT_MAX / 2) return rotary_fail(ROTARY_EINVAL, "gguf writer: too many tensors");
        int cap = w->cap_t ? 2 * w->cap_t : 16;
        wtensor *p = realloc(w->t, (size_t)cap * sizeof *p);
        if (!p) return rotary_fail(ROTARY_ENOMEM, "gguf writer: out of memory");
        w->t = p;
        w->cap_t = cap;
    }
    char *nm = strdup(name);
    if (!nm) return rotary_fail(ROTARY_ENOMEM, "gguf writer: out of memory");
    wtensor *t = &w->t[w->n_t++];
    memset(t, 0, sizeof *t);
    t->name = nm;
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->data = data;
    t->n_bytes = bytes;
    return ROTARY_OK;
}

/* Append n bytes to the header buffer (sized in advance). */
static void put(unsigned char *buf, size_t *off, const void *p, size_t n) {
    memcpy(buf + *off, p, n);
    *off += n;
}

/* The alignment the file is laid out with: general.alignment if set. */
static int writer_alignment(const rotary_gguf_writer *w, const char *path, size_t *align) {
    *align = GGUF_DEFAULT_ALIGN;
    for (int i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0) continue;
        uint32_t a = 0;
        if (w->kv[i].type == ROTARY_GGUF_U32) memcpy(&a, w->kv[i].val, 4);
        if (w->kv[i].type != ROTARY_GGUF_U32 || a == 0 || (a & (a - 1)) != 0)
            return rotary_fail(ROTARY_EINVAL, "%s: general.alignment must be a U32 power of two",
                               path);
        *align = a;
    }
    return ROTARY_OK;
}

int rotary_gguf_write(const rotary_gguf_writer *w, const char *path) {
    if (!w) return rotary_fail(ROTARY_EINVAL, "gguf write: NULL writer");
    if (!path || !path[0]) return rotary_fail(ROTARY_EINVAL, "gguf write: empty path");
    if (!host_is_little_endian())
        return rotary_fail(ROTARY_EINVAL, "%s: big-endian hosts are not supported", path);
    size_t align;
    int rc = writer_alignment(w, path, &align);
    if (rc) return rc;

    /* header size, then the tensors' offsets within the data section */
    size_t hsize = GGUF_HEADER;
    for (int i = 0; i < w->n_kv; i++) {
        size_t add = 12 + strlen(w->kv[i].key) + w->kv[i].len;
        if (add > SIZE_MAX - hsize) return rotary_fail(ROTARY_ENOMEM, "%s: header too large", path);
        hsize += add;
    }
    for (int i = 0; i < w->n_t; i++) {
        size_t add = 8 + strlen(w->t[i].name) + 4 + 8 * (size_t)w->t[i].n_dims + 4 + 8;
        if (add > SIZE_MAX - hsize) return rotary_fail(ROTARY_ENOMEM, "%s: header too large", path);
        hsize += add;
    }
    size_t hpad = (align - hsize % align) % align;
    if (hpad > SIZE_MAX - hsize) return rotary_fail(ROTARY_ENOMEM, "%s: header too large", path);
    uint64_t *offs = calloc(w->n_t ? (size_t)w->n_t : 1, sizeof *offs);
    unsigned char *head = malloc(hsize + hpad);
    if (!offs || !head) {
        free(offs);
        free(head);
        return rotary_fail(ROTARY_ENOMEM, "%s: cannot allocate the %zu-byte header", path,
                           hsize + hpad);
    }
    uint64_t data_off = 0;
    for (int i = 0; i < w->n_t; i++) {
        offs[i] = data_off;
        uint64_t next = data_off + w->t[i].n_bytes;
        if (next < data_off || next > UINT64_MAX - align) {
            free(offs);
            free(head);
            return rotary_fail(ROTARY_ENOMEM, "%s: tensors too large", path);
        }
        data_off = next + (align - next % align) % align;
    }

    size_t off = 0;
    uint32_t u32 = 3;
    uint64_t u64;
    put(head, &off, "GGUF", 4);
    put(head, &off, &u32, 4);
    u64 = (uint64_t)w->n_t;
    put(head, &off, &u64, 8);
    u64 = (uint64_t)w->n_kv;
    put(head, &off, &u64, 8);
    for (int i = 0; i < w->n_kv; i++) {
        u64 = strlen(w->kv[i].key);
        put(head, &off, &u64, 8);
        put(head, &off, w->kv[i].key, (size_t)u64);
        u32 = (uint32_t)w->kv[i].type;
        put(head, &off, &u32, 4);
        put(head, &off, w->kv[i].val, w->kv[i].len);
    }
    for (int i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        u64 = strlen(t->name);
        put(head, &off, &u64, 8);
        put(head, &off, t->name, (size_t)u64);
        u32 = (uint32_t)t->n_dims;
        put(head, &off, &u32, 4);
        for (int d = 0; d < t->n_dims; d++) {
            u64 = (uint64_t)t->ne[d];
            put(head, &off, &u64, 8);
        }
        u32 = (uint32_t)t->type;
        put(head, &off, &u32, 4);
        put(head, &off, &offs[i], 8);
    }
    memset(head + off, 0, hpad);
    free(offs);

    rotary_tmpfile out;
    rc = rotary_tmpfile_open(&out, path);
    if (rc == ROTARY_OK) rc = rotary_tmpfile_write(&out, head, hsize + hpad);
    static const unsigned char zeros[256];
    for (int i = 0; i < w->n_t && rc == ROTARY_OK; i++) {
        const wtensor *t = &w->t[i];
        rc = rotary_tmpfile_write(&out, t->data, t->n_bytes);
        size_t pad = (align - t->n_bytes % align) % align; /* the last one too, as ggml */
        while (pad > 0 && rc == ROTARY_OK) {
            size_t k = pad < sizeof zeros ? pad : sizeof zeros;
            rc = rotary_tmpfile_write(&out, zeros, k);
            pad -= k;
        }
    }
    if (rc == ROTARY_OK) rc = rotary_tmpfile_commit(&out);
    free(head);
    return rc;
}
