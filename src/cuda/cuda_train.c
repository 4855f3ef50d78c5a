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

/* Keep the header and the rows of metrics.csv up to `step` (as train.c). */
static int trim_metrics(const char *path, long step) {
    FILE *f = fopen(path, "rb");
    if (!f) return rotary_fail(ROTARY_EIO, "%s: cannot open: %s", path, strerror(errno));
    char tmp[4200], line[1024];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *o = fopen(tmp, "wb");
    if (!o) {
        fclose(f);
        return rotary_fail(ROTARY_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    }
    int first = 1, ok = 1;
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        if (len == 0 || line[len - 1] != '\n') break;
        if (!first) {
            char *end;
            long s = strtol(line, &end, 10);
            if (end == line || *end != ',' || s > step) break;
        }
        first = 0;
        ok = ok && fputs(line, o) >= 0;
    }
    fclose(f);
    ok = ok && fflush(o) == 0 && fsync(fileno(o)) == 0;
    if (fclose(o) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return rotary_fail(ROTARY_EIO, "%s: cannot rewrite", path);
    }
    return ROTARY_OK;
}

/* Bring weights and moments home, then write the checkpoint as train.c does. */
static int save(const char *path, cuda_model *g, rotary_model *m, rotary_adamw *opt, long step,
                double elapsed) {
    int rc = cuda_model_download(g, m->params, NULL, opt);
    if (rc) return rc;
    char s_step[32], s_el[32];
    snprintf(s_step, sizeof s_step, "%ld", step);
    snprintf(s_el, sizeof s_el, "%.3f", elapsed);
    const char *meta[] = {"train.step", s_step, "train.elapsed_s", s_el};
    return rotary_checkpoint_save_state(path, m, opt, meta, 2);
}

int cuda_train(rotary_model *m, const rotary_train_opts *o) {
    const int B = o->batch, T = m->cfg.ctx;
    if (B < 1 || o->steps < 1 || o->warmup < 0 || o->eval_batches < 1 || o->eval_every < 0 ||
        o->ckpt_every < 0 || o->n_train < (size_t)T + 1 || o->n_val < (size_t)T + 1)
        return rotary_fail(ROTARY_EINVAL, "train: bad options or too little data (see rotary_train)");
    char ckpt[4096], metrics[4096];
    if (snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", o->run_dir) >= (int)sizeof ckpt ||
        snprintf(metrics, sizeof metrics, "%s/metrics.csv", o->run_dir) >= (int)sizeof metrics)
        return rotary_fail(ROTARY_EINVAL, "run directory path too long");
    cuda_model *g = NULL;
    rotary_adamw opt;
    int rc = rotary_adamw_init(&opt, m->n_params);
    if (rc) return rc;
    int *tok = malloc(2 * (size_t)B * T * sizeof(int));
    FILE *mf = NULL;
    if (!tok) {
        rc = rotary_fail(ROTARY_ENOMEM, "train: out of memory");
        goto out;
    }
    int *tgt = tok + (size_t)B * T;
    long start = 0;
    double elapsed0 = 0;
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
            const float s = o->clip / (norm + 1e-6f); /* torch's clip_coef */
            if (s < 1.0f) scale = s;
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
        char val[32] = "";
        if (st.evaluated) snprintf(val, sizeof val, "%.6f", st.val_loss);
        fprintf(mf, "%ld,%.6f,%s,%.6e,%.1f,%.3f\n", st.step, st.train_loss, val, st.lr,
                st.tokens_per_s, st.elapsed_s);
        fflush(mf);
        int stop = o->on_step ? o->on_step(o->ctx, &st) : 0;
        if (stop || st.step == o->steps || (o->ckpt_every && st.step % o->ckpt_every == 0)) {
            if ((rc = save(ckpt, g, m, &opt, st.step, st.elapsed_s))) goto out;
            last_saved = st.step;
            t_prev = now_s();
        }
        if (stop) {
            rc = rotary_fail(ROTARY_EINTR, "stopped at step %ld; checkpoint saved to %s", st.step, ckpt);
            goto out;
        }
    }
out:
    if (mf && fclose(mf) != 0 && rc == ROTARY_OK)
        rc = rotary_fail(ROTARY_EIO, "%s: write failed", metrics);
    if (g && rc == ROTARY_OK) rc = cuda_model_download(g, m->params, NULL, NULL);
    cuda_model_free(g);
    free(tok);
    rotary_adamw_free(&opt);
    return rc;
}
