/* train.c: the training loop: schedule, evaluation, metrics, checkpoints and
 * resume. Everything a step depends on (batch, learning rate, optimizer
 * state) is a function of the seed, the step number and the checkpoint, so a
 * resumed run repeats the bits of one that never stopped.
 *
 * With several ranks (rotary_dist) each takes its slice of every batch, the
 * gradients are averaged (dist.c), and every rank takes the same step; with
 * ZeRO-1 each rank updates its shard and the shards are all-gathered. Every
 * failure that could strike one rank alone goes through rotary_dist_agree,
 * so the ranks stop together instead of waiting for each other. */
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

/* One process alone: what opts without a dist mean. */
static const rotary_dist ONE = {.rank = 0, .size = 1, .local_size = 1};

const rotary_dist *train_dist(const rotary_train_opts *o) { return o->dist ? o->dist : &ONE; }

int train_micro_forward(const int *tok, const int *tgt, int b, int T, int k, train_eval_fn fwd,
                        int (*bwd)(void *ctx), void *ctx, float *loss) {
    const int mb = b / k;
    double sum = 0;
    for (int i = 0; i < k; i++) {
        const size_t at = (size_t)i * mb * T;
        float l;
        int rc = fwd(ctx, tok + at, tgt + at, mb, T, &l);
        if (rc == ROTARY_OK && bwd && i < k - 1) rc = bwd(ctx);
        if (rc) return rc;
        sum += l;
    }
    *loss = (float)(sum / k);
    return ROTARY_OK;
}

int train_eval(const int *ids, size_t n, int B, int T, int n_batches, int parts, uint64_t seed,
               const rotary_dist *d, train_eval_fn fwd, void *ctx, float *loss) {
    if (!d) d = &ONE;
    const int b = B / d->size, i0 = d->rank * b;
    if (n < (size_t)T + 1)
        return rotary_fail(ROTARY_EINVAL, "evaluation data has %zu tokens, fewer than one context "
                           "window (%d + 1)", n, T);
    int *tok = malloc(2 * (size_t)b * T * sizeof(int));
    int rc = tok ? ROTARY_OK : rotary_fail(ROTARY_ENOMEM, "eval: out of memory");
    double x[2] = {0, 0}; /* the sum of the batch means, failures */
    for (int i = 0; i < n_batches && rc == ROTARY_OK; i++) {
        /* A seed of their own keeps eval windows apart from training ones. */
        rotary_batch_slice(ids, n, B, T, seed ^ 0x5EEDE7A1ull, (uint64_t)i, i0, i0 + b, tok,
                           tok + (size_t)b * T);
        float l = 0;
        rc = train_micro_forward(tok, tok + (size_t)b * T, b, T, parts, fwd, NULL, ctx, &l);
        x[0] += l;
    }
    free(tok);
    x[1] = rc != ROTARY_OK;
    int rc2 = dist_sum(d, x, 2);
    if (rc == ROTARY_OK && rc2 == ROTARY_OK && x[1] > 0)
        rc = rotary_fail(ROTARY_EINVAL, "evaluation failed on another rank");
    if (rc == ROTARY_OK) rc = rc2;
    if (rc == ROTARY_OK) *loss = (float)(x[0] / ((double)n_batches * d->size));
    return rc;
}

static int cpu_eval_forward(void *ctx, const int *tok, const int *tgt, int b, int T, float *loss) {
    return rotary_model_forward(ctx, tok, tgt, b, T, loss);
}

int rotary_eval_loss(rotary_model *m, const int *ids, size_t n, int B, int n_batches,
                     uint64_t seed, float *loss) {
    return train_eval(ids, n, B, m->cfg.ctx, n_batches, 1, seed, &ONE, cpu_eval_forward, m, loss);
}

/* ------------------------------------------------ the run directory's files */

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

int train_log_paths(train_log *l, const char *run_dir) {
    memset(l, 0, sizeof *l);
    if (snprintf(l->ckpt, sizeof l->ckpt, "%s/checkpoint.safetensors", run_dir) >= (int)sizeof l->ckpt ||
        snprintf(l->metrics, sizeof l->metrics, "%s/metrics.csv", run_dir) >= (int)sizeof l->metrics)
        return rotary_fail(ROTARY_EINVAL, "run directory path too long");
    return ROTARY_OK;
}

static int train_log_resume_point(const train_log *l, const rotary_adamw *opt, long *start,
                                  double *elapsed) {
    rotary_st_file *f;
    int rc = rotary_st_open(&f, l->ckpt);
    if (rc) return rc;
    const char *s = rotary_st_meta(f, "train.step"), *e = rotary_st_meta(f, "train.elapsed_s");
    *start = s ? atol(s) : -1;
    *elapsed = e ? atof(e) : 0;
    rotary_st_close(f);
    if (*start < 0 || *start != opt->step)
        return rotary_fail(ROTARY_EFORMAT, "%s: inconsistent training step", l->ckpt);
    return ROTARY_OK;
}

static int train_log_open(train_log *l, int resumed, long start) {
    if (resumed) {
        int rc = trim_metrics(l->metrics, start);
        if (rc) return rc;
        l->mf = fopen(l->metrics, "ab");
    } else {
        l->mf = fopen(l->metrics, "wb");
        if (l->mf) fputs("step,train_loss,val_loss,lr,tokens_per_s,elapsed_s\n", l->mf);
    }
    if (!l->mf) return rotary_fail(ROTARY_EIO, "%s: cannot write: %s", l->metrics, strerror(errno));
    return ROTARY_OK;
}

static int train_log_row(train_log *l, const rotary_train_status *st, long last_saved) {
    char val[32] = "";
    if (st->evaluated) snprintf(val, sizeof val, "%.6f", st->val_loss);
    fprintf(l->mf, "%ld,%.6f,%s,%.6e,%.1f,%.3f\n", st->step, st->train_loss, val, st->lr,
            st->tokens_per_s, st->elapsed_s);
    if (fflush(l->mf) != 0 || ferror(l->mf))
        return rotary_fail(ROTARY_EIO, "%s: cannot write: %s; the last checkpoint (step %ld) "
                           "is kept in %s", l->metrics, strerror(errno), last_saved, l->ckpt);
    return ROTARY_OK;
}

static int train_log_sync(train_log *l) {
    /* The rows up to a checkpoint must outlive it (a power cut). */
    if (l->mf && fsync(fileno(l->mf)) != 0)
        return rotary_fail(ROTARY_EIO, "%s: cannot sync: %s", l->metrics, strerror(errno));
    return ROTARY_OK;
}

int train_log_checkpoint(const train_log *l, const rotary_model *m, const rotary_adamw *opt,
                         long step, double elapsed) {
    char s_step[32], s_el[32];
    snprintf(s_step, sizeof s_step, "%ld", step);
    snprintf(s_el, sizeof s_el, "%.3f", elapsed);
    const char *meta[] = {"train.step", s_step, "train.elapsed_s", s_el};
    return rotary_checkpoint_save_state(l->ckpt, m, opt, meta, 2);
}

int train_log_close(train_log *l, int rc) {
    if (l->mf && fclose(l->mf) != 0 && rc == ROTARY_OK)
        rc = rotary_fail(ROTARY_EIO, "%s: write failed", l->metrics);
    l->mf = NULL;
    return rc;
}

/* ------------------------------------------------------------ training */

/* FNV-1a over the weights' 32-bit words, for checking that ranks agree. */
static uint64_t weights_hash(const rotary_model *m) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < m->n_params; i++) {
        uint32_t w;
        memcpy(&w, m->params + i, 4);
        h = (h ^ w) * 0x100000001b3ull;
    }
    return h;
}

int train_save(const train_log *l, const rotary_model *m, const rotary_adamw *opt, int zero,
               long step, double elapsed, const rotary_dist *d) {
    /* Without ZeRO-1 every rank holds its own copy of the weights, updated
     * by the same averaged gradients: check that they still agree. */
    int same, rc = dist_same(d, d->size > 1 ? weights_hash(m) : 0, &same);
    if (rc == ROTARY_OK && !same)
        rc = rotary_fail(ROTARY_EINVAL, "the ranks' weights differ at step %ld", step);
    if (rc) return rotary_dist_agree(d, rc);
    if (!zero) {
        rc = d->rank == 0 ? train_log_checkpoint(l, m, opt, step, elapsed) : ROTARY_OK;
        return rotary_dist_agree(d, rc);
    }
    rotary_adamw full = {0};
    if (d->rank == 0) rc = rotary_adamw_init(&full, m->n_params);
    if ((rc = rotary_dist_agree(d, rc))) return rc;
    full.step = opt->step;
    if ((rc = dist_gather(d, opt->m, full.m, m->n_params)) == ROTARY_OK &&
        (rc = dist_gather(d, opt->v, full.v, m->n_params)) == ROTARY_OK && d->rank == 0)
        rc = train_log_checkpoint(l, m, &full, step, elapsed);
    rotary_adamw_free(&full);
    return rotary_dist_agree(d, rc);
}

int train_accum(const rotary_train_opts *o) { return o->accum > 1 ? o->accum : 1; }

int train_check_opts(const rotary_model *m, const rotary_train_opts *o) {
    const rotary_dist *d = train_dist(o);
    const int T = m->cfg.ctx;
    if (o->batch < 1 || o->steps < 1 || o->warmup < 0 || o->eval_batches < 1 ||
        o->eval_every < 0 || o->ckpt_every < 0)
        return rotary_fail(ROTARY_EINVAL, "train: batch, steps and eval batches must be positive");
    if (d->size < 1 || d->rank < 0 || d->rank >= d->size)
        return rotary_fail(ROTARY_EINVAL, "train: bad rank %d of %d", d->rank, d->size);
    if (o->batch % d->size)
        return rotary_fail(ROTARY_EINVAL, "train: the batch (%d) must be a multiple of the number "
                           "of ranks (%d): each rank takes an equal slice", o->batch, d->size);
    if (o->accum < 0 || (o->batch / d->size) % train_accum(o))
        return rotary_fail(ROTARY_EINVAL, "train: the batch a rank takes (%d) must be a multiple "
                           "of the micro-batches a step (--grad-accum %d)", o->batch / d->size,
                           o->accum);
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

size_t rotary_train_optim_bytes(const rotary_model *m, const rotary_train_opts *o) {
    size_t lo = 0, hi = m->n_params;
    if (o->zero1 && o->dist) rotary_dist_shard(o->dist, m->n_params, o->dist->rank, &lo, &hi);
    return 2 * (hi - lo) * sizeof(float);
}

/* The backward pass reports each finished suffix of the gradients. */
static void grads_ready(void *ctx, size_t from) { dist_grads_ready(ctx, from); }

/* Backward, with the gradients averaged over the ranks as they come (the
 * buckets of the layers done are on their way while earlier layers are
 * differentiated). Without ZeRO-1 every rank receives the whole mean; with
 * it, the mean of its shard only (reduce-scatter). */
static int backward(rotary_model *m, int zero, const rotary_dist *d) {
    if (d->size <= 1) return rotary_model_backward(m);
    int rc = dist_grads_start(d, m->grads, m->n_params, zero);
    if (rc) return rc;
    m->grads_ready = grads_ready, m->grads_ready_ctx = (void *)d;
    rc = rotary_model_backward(m);
    m->grads_ready = NULL, m->grads_ready_ctx = NULL;
    int rc2 = dist_grads_finish(d); /* even after a failure: no request left behind */
    return rc ? rc : rc2;
}

/* Clip the averaged gradients by their global norm and take the AdamW step.
 * Without ZeRO-1 every rank updates every weight; with it, each computes
 * the norm from every shard's block sums (the same blocks, added in the
 * same order, as one process), updates its shard and all-gathers the
 * weights. */
static int update(rotary_model *m, rotary_adamw *opt, int zero, const rotary_adamw_config *ac,
                  float clip, double *part, const rotary_dist *d) {
    const size_t n = m->n_params, lo = opt->offset, hi = opt->offset + opt->n;
    int rc;
    if (!zero) { /* the whole state on every rank */
        if (clip > 0) rotary_clip_grad_norm(m->grads, n, clip);
        rotary_adamw_step(opt, m, ac);
        return ROTARY_OK;
    }
    if (clip > 0) {
        const size_t nb = (n + ROTARY_NORM_BLOCK - 1) / ROTARY_NORM_BLOCK;
        rotary_grad_sq_blocks(m->grads + lo, hi - lo, part + lo / ROTARY_NORM_BLOCK);
        if ((rc = dist_allgather_norm_blocks(d, part, n))) return rc;
        const float s = rotary_clip_factor(rotary_grad_norm_of_blocks(part, nb), clip);
        if (s < 1.0f) {
            float *g = m->grads;
#pragma omp parallel for schedule(static)
            for (size_t i = lo; i < hi; i++) g[i] *= s;
        }
    }
    rotary_adamw_step(opt, m, ac);
    return dist_allgather(d, m->params, n);
}

int train_resume(train_log *l, rotary_model *m, rotary_adamw *opt, const rotary_train_opts *o,
                 long *start, double *elapsed) {
    const rotary_dist *d = train_dist(o);
    *start = 0, *elapsed = 0;
    /* Every rank reads the checkpoint (its shard of the AdamW state). */
    double have[1] = {o->resume && access(l->ckpt, F_OK) == 0};
    int rc = dist_sum(d, have, 1);
    if (rc) return rc;
    if (have[0] > 0 && have[0] < d->size)
        return rotary_fail(ROTARY_EIO, "%s: only %g of %d ranks see the checkpoint (the run "
                           "directory must be on a file system they share)", l->ckpt, have[0],
                           d->size);
    if (have[0] > 0 && (rc = rotary_checkpoint_load_optim(l->ckpt, m, opt)) == ROTARY_OK)
        rc = train_log_resume_point(l, opt, start, elapsed);
    if (rc == ROTARY_OK && d->rank == 0) rc = train_log_open(l, have[0] > 0, *start);
    return rotary_dist_agree(d, rc);
}

int train_loop(train_log *l, const rotary_model *m, const rotary_train_opts *o, long start,
               double elapsed0, const train_device *dev) {
    const rotary_dist *d = train_dist(o);
    const int leader = d->rank == 0, B = o->batch, T = m->cfg.ctx;
    rotary_adamw_config ac = {o->lr, o->beta1, o->beta2, o->eps, o->weight_decay};
    rotary_train_status st = {start, o->steps, NAN, NAN, 0, 0, 0, elapsed0};
    long last_saved = start;
    double t_prev = now_s();
    int rc = ROTARY_OK;
    for (long step = start; step < o->steps; step++) {
        float loss;
        rc = dev->forward(dev->ctx, step, &loss);
        /* The loss of the whole batch: the mean of the ranks' means (and
         * whether any rank failed, in the same call). */
        double x[2] = {rc == ROTARY_OK ? loss : 0, rc != ROTARY_OK};
        int rc2 = dist_sum(d, x, 2);
        if (rc == ROTARY_OK && rc2 == ROTARY_OK && x[1] > 0)
            rc = rotary_fail(ROTARY_EINVAL, "the forward pass failed on another rank");
        if (rc || (rc = rc2)) return rc;
        loss = (float)(x[0] / d->size);
        if (!isfinite(loss))
            return rotary_fail(ROTARY_EINVAL, "loss is %f at step %ld; stopped, the last good "
                               "checkpoint (step %ld) is kept in %s", loss, step + 1, last_saved,
                               l->ckpt);
        ac.lr = rotary_lr_at(step, o->warmup, o->steps, o->lr, o->min_lr);
        if ((rc = dev->update(dev->ctx, &ac))) return rc;

        st.step = step + 1;
        st.train_loss = loss;
        st.lr = ac.lr;
        st.evaluated = (o->eval_every && st.step % o->eval_every == 0) || st.step == o->steps;
        if (st.evaluated && (rc = dev->eval(dev->ctx, &st.val_loss))) return rc;
        double t = now_s();
        st.elapsed_s += t - t_prev;
        st.tokens_per_s = (double)B * T / (t - t_prev);
        t_prev = t;
        if (leader) rc = train_log_row(l, &st, last_saved);
        /* A failed metrics write (rank 0) stops every rank; any rank asked
         * to stop (a signal) stops them all at this step. */
        if ((rc = rotary_dist_agree(d, rc))) return rc;
        double stop[1] = {o->on_step ? o->on_step(o->ctx, &st) != 0 : 0};
        if ((rc = dist_sum(d, stop, 1))) return rc;
        if (stop[0] > 0 || st.step == o->steps || (o->ckpt_every && st.step % o->ckpt_every == 0)) {
            if ((rc = rotary_dist_agree(d, train_log_sync(l))) ||
                (rc = dev->save(dev->ctx, st.step, st.elapsed_s)))
                return rc;
            last_saved = st.step;
            t_prev = now_s(); /* checkpoint time is not training time */
        }
        if (stop[0] > 0)
            return rotary_fail(ROTARY_EINTR, "stopped at step %ld; checkpoint saved to %s", st.step,
                               l->ckpt);
    }
    return ROTARY_OK;
}

/* rotary_train's device: this process's CPU, its slice of each batch. */
typedef struct {
    rotary_model *m;
    rotary_adamw *opt;
    const rotary_train_opts *o;
    const rotary_dist *d;
    const train_log *log;
    int zero, b, i0;
    int *tok;
    double *part;
} cpu_run;

static int cpu_backward(void *ctx) { return rotary_model_backward(ctx); }

static int cpu_forward(void *ctx, long step, float *loss) {
    cpu_run *r = ctx;
    const rotary_train_opts *o = r->o;
    const int T = r->m->cfg.ctx;
    int *tgt = r->tok + (size_t)r->b * T;
    rotary_batch_slice(o->train_ids, o->n_train, o->batch, T, o->seed, (uint64_t)step, r->i0,
                       r->i0 + r->b, r->tok, tgt);
    rotary_model_zero_grad(r->m);
    return train_micro_forward(r->tok, tgt, r->b, T, train_accum(o), cpu_eval_forward,
                               cpu_backward, r->m, loss);
}

static int cpu_update(void *ctx, const rotary_adamw_config *ac) {
    cpu_run *r = ctx;
    int rc = backward(r->m, r->zero, r->d);
    const int k = train_accum(r->o);
    if (rc == ROTARY_OK && k > 1) { /* the sum of k means: the mean */
        const size_t lo = r->opt->offset, hi = lo + r->opt->n; /* all, or the shard */
        const float s = 1.0f / (float)k;
        float *g = r->m->grads;
#pragma omp parallel for schedule(static)
        for (size_t i = lo; i < hi; i++) g[i] *= s;
    }
    return rc ? rc : update(r->m, r->opt, r->zero, ac, r->o->clip, r->part, r->d);
}

static int cpu_eval(void *ctx, float *loss) {
    cpu_run *r = ctx;
    const rotary_train_opts *o = r->o;
    return train_eval(o->val_ids, o->n_val, o->batch, r->m->cfg.ctx, o->eval_batches,
                      train_accum(o), o->seed, r->d, cpu_eval_forward, r->m, loss);
}

static int cpu_save(void *ctx, long step, double elapsed) {
    cpu_run *r = ctx;
    return train_save(r->log, r->m, r->opt, r->zero, step, elapsed, r->d);
}

int rotary_train(rotary_model *m, const rotary_train_opts *o) {
    const rotary_dist *d = train_dist(o);
    int rc = train_check_opts(m, o);
    if (rc) return rc;
    const int B = o->batch, b = B / d->size, T = m->cfg.ctx;
    const size_t n = m->n_params;
    train_log log;
    if ((rc = train_log_paths(&log, o->run_dir))) return rc;

    /* The AdamW state: all of it, or this rank's shard (ZeRO-1; with one
     * rank the shard is everything and the plain path does the same). */
    const int zero = o->zero1 && d->size > 1;
    size_t lo = 0, hi = n;
    if (zero) rotary_dist_shard(d, n, d->rank, &lo, &hi);
    rotary_adamw opt = {0};
    cpu_run r = {m, &opt, o, d, &log, zero, b, d->rank * b, NULL, NULL};
    if ((rc = rotary_adamw_init(&opt, hi - lo)) == ROTARY_OK) {
        opt.offset = lo;
        r.tok = malloc(2 * (size_t)b * T * sizeof(int));
        if (zero) r.part = malloc(((n + ROTARY_NORM_BLOCK - 1) / ROTARY_NORM_BLOCK + 1) * sizeof(double));
        if (!r.tok || (zero && !r.part)) rc = rotary_fail(ROTARY_ENOMEM, "train: out of memory");
    }
    if (rc == ROTARY_OK) rc = rotary_model_reserve(m, b / train_accum(o), T);
    if (rc == ROTARY_OK) rc = dist_grads_prepare(d, n);
    long start;
    double elapsed0;
    if ((rc = rotary_dist_agree(d, rc)) == ROTARY_OK &&
        (rc = train_resume(&log, m, &opt, o, &start, &elapsed0)) == ROTARY_OK) {
        const train_device dev = {&r, cpu_forward, cpu_update, cpu_eval, cpu_save};
        rc = train_loop(&log, m, o, start, elapsed0, &dev);
    }
    rc = train_log_close(&log, rc);
    free(r.tok);
    free(r.part);
    rotary_adamw_free(&opt);
    return rc;
}
