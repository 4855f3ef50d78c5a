/* dist.c: data parallelism over MPI: joining the job, averaging gradients,
 * and the shard traffic of ZeRO-1 (reduce-scatter, all-gather, gather).
 * The MPI parts compile only with -DROTARY_MPI=ON; without it, and in a
 * process not started by mpirun, there is one rank and every collective
 * returns at once, so the single-process path never touches MPI.
 *
 * Every collective moves the flat buffer in buckets of d->bucket floats:
 * MPI counts are ints, and smaller calls bound the temporary memory MPI
 * allocates. A bucket's slice of the shards is in rank order, which is what
 * MPI_Reduce_scatter and MPI_Allgatherv expect, so ZeRO-1 buckets too. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef ROTARY_MPI
#include <mpi.h>
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
    d->size = 1;
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
    d->work = malloc(2 * (size_t)n * sizeof(int));
    if (!d->work) return rotary_fail(ROTARY_ENOMEM, "MPI: out of memory");
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
#endif
    free(d->work);
    d->work = NULL;
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

int dist_reduce_scatter_mean(const rotary_dist *d, float *x, size_t n) {
    if (!d || d->size <= 1) return ROTARY_OK;
#ifdef ROTARY_MPI
    const size_t bucket = bucket_size(d);
    int *counts = d->work, *displs = d->work + d->size;
    for (size_t i = 0; i < n; i += bucket) {
        size_t j = n - i < bucket ? n : i + bucket;
        bucket_parts(d, n, i, j, counts, displs);
        /* In place: the bucket is the input, this rank's part of the sum
         * lands at the bucket's start; move it to where it belongs. */
        int err = MPI_Reduce_scatter(MPI_IN_PLACE, x + i, counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (err != MPI_SUCCESS) return mpi_fail(err, "reduce-scatter");
        int me = d->rank;
        if (counts[me] && displs[me]) memmove(x + i + displs[me], x + i, (size_t)counts[me] * sizeof(float));
    }
    size_t lo, hi;
    rotary_dist_shard(d, n, d->rank, &lo, &hi);
    const float s = 1.0f / (float)d->size;
#pragma omp parallel for schedule(static)
    for (size_t i = lo; i < hi; i++) x[i] *= s;
#else
    (void)x, (void)n;
#endif
    return ROTARY_OK;
}

int dist_allgather(const rotary_dist *d, float *x, size_t n) {
    if (!d || d->size <= 1) return ROTARY_OK;
#ifdef ROTARY_MPI
    const size_t bucket = bucket_size(d);
    int *counts = d->work, *displs = d->work + d->size;
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
    int *counts = d->work, *displs = d->work + d->size;
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
    int *counts = d->work, *displs = d->work + d->size;
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
