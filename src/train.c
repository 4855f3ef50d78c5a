/* train.c: the training loop: schedule, evaluation, metrics, checkpoints and
 * resume. Everything a step depends on (batch, learning rate, optimizer
 * state) is a function of the seed, the step number and the checkpoint, so a
 * resumed run repeats the bits of one that never stopped. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

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

int rotary_eval_loss(rotary_model *m, const int *ids, size_t n, int B, int n_batches,
                     uint64_t seed, float *loss) {
    const int T = m->cfg.ctx;
    if (n < (size_t)T + 1)
        return rotary_fail(ROTARY_EINVAL, "evaluation data has %zu tokens, fewer than one context "
                           "window (%d + 1)", n, T);
    int *tok = malloc(2 * (size_t)B * T * sizeof(int));
    if (!tok) return rotary_fail(ROTARY_ENOMEM, "eval: out of memory");
    double total = 0;
    int rc = ROTARY_OK;
    for (int i = 0; i < n_batches && rc == ROTARY_OK; i++) {
        float l;
        /* A seed of their own keeps eval windows apart from training ones. */
        rotary_batch(ids, n, B, T, seed ^ 0x5EEDE7A1ull, (uint64_t)i, tok, tok + (size_t)B * T);
        rc = rotary_model_forward(m, tok, tok + (size_t)B * T, B, T, &l);
        total += l;
    }
    free(tok);
    if (rc == ROTARY_OK) *loss = (float)(total / n_batches);
    return rc;
}

/* Keep the header and the complete rows of metrics.csv up to `step`: a run
 * killed after its last checkpoint may have logged steps it will redo, and
 * the last of them may be torn. */
static int trim_metrics(const char *path, long step) {
    char *text;
    size_t n, keep = 0;
    int rc = rotary_read_file(path, (size_t)1 << 34, "metrics file", &text, &n);
    if (rc) return rc;
    for (size_t at = 0, row = 0; at < n; row++) {
        const char *nl = memchr(text + at, '\n', n - at);
        if (!nl) break; /* torn last line */
        if (row > 0) {
            char *end;
            long s = strtol(text + at, &end, 10);
            if (end == text + at || *end != ',' || s > step) break;
        }
        at = keep = (size_t)(nl - text) + 1;
    }
    rc = keep == n ? ROTARY_OK : rotary_write_file(path, text, keep);
    free(text);
    return rc;
}

static int save(const char *path, const rotary_model *m, const rotary_adamw *opt, long step,
                double elapsed) {
    char s_step[32], s_el[32];
    snprintf(s_step, sizeof s_step, "%ld", step);
    snprintf(s_el, sizeof s_el, "%.3f", elapsed);
    const char *meta[] = {"train.step", s_step, "train.elapsed_s", s_el};
    return rotary_checkpoint_save_state(path, m, opt, meta, 2);
}

static int check_opts(const rotary_model *m, const rotary_train_opts *o) {
    const int T = m->cfg.ctx;
    if (o->batch < 1 || o->steps < 1 || o->warmup < 0 || o->eval_batches < 1 ||
        o->eval_every < 0 || o->ckpt_every < 0)
        return rotary_fail(ROTARY_EINVAL, "train: batch, steps and eval batches must be positive");
    if (!(o->lr > 0) || !(o->min_lr >= 0) || !(o->weight_decay >= 0) || !(o->clip >= 0) ||
        !(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1) || !(o->eps > 0))
        return rotary_fail(ROTARY_EINVAL, "train: bad optimizer settings");
    if (o->n_train < (size_t)T + 1)
        return rotary_fail(ROTARY_EINVAL, "training text has %zu tokens, fewer than one context "
                           "window (%d + 1)", o->n_train, T);
    if (o->n_val < (size_t)T + 1)
        return rotary_fail(ROTARY_EINVAL, "validation text has %zu tokens, fewer than one context "
                           "window (%d + 1)", o->n_val, T);
    return ROTARY_OK;
}

int rotary_train(rotary_model *m, const rotary_train_opts *o) {
    int rc = check_opts(m, o);
    if (rc) return rc;
    const int B = o->batch, T = m->cfg.ctx;
    char ckpt[4096], metrics[4096];
    if (snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", o->run_dir) >= (int)sizeof ckpt ||
        snprintf(metrics, sizeof metrics, "%s/metrics.csv", o->run_dir) >= (int)sizeof metrics)
        return rotary_fail(ROTARY_EINVAL, "run directory path too long");

    rotary_adamw opt;
    if ((rc = rotary_adamw_init(&opt, m->n_params))) return rc;
    int *tok = malloc(2 * (size_t)B * T * sizeof(int));
    if (!tok) {
        rotary_adamw_free(&opt);
        return rotary_fail(ROTARY_ENOMEM, "train: out of memory");
    }
    int *tgt = tok + (size_t)B * T;
    long start = 0;
    double elapsed0 = 0;
    FILE *mf = NULL;
    if (o->resume && access(ckpt, F_OK) == 0) {
        rotary_st_file *f;
        if ((rc = rotary_checkpoint_load_optim(ckpt, m, &opt)) || (rc = rotary_st_open(&f, ckpt)))
            goto out;
        const char *s = rotary_st_meta(f, "train.step"), *e = rotary_st_meta(f, "train.elapsed_s");
        start = s ? atol(s) : -1;
        elapsed0 = e ? atof(e) : 0;
        rotary_st_close(f);
        if (start < 0 || start != opt.step) {
            rc = rotary_fail(ROTARY_EFORMAT, "%s: inconsistent training step", ckpt);
            goto out;
        }
        if ((rc = trim_metrics(metrics, start))) goto out;
        mf = fopen(metrics, "ab");
    } else {
        mf = fopen(metrics, "wb");
        if (mf) fputs("step,train_loss,val_loss,lr,tokens_per_s,elapsed_s\n", mf);
    }
    if (!mf) {
        rc = rotary_fail(ROTARY_EIO, "%s: cannot write: %s", metrics, strerror(errno));
        goto out;
    }
    if ((rc = rotary_model_reserve(m, B, T))) goto out;

    rotary_adamw_config ac = {o->lr, o->beta1, o->beta2, o->eps, o->weight_decay};
    rotary_train_status st = {start, o->steps, NAN, NAN, 0, 0, 0, elapsed0};
    long last_saved = start;
    double t_prev = now_s();
    for (long step = start; step < o->steps; step++) {
        rotary_batch(o->train_ids, o->n_train, B, T, o->seed, (uint64_t)step, tok, tgt);
        float loss;
        rotary_model_zero_grad(m);
        if ((rc = rotary_model_forward(m, tok, tgt, B, T, &loss))) goto out;
        if (!isfinite(loss)) {
            rc = rotary_fail(ROTARY_EINVAL, "loss is %f at step %ld; stopped, the last good "
                             "checkpoint (step %ld) is kept in %s", loss, step + 1, last_saved, ckpt);
            goto out;
        }
        if ((rc = rotary_model_backward(m))) goto out;
        if (o->clip > 0) rotary_clip_grad_norm(m->grads, m->n_params, o->clip);
        ac.lr = rotary_lr_at(step, o->warmup, o->steps, o->lr, o->min_lr);
        rotary_adamw_step(&opt, m, &ac);

        st.step = step + 1;
        st.train_loss = loss;
        st.lr = ac.lr;
        st.evaluated = (o->eval_every && st.step % o->eval_every == 0) || st.step == o->steps;
        if (st.evaluated &&
            (rc = rotary_eval_loss(m, o->val_ids, o->n_val, B, o->eval_batches, o->seed, &st.val_loss)))
            goto out;
        double t = now_s();
        st.elapsed_s += t - t_prev;
        st.tokens_per_s = (double)B * T / (t - t_prev);
        t_prev = t;
        char val[32] = "";
        if (st.evaluated) snprintf(val, sizeof val, "%.6f", st.val_loss);
        fprintf(mf, "%ld,%.6f,%s,%.6e,%.1f,%.3f\n", st.step, st.train_loss, val, st.lr,
                st.tokens_per_s, st.elapsed_s);
        if (fflush(mf) != 0 || ferror(mf)) {
            rc = rotary_fail(ROTARY_EIO, "%s: cannot write: %s; the last checkpoint (step %ld) "
                             "is kept in %s", metrics, strerror(errno), last_saved, ckpt);
            goto out;
        }
        int stop = o->on_step ? o->on_step(o->ctx, &st) : 0;
        if (stop || st.step == o->steps || (o->ckpt_every && st.step % o->ckpt_every == 0)) {
            /* The rows up to a checkpoint must outlive it (a power cut). */
            if (fsync(fileno(mf)) != 0) {
                rc = rotary_fail(ROTARY_EIO, "%s: cannot sync: %s", metrics, strerror(errno));
                goto out;
            }
            if ((rc = save(ckpt, m, &opt, st.step, st.elapsed_s))) goto out;
            last_saved = st.step;
            t_prev = now_s(); /* checkpoint time is not training time */
        }
        if (stop) {
            rc = rotary_fail(ROTARY_EINTR, "stopped at step %ld; checkpoint saved to %s", st.step, ckpt);
            goto out;
        }
    }
out:
    if (mf && fclose(mf) != 0 && rc == ROTARY_OK)
        rc = rotary_fail(ROTARY_EIO, "%s: write failed", metrics);
    free(tok);
    rotary_adamw_free(&opt);
    return rc;
}
