/* fuzz_common.h: what the harnesses in fuzz/ share.
 *
 * Each harness is one file fuzz/NAME.c defining LLVMFuzzerTestOneInput. It
 * is linked two ways: with libFuzzer (fuzz/CMakeLists.txt, clang,
 * -fsanitize=fuzzer,address,undefined) to search for crashes, and with
 * tests/fuzz_replay.c (the normal build) to replay the saved crash inputs
 * in tests/fuzz_regressions/ and the seed corpus under CTest.
 *
 * Our readers take paths, so a harness writes its input to a per-process
 * file (in /dev/shm when it exists: a tmpfs, no disk traffic), rewritten for
 * every input and removed at exit. */
#ifndef ROTARY_FUZZ_COMMON_H
#define ROTARY_FUZZ_COMMON_H

#define _POSIX_C_SOURCE 200809L

#include "rotary.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Not every harness uses every helper. */
#define FUZZ_HELPER static __attribute__((unused))

/* Where the scratch files go: $ROTARY_FUZZ_TMP, /dev/shm, $TMPDIR, /tmp. */
FUZZ_HELPER const char *fuzz_tmp_dir(void) {
    const char *d = getenv("ROTARY_FUZZ_TMP");
    if (d && *d) return d;
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
        return "/dev/shm";
    d = getenv("TMPDIR");
    return d && *d ? d : "/tmp";
}

static char fuzz_file_path[1024];
static char fuzz_dir_path[512];

FUZZ_HELPER void fuzz_cleanup(void) {
    if (fuzz_file_path[0]) unlink(fuzz_file_path);
    if (fuzz_dir_path[0]) rmdir(fuzz_dir_path);
}

/* Write all of buf to path (truncating); aborts on failure, which is the
 * harness's problem, not the reader's. */
FUZZ_HELPER void fuzz_write(const char *path, const uint8_t *buf, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        fprintf(stderr, "fuzz: cannot create %s: %s\n", path, strerror(errno));
        abort();
    }
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
            abort();
        }
        buf += w;
        n -= (size_t)w;
    }
    close(fd);
}

/* The input as a file: the same path for every call of this process. */
FUZZ_HELPER const char *fuzz_input_file(const char *name, const uint8_t *data, size_t size) {
    if (!fuzz_file_path[0]) {
        snprintf(fuzz_file_path, sizeof fuzz_file_path, "%s/rotary-fuzz-%s-%ld", fuzz_tmp_dir(),
                 name, (long)getpid());
        atexit(fuzz_cleanup);
    }
    fuzz_write(fuzz_file_path, data, size);
    return fuzz_file_path;
}

/* The input as DIR/file_name in a per-process directory; returns DIR. */
FUZZ_HELPER const char *fuzz_input_in_dir(const char *name, const char *file_name, const uint8_t *data,
                                     size_t size) {
    if (!fuzz_dir_path[0]) {
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/rotary-fuzz-%s-%ld.d", fuzz_tmp_dir(),
                 name, (long)getpid());
        if (mkdir(fuzz_dir_path, 0700) != 0 && errno != EEXIST) {
            fprintf(stderr, "fuzz: cannot create %s: %s\n", fuzz_dir_path, strerror(errno));
            abort();
        }
        snprintf(fuzz_file_path, sizeof fuzz_file_path, "%s/%s", fuzz_dir_path, file_name);
        atexit(fuzz_cleanup);
    }
    fuzz_write(fuzz_file_path, data, size);
    return fuzz_dir_path;
}

/* Fail loudly (a crash libFuzzer records) when a documented property of an
 * accepted input does not hold. */
#define FUZZ_CHECK(cond, ...)                                                  \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz: check failed: %s: ", #cond);                \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* Touch every byte of a region the reader handed out, so AddressSanitizer
 * sees a read past the mapping or the allocation. */
FUZZ_HELPER unsigned fuzz_touch(const void *p, size_t n) {
    const volatile unsigned char *b = p;
    unsigned s = 0;
    for (size_t i = 0; i < n; i++) s += b[i];
    return s;
}

/* Run one decoding step of a loaded model when it is small and its weights
 * moderate: a check that the loaded config and tensors agree with what
 * the decoder reads. Weights are bounded because NaN or overflowing
 * activations reach rotary_expf (src/ops.h), which converts its rounded
 * argument to int32 before testing for NaN: undefined behaviour that
 * UBSan reports, in the decoder rather than in the reader under test
 * (docs/reliability.md). */
FUZZ_HELPER void fuzz_decode_step(rotary_model *m) {
    if (m->n_params > (1u << 16)) return;
    for (size_t i = 0; i < m->n_params; i++)
        if (!(m->params[i] >= -64.0f && m->params[i] <= 64.0f)) return;
    rotary_decoder d;
    if (rotary_decoder_init(&d, m, 2) != ROTARY_OK) return;
    const float *logits = NULL;
    int rc = rotary_decoder_step(&d, 0, &logits);
    FUZZ_CHECK(rc == ROTARY_OK && logits, "decoder step failed: %s", rotary_last_error());
    fuzz_touch(logits, (size_t)m->cfg.vocab * sizeof(float));
    rotary_decoder_free(&d);
}

/* Where the harnesses find fuzz/data (the fixed tokenizers of the encode
 * harness): $ROTARY_FUZZ_DATA or the source tree's, set by the build. */
#ifndef ROTARY_FUZZ_DATA_DIR
#define ROTARY_FUZZ_DATA_DIR "fuzz/data"
#endif
FUZZ_HELPER const char *fuzz_data_path(const char *file, char *buf, size_t cap) {
    const char *d = getenv("ROTARY_FUZZ_DATA");
    snprintf(buf, cap, "%s/%s", d && *d ? d : ROTARY_FUZZ_DATA_DIR, file);
    return buf;
}

/* Round trip of a tokenizer on text: decode(encode(text)) must be want
 * (want NULL: any bytes). A model's tokenizer may refuse text it has no
 * tokens for (a byte without a <0xXX> token and no unknown token): with
 * may_fail, that is a clean error instead of a failed check. */
FUZZ_HELPER void fuzz_round_trip(const rotary_tokenizer *t, const char *what, const uint8_t *text,
                                 size_t n, const uint8_t *want, size_t want_n, int may_fail) {
    int *ids = NULL;
    size_t n_ids = 0;
    int rc = rotary_tokenizer_encode(t, text, n, &ids, &n_ids);
    if (rc != ROTARY_OK && may_fail) {
        FUZZ_CHECK(rc < 0 && rotary_last_error()[0], "%s: encode rc %d without a message", what,
                   rc);
        return;
    }
    FUZZ_CHECK(rc == ROTARY_OK, "%s: encode of %zu bytes failed: %s", what, n,
               rotary_last_error());
    int vocab = rotary_tokenizer_vocab_size(t);
    size_t pieces = 0;
    for (size_t i = 0; i < n_ids; i++) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab, "%s: id %d outside [0, %d)", what, ids[i],
                   vocab);
        int len = -1;
        const unsigned char *p = rotary_tokenizer_piece(t, ids[i], &len);
        FUZZ_CHECK(p && len >= 0, "%s: no piece for id %d", what, ids[i]);
        fuzz_touch(p, (size_t)len);
        pieces += (size_t)len;
    }
    unsigned char *back = NULL;
    size_t nb = 0;
    rc = rotary_tokenizer_decode(t, ids, n_ids, &back, &nb);
    FUZZ_CHECK(rc == ROTARY_OK, "%s: decode failed: %s", what, rotary_last_error());
    FUZZ_CHECK(nb == pieces, "%s: decode gave %zu bytes, the pieces %zu", what, nb, pieces);
    if (want)
        FUZZ_CHECK(nb == want_n && (nb == 0 || memcmp(back, want, nb) == 0),
                   "%s: decode(encode(x)) != expected (%zu bytes in, %zu back, %zu expected)",
                   what, n, nb, want_n);
    free(ids);
    free(back);
}

#endif
