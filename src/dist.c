/* dist.c: data parallelism over MPI: joining the job, averaging gradients,
 * and the shard traffic of ZeRO-1 (reduce-scatter, all-gather, gather).
 * The MPI parts compile only with -DROTARY_MPI=ON; without it, and in a
 * process not started by mpirun, there is one rank and every collective
 * returns at once, so the single-process path never touches MPI.
 *
 * Every collective moves the flat buffer in buckets of d->bucket floats:
 * MPI counts are ints, and smaller calls bound the temporary memory MPI
 * allocates. A bucket's slice of the shards is in rank order, which is what
 * MPI_Reduce_scatter and MPI_Allgatherv expect, so ZeRO-1 buckets too.
 *
 * The gradients travel while the backward pass still runs: it reports after
 * each layer which suffix of the buffer is final (rotary_model.grads_ready),
 * and every bucket inside that suffix is started at once as a non-blocking
 * all-reduce (or reduce-scatter); the training step waits for them all at
 * the end. Buckets are counted from the end of the buffer, where the
 * backward pass finishes first. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef ROTARY_MPI
#include <mpi.h>

/* What a rank keeps between calls (rotary_dist.impl). */
typedef struct {
    int *counts, *displs;   /* (size) scratch for the blocking collectives */
    /* Gradients in flight: bucket k is [n - (k+1) b, n - k b) clipped at 0. */
    size_t n, b;            /* buffer and bucket length of the flight */
    int zero;               /* reduce-scatter (ZeRO-1) rather than all-reduce */
    int n_buckets, started; /* buckets, and how many have been started */
    MPI_Request *req;       /* (n_buckets) */
    int *bcounts, *bdispls; /* (n_buckets, size) parts of each bucket (ZeRO-1);
                               MPI reads them until the request completes */
    float *x;
    int err;                /* first MPI error of the flight */
} dist_impl;
#endif

int rotary_dist_available(void) {
#ifdef ROTARY_MPI
    return 1;
#else
    return 0;
#endif
}

/* The number of processes mpirun (or another PMI launcher) started; 0 when
 * this process was not started by one. */
static long launched_size(void) {
    const char *keys[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"};
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(keys[i]);
        if (v && *v) return atol(v);
    }
    return getenv("PMIX_RANK") ? 1 : 0;
}

int rotary_dist_init(rotary_dist *d, int *argc, char ***argv) {
    memset(d, 0, sizeof *d);
    d->size = d->local_size = 1;
    long launched = launched_size();
#ifdef ROTARY_MPI
    if (launched == 0) return ROTARY_OK; /* a plain run: no MPI at all */
    int provided, n;
    /* FUNNELED: only the main thread calls MPI; OpenMP threads never do. */
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return rotary_fail(ROTARY_EIO, "MPI_Init_thread failed");
    d->mpi = 1;
    /* Errors come back as codes (and so as messages) instead of aborting. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    d->size = n;
    /* The ranks that share this machine (its memory, and so its GPUs). */
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL,
                            &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, &d->local_rank);
        MPI_Comm_size(node, &d->local_size);
        MPI_Comm_free(&node);
    }
    dist_impl *im = calloc(1, sizeof *im);
    d->impl = im;
    if (im) im->counts = malloc(2 * (size_t)n * sizeof(int));
    if (!im || !im->counts) return rotary_fail(ROTARY_ENOMEM, "MPI: out of memory");
    im->displs = im->counts + n;
    return ROTARY_OK;
#else
    (void)argc, (void)argv;
    if (launched > 1)
        return rotary_fail(ROTARY_EINVAL, "started as one of %ld processes, but this rotary was "
                           "built without MPI (cmake -DROTARY_MPI=ON)", launched);
    return ROTARY_OK;
#endif
}

void rotary_dist_finalize(rotary_dist *d) {
#ifdef ROTARY_MPI
    if (d->mpi) MPI_Finalize();
    dist_impl *im = d->impl;
    if (im) free(im->counts), free(im->req), free(im->bcounts);
    free(im);
#endif
    d->impl = NULL;
    d->mpi = 0;
}

void rotary_dist_abort(const rotary_dist *d, int code) {
#ifdef ROTARY_MPI
    if (d && d->mpi) MPI_Abort(MPI_COMM_WORLD, code);
#else
    (void)d, (void)code;
#endif
}

void rotary_dist_shard(const rotary_dist *d, size_t n, int r, size_t *lo, size_t *hi) {
    const size_t size = d && d->size > 1 ? (size_t)d->size : 1;
    const size_t blocks = (n + ROTARY_NORM_BLOCK - 1) / ROTARY_NORM_BLOCK;
    /* Whole blocks, as evenly as they go: the first (blocks % size) shards
     * get one more. */
    const size_t per = blocks / size, extra = blocks % size, ur = (size_t)r;
    size_t b0 = ur * per + (ur < extra ? ur : extra);
    size_t b1 = b0 + per + (ur < extra ? 1 : 0);
    *lo = b0 * ROTARY_NORM_BLOCK < n ? b0 * ROTARY_NORM_BLOCK : n;
    *hi = b1 * ROTARY_NORM_BLOCK < n ? b1 * ROTARY_NORM_BLOCK : n;
}

#ifdef ROTARY_MPI
static size_t bucket_size(const rotary_dist *d) {
    size_t b = d && d->bucket ? d->bucket : ROTARY_DIST_BUCKET;
    return b < INT_MAX ? b : INT_MAX;
}

static int mpi_fail(int err, const char *what) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(err, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "error %d", err);
    return rotary_fail(ROTARY_EIO, "MPI %s failed: %s (did another rank stop?)", what, s);
}

/* counts[r], displs[r]: the part of bucket [i, j) of an n-float buffer that
 * lies in rank r's shard, relative to i. */
static void bucket_parts(const rotary_dist *d, size_t n, size_t i, size_t j, int *counts,
                         int *displs) {
    for (int r = 0; r < d->size; r++) {
        size_t lo, hi;
        rotary_dist_shard(d, n, r, &lo, &hi);
        lo = lo > i ? lo : i;
        hi = hi < j ? hi : j;
        counts[r] = hi > lo ? (int)(hi - lo) : 0;
        displs[r] = hi > lo ? (int)(lo - i) : 0;
    }
}
#endif

int rotary_dist_allreduce_mean(const rotary_dist *d, float *x, size_t n) {
    if (!d || d->size <= 1) return ROTARY_OK;
#ifdef ROTARY_MPI
    const size_t bucket = bucket_size(d);
    for (size_t i = 0; i < n; i += bucket) {
        int k = (int)(n - i < bucket ? n - i : bucket);
        int err = MPI_Allreduce(MPI_IN_PLACE, x + i, k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (err != MPI_SUCCESS) return mpi_fail(err, "all-reduce");
    }
    const float s = 1.0f / (float)d->size;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] *= s;
#else
    (void)x, (void)n;
#endif
    return ROTARY_OK;
}

int dist_grads_prepare(const rotary_dist *d, size_t n) {
    if (!d || d->size <= 1) return ROTARY_OK;
#ifdef ROTARY_MPI
    dist_impl *im = d->impl;
    const size_t b = bucket_size(d), size = (size_t)d->size;
    if (im->n != n || im->b != b || !im->req) { /* the bucket table, once */
        const size_t nb = (n + b - 1) / b;
        free(im->req), free(im->bcounts);
        im->req = malloc((nb ? nb : 1) * sizeof(MPI_Request));
        im->bcounts = malloc((nb ? 2 * nb * size : 1) * sizeof(int));
        if (!im->req || !im->bcounts || nb > INT_MAX) {
            free(im->req), free(im->bcounts);
            im->req = NULL, im->bcounts = NULL;
            return rotary_fail(ROTARY_ENOMEM, "MPI: out of memory for %zu buckets", nb);
        }
        im->n = n, im->b = b, im->n_buckets = (int)nb;
        im->bdispls = im->bcounts + nb * size;
        for (size_t k = 0; k < nb; k++) {
            size_t j = n - k * b, i = j > b ? j - b : 0;
            bucket_parts(d, n, i, j, im->bcounts + k * size, im->bdispls + k * size);
        }
    }
#else
    (void)n;
#endif
    return ROTARY_OK;
}

int dist_grads_start(const rotary_dist *d, float *x, size_t n, int zero) {
    if (!d || d->size <= 1) return ROTARY_OK;
    int rc = dist_grads_prepare(d, n);
    if (rc) return rc;
#ifdef ROTARY_MPI
    dist_impl *im = d->impl;
    im->zero = zero, im->started = 0, im->x = x, im->err = MPI_SUCCESS;
#else
    (void)x, (void)zero;
#endif
    return ROTARY_OK;
}

#ifdef ROTARY_MPI
/* Start, in order, the buckets that lie within [from, n). Every rank calls
 * this at the same points with the same from, so the collectives start in
 * the same order everywhere, as MPI requires. */
static void start_buckets(const rotary_dist *d, size_t from) {
    dist_impl *im = d->impl;
    while (im->started < im->n_buckets && im->err == MPI_SUCCESS) {
        const int k = im->started;
        const size_t j = im->n - (size_t)k * im->b, i = j > im->b ? j - im->b : 0;
        if (i < from) break;
        int err = im->zero ? MPI_Ireduce_scatter(MPI_IN_PLACE, im->x + i, im->bcounts + (size_t)k * d->size,
                                                 MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &im->req[k])
                           : MPI_Iallreduce(MPI_IN_PLACE, im->x + i, (int)(j - i), MPI_FLOAT, MPI_SUM,
                                            MPI_COMM_WORLD, &im->req[k]);
        if (err != MPI_SUCCESS) {
            im->err = err;
            break;
        }
        im->started++;
    }
}
#endif

void dist_grads_ready(const rotary_dist *d, size_t from) {
    if (!d || d->size <= 1) return;
#ifdef ROTARY_MPI
    dist_impl *im = d->impl;
    if (!im->x) return;
    int before = im->started, flag;
    start_buckets(d, from);
    /* Open MPI moves non-blocking collectives on only inside MPI calls: give
     * the ones in flight a push while the backward pass goes on. */
    if (before && im->err == MPI_SUCCESS) MPI_Testall(before, im->req, &flag, MPI_STATUSES_IGNORE);
#else
    (void)from;
#endif
}

int dist_grads_finish(const rotary_dist *d) {
    if (!d || d->size <= 1) return ROTARY_OK;
#ifdef ROTARY_MPI
    dist_impl *im = d->impl;
    if (!im->x) return ROTARY_OK;
    start_buckets(d, 0);
    int err = MPI_Waitall(im->started, im->req, MPI_STATUSES_IGNORE);
    float *x = im->x;
    im->x = NULL;
    if (im->err != MPI_SUCCESS) return mpi_fail(im->err, im->zero ? "reduce-scatter" : "all-reduce");
    if (err != MPI_SUCCESS) return mpi_fail(err, im->zero ? "reduce-scatter" : "all-reduce");
    const float s = 1.0f / (float)d->size;
    size_t lo = 0, hi = im->n;
    if (im->zero) {
        /* Each bucket's reduce-scatter left this rank's part at the
         * bucket's start: move it where it belongs. */
        const int me = d->rank;
        for (int k = 0; k < im->n_buckets; k++) {
            const size_t j = im->n - (size_t)k * im->b, i = j > im->b ? j - im->b : 0;
            const int c = im->bcounts[(size_t)k * d->size + me], o = im->bdispls[(size_t)k * d->size + me];
            if (c && o) memmove(x + i + o, x + i, (size_t)c * sizeof(float));
        }
        rotary_dist_shard(d, im->n, me, &lo, &hi);
    }
#pragma omp parallel for schedule(static)
    for (size_t i = lo; i < hi; i++) x[i] *= s;
#endif
    return ROTARY_OK;
}

int dist_allgather(const rotary_dist *d, float *x, size_t n) {
    if (!d || d->size <= 1) return ROTARY_OK;
#ifdef ROTARY_MPI
    const size_t bucket = bucket_size(d);
    dist_impl *im = d->impl;
    int *counts = im->counts, *displs = im->displs;
    for (size_t i = 0; i < n; i += bucket) {
        size_t j = n - i < bucket ? n : i + bucket;
        bucket_parts(d, n, i, j, counts, displs);
        int err = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x + i, counts, displs,
                                 MPI_FLOAT, MPI_COMM_WORLD);
        if (err != MPI_SUCCESS) return mpi_fail(err, "all-gather");
    }
#else
    (void)x, (void)n;
#endif
    return ROTARY_OK;
}

int dist_gather(const rotary_dist *d, const float *shard, float *full, size_t n) {
    if (!d || d->size <= 1) {
        if (full != shard) memcpy(full, shard, n * sizeof(float));
        return ROTARY_OK;
    }
#ifdef ROTARY_MPI
    const size_t bucket = bucket_size(d);
    dist_impl *im = d->impl;
    int *counts = im->counts, *displs = im->displs;
    size_t lo, hi;
    rotary_dist_shard(d, n, d->rank, &lo, &hi);
    for (size_t i = 0; i < n; i += bucket) {
        size_t j = n - i < bucket ? n : i + bucket;
        bucket_parts(d, n, i, j, counts, displs);
        const float *mine = counts[d->rank] ? shard + (lo > i ? 0 : i - lo) : shard;
        int err = MPI_Gatherv(mine, counts[d->rank], MPI_FLOAT, d->rank == 0 ? full + i : NULL,
                              counts, displs, MPI_FLOAT, 0, MPI_COMM_WORLD);
        if (err != MPI_SUCCESS) return mpi_fail(err, "gather");
    }
#endif
    return ROTARY_OK;
}

int dist_allgather_norm_blocks(const rotary_dist *d, double *part, size_t n) {
    if (!d || d->size <= 1) return ROTARY_OK;
#ifdef ROTARY_MPI
    dist_impl *im = d->impl;
    int *counts = im->counts, *displs = im->displs;
    for (int r = 0; r < d->size; r++) {
        size_t lo, hi;
        rotary_dist_shard(d, n, r, &lo, &hi);
        displs[r] = (int)(lo / ROTARY_NORM_BLOCK);
        counts[r] = (int)((hi + ROTARY_NORM_BLOCK - 1) / ROTARY_NORM_BLOCK) - displs[r];
    }
    int err = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, part, counts, displs, MPI_DOUBLE,
                             MPI_COMM_WORLD);
    if (err != MPI_SUCCESS) return mpi_fail(err, "all-gather");
#else
    (void)part, (void)n;
#endif
    return ROTARY_OK;
}

int dist_same(const rotary_dist *d, uint64_t v, int *same) {
    *same = 1;
    if (!d || d->size <= 1) return ROTARY_OK;
#ifdef ROTARY_MPI
    /* max(v) and max(~v) = ~min(v): one call gives both ends. */
    uint64_t x[2] = {v, ~v};
    int err = MPI_Allreduce(MPI_IN_PLACE, x, 2, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    if (err != MPI_SUCCESS) return mpi_fail(err, "all-reduce");
    *same = x[0] == ~x[1];
#else
    (void)v;
#endif
    return ROTARY_OK;
}

int dist_bcast(const rotary_dist *d, void *buf, int bytes) {
    if (!d || d->size <= 1) return ROTARY_OK;
#ifdef ROTARY_MPI
    int err = MPI_Bcast(buf, bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (err != MPI_SUCCESS) return mpi_fail(err, "broadcast");
#else
    (void)buf, (void)bytes;
#endif
    return ROTARY_OK;
}

int dist_sum(const rotary_dist *d, double *x, int k) {
    if (!d || d->size <= 1) return ROTARY_OK;
#ifdef ROTARY_MPI
    int err = MPI_Allreduce(MPI_IN_PLACE, x, k, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    if (err != MPI_SUCCESS) return mpi_fail(err, "all-reduce");
#else
    (void)x, (void)k;
#endif
    return ROTARY_OK;
}

int rotary_dist_agree(const rotary_dist *d, int rc) {
    if (!d || d->size <= 1) return rc;
#ifdef ROTARY_MPI
    int in[2] = {rc, d->rank}, out[2];
    int err = MPI_Allreduce(in, out, 1, MPI_2INT, MPI_MINLOC, MPI_COMM_WORLD);
    if (err != MPI_SUCCESS) return mpi_fail(err, "all-reduce");
    if (out[0] != ROTARY_OK && rc == ROTARY_OK)
        return rotary_fail(out[0], "stopped because rank %d failed (its message says why)", out[1]);
    return out[0];
#else
    return rc;
#endif
}
