/* cuda_train.c: rotary_train's loop (train_loop, src/train.c) with the
 * steps on the GPU. The schedule, the batches (rotary_batch), metrics.csv
 * and the checkpoints are the same, so a run may be resumed on either
 * device; the host copy of the weights and AdamW state is refreshed only
 * when a checkpoint is written.
 *
 * Under mpirun each rank drives one GPU (cuda_device_use: its rank on the
 * machine) with its slice of every batch, as rotary_train's ranks do; after
 * the backward pass the gradients are averaged over the ranks (comm.c: NCCL,
 * or host memory and MPI), so every rank clips by the same norm and takes
 * the same AdamW step; with --zero1 each rank keeps the moments of its
 * shard only, receives the mean of that shard (through NCCL; all of it
 * through host memory), takes the norm from every shard's blocks, updates
 * its shard and gathers the others', as rotary_train does. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "cuda/cuda_model.h"

#include <stdio.h>
#include <stdlib.h>

/* cuda_train's device: this rank's GPU and its slice of each batch; the
 * host's optimizer state mirrors the GPU's (all of it, or the shard). */
typedef struct {
    cuda_model *g;
    rotary_model *m;
    rotary_adamw *opt;
    const rotary_train_opts *o;
    const rotary_dist *d;
    const train_log *log;
    int zero;    /* ZeRO-1 over several ranks */
    size_t lo, hi; /* the parameters whose AdamW state this rank keeps */
    double *part;  /* the gradients' nb norm blocks (ROTARY_NORM_BLOCK) */
    size_t nb;
    int b, i0;   /* this rank's windows of each batch: [i0, i0 + b) */
    int *tok;
    cuda_comm *comm; /* with several ranks: how the gradients are averaged */
} gpu_run;

static int gpu_train_forward(void *ctx, const int *tok, const int *tgt, int b, int T,
                             float *loss) {
    return cuda_model_forward(ctx, tok, tgt, b, T, 1, loss);
}

static int gpu_backward(void *ctx) { return cuda_model_backward(ctx); }

static int gpu_forward(void *ctx, long step, float *loss) {
    gpu_run *r = ctx;
    const rotary_train_opts *o = r->o;
    const int T = r->m->cfg.ctx;
    int *tgt = r->tok + (size_t)r->b * T;
    rotary_batch_slice(o->train_ids, o->n_train, o->batch, T, o->seed, (uint64_t)step, r->i0,
                       r->i0 + r->b, r->tok, tgt);
    int rc = cuda_model_zero_grad(r->g);
    return rc ? rc : train_micro_forward(r->tok, tgt, r->b, T, train_accum(o), gpu_train_forward,
                                         gpu_backward, r->g, loss);
}

/* The backward reports each finished suffix of the gradients. */
static void grads_ready(void *ctx, size_t from) {
    gpu_run *r = ctx;
    cuda_comm_ready(r->comm, cuda_model_grads(r->g), from);
}

/* Backward, the gradients averaged over the ranks (cuda_comm; with NCCL,
 * each layer's as soon as the backward is past it), then the clip and
 * AdamW on the device. A failure on one rank reaches the others before the
 * rest of the mean, so none waits there for it. */
static int gpu_update(void *ctx, const rotary_adamw_config *ac) {
    gpu_run *r = ctx;
    float scale = 1.0f;
    if (r->d->size > 1) cuda_model_on_grads(r->g, grads_ready, r);
    int rc = cuda_model_backward(r->g);
    cuda_model_on_grads(r->g, NULL, NULL);
    if (r->d->size > 1 && (rc = rotary_dist_agree(r->d, rc)) == ROTARY_OK)
        rc = rotary_dist_agree(r->d, cuda_comm_mean(r->comm, cuda_model_grads(r->g)));
    if (rc) return rc;
    /* k micro-batches left k times the mean: AdamW reads the gradients
     * times 1/k and the clipping factor of their norm over k. */
    const float k = (float)train_accum(r->o);
    if (r->o->clip > 0) {
        /* Under ZeRO-1 each rank has the mean of its shard only: its
         * blocks' sums, then every rank's, added in one order. */
        rc = cuda_model_grad_sq_blocks(r->g, r->lo, r->hi, r->part);
        if (r->zero && (rc = rotary_dist_agree(r->d, rc)) == ROTARY_OK)
            rc = dist_allgather_norm_blocks(r->d, r->part, r->m->n_params);
        if (rc == ROTARY_OK)
            scale = rotary_clip_factor(rotary_grad_norm_of_blocks(r->part, r->nb) / k,
                                       r->o->clip);
    }
    if (rc == ROTARY_OK) rc = cuda_model_adamw_step(r->g, ac, scale / k);
    if (r->d->size > 1) rc = rotary_dist_agree(r->d, rc);
    if (rc == ROTARY_OK && r->zero) {
        rc = rotary_dist_agree(r->d, cuda_comm_allgather(r->comm, cuda_model_params(r->g)));
        if (rc == ROTARY_OK) cuda_model_params_changed(r->g);
    }
    return rc;
}

static int gpu_eval_forward(void *ctx, const int *tok, const int *tgt, int b, int T, float *loss) {
    return cuda_model_forward(ctx, tok, tgt, b, T, 0, loss);
}

static int gpu_eval(void *ctx, float *loss) {
    gpu_run *r = ctx;
    const rotary_train_opts *o = r->o;
    return train_eval(o->val_ids, o->n_val, o->batch, r->m->cfg.ctx, o->eval_batches,
                      train_accum(o), o->seed, r->d, gpu_eval_forward, r->g, loss);
}

/* Bring weights and moments home, then save as rotary_train does (rank 0
 * writes, once the ranks' weights are seen to agree). */
static int gpu_save(void *ctx, long step, double elapsed) {
    gpu_run *r = ctx;
    int rc = rotary_dist_agree(r->d, cuda_model_download(r->g, r->m->params, NULL, r->opt));
    return rc ? rc : train_save(r->log, r->m, r->opt, r->zero, step, elapsed, r->d);
}

int cuda_train(rotary_model *m, const rotary_train_opts *o) {
    const rotary_dist *d = train_dist(o);
    train_log log;
    int rc = train_check_opts(m, o);
    if (rc || (rc = train_log_paths(&log, o->run_dir))) return rc;
    const int b = o->batch / d->size, T = m->cfg.ctx, zero = o->zero1 && d->size > 1;
    size_t lo = 0, hi = m->n_params;
    if (zero) rotary_dist_shard(d, m->n_params, d->rank, &lo, &hi);
    rotary_adamw opt;
    if ((rc = rotary_adamw_init(&opt, hi - lo))) return rc;
    opt.offset = lo;
    const size_t nb = (m->n_params + ROTARY_NORM_BLOCK - 1) / ROTARY_NORM_BLOCK;
    gpu_run r = {.m = m, .opt = &opt, .o = o, .d = d, .log = &log, .zero = zero, .lo = lo,
                 .hi = hi, .part = malloc((nb + 1) * sizeof(double)), .nb = nb, .b = b,
                 .i0 = d->rank * b,
                 .tok = malloc(2 * (size_t)b * T * sizeof(int))};
    long start;
    double elapsed0;
    if (!r.tok || !r.part) rc = rotary_fail(ROTARY_ENOMEM, "train: out of memory");
    /* The GPU first: the ranks on one machine take different ones. */
    if (rc == ROTARY_OK) rc = cuda_device_use(d->local_rank);
    if (rc == ROTARY_OK && (rc = cuda_model_new(&r.g, m)) == ROTARY_OK &&
        (rc = cuda_model_trainable(r.g, lo, hi)) == ROTARY_OK)
        rc = cuda_model_reserve(r.g, b / train_accum(o), T);
    if (d->size > 1 && (rc = rotary_dist_agree(d, rc)) == ROTARY_OK &&
        (rc = cuda_comm_new(&r.comm, d, m->n_params, zero)) == ROTARY_OK && d->rank == 0)
        fprintf(stderr, "rotary: gradients averaged through %s\n", cuda_comm_how(r.comm));
    if ((rc = rotary_dist_agree(d, rc)) == ROTARY_OK &&
        (rc = train_resume(&log, m, &opt, o, &start, &elapsed0)) == ROTARY_OK &&
        (rc = rotary_dist_agree(d, cuda_model_upload(r.g, NULL, &opt))) == ROTARY_OK) {
        const train_device dev = {&r, gpu_forward, gpu_update, gpu_eval, gpu_save};
        rc = train_loop(&log, m, o, start, elapsed0, &dev);
    }
    rc = train_log_close(&log, rc);
    if (r.g && rc == ROTARY_OK) rc = cuda_model_download(r.g, m->params, NULL, NULL);
    cuda_model_free(r.g);
    free(r.tok);
    free(r.part);
    cuda_comm_free(r.comm);
    rotary_adamw_free(&opt);
    return rc;
}
