/* cuda_train.c: rotary_train's loop (train_loop, src/train.c) with the
 * steps on the GPU. The schedule, the batches (rotary_batch), metrics.csv
 * and the checkpoints are the same, so a run may be resumed on either
 * device; the host copy of the weights and AdamW state is refreshed only
 * when a checkpoint is written. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "cuda/cuda_model.h"

#include <stdio.h>
#include <stdlib.h>

int cuda_eval_loss(cuda_model *g, const int *ids, size_t n, int B, int n_batches, uint64_t seed,
                   float *loss) {
    const int T = cuda_model_ctx(g);
    if (n < (size_t)T + 1)
        return rotary_fail(ROTARY_EINVAL, "evaluation data has %zu tokens, fewer than one context "
                           "window (%d + 1)", n, T);
    int *tok = malloc(2 * (size_t)B * T * sizeof(int));
    if (!tok) return rotary_fail(ROTARY_ENOMEM, "eval: out of memory");
    double total = 0;
    int rc = ROTARY_OK;
    for (int i = 0; i < n_batches && rc == ROTARY_OK; i++) {
        float l;
        /* The seed rotary_eval_loss uses: the same windows on both devices. */
        rotary_batch(ids, n, B, T, seed ^ 0x5EEDE7A1ull, (uint64_t)i, tok, tok + (size_t)B * T);
        rc = cuda_model_forward(g, tok, tok + (size_t)B * T, B, T, 0, &l);
        total += l;
    }
    free(tok);
    if (rc == ROTARY_OK) *loss = (float)(total / n_batches);
    return rc;
}

/* cuda_train's device: the GPU; the batch and the optimizer state mirror
 * rotary_train's on one process. */
typedef struct {
    cuda_model *g;
    rotary_model *m;
    rotary_adamw *opt;
    const rotary_train_opts *o;
    const train_log *log;
    int *tok;
} gpu_run;

static int gpu_forward(void *ctx, long step, float *loss) {
    gpu_run *r = ctx;
    const rotary_train_opts *o = r->o;
    const int B = o->batch, T = r->m->cfg.ctx;
    int *tgt = r->tok + (size_t)B * T;
    rotary_batch(o->train_ids, o->n_train, B, T, o->seed, (uint64_t)step, r->tok, tgt);
    int rc = cuda_model_zero_grad(r->g);
    return rc ? rc : cuda_model_forward(r->g, r->tok, tgt, B, T, 1, loss);
}

static int gpu_update(void *ctx, const rotary_adamw_config *ac) {
    gpu_run *r = ctx;
    float norm, scale = 1.0f;
    int rc = cuda_model_backward(r->g);
    if (rc == ROTARY_OK && r->o->clip > 0 && (rc = cuda_model_grad_norm(r->g, &norm)) == ROTARY_OK)
        scale = rotary_clip_factor(norm, r->o->clip);
    return rc ? rc : cuda_model_adamw_step(r->g, ac, scale);
}

static int gpu_eval(void *ctx, float *loss) {
    gpu_run *r = ctx;
    const rotary_train_opts *o = r->o;
    return cuda_eval_loss(r->g, o->val_ids, o->n_val, o->batch, o->eval_batches, o->seed, loss);
}

/* Bring weights and moments home, then write the checkpoint as train.c does. */
static int gpu_save(void *ctx, long step, double elapsed) {
    gpu_run *r = ctx;
    int rc = cuda_model_download(r->g, r->m->params, NULL, r->opt);
    return rc ? rc : train_log_checkpoint(r->log, r->m, r->opt, step, elapsed);
}

int cuda_train(rotary_model *m, const rotary_train_opts *o) {
    const int B = o->batch, T = m->cfg.ctx;
    if (o->dist && o->dist->size > 1)
        return rotary_fail(ROTARY_EINVAL, "train: --device cuda runs on one process, not %d ranks",
                           o->dist->size);
    train_log log;
    int rc = train_check_opts(m, o);
    if (rc || (rc = train_log_paths(&log, o->run_dir))) return rc;
    rotary_adamw opt;
    if ((rc = rotary_adamw_init(&opt, m->n_params))) return rc;
    gpu_run r = {NULL, m, &opt, o, &log, malloc(2 * (size_t)B * T * sizeof(int))};
    long start;
    double elapsed0;
    if (!r.tok) rc = rotary_fail(ROTARY_ENOMEM, "train: out of memory");
    if (rc == ROTARY_OK && (rc = train_resume(&log, m, &opt, o, &start, &elapsed0)) == ROTARY_OK &&
        (rc = cuda_model_new(&r.g, m)) == ROTARY_OK &&
        (rc = cuda_model_upload(r.g, NULL, &opt)) == ROTARY_OK &&
        (rc = cuda_model_reserve(r.g, B, T)) == ROTARY_OK) {
        const train_device dev = {&r, gpu_forward, gpu_update, gpu_eval, gpu_save};
        rc = train_loop(&log, m, o, start, elapsed0, &dev);
    }
    rc = train_log_close(&log, rc);
    if (r.g && rc == ROTARY_OK) rc = cuda_model_download(r.g, m->params, NULL, NULL);
    cuda_model_free(r.g);
    free(r.tok);
    rotary_adamw_free(&opt);
    return rc;
}
