/* test_dist: the collectives of src/dist.c, run by mpirun on 2 and 3 ranks
 * (tests/mpi.cmake): shards, bucketed all-reduce, gradients averaged in
 * flight (all-reduce and reduce-scatter started bucket by bucket), all-gather,
 * gather to rank 0, the norm blocks, agreement on failure, batch slices, and
 * the ranks' ranks on their machine.
 * Every value is an integer small enough that float sums are exact, so each
 * result is compared exactly. */
#include "check.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* x[i] on rank r: an integer that identifies both. */
static float val(int r, size_t i) { return (float)((r + 1) * 1000 + (int)(i % 997)); }
/* The mean over R ranks as dist.c computes it: the exact integer sum, times
 * 1/R in float. */
static float mean(int R, size_t i) {
    float sum = 0;
    for (int r = 0; r < R; r++) sum += val(r, i);
    return sum * (1.0f / (float)R);
}

int main(int argc, char **argv) {
    rotary_dist d;
    must(rotary_dist_init(&d, &argc, &argv), "init");
    const int R = d.size, me = d.rank;
    char name[64];
    snprintf(name, sizeof name, "test_dist rank %d of %d", me, R);
    EXPECT(rotary_dist_available() && R > 1, "run me under mpirun -np 2 or more (size %d)", R);
    /* The tests start every rank on this machine: each its own local rank
     * (the GPU it would take), in world order. */
    EXPECT(d.local_size == R && d.local_rank == me, "local rank %d of %d, world rank %d of %d",
           d.local_rank, d.local_size, me, R);

    /* Shards: contiguous, in rank order, block-aligned, covering [0, n). */
    const size_t sizes[] = {0, 5, ROTARY_NORM_BLOCK, 5 * ROTARY_NORM_BLOCK + 7};
    for (int k = 0; k < 4; k++) {
        size_t n = sizes[k], end = 0;
        for (int r = 0; r < R; r++) {
            size_t lo, hi;
            rotary_dist_shard(&d, n, r, &lo, &hi);
            EXPECT(lo == end && hi >= lo && (lo % ROTARY_NORM_BLOCK == 0 || lo == n),
                   "n %zu rank %d: shard [%zu, %zu) after %zu", n, r, lo, hi, end);
            end = hi;
        }
        EXPECT(end == n, "shards of %zu end at %zu", n, end);
    }

    /* Buckets of 1000 floats over 70007: many calls, a short last one, and
     * bucket edges that cut through shards. */
    d.bucket = 1000;
    const size_t n = 4 * ROTARY_NORM_BLOCK + 4471;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    double sum_r = 0;
    for (int r = 0; r < R; r++) sum_r += r + 1;
    for (size_t i = 0; i < n; i++) x[i] = val(me, i);
    must(rotary_dist_allreduce_mean(&d, x, n), "all-reduce");
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += x[i] != mean(R, i);
    EXPECT(bad == 0, "all-reduce mean: %d wrong of %zu", bad, n);

    /* Gradients in flight: started in buckets from the end as a backward
     * pass would report finished suffixes, then finished; all-reduce and
     * (ZeRO-1) reduce-scatter. */
    size_t lo, hi;
    rotary_dist_shard(&d, n, me, &lo, &hi);
    for (int zero = 0; zero <= 1; zero++) {
        for (int round = 0; round < 2; round++) { /* the second reuses the bucket table */
            for (size_t i = 0; i < n; i++) x[i] = val(me, i);
            must(dist_grads_start(&d, x, n, zero), "start");
            for (int q = 7; q >= 1; q--) dist_grads_ready(&d, n / 8 * (size_t)q);
            must(dist_grads_finish(&d), "finish");
            bad = 0;
            for (size_t i = zero ? lo : 0; i < (zero ? hi : n); i++) bad += x[i] != mean(R, i);
            EXPECT(bad == 0, "%s in flight (round %d): %d wrong", zero ? "reduce-scatter" : "all-reduce",
                   round, bad);
        }
    }
    /* One bucket for everything, started only at the finish. */
    d.bucket = 0;
    for (size_t i = 0; i < n; i++) x[i] = val(me, i);
    must(dist_grads_start(&d, x, n, 0), "start");
    dist_grads_ready(&d, n / 2);
    must(dist_grads_finish(&d), "finish");
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += x[i] != mean(R, i);
    EXPECT(bad == 0, "one bucket: %d wrong", bad);
    d.bucket = 1000;

    /* All-gather: each rank fills its shard with its own values. */
    for (size_t i = 0; i < n; i++) x[i] = -1;
    for (size_t i = lo; i < hi; i++) x[i] = val(me, i);
    must(dist_allgather(&d, x, n), "all-gather");
    bad = 0;
    for (int r = 0; r < R; r++) {
        size_t a, b;
        rotary_dist_shard(&d, n, r, &a, &b);
        for (size_t i = a; i < b; i++) bad += x[i] != val(r, i);
    }
    EXPECT(bad == 0, "all-gather: %d wrong", bad);

    /* Gather to rank 0 from shard-sized buffers. */
    float *shard = malloc((hi - lo + 1) * sizeof(float));
    for (size_t i = lo; i < hi; i++) shard[i - lo] = val(me, i) + 0.5f;
    memset(y, 0, n * sizeof(float));
    must(dist_gather(&d, shard, y, n), "gather");
    if (me == 0) {
        bad = 0;
        for (int r = 0; r < R; r++) {
            size_t a, b;
            rotary_dist_shard(&d, n, r, &a, &b);
            for (size_t i = a; i < b; i++) bad += y[i] != val(r, i) + 0.5f;
        }
        EXPECT(bad == 0, "gather to rank 0: %d wrong", bad);
    }

    /* Norm blocks: gathered from the shards, they equal one process's. */
    for (size_t i = 0; i < n; i++) x[i] = (float)(i % 13) - 6.0f;
    const size_t nb = (n + ROTARY_NORM_BLOCK - 1) / ROTARY_NORM_BLOCK;
    double *part = calloc(nb, sizeof(double)), *whole = calloc(nb, sizeof(double));
    rotary_grad_sq_blocks(x, n, whole);
    rotary_grad_sq_blocks(x + lo, hi - lo, part + lo / ROTARY_NORM_BLOCK);
    must(dist_allgather_norm_blocks(&d, part, n), "norm blocks");
    EXPECT(memcmp(part, whole, nb * sizeof(double)) == 0, "norm blocks from shards");
    float norm = rotary_grad_norm_of_blocks(part, nb);
    EXPECT(norm == rotary_clip_grad_norm(x, n, 0), "norm %g", norm);

    /* Sum of doubles; agreement names the rank that failed. */
    double s[2] = {me + 1.0, 1};
    must(dist_sum(&d, s, 2), "sum");
    EXPECT(s[0] == sum_r && s[1] == R, "sum %g %g", s[0], s[1]);
    int same;
    must(dist_same(&d, 0x8000000000000001ull, &same), "same");
    EXPECT(same, "the same value is the same");
    must(dist_same(&d, me == R - 1 ? 5 : 4, &same), "same");
    EXPECT(!same, "one rank differs");
    EXPECT(rotary_dist_agree(&d, ROTARY_OK) == ROTARY_OK, "all ok");
    int rc = rotary_dist_agree(&d, me == R - 1 ? ROTARY_EIO : ROTARY_OK);
    char want[64];
    snprintf(want, sizeof want, "rank %d failed", R - 1);
    EXPECT(rc == ROTARY_EIO && (me == R - 1 || strstr(rotary_last_error(), want)),
           "agree: rc %d, '%s'", rc, rotary_last_error());

    /* Batch slices: the ranks' slices put together are one process's batch. */
    int ids[500], tok[12 * 8], tgt[12 * 8], st[12 * 8], sg[12 * 8];
    for (int i = 0; i < 500; i++) ids[i] = (i * 7) % 500;
    rotary_batch(ids, 500, 12, 8, 3, 41, tok, tgt);
    for (int r = 0, i0 = 0; r < 4; r++) { /* 4 slices of 3 windows */
        rotary_batch_slice(ids, 500, 12, 8, 3, 41, i0, i0 + 3, st + i0 * 8, sg + i0 * 8);
        i0 += 3;
    }
    EXPECT(!memcmp(tok, st, sizeof tok) && !memcmp(tgt, sg, sizeof tgt), "slices make the batch");

    free(x), free(y), free(shard), free(part), free(whole);
    int failed = check_summary(name);
    rotary_dist_finalize(&d);
    return failed;
}
