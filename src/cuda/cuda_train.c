/* cuda_train.c: rotary_train (src/train.c) with the steps on the GPU. The
 * schedule, the batches (rotary_batch), metrics.csv and the checkpoints are
 * the same, so a run may be resumed on either device; the host copy of the
 * weights and AdamW state is refreshed only when a checkpoint is written. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "cuda/cuda_model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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

/* Bring weights and moments home, then write the checkpoint as train.c does. */
static int save(train_log *l, cuda_model *g, rotary_model *m, rotary_adamw *opt, long step,
                double elapsed) {
    int rc = cuda_model_download(g, m->params, NULL, opt);
    if (rc == ROTARY_OK) rc = train_log_sync(l);
    return rc ? rc : train_log_checkpoint(l, m, opt, step, elapsed);
}

int cuda_train(rotary_model *m, const rotary_train_opts *o) {
    const int B = o->batch, T = m->cfg.ctx;
    train_log log;
    int rc = train_check_opts(m, o);
    if (rc || (rc = train_log_paths(&log, o->run_dir))) return rc;
    const char *ckpt = log.ckpt;
    cuda_model *g = NULL;
    rotary_adamw opt;
    if ((rc = rotary_adamw_init(&opt, m->n_params))) return rc;
    int *tok = malloc(2 * (size_t)B * T * sizeof(int));
    if (!tok) {
        rc = rotary_fail(ROTARY_ENOMEM, "train: out of memory");
        goto out;
    }
    int *tgt = tok + (size_t)B * T;
    long start = 0;
    double elapsed0 = 0;
    const int resumed = o->resume && access(ckpt, F_OK) == 0;
    if (resumed && ((rc = rotary_checkpoint_load_optim(ckpt, m, &opt)) ||
                    (rc = train_log_resume_point(&log, &opt, &start, &elapsed0))))
        goto out;
    if ((rc = train_log_open(&log, resumed, start))) goto out;
    if ((rc = cuda_model_new(&g, m)) || (rc = cuda_model_upload(g, NULL, &opt)) ||
        (rc = cuda_model_reserve(g, B, T)))
        goto out;

    rotary_adamw_config ac = {o->lr, o->beta1, o->beta2, o->eps, o->weight_decay};
    rotary_train_status st = {start, o->steps, NAN, NAN, 0, 0, 0, elapsed0};
    long last_saved = start;
    double t_prev = now_s();
    for (long step = start; step < o->steps; step++) {
        rotary_batch(o->train_ids, o->n_train, B, T, o->seed, (uint64_t)step, tok, tgt);
        float loss, norm, scale = 1.0f;
        if ((rc = cuda_model_zero_grad(g)) || (rc = cuda_model_forward(g, tok, tgt, B, T, 1, &loss)))
            goto out;
        if (!isfinite(loss)) {
            rc = rotary_fail(ROTARY_EINVAL, "loss is %f at step %ld; stopped, the last good "
                             "checkpoint (step %ld) is kept in %s", loss, step + 1, last_saved, ckpt);
            goto out;
        }
        if ((rc = cuda_model_backward(g))) goto out;
        if (o->clip > 0) {
            if ((rc = cuda_model_grad_norm(g, &norm))) goto out;
            scale = rotary_clip_factor(norm, o->clip);
        }
        ac.lr = rotary_lr_at(step, o->warmup, o->steps, o->lr, o->min_lr);
        if ((rc = cuda_model_adamw_step(g, &ac, scale))) goto out;

        st.step = step + 1;
        st.train_loss = loss;
        st.lr = ac.lr;
        st.evaluated = (o->eval_every && st.step % o->eval_every == 0) || st.step == o->steps;
        if (st.evaluated && (rc = cuda_eval_loss(g, o->val_ids, o->n_val, B, o->eval_batches,
                                                 o->seed, &st.val_loss)))
            goto out;
        double t = now_s();
        st.elapsed_s += t - t_prev;
        st.tokens_per_s = (double)B * T / (t - t_prev);
        t_prev = t;
        if ((rc = train_log_row(&log, &st, last_saved))) goto out;
        int stop = o->on_step ? o->on_step(o->ctx, &st) : 0;
        if (stop || st.step == o->steps || (o->ckpt_every && st.step % o->ckpt_every == 0)) {
            if ((rc = save(&log, g, m, &opt, st.step, st.elapsed_s))) goto out;
            last_saved = st.step;
            t_prev = now_s();
        }
        if (stop) {
            rc = rotary_fail(ROTARY_EINTR, "stopped at step %ld; checkpoint saved to %s", st.step, ckpt);
            goto out;
        }
    }
out:
    rc = train_log_close(&log, rc);
    if (g && rc == ROTARY_OK) rc = cuda_model_download(g, m->params, NULL, NULL);
    cuda_model_free(g);
    free(tok);
    rotary_adamw_free(&opt);
    return rc;
}
