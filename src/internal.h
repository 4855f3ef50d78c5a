/* internal.h: helpers shared by the library's source files (not installed). */
#ifndef ROTARY_INTERNAL_H
#define ROTARY_INTERNAL_H

#include "rotary.h"

#include <stdio.h>

#include <stddef.h>
#include <stdint.h>

/* Record a failure message (printf-style) and return code. */
int rotary_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* a*b without overflow of size_t; returns 0 and sets *out, or -1. */
static inline int rotary_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

/* 64-byte aligned, zeroed float array of n elements; NULL on failure
 * (with the message set). Free with free(). */
float *rotary_alloc_floats(size_t n, const char *what);

/* Map the regular file at path read-only: *data, *size (bytes). An empty
 * file gives *size 0 and a valid pointer to no bytes (nothing is mapped), so
 * callers check the size against their format's minimum themselves. Fails
 * with ROTARY_EIO ("cannot open", "cannot stat", "not a regular file",
 * "cannot map") or ROTARY_ENOMEM (larger than the address space), the
 * message naming path. Release with rotary_unmap_file(*data, *size). */
int rotary_map_file(const char *path, const void **data, size_t *size);
void rotary_unmap_file(const void *data, size_t size);

/* Read the regular file at path into a new buffer of *size bytes plus a
 * terminating NUL (free() it). Fails as rotary_map_file does, with
 * ROTARY_EFORMAT when the file holds more than max bytes ("N bytes is too
 * large for a <what> (at most max)"), ROTARY_ENOMEM, or ROTARY_EIO when the
 * read fails. */
int rotary_read_file(const char *path, size_t max, const char *what, char **data, size_t *size);

/* Byte ranges [begin, end) of the tensors a file header declares. The
 * readers refuse tensors that share bytes (or a small file could claim many
 * times its size in tensors): rotary_spans_overlap sorts s by begin and
 * returns 1 with the first overlapping pair in *a, *b (empty ranges never
 * overlap), 0 if there is none. */
typedef struct {
    size_t begin, end;
    const char *name;
} rotary_span;
int rotary_spans_overlap(rotary_span *s, int n, const rotary_span **a, const rotary_span **b);

/* Writing a file so that a crash leaves the old one or the new one, never
 * half of one: the bytes go to a temporary file next to path ("PATH.tmp.XXXXXX",
 * mode 0644), which commit fsyncs, renames onto path and makes durable with
 * an fsync of the directory. Each function returns ROTARY_OK or ROTARY_EIO /
 * ROTARY_ENOMEM with a message naming path; after a failure the temporary file
 * is gone and there is nothing to clean up. */
typedef struct {
    const char *path; /* the destination */
    char *tmp;        /* the temporary file */
    int fd;
} rotary_tmpfile;
int rotary_tmpfile_open(rotary_tmpfile *f, const char *path);
int rotary_tmpfile_write(rotary_tmpfile *f, const void *buf, size_t n);
int rotary_tmpfile_commit(rotary_tmpfile *f);

/* dist.c: the collectives of ZeRO-1 and of the training loop; each is a
 * no-op with one rank. n is the flat buffer's length on every rank, shards
 * as rotary_dist_shard cuts them. */
/* Averaging gradients x (n) while the backward pass runs: start before it,
 * dist_grads_ready(d, from) when x[from, n) is final (it starts the buckets
 * inside), finish after it. Then x holds the mean over the ranks, or with
 * zero (ZeRO-1) x[lo, hi) of this rank's shard does (the rest is scratch). */
int dist_grads_start(const rotary_dist *d, float *x, size_t n, int zero);
/* The bucket table start needs, allocated ahead (start then cannot fail on
 * one rank alone). */
int dist_grads_prepare(const rotary_dist *d, size_t n);
void dist_grads_ready(const rotary_dist *d, size_t from);
int dist_grads_finish(const rotary_dist *d);
/* x (n): every rank's shard of x, to every rank. */
int dist_allgather(const rotary_dist *d, float *x, size_t n);
/* shard (hi - lo of this rank) to full (n) on rank 0 (full unused elsewhere). */
int dist_gather(const rotary_dist *d, const float *shard, float *full, size_t n);
/* part: the ROTARY_NORM_BLOCK block sums of an n-float buffer; each rank's
 * shard's blocks to every rank. */
int dist_allgather_norm_blocks(const rotary_dist *d, double *part, size_t n);
/* *same = whether v is the same on every rank. */
int dist_same(const rotary_dist *d, uint64_t v, int *same);
/* x (k) <- the sum over the ranks. */
int dist_sum(const rotary_dist *d, double *x, int k);
/* buf (bytes) <- rank 0's. */
int dist_bcast(const rotary_dist *d, void *buf, int bytes);

/* train.c: the training loop, shared by rotary_train and the GPU's
 * cuda_train (src/cuda/cuda_train.c), so that both follow the same schedule
 * and write the run directory's files the same crash-safe way
 * (docs/reliability.md). A device supplies the steps. */
typedef struct {
    char ckpt[4096], metrics[4096];
    FILE *mf;
} train_log;
typedef struct {
    void *ctx;
    /* Zero the gradients, take the step's batch (this rank's slice) and
     * run the forward pass: this rank's mean loss. */
    int (*forward)(void *ctx, long step, float *loss);
    /* Backward, clipping to the options' clip, and the AdamW step. */
    int (*update)(void *ctx, const rotary_adamw_config *ac);
    /* The validation loss, the same on every rank. */
    int (*eval)(void *ctx, float *loss);
    /* Write the checkpoint of `step` (metrics.csv is synced already). */
    int (*save)(void *ctx, long step, double elapsed);
} train_device;
/* The checks rotary_train makes of its options and data, for every loop. */
int train_check_opts(const rotary_model *m, const rotary_train_opts *o);
/* The checkpoint and metrics paths of o->run_dir. */
int train_log_paths(train_log *l, const char *run_dir);
/* With o->resume and a checkpoint: read its AdamW state into opt (m holds
 * its weights already) and give its step and elapsed time; then open
 * metrics.csv (trimmed to *start when resumed, else new). */
int train_resume(train_log *l, rotary_model *m, rotary_adamw *opt, const rotary_train_opts *o,
                 long *start, double *elapsed);
/* Steps start..o->steps: schedule, evaluation, metrics rows, checkpoints,
 * stopping on a non-finite loss or when on_step asks. */
int train_loop(train_log *l, const rotary_model *m, const rotary_train_opts *o, long start,
               double elapsed0, const train_device *dev);
/* The validation loss: the mean over n_batches batches of B windows drawn
 * from seed (not training's windows), rank r of d (NULL: one process)
 * taking windows [r b, (r+1) b) of each, b = B / ranks, in `parts` equal
 * parts (the training's micro-batches); fwd gives the mean loss of one. The ranks' means are averaged, which is the batch mean
 * since the slices are equal; every rank returns the same. */
typedef int (*train_eval_fn)(void *ctx, const int *tok, const int *tgt, int b, int T,
                             float *loss);
int train_eval(const int *ids, size_t n, int B, int T, int n_batches, int parts, uint64_t seed,
               const rotary_dist *d, train_eval_fn fwd, void *ctx, float *loss);
/* o->dist, or one process alone without it. */
const rotary_dist *train_dist(const rotary_train_opts *o);
/* o->accum, or 1 without accumulation. */
int train_accum(const rotary_train_opts *o);
/* A step's forward passes over a rank's b windows (tok, tgt) in k equal
 * micro-batches, each but the last followed by bwd (if not NULL), which adds its
 * gradients (the last one's backward is the device's update, where the
 * all-reduce can overlap it): *loss is the mean of their means. The summed
 * gradients are k times the batch's; the update divides them by k. */
int train_micro_forward(const int *tok, const int *tgt, int b, int T, int k, train_eval_fn fwd,
                        int (*bwd)(void *ctx), void *ctx, float *loss);
/* Rank 0 writes the checkpoint, after every rank has checked that the
 * ranks' weights agree (each holds a copy, updated by the same averaged
 * gradients). Under ZeRO-1 (zero) the shards of the AdamW state are first
 * gathered there (a full-size copy for the time of the save), so the file
 * is the same as a single process writes and resumes on any number of
 * ranks. Every rank returns the same rc. */
int train_save(const train_log *l, const rotary_model *m, const rotary_adamw *opt, int zero,
               long step, double elapsed, const rotary_dist *d);
/* Weights, AdamW state and step into l->ckpt. */
int train_log_checkpoint(const train_log *l, const rotary_model *m, const rotary_adamw *opt,
                         long step, double elapsed);
/* Close metrics.csv, keeping the first failure in rc. */
int train_log_close(train_log *l, int rc);

#endif
