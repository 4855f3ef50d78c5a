/* data.c: token files and deterministic batches. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char MAGIC[8] = {'R', 'T', 'O', 'K', 'E', 'N', 'S', '1'};
enum { HEADER = 32 };

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int rotary_tokens_save(const char *path, const int *ids, size_t n, int vocab) {
    if (vocab < 1) return rotary_fail(ROTARY_EINVAL, "%s: vocab %d", path, vocab);
    const int width = vocab <= 65536 ? 2 : 4;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return rotary_fail(ROTARY_EINVAL, "%s: token %d at %zu outside vocab %d", path, ids[i],
                               i, vocab);
    rotary_tmpfile f;
    int rc = rotary_tmpfile_open(&f, path);
    if (rc) return rc;
    unsigned char h[HEADER] = {0};
    memcpy(h, MAGIC, 8);
    put32(h + 8, (uint32_t)vocab);
    put32(h + 12, (uint32_t)width);
    put32(h + 16, (uint32_t)(n & 0xffffffffu));
    put32(h + 20, (uint32_t)((uint64_t)n >> 32));
    rc = rotary_tmpfile_write(&f, h, HEADER);
    unsigned char buf[8192];
    for (size_t i = 0; rc == ROTARY_OK && i < n;) {
        size_t k = 0;
        for (; i < n && k + 4 <= sizeof buf; i++)
            for (int b = 0; b < width; b++) buf[k++] = (unsigned char)(ids[i] >> (8 * b));
        rc = rotary_tmpfile_write(&f, buf, k);
    }
    return rc ? rc : rotary_tmpfile_commit(&f);
}

int rotary_tokens_is_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return rotary_fail(ROTARY_EIO, "%s: cannot open: %s", path, strerror(errno));
    char m[8];
    size_t got = fread(m, 1, 8, f);
    fclose(f);
    return got == 8 && memcmp(m, MAGIC, 8) == 0;
}

int rotary_tokens_load(const char *path, int **ids, size_t *n, int *vocab) {
    *ids = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return rotary_fail(ROTARY_EIO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char h[HEADER];
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    rewind(f);
    if (size < HEADER || fread(h, 1, HEADER, f) != HEADER || memcmp(h, MAGIC, 8) != 0) {
        fclose(f);
        return rotary_fail(ROTARY_EFORMAT, "%s: not a rotary token file", path);
    }
    uint32_t v = get32(h + 8), width = get32(h + 12);
    uint64_t count = (uint64_t)get32(h + 16) | (uint64_t)get32(h + 20) << 32;
    if (v < 1 || v > (1u << 24) || (width != 2 && width != 4) || (width == 2 && v > 65536)) {
        fclose(f);
        return rotary_fail(ROTARY_EFORMAT, "%s: bad header (vocab %u, %u bytes per token)", path,
                           v, width);
    }
    if (count > ((uint64_t)size - HEADER) / width || (uint64_t)size - HEADER != count * width) {
        fclose(f);
        return rotary_fail(ROTARY_EFORMAT, "%s: header says %llu tokens but the file holds %ld bytes",
                           path, (unsigned long long)count, size - HEADER);
    }
    int *out = malloc((count ? count : 1) * sizeof(int));
    if (!out) {
        fclose(f);
        return rotary_fail(ROTARY_ENOMEM, "%s: cannot allocate %llu tokens", path,
                           (unsigned long long)count);
    }
    unsigned char buf[8192];
    for (uint64_t i = 0; i < count;) {
        size_t want = (size_t)((count - i) * width < sizeof buf ? (count - i) * width : sizeof buf);
        if (fread(buf, 1, want, f) != want) {
            free(out);
            fclose(f);
            return rotary_fail(ROTARY_EIO, "%s: read failed", path);
        }
        for (size_t k = 0; k < want; k += width, i++) {
            uint32_t id = width == 2 ? (uint32_t)buf[k] | (uint32_t)buf[k + 1] << 8 : get32(buf + k);
            if (id >= v) {
                free(out);
                fclose(f);
                return rotary_fail(ROTARY_EFORMAT, "%s: token %u at %llu outside vocab %u", path,
                                   id, (unsigned long long)i, v);
            }
            out[i] = (int)id;
        }
    }
    fclose(f);
    *ids = out;
    *n = (size_t)count;
    *vocab = (int)v;
    return ROTARY_OK;
}

void rotary_batch(const int *ids, size_t n, int B, int T, uint64_t seed, uint64_t step,
                  int *tok, int *tgt) {
    rotary_batch_slice(ids, n, B, T, seed, step, 0, B, tok, tgt);
}

void rotary_batch_slice(const int *ids, size_t n, int B, int T, uint64_t seed, uint64_t step,
                        int i0, int i1, int *tok, int *tgt) {
    rotary_rng rng;
    rotary_rng_seed(&rng, seed * 0x9E3779B97F4A7C15ull ^ (step + 1) * 0xD1B54A32D192ED03ull);
    const uint64_t span = (uint64_t)(n - (size_t)T); /* starts 0..n-T-1 */
    /* Draw every start of the batch, in order, and keep windows i0..i1-1. */
    for (int b = 0; b < i1 && b < B; b++) {
        size_t start = (size_t)(rotary_rng_next(&rng) % span);
        if (b < i0) continue;
        memcpy(tok + (size_t)(b - i0) * T, ids + start, (size_t)T * sizeof(int));
        memcpy(tgt + (size_t)(b - i0) * T, ids + start + 1, (size_t)T * sizeof(int));
    }
}
