/* io_safetensors.c: safetensors reading and writing, and model checkpoints.
 *
 * File layout (see docs/formats.md):
 *   u64 N (little-endian) | N bytes of JSON header | data buffer
 * The header maps tensor names to {"dtype", "shape", "data_offsets"} with
 * offsets relative to the start of the data buffer, plus an optional
 * "__metadata__" object of string values. We write headers padded with spaces
 * so the data buffer starts 8-byte aligned, and read only F32 and I32.
 *
 * Writes are atomic: a temporary file in the same directory is written,
 * fsynced and renamed over the destination, then the directory is fsynced.
 * Reads map the file read-only and validate every header field before any
 * tensor is handed out. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE

#include "internal.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000) /* bytes of JSON we accept */
#define ST_MAX_NDIM 4
#define ST_MAX_NAME 63                     /* bytes, fits rotary_tensor.name */
#define ST_MAX_EXACT ((double)(1ull << 53)) /* larger JSON numbers are inexact */

/* ---------------------------------------------------------------- helpers */

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static size_t dtype_size(int dtype) {
    return dtype == ROTARY_F32 || dtype == ROTARY_I32 ? 4 : 0;
}

static const char *dtype_name(int dtype) {
    return dtype == ROTARY_F32 ? "F32" : dtype == ROTARY_I32 ? "I32" : "?";
}

/* Element count of a shape; -1 on a negative dimension or overflow. */
static int shape_numel(const int64_t *shape, int ndim, size_t *numel) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (uint64_t)shape[i] > SIZE_MAX) return -1;
        if (rotary_mul_size(n, (size_t)shape[i], &n) != 0) return -1;
    }
    *numel = n;
    return 0;
}

/* "[a, b, c]" into buf. */
static const char *shape_str(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t used = 0;
    buf[0] = '\0';
    used += (size_t)snprintf(buf + used, cap - used, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%" PRId64, i ? ", " : "",
                                 shape[i]);
    if (used < cap) snprintf(buf + used, cap - used, "]");
    return buf;
}

/* ------------------------------------------------------------------ write */

/* Bytes of a tensor whose shape check_write_args has already accepted. */
static size_t tensor_bytes(const rotary_st_tensor *t) {
    size_t numel = 0, bytes = 0;
    if (shape_numel(t->shape, t->ndim, &numel) != 0 ||
        rotary_mul_size(numel, dtype_size(t->dtype), &bytes) != 0)
        return 0;
    return bytes;
}

/* A JSON number item holding an unsigned integer printed exactly. */
static cJSON *json_uint(uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return cJSON_CreateRaw(buf);
}

/* Build the header JSON (unpadded) for tensors t[0..n) laid out contiguously
 * in order. Returns a malloc'ed string or NULL with the message set. */
static char *build_header(const char *path, const rotary_st_tensor *t, int n,
                          const char *const *meta, int n_meta, uint64_t *data_bytes) {
    cJSON *root = cJSON_CreateObject();
    if (!root) goto nomem;
    if (n_meta > 0) {
        cJSON *md = cJSON_AddObjectToObject(root, "__metadata__");
        if (!md) goto nomem;
        for (int i = 0; i < n_meta; i++)
            if (!cJSON_AddStringToObject(md, meta[2 * i], meta[2 * i + 1])) goto nomem;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t bytes = tensor_bytes(&t[i]);
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        if (!e || !cJSON_AddStringToObject(e, "dtype", dtype_name(t[i].dtype))) goto nomem;
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        if (!sh) goto nomem;
        for (int d = 0; d < t[i].ndim; d++) {
            cJSON *v = json_uint((uint64_t)t[i].shape[d]);
            if (!v || !cJSON_AddItemToArray(sh, v)) {
                cJSON_Delete(v);
                goto nomem;
            }
        }
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        if (!offs) goto nomem;
        cJSON *b = json_uint(off), *en = json_uint(off + bytes);
        if (!b || !cJSON_AddItemToArray(offs, b)) {
            cJSON_Delete(b);
            cJSON_Delete(en);
            goto nomem;
        }
        if (!en || !cJSON_AddItemToArray(offs, en)) {
            cJSON_Delete(en);
            goto nomem;
        }
        off += bytes;
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!s) {
        rotary_fail(ROTARY_ENOMEM, "%s: cannot allocate the safetensors header", path);
        return NULL;
    }
    *data_bytes = off;
    return s;
nomem:
    cJSON_Delete(root);
    rotary_fail(ROTARY_ENOMEM, "%s: cannot allocate the safetensors header", path);
    return NULL;
}

/* Check the arguments of rotary_st_write before touching the disk. */
static int check_write_args(const char *path, const rotary_st_tensor *t, int n,
                            const char *const *meta, int n_meta) {
    if (n < 0 || (n > 0 && !t))
        return rotary_fail(ROTARY_EINVAL, "%s: bad tensor list (n = %d)", path, n);
    if (n_meta < 0 || (n_meta > 0 && !meta))
        return rotary_fail(ROTARY_EINVAL, "%s: bad metadata list (n_meta = %d)", path, n_meta);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        const rotary_st_tensor *x = &t[i];
        if (!x->name || !x->name[0])
            return rotary_fail(ROTARY_EINVAL, "%s: tensor %d has no name", path, i);
        size_t len = strlen(x->name);
        if (len > ST_MAX_NAME)
            return rotary_fail(ROTARY_EINVAL, "%s: tensor name '%.40s...' is %zu bytes (max %d)",
                               path, x->name, len, ST_MAX_NAME);
        if (strcmp(x->name, "__metadata__") == 0)
            return rotary_fail(ROTARY_EINVAL, "%s: '__metadata__' is not a valid tensor name",
                               path);
        for (int j = 0; j < i; j++)
            if (strcmp(t[j].name, x->name) == 0)
                return rotary_fail(ROTARY_EINVAL, "%s: tensor '%s' appears twice", path,
                                   x->name);
        if (!dtype_size(x->dtype))
            return rotary_fail(ROTARY_EINVAL, "%s: tensor '%s' has unsupported dtype %d", path,
                               x->name, x->dtype);
        if (x->ndim < 0 || x->ndim > ST_MAX_NDIM)
            return rotary_fail(ROTARY_EINVAL, "%s: tensor '%s' has %d dims (0..%d allowed)",
                               path, x->name, x->ndim, ST_MAX_NDIM);
        size_t numel, bytes;
        if (shape_numel(x->shape, x->ndim, &numel) != 0 ||
            rotary_mul_size(numel, dtype_size(x->dtype), &bytes) != 0 ||
            (uint64_t)bytes > UINT64_MAX - total) {
            char sb[128];
            return rotary_fail(ROTARY_EINVAL, "%s: tensor '%s' has a bad or too large shape %s",
                               path, x->name, shape_str(sb, sizeof sb, x->shape, x->ndim));
        }
        if (bytes > 0 && !x->data)
            return rotary_fail(ROTARY_EINVAL, "%s: tensor '%s' has no data", path, x->name);
        total += bytes;
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta[2 * i] || !meta[2 * i + 1])
            return rotary_fail(ROTARY_EINVAL, "%s: metadata pair %d has a NULL key or value",
                               path, i);
        for (int j = 0; j < i; j++)
            if (strcmp(meta[2 * j], meta[2 * i]) == 0)
                return rotary_fail(ROTARY_EINVAL, "%s: metadata key '%s' appears twice", path,
                                   meta[2 * i]);
    }
    return ROTARY_OK;
}

int rotary_st_write(const char *path, const rotary_st_tensor *t, int n,
                    const char *const *meta, int n_meta) {
    if (!path || !path[0]) return rotary_fail(ROTARY_EINVAL, "safetensors write: empty path");
    if (!host_is_little_endian())
        return rotary_fail(ROTARY_EINVAL, "%s: big-endian hosts are not supported", path);
    int rc = check_write_args(path, t, n, meta, n_meta);
    if (rc != ROTARY_OK) return rc;

    uint64_t data_bytes = 0;
    char *json = build_header(path, t, n, meta, n_meta, &data_bytes);
    if (!json) return ROTARY_ENOMEM;
    size_t jlen = strlen(json);
    size_t hlen = (jlen + 7) & ~(size_t)7; /* 8 + hlen is a multiple of 8 */
    unsigned char *head = malloc(8 + hlen);
    if (!head) {
        free(json);
        return rotary_fail(ROTARY_ENOMEM, "%s: cannot allocate the header", path);
    }
    for (int i = 0; i < 8; i++) head[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(head + 8, json, jlen);
    memset(head + 8 + jlen, ' ', hlen - jlen);
    free(json);

    rotary_tmpfile out;
    rc = rotary_tmpfile_open(&out, path);
    if (rc == ROTARY_OK) rc = rotary_tmpfile_write(&out, head, 8 + hlen);
    for (int i = 0; i < n && rc == ROTARY_OK; i++) {
        size_t bytes = tensor_bytes(&t[i]);
        if (bytes) rc = rotary_tmpfile_write(&out, t[i].data, bytes);
    }
    if (rc == ROTARY_OK) rc = rotary_tmpfile_commit(&out);
    free(head);
    return rc;
}

/* ------------------------------------------------------------------- read */

typedef struct {
    char name[ST_MAX_NAME + 1];
    int dtype, ndim;
    int64_t shape[ST_MAX_NDIM];
    size_t begin, end; /* byte offsets into the data buffer */
} st_entry;

typedef struct {
    char *key, *value;
} st_meta;

struct rotary_st_file {
    char *path;
    const void *map;
    size_t map_size;
    const unsigned char *data; /* start of the data buffer */
    size_t data_size;
    st_entry *entries; /* sorted by name */
    int n_entries;
    st_meta *meta; /* sorted by key */
    int n_meta;
};

void rotary_st_close(rotary_st_file *f) {
    if (!f) return;
    rotary_unmap_file(f->map, f->map_size);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->meta);
    free(f->entries);
    free(f->path);
    free(f);
}

static int entry_cmp(const void *a, const void *b) {
    return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

/* The format gives each tensor its own bytes. */
static int check_overlap(const char *path, const rotary_st_file *f) {
    if (f->n_entries < 2) return ROTARY_OK;
    rotary_span *s = malloc((size_t)f->n_entries * sizeof *s);
    if (!s) return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", path);
    for (int k = 0; k < f->n_entries; k++)
        s[k] = (rotary_span){f->entries[k].begin, f->entries[k].end, f->entries[k].name};
    const rotary_span *x, *y;
    int rc = ROTARY_OK;
    if (rotary_spans_overlap(s, f->n_entries, &x, &y))
        rc = rotary_fail(ROTARY_EFORMAT, "%s: tensors '%s' and '%s' overlap (bytes %zu-%zu and "
                         "%zu-%zu)", path, x->name, y->name, x->begin, x->end, y->begin, y->end);
    free(s);
    return rc;
}

static int meta_cmp(const void *a, const void *b) {
    return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

/* A JSON number that is an exact non-negative integer <= 2^53. */
static int json_exact_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > ST_MAX_EXACT || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int is_known_foreign_dtype(const char *s) {
    static const char *const names[] = {"F16", "BF16", "F64", "I8", "U8", "I16", "U16",
                                        "U32", "I64", "U64", "BOOL", "F8_E4M3", "F8_E5M2",
                                        "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0) return 1;
    return 0;
}

/* Validate one tensor entry of the header into e. */
static int parse_entry(const char *path, const cJSON *item, size_t data_size, st_entry *e) {
    const char *name = item->string;
    size_t len = strlen(name);
    if (len == 0) return rotary_fail(ROTARY_EFORMAT, "%s: a tensor has an empty name", path);
    if (len > ST_MAX_NAME)
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor name '%.40s...' is %zu bytes (max %d)",
                           path, name, len, ST_MAX_NAME);
    memcpy(e->name, name, len + 1);
    if (!cJSON_IsObject(item))
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' entry is not a JSON object", path,
                           name);

    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(dt))
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' has no \"dtype\" string", path, name);
    if (strcmp(dt->valuestring, "F32") == 0) {
        e->dtype = ROTARY_F32;
    } else if (strcmp(dt->valuestring, "I32") == 0) {
        e->dtype = ROTARY_I32;
    } else if (is_known_foreign_dtype(dt->valuestring)) {
        return rotary_fail(ROTARY_EFORMAT,
                           "%s: tensor '%s' has unsupported dtype %s (only F32 and I32 are "
                           "supported)",
                           path, name, dt->valuestring);
    } else {
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' has unknown dtype '%.32s'", path,
                           name, dt->valuestring);
    }

    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsArray(sh))
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' has no \"shape\" array", path, name);
    int ndim = cJSON_GetArraySize(sh);
    if (ndim > ST_MAX_NDIM)
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' has %d dims (at most %d supported)",
                           path, name, ndim, ST_MAX_NDIM);
    e->ndim = ndim;
    int d = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, sh) {
        uint64_t x;
        if (json_exact_uint(v, &x) != 0)
            return rotary_fail(ROTARY_EFORMAT,
                               "%s: tensor '%s' shape entry %d is not a non-negative integer",
                               path, name, d);
        e->shape[d++] = (int64_t)x;
    }
    size_t numel, bytes;
    if (shape_numel(e->shape, ndim, &numel) != 0 ||
        rotary_mul_size(numel, dtype_size(e->dtype), &bytes) != 0) {
        char sb[128];
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' shape %s overflows", path, name,
                           shape_str(sb, sizeof sb, e->shape, ndim));
    }

    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    uint64_t b, en;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        json_exact_uint(cJSON_GetArrayItem(offs, 0), &b) != 0 ||
        json_exact_uint(cJSON_GetArrayItem(offs, 1), &en) != 0)
        return rotary_fail(ROTARY_EFORMAT,
                           "%s: tensor '%s' needs \"data_offsets\": [begin, end] with "
                           "non-negative integers",
                           path, name);
    if (b > en)
        return rotary_fail(ROTARY_EFORMAT,
                           "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64
                           "] begin after end",
                           path, name, b, en);
    if (en > (uint64_t)data_size)
        return rotary_fail(ROTARY_EFORMAT,
                           "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64
                           "] past end of data (%zu bytes)",
                           path, name, b, en, data_size);
    if (en - b != (uint64_t)bytes) {
        char sb[128];
        return rotary_fail(ROTARY_EFORMAT,
                           "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64
                           "] hold %" PRIu64 " bytes but %s %s needs %zu",
                           path, name, b, en, en - b, dtype_name(e->dtype),
                           shape_str(sb, sizeof sb, e->shape, ndim), bytes);
    }
    e->begin = (size_t)b;
    e->end = (size_t)en;
    return ROTARY_OK;
}

/* Copy __metadata__ (an object of strings) into f, sorted by key. */
static int parse_metadata(rotary_st_file *f, const cJSON *md) {
    if (!cJSON_IsObject(md))
        return rotary_fail(ROTARY_EFORMAT, "%s: __metadata__ is not a JSON object", f->path);
    int n = cJSON_GetArraySize(md);
    f->meta = calloc((size_t)(n ? n : 1), sizeof *f->meta);
    if (!f->meta) return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", f->path);
    const cJSON *v;
    cJSON_ArrayForEach(v, md) {
        if (!cJSON_IsString(v) || !v->string)
            return rotary_fail(ROTARY_EFORMAT, "%s: __metadata__ value of '%.64s' is not a string",
                               f->path, v->string ? v->string : "?");
        char *k = strdup(v->string), *val = strdup(v->valuestring);
        if (!k || !val) {
            free(k);
            free(val);
            return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", f->path);
        }
        f->meta[f->n_meta].key = k;
        f->meta[f->n_meta].value = val;
        f->n_meta++;
    }
    qsort(f->meta, (size_t)f->n_meta, sizeof *f->meta, meta_cmp);
    for (int i = 1; i < f->n_meta; i++)
        if (strcmp(f->meta[i - 1].key, f->meta[i].key) == 0)
            return rotary_fail(ROTARY_EFORMAT, "%s: __metadata__ key '%.64s' appears twice",
                               f->path, f->meta[i].key);
    return ROTARY_OK;
}

/* Parse and validate the JSON header of an opened, mapped file. */
static int parse_header(rotary_st_file *f, const char *json, size_t n) {
    const char *path = f->path;
    size_t i = 0;
    while (i < n && (json[i] == ' ' || json[i] == '\t' || json[i] == '\n' || json[i] == '\r'))
        i++;
    if (i == n || json[i] != '{')
        return rotary_fail(ROTARY_EFORMAT,
                           "%s: not a safetensors file (header is not a JSON object)", path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, n, &end, 0);
    if (!root) {
        long pos = end && end >= json && end <= json + n ? (long)(end - json) : -1;
        return rotary_fail(ROTARY_EFORMAT,
                           "%s: not a safetensors file (header is not valid JSON, error near "
                           "byte %ld of %zu)",
                           path, pos, n);
    }
    int rc = ROTARY_OK;
    for (const char *p = end; p && p < json + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0') {
            rc = rotary_fail(ROTARY_EFORMAT,
                             "%s: header has trailing bytes after the JSON object (at byte %ld)",
                             path, (long)(p - json));
            goto out;
        }
    }
    if (!cJSON_IsObject(root)) {
        rc = rotary_fail(ROTARY_EFORMAT, "%s: not a safetensors file (header is not a JSON object)",
                         path);
        goto out;
    }
    int count = cJSON_GetArraySize(root);
    f->entries = calloc((size_t)(count ? count : 1), sizeof *f->entries);
    if (!f->entries) {
        rc = rotary_fail(ROTARY_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    int seen_meta = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (!item->string) {
            rc = rotary_fail(ROTARY_EFORMAT, "%s: header entry without a name", path);
            goto out;
        }
        if (strcmp(item->string, "__metadata__") == 0) {
            if (seen_meta++) {
                rc = rotary_fail(ROTARY_EFORMAT, "%s: __metadata__ appears twice", path);
                goto out;
            }
            rc = parse_metadata(f, item);
            if (rc != ROTARY_OK) goto out;
            continue;
        }
        st_entry *e = &f->entries[f->n_entries];
        rc = parse_entry(path, item, f->data_size, e);
        if (rc != ROTARY_OK) goto out;
        /* The map is page aligned, so alignment relative to it is absolute. */
        if ((size_t)(f->data - (const unsigned char *)f->map + e->begin) % 4 != 0) {
            rc = rotary_fail(ROTARY_EFORMAT,
                             "%s: tensor '%s' data (file offset %zu) is not 4-byte aligned",
                             path, e->name,
                             (size_t)(f->data - (const unsigned char *)f->map) + e->begin);
            goto out;
        }
        f->n_entries++;
    }
    qsort(f->entries, (size_t)f->n_entries, sizeof *f->entries, entry_cmp);
    for (int k = 1; k < f->n_entries; k++) {
        if (strcmp(f->entries[k - 1].name, f->entries[k].name) == 0) {
            rc = rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' appears twice", path,
                             f->entries[k].name);
            goto out;
        }
    }
    rc = check_overlap(path, f);
out:
    cJSON_Delete(root);
    return rc;
}

int rotary_st_open(rotary_st_file **out, const char *path) {
    if (!out) return rotary_fail(ROTARY_EINVAL, "rotary_st_open: NULL output");
    *out = NULL;
    if (!path || !path[0]) return rotary_fail(ROTARY_EINVAL, "safetensors open: empty path");
    if (!host_is_little_endian())
        return rotary_fail(ROTARY_EINVAL, "%s: big-endian hosts are not supported", path);

    rotary_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", path);
    }
    int rc = rotary_map_file(path, &f->map, &f->map_size);
    if (rc != ROTARY_OK) goto fail;
    if (f->map_size < 8) {
        rc = rotary_fail(ROTARY_EFORMAT,
                         "%s: not a safetensors file (%zu bytes, shorter than the 8-byte "
                         "header length)",
                         path, f->map_size);
        goto fail;
    }

    const unsigned char *p = f->map;
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)p[i] << (8 * i);
    size_t avail = f->map_size - 8;
    if (n > (uint64_t)avail) {
        rc = rotary_fail(ROTARY_EFORMAT,
                         "%s: not a safetensors file (header length %" PRIu64
                         " exceeds the %zu bytes after it; truncated or another format)",
                         path, n, avail);
        goto fail;
    }
    if (n > ST_MAX_HEADER) {
        rc = rotary_fail(ROTARY_EFORMAT,
                         "%s: header length %" PRIu64 " exceeds the %" PRIu64 "-byte limit",
                         path, n, ST_MAX_HEADER);
        goto fail;
    }
    if (n < 2) {
        rc = rotary_fail(ROTARY_EFORMAT,
                         "%s: not a safetensors file (header length %" PRIu64 " is too small)",
                         path, n);
        goto fail;
    }
    f->data = p + 8 + n;
    f->data_size = avail - (size_t)n;
    rc = parse_header(f, (const char *)p + 8, (size_t)n);
    if (rc != ROTARY_OK) goto fail;
    *out = f;
    return ROTARY_OK;
fail:
    rotary_st_close(f);
    return rc;
}

static const st_entry *find_entry(const rotary_st_file *f, const char *name) {
    if (!f || !name || strlen(name) > ST_MAX_NAME) return NULL;
    st_entry key;
    strcpy(key.name, name);
    return bsearch(&key, f->entries, (size_t)f->n_entries, sizeof *f->entries, entry_cmp);
}

static void entry_view(const rotary_st_file *f, const st_entry *e, rotary_st_tensor *out) {
    out->name = e->name;
    out->dtype = e->dtype;
    out->ndim = e->ndim;
    for (int d = 0; d < ST_MAX_NDIM; d++) out->shape[d] = d < e->ndim ? e->shape[d] : 0;
    out->data = f->data + e->begin;
}

int rotary_st_find(const rotary_st_file *f, const char *name, rotary_st_tensor *out) {
    if (!f || !name || !out) return rotary_fail(ROTARY_EINVAL, "rotary_st_find: NULL argument");
    const st_entry *e = find_entry(f, name);
    if (!e) return rotary_fail(ROTARY_EFORMAT, "%s: no tensor '%s'", f->path, name);
    entry_view(f, e, out);
    return ROTARY_OK;
}

const char *rotary_st_meta(const rotary_st_file *f, const char *key) {
    if (!f || !key || f->n_meta == 0) return NULL;
    st_meta probe = {(char *)key, NULL};
    const st_meta *hit =
        bsearch(&probe, f->meta, (size_t)f->n_meta, sizeof *f->meta, meta_cmp);
    return hit ? hit->value : NULL;
}

/* ------------------------------------------------------------ checkpoints */

#define CK_FORMAT "rotary"
#define CK_VERSION "1"
#define CK_N_CONFIG 18 /* config keys in the metadata */

static const char *const ck_config_keys[CK_N_CONFIG] = {
    "n_layer",  "n_head",       "n_kv_head", "d_model",    "d_ff",     "ctx",
    "vocab",    "norm",         "mlp",       "pos",        "rope_pairing", "rope_base",
    "rotary_dim", "tied",       "bias",      "norm_eps",   "init_std", "sin_amplitude"};

/* RoPE frequency scaling: optional keys, written only when the scaling is
 * not none (so such checkpoints read as before), reserved always. */
#define CK_N_ROPE 9
static const char *const ck_rope_keys[CK_N_ROPE] = {
    "rope_scaling",    "rope_factor",          "rope_original_ctx",     "rope_yarn_alpha",
    "rope_yarn_beta",  "rope_low_freq_factor", "rope_high_freq_factor", "rope_mscale",
    "rope_freq_factors"}; /* the last only for scaling factors: "f0,f1,..." */
/* Room for the factors: each at most 15 characters ("-1.23456789e-38") and a comma. */
#define CK_FACTORS_CAP (ROTARY_ROPE_MAX_FACTORS * 16 + 1)

/* Attention kind and T5 buckets: optional keys too (absent: softmax and the
 * defaults of rotary_config_default). attn is always written, the T5 keys
 * only for pos t5. */
#define CK_N_ARCH 3
static const char *const ck_arch_keys[CK_N_ARCH] = {"attn", "t5_buckets", "t5_max_distance"};

static int arch_meta(const rotary_config *c, char v[CK_N_ARCH][40]) {
    snprintf(v[0], sizeof v[0], "%s", c->attn == ROTARY_ATTN_LINEAR ? "linear" : "softmax");
    if (c->pos != ROTARY_POS_T5) return 1;
    snprintf(v[1], sizeof v[1], "%d", c->t5_buckets);
    snprintf(v[2], sizeof v[2], "%d", c->t5_max_distance);
    return CK_N_ARCH;
}

/* The shortest %g form (at most 17 / 9 significant digits) that reads back
 * as exactly the same double / float, so "1e-05" rather than
 * "9.99999975e-06" while still round-tripping bit for bit. */
static void format_double(char *buf, size_t cap, double v) {
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
    snprintf(buf, cap, "%.17g", v);
}

static void format_float(char *buf, size_t cap, float v) {
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, cap, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) return;
    }
    snprintf(buf, cap, "%.9g", (double)v);
}

/* The values of ck_rope_keys for s, in that order, the factors apart; returns
 * how many to write (0 for none, all of them otherwise, so the config reads
 * back exactly; rope_freq_factors only for type factors). */
static int rope_scaling_meta(const rotary_rope_scaling *s, char v[CK_N_ROPE - 1][40],
                             char factors[CK_FACTORS_CAP]) {
    const char *name = rotary_rope_scaling_name(s->type);
    if (s->type == ROTARY_ROPE_SCALING_NONE || !name) return 0;
    snprintf(v[0], sizeof v[0], "%s", name);
    format_double(v[1], sizeof v[1], s->factor);
    snprintf(v[2], sizeof v[2], "%d", s->original_ctx);
    format_double(v[3], sizeof v[3], s->yarn_alpha);
    format_double(v[4], sizeof v[4], s->yarn_beta);
    format_double(v[5], sizeof v[5], s->low_freq_factor);
    format_double(v[6], sizeof v[6], s->high_freq_factor);
    format_double(v[7], sizeof v[7], s->mscale);
    if (s->type != ROTARY_ROPE_SCALING_FACTORS) return CK_N_ROPE - 1;
    size_t len = 0;
    for (int i = 0; i < s->n_factors && i < ROTARY_ROPE_MAX_FACTORS; i++) {
        if (i) factors[len++] = ',';
        format_float(factors + len, CK_FACTORS_CAP - len, s->freq_factors[i]);
        len += strlen(factors + len);
    }
    factors[len] = '\0';
    return CK_N_ROPE;
}

int rotary_checkpoint_save(const char *path, const rotary_model *m,
                           const char *const *extra_meta, int n_extra) {
    return rotary_checkpoint_save_state(path, m, NULL, extra_meta, n_extra);
}

int rotary_checkpoint_save_state(const char *path, const rotary_model *m, const rotary_adamw *opt,
                                 const char *const *extra_meta, int n_extra) {
    if (!path || !path[0]) return rotary_fail(ROTARY_EINVAL, "checkpoint save: empty path");
    if (!m || !m->params || !m->tensors || m->n_tensors <= 0)
        return rotary_fail(ROTARY_EINVAL, "%s: checkpoint save: the model is not built", path);
    if (n_extra < 0 || (n_extra > 0 && !extra_meta))
        return rotary_fail(ROTARY_EINVAL, "%s: bad extra metadata (n_extra = %d)", path,
                           n_extra);
    const rotary_config *c = &m->cfg;
    const char *pos = rotary_pos_name(c->pos);
    if (!pos || rotary_pos_parse(pos) != c->pos)
        return rotary_fail(ROTARY_EINVAL, "%s: unknown position encoding %d", path, c->pos);

    char v[CK_N_CONFIG][40];
    snprintf(v[0], sizeof v[0], "%d", c->n_layer);
    snprintf(v[1], sizeof v[1], "%d", c->n_head);
    snprintf(v[2], sizeof v[2], "%d", c->n_kv_head);
    snprintf(v[3], sizeof v[3], "%d", c->d_model);
    snprintf(v[4], sizeof v[4], "%d", c->d_ff);
    snprintf(v[5], sizeof v[5], "%d", c->ctx);
    snprintf(v[6], sizeof v[6], "%d", c->vocab);
    snprintf(v[7], sizeof v[7], "%s", c->norm == ROTARY_NORM_RMS ? "rmsnorm" : "layernorm");
    snprintf(v[8], sizeof v[8], "%s", c->mlp == ROTARY_MLP_SWIGLU ? "swiglu" : "gelu");
    snprintf(v[9], sizeof v[9], "%s", pos);
    snprintf(v[10], sizeof v[10], "%s", c->rope_pairing == ROTARY_ROPE_HALF ? "half" : "interleaved");
    format_double(v[11], sizeof v[11], c->rope_base);
    snprintf(v[12], sizeof v[12], "%d", c->rotary_dim);
    snprintf(v[13], sizeof v[13], "%d", c->tied ? 1 : 0);
    snprintf(v[14], sizeof v[14], "%d", c->bias ? 1 : 0);
    format_float(v[15], sizeof v[15], c->norm_eps);
    format_float(v[16], sizeof v[16], c->init_std);
    format_float(v[17], sizeof v[17], c->sin_amplitude);
    char rv[CK_N_ROPE - 1][40], factors[CK_FACTORS_CAP];
    int n_rope = rope_scaling_meta(&c->rope_scaling, rv, factors);
    char av[CK_N_ARCH][40];
    int n_arch = arch_meta(c, av);

    if (opt && (opt->n != m->n_params || opt->offset != 0 || !opt->m || !opt->v))
        return rotary_fail(ROTARY_EINVAL, "%s: optimizer state does not match the model", path);
    char step_s[32];
    snprintf(step_s, sizeof step_s, "%ld", opt ? opt->step : 0L);
    const int n_fixed = 2 + CK_N_CONFIG + n_rope + n_arch;
    int n_meta = n_fixed + n_extra + (opt ? 1 : 0);
    const char **meta = malloc((size_t)n_meta * 2 * sizeof *meta);
    rotary_st_tensor *t = malloc((size_t)(m->n_tensors + 2) * sizeof *t);
    int rc = ROTARY_OK;
    if (!meta || !t) {
        rc = rotary_fail(ROTARY_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    meta[0] = "format";
    meta[1] = CK_FORMAT;
    meta[2] = "format_version";
    meta[3] = CK_VERSION;
    for (int i = 0; i < CK_N_CONFIG; i++) {
        meta[4 + 2 * i] = ck_config_keys[i];
        meta[5 + 2 * i] = v[i];
    }
    for (int i = 0; i < n_rope; i++) {
        meta[2 * (2 + CK_N_CONFIG + i)] = ck_rope_keys[i];
        meta[2 * (2 + CK_N_CONFIG + i) + 1] = i < CK_N_ROPE - 1 ? rv[i] : factors;
    }
    for (int i = 0; i < n_arch; i++) {
        meta[2 * (2 + CK_N_CONFIG + n_rope + i)] = ck_arch_keys[i];
        meta[2 * (2 + CK_N_CONFIG + n_rope + i) + 1] = av[i];
    }
    for (int i = 0; i < n_extra; i++) {
        const char *k = extra_meta[2 * i];
        if (!k || !extra_meta[2 * i + 1]) {
            rc = rotary_fail(ROTARY_EINVAL, "%s: extra metadata pair %d has a NULL key or value",
                             path, i);
            goto out;
        }
        for (int j = 0; j < 2 + CK_N_CONFIG + CK_N_ROPE; j++) {
            const char *r = j < 2 + CK_N_CONFIG ? meta[2 * j] : ck_rope_keys[j - 2 - CK_N_CONFIG];
            if (strcmp(k, r) == 0) {
                rc = rotary_fail(ROTARY_EINVAL,
                                 "%s: extra metadata key '%s' is reserved for the model config",
                                 path, k);
                goto out;
            }
        }
        for (int j = 0; j < CK_N_ARCH; j++) {
            if (strcmp(k, ck_arch_keys[j]) == 0) {
                rc = rotary_fail(ROTARY_EINVAL,
                                 "%s: extra metadata key '%s' is reserved for the model config",
                                 path, k);
                goto out;
            }
        }
        meta[2 * (n_fixed + i)] = k;
        meta[2 * (n_fixed + i) + 1] = extra_meta[2 * i + 1];
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const rotary_tensor *mt = &m->tensors[i];
        size_t numel = 1;
        if (mt->ndim < 0 || mt->ndim > 2) {
            rc = rotary_fail(ROTARY_EINVAL, "%s: model tensor '%s' has %d dims", path, mt->name,
                             mt->ndim);
            goto out;
        }
        t[i].name = mt->name;
        t[i].dtype = ROTARY_F32;
        t[i].ndim = mt->ndim;
        for (int d = 0; d < 4; d++) t[i].shape[d] = d < mt->ndim ? mt->shape[d] : 0;
        for (int d = 0; d < mt->ndim; d++) numel *= (size_t)(mt->shape[d] > 0 ? mt->shape[d] : 0);
        if (numel != mt->numel || mt->offset > m->n_params || mt->numel > m->n_params - mt->offset) {
            rc = rotary_fail(ROTARY_EINVAL, "%s: model tensor '%s' is inconsistent with its shape",
                             path, mt->name);
            goto out;
        }
        t[i].data = m->params + mt->offset;
    }
    int n_t = m->n_tensors;
    if (opt) {
        meta[2 * (n_meta - 1)] = "optim.step";
        meta[2 * (n_meta - 1) + 1] = step_s;
        t[n_t++] = (rotary_st_tensor){"optim.m", ROTARY_F32, 1, {(int64_t)opt->n}, opt->m};
        t[n_t++] = (rotary_st_tensor){"optim.v", ROTARY_F32, 1, {(int64_t)opt->n}, opt->v};
    }
    rc = rotary_st_write(path, t, n_t, meta, n_meta);
out:
    free(meta);
    free(t);
    return rc;
}

/* Strict parsers for metadata values: the whole string must be consumed. */
static int meta_get(const rotary_st_file *f, const char *key, const char **out) {
    *out = rotary_st_meta(f, key);
    if (!*out)
        return rotary_fail(ROTARY_EFORMAT, "%s: checkpoint metadata lacks the key '%s'", f->path,
                           key);
    return ROTARY_OK;
}

static int meta_int(const rotary_st_file *f, const char *key, int lo, int hi, int *out) {
    const char *s;
    int rc = meta_get(f, key, &s);
    if (rc != ROTARY_OK) return rc;
    if (!((s[0] >= '0' && s[0] <= '9') || (s[0] == '-' && s[1] >= '0' && s[1] <= '9')))
        return rotary_fail(ROTARY_EFORMAT, "%s: metadata '%s' = '%.40s' is not an integer",
                           f->path, key, s);
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end != '\0')
        return rotary_fail(ROTARY_EFORMAT, "%s: metadata '%s' = '%.40s' is not an integer",
                           f->path, key, s);
    if (errno == ERANGE || v < lo || v > hi)
        return rotary_fail(ROTARY_EFORMAT, "%s: metadata '%s' = '%.40s' is out of range [%d, %d]",
                           f->path, key, s, lo, hi);
    *out = (int)v;
    return ROTARY_OK;
}

static int meta_double(const rotary_st_file *f, const char *key, double *out) {
    const char *s;
    int rc = meta_get(f, key, &s);
    if (rc != ROTARY_OK) return rc;
    char *end = NULL;
    double v = 0.0;
    /* strtod would skip leading white space; we want the exact string. */
    int ok = (s[0] >= '0' && s[0] <= '9') || s[0] == '-' || s[0] == '+' || s[0] == '.';
    if (ok) v = strtod(s, &end);
    if (!ok || end == s || *end != '\0' || isnan(v))
        return rotary_fail(ROTARY_EFORMAT, "%s: metadata '%s' = '%.40s' is not a number",
                           f->path, key, s);
    if (!isfinite(v))
        return rotary_fail(ROTARY_EFORMAT, "%s: metadata '%s' = '%.40s' is out of range",
                           f->path, key, s);
    *out = v;
    return ROTARY_OK;
}

static int meta_float(const rotary_st_file *f, const char *key, float *out) {
    double v;
    int rc = meta_double(f, key, &v);
    if (rc != ROTARY_OK) return rc;
    if (fabs(v) > FLT_MAX)
        return rotary_fail(ROTARY_EFORMAT, "%s: metadata '%s' = %g is out of float range",
                           f->path, key, v);
    *out = (float)v;
    return ROTARY_OK;
}

/* One of the names in opts (index = value). */
static int meta_enum(const rotary_st_file *f, const char *key, const char *const *opts,
                     int n_opts, int *out) {
    const char *s;
    int rc = meta_get(f, key, &s);
    if (rc != ROTARY_OK) return rc;
    for (int i = 0; i < n_opts; i++) {
        if (strcmp(s, opts[i]) == 0) {
            *out = i;
            return ROTARY_OK;
        }
    }
    return rotary_fail(ROTARY_EFORMAT, "%s: metadata '%s' = '%.40s' is not one of %s|%s",
                       f->path, key, s, opts[0], opts[1]);
}

/* key into *out if the file has it; absent keys keep their default. */
static int meta_double_opt(const rotary_st_file *f, const char *key, double *out) {
    return rotary_st_meta(f, key) ? meta_double(f, key, out) : ROTARY_OK;
}

/* rope_freq_factors, "f0,f1,...": each value as format_float wrote it. Their
 * count and range are checked later, by rotary_config_validate. */
static int read_freq_factors(const rotary_st_file *f, rotary_rope_scaling *s) {
    const char *key = "rope_freq_factors", *p;
    int rc = meta_get(f, key, &p);
    if (rc != ROTARY_OK) return rc;
    for (int n = 0;; n++) {
        if (n == ROTARY_ROPE_MAX_FACTORS)
            return rotary_fail(ROTARY_EFORMAT, "%s: metadata '%s' has more than %d values",
                               f->path, key, ROTARY_ROPE_MAX_FACTORS);
        char *end = NULL;
        /* strtof would skip white space and read "nan": only plain numbers. */
        int ok = (*p >= '0' && *p <= '9') || *p == '-' || *p == '+' || *p == '.';
        float v = ok ? strtof(p, &end) : 0;
        if (!ok || end == p || (*end != ',' && *end != '\0'))
            return rotary_fail(ROTARY_EFORMAT, "%s: metadata '%s': value %d ('%.20s') is not a "
                               "number", f->path, key, n, p);
        s->freq_factors[n] = v;
        if (*end == '\0') {
            s->n_factors = n + 1;
            return ROTARY_OK;
        }
        p = end + 1;
    }
}

/* The optional RoPE scaling keys: none when rope_scaling is absent (older
 * checkpoints); otherwise factor and original_ctx are required and the rest
 * default. Ranges are checked later, by rotary_config_validate. */
static int read_rope_scaling(const rotary_st_file *f, rotary_rope_scaling *s) {
    rotary_rope_scaling_default(s);
    const char *type = rotary_st_meta(f, "rope_scaling");
    if (!type) return ROTARY_OK;
    s->type = rotary_rope_scaling_parse(type);
    if (s->type < 0)
        return rotary_fail(ROTARY_EFORMAT, "%s: metadata 'rope_scaling' = '%.40s' is not one of "
                           "none|linear|ntk|dynamic-ntk|yarn|llama3|factors", f->path, type);
    if (s->type == ROTARY_ROPE_SCALING_NONE) return ROTARY_OK;
    int rc;
    if ((rc = meta_double(f, "rope_factor", &s->factor)) ||
        (rc = meta_int(f, "rope_original_ctx", 0, INT_MAX, &s->original_ctx)) ||
        (rc = meta_double_opt(f, "rope_yarn_alpha", &s->yarn_alpha)) ||
        (rc = meta_double_opt(f, "rope_yarn_beta", &s->yarn_beta)) ||
        (rc = meta_double_opt(f, "rope_low_freq_factor", &s->low_freq_factor)) ||
        (rc = meta_double_opt(f, "rope_high_freq_factor", &s->high_freq_factor)) ||
        (rc = meta_double_opt(f, "rope_mscale", &s->mscale)))
        return rc;
    return s->type == ROTARY_ROPE_SCALING_FACTORS ? read_freq_factors(f, s) : ROTARY_OK;
}

/* The optional attention and T5 keys; absent ones keep the defaults. */
static int read_arch(const rotary_st_file *f, rotary_config *c) {
    static const char *const attns[] = {"softmax", "linear"};
    rotary_config d;
    rotary_config_default(&d);
    c->attn = d.attn;
    c->t5_buckets = d.t5_buckets;
    c->t5_max_distance = d.t5_max_distance;
    int rc;
    if (rotary_st_meta(f, "attn") && (rc = meta_enum(f, "attn", attns, 2, &c->attn))) return rc;
    if (rotary_st_meta(f, "t5_buckets") &&
        (rc = meta_int(f, "t5_buckets", 0, INT_MAX, &c->t5_buckets)))
        return rc;
    if (rotary_st_meta(f, "t5_max_distance") &&
        (rc = meta_int(f, "t5_max_distance", 0, INT_MAX, &c->t5_max_distance)))
        return rc;
    return ROTARY_OK;
}

/* Read the model config from a checkpoint's metadata. */
static int read_config(const rotary_st_file *f, rotary_config *c) {
    static const char *const norms[] = {"layernorm", "rmsnorm"};
    static const char *const mlps[] = {"gelu", "swiglu"};
    static const char *const pairings[] = {"interleaved", "half"};
    const char *fmt = rotary_st_meta(f, "format");
    if (!fmt || strcmp(fmt, CK_FORMAT) != 0)
        return rotary_fail(ROTARY_EFORMAT,
                           "%s: not a rotary checkpoint (metadata \"format\" is %s%.40s%s, "
                           "expected \"rotary\")",
                           f->path, fmt ? "'" : "missing", fmt ? fmt : "", fmt ? "'" : "");
    const char *ver = rotary_st_meta(f, "format_version");
    if (!ver || strcmp(ver, CK_VERSION) != 0)
        return rotary_fail(ROTARY_EFORMAT,
                           "%s: unsupported checkpoint format_version %s%.40s%s (expected '1')",
                           f->path, ver ? "'" : "(missing)", ver ? ver : "", ver ? "'" : "");
    memset(c, 0, sizeof *c);
    int rc;
    if ((rc = meta_int(f, "n_layer", 0, INT_MAX, &c->n_layer)) ||
        (rc = meta_int(f, "n_head", 0, INT_MAX, &c->n_head)) ||
        (rc = meta_int(f, "n_kv_head", 0, INT_MAX, &c->n_kv_head)) ||
        (rc = meta_int(f, "d_model", 0, INT_MAX, &c->d_model)) ||
        (rc = meta_int(f, "d_ff", 0, INT_MAX, &c->d_ff)) ||
        (rc = meta_int(f, "ctx", 0, INT_MAX, &c->ctx)) ||
        (rc = meta_int(f, "vocab", 0, INT_MAX, &c->vocab)) ||
        (rc = meta_enum(f, "norm", norms, 2, &c->norm)) ||
        (rc = meta_enum(f, "mlp", mlps, 2, &c->mlp)))
        return rc;
    const char *pos;
    if ((rc = meta_get(f, "pos", &pos))) return rc;
    c->pos = rotary_pos_parse(pos);
    if (c->pos < 0)
        return rotary_fail(ROTARY_EFORMAT, "%s: metadata 'pos' = '%.40s' is not a known position "
                           "encoding", f->path, pos);
    if ((rc = meta_enum(f, "rope_pairing", pairings, 2, &c->rope_pairing)) ||
        (rc = meta_double(f, "rope_base", &c->rope_base)) ||
        (rc = meta_int(f, "rotary_dim", 0, INT_MAX, &c->rotary_dim)) ||
        (rc = meta_int(f, "tied", 0, 1, &c->tied)) ||
        (rc = meta_int(f, "bias", 0, 1, &c->bias)) ||
        (rc = meta_float(f, "norm_eps", &c->norm_eps)) ||
        (rc = meta_float(f, "init_std", &c->init_std)) ||
        (rc = meta_float(f, "sin_amplitude", &c->sin_amplitude)))
        return rc;
    if ((rc = read_arch(f, c))) return rc;
    return read_rope_scaling(f, &c->rope_scaling);
}

/* The file's tensor `name` is F32 of shape [d0, d1]; the message as
 * load_tensors would give it. */
static int expect_entry(const rotary_st_file *f, const char *name, int d0, int d1) {
    const st_entry *e = find_entry(f, name);
    if (!e)
        return rotary_fail(ROTARY_EFORMAT, "%s: checkpoint lacks tensor '%s'", f->path, name);
    if (e->dtype != ROTARY_F32)
        return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' has dtype %s, expected F32", f->path,
                           name, dtype_name(e->dtype));
    if (e->ndim != 2 || e->shape[0] != d0 || e->shape[1] != d1) {
        char got_s[128], want_s[128];
        const int64_t want[2] = {d0, d1};
        return rotary_fail(ROTARY_EFORMAT,
                           "%s: tensor '%s' has shape %s in the file but the model expects %s",
                           f->path, name, shape_str(got_s, sizeof got_s, e->shape, e->ndim),
                           shape_str(want_s, sizeof want_s, want, 2));
    }
    return ROTARY_OK;
}

/* Before the model is allocated: the file must hold the large matrices the
 * config in its metadata implies (embeddings, heads, attention q and o,
 * MLP up and down: together most of the parameters), so that a small file
 * cannot make us allocate (and zero) the model its metadata describes. */
static int expect_matrices(const rotary_st_file *f, const rotary_config *c) {
    const int C = c->d_model, F = c->d_ff;
    int rc = expect_entry(f, "tok_emb.weight", c->vocab, C);
    if (!rc && c->pos == ROTARY_POS_LEARNED) rc = expect_entry(f, "pos_emb.weight", c->ctx, C);
    if (!rc && !c->tied) rc = expect_entry(f, "lm_head.weight", c->vocab, C);
    static const char *const mats[4] = {"attn.q.weight", "attn.o.weight", "mlp.up.weight",
                                        "mlp.down.weight"};
    for (int l = 0; l < c->n_layer && !rc; l++) {
        for (int i = 0; i < 4 && !rc; i++) {
            char name[64];
            snprintf(name, sizeof name, "layers.%d.%s", l, mats[i]);
            rc = expect_entry(f, name, i < 2 ? C : i == 2 ? F : C, i < 2 ? C : i == 2 ? C : F);
        }
    }
    return rc;
}

/* Copy every model tensor out of f; every file tensor must be used. */
static int load_tensors(const rotary_st_file *f, rotary_model *m) {
    for (int i = 0; i < m->n_tensors; i++) {
        const rotary_tensor *mt = &m->tensors[i];
        const st_entry *e = find_entry(f, mt->name);
        if (!e)
            return rotary_fail(ROTARY_EFORMAT, "%s: checkpoint lacks tensor '%s'", f->path,
                               mt->name);
        if (e->dtype != ROTARY_F32)
            return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' has dtype %s, expected F32",
                               f->path, mt->name, dtype_name(e->dtype));
        int64_t want[ST_MAX_NDIM] = {0};
        for (int d = 0; d < mt->ndim && d < 2; d++) want[d] = mt->shape[d];
        int same = e->ndim == mt->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = e->shape[d] == want[d];
        if (!same) {
            char got_s[128], want_s[128];
            return rotary_fail(ROTARY_EFORMAT,
                               "%s: tensor '%s' has shape %s in the file but the model expects %s",
                               f->path, mt->name, shape_str(got_s, sizeof got_s, e->shape, e->ndim),
                               shape_str(want_s, sizeof want_s, want, mt->ndim));
        }
        if (e->end - e->begin != mt->numel * sizeof(float) || mt->offset > m->n_params ||
            mt->numel > m->n_params - mt->offset)
            return rotary_fail(ROTARY_EFORMAT, "%s: tensor '%s' size does not match the model",
                               f->path, mt->name);
        memcpy(m->params + mt->offset, f->data + e->begin, e->end - e->begin);
    }
    /* Anything else must be optimizer state ("optim.*", read by
     * rotary_checkpoint_load_optim). */
    for (int i = 0; f->n_entries > m->n_tensors && i < f->n_entries; i++) {
        if (strncmp(f->entries[i].name, "optim.", 6) != 0 &&
            !rotary_model_tensor(m, f->entries[i].name))
            return rotary_fail(ROTARY_EFORMAT,
                               "%s: unexpected tensor '%s' (the configured model has no such "
                               "parameter)",
                               f->path, f->entries[i].name);
    }
    return ROTARY_OK;
}

int rotary_checkpoint_load(const char *path, rotary_model *m) {
    if (!m) return rotary_fail(ROTARY_EINVAL, "checkpoint load: NULL model");
    memset(m, 0, sizeof *m);
    rotary_st_file *f = NULL;
    int built = 0;
    int rc = rotary_st_open(&f, path);
    if (rc != ROTARY_OK) return rc;
    rotary_config c;
    rc = read_config(f, &c);
    if (rc != ROTARY_OK) goto out;
    rc = rotary_config_validate(&c);
    if (rc != ROTARY_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", rotary_last_error());
        rc = rotary_fail(ROTARY_EFORMAT, "%s: bad model config in checkpoint: %s", path, why);
        goto out;
    }
    rc = expect_matrices(f, &c);
    if (rc != ROTARY_OK) goto out;
    rc = rotary_model_build(m, &c);
    if (rc != ROTARY_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", rotary_last_error());
        rc = rotary_fail(rc, "%s: cannot build the model: %s", path, why);
        goto out;
    }
    built = 1;
    rc = load_tensors(f, m);
out:
    if (rc != ROTARY_OK) {
        if (built) rotary_model_free(m);
        memset(m, 0, sizeof *m);
    }
    rotary_st_close(f);
    return rc;
}

int rotary_checkpoint_load_optim(const char *path, const rotary_model *m, rotary_adamw *opt) {
    if (!m || !opt || opt->offset > m->n_params || opt->n > m->n_params - opt->offset ||
        !opt->m || !opt->v)
        return rotary_fail(ROTARY_EINVAL, "%s: optimizer not initialised for this model", path);
    rotary_st_file *f = NULL;
    int rc = rotary_st_open(&f, path);
    if (rc != ROTARY_OK) return rc;
    const char *names[2] = {"optim.m", "optim.v"};
    float *dst[2] = {opt->m, opt->v};
    for (int i = 0; i < 2 && rc == ROTARY_OK; i++) {
        const st_entry *e = find_entry(f, names[i]);
        if (!e)
            rc = rotary_fail(ROTARY_EFORMAT, "%s: no optimizer state ('%s' missing)", path, names[i]);
        else if (e->dtype != ROTARY_F32 || e->ndim != 1 || (uint64_t)e->shape[0] != m->n_params)
            rc = rotary_fail(ROTARY_EFORMAT, "%s: '%s' does not match the model's %zu parameters",
                             path, names[i], m->n_params);
        else
            memcpy(dst[i], f->data + e->begin + opt->offset * sizeof(float),
                   opt->n * sizeof(float)); /* a ZeRO-1 shard: its slice */
    }
    const char *s = rotary_st_meta(f, "optim.step");
    char *end = NULL;
    long step = s ? strtol(s, &end, 10) : -1;
    if (rc == ROTARY_OK && (!s || *end || step < 0))
        rc = rotary_fail(ROTARY_EFORMAT, "%s: bad or missing metadata 'optim.step'", path);
    if (rc == ROTARY_OK) opt->step = step;
    rotary_st_close(f);
    return rc;
}
