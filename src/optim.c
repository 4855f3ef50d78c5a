/* optim.c: AdamW, gradient clipping and the learning-rate schedule. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>

int rotary_adamw_init(rotary_adamw *o, size_t n) {
    o->n = n;
    o->offset = 0;
    o->step = 0;
    o->m = rotary_alloc_floats(n, "AdamW first moment");
    o->v = o->m ? rotary_alloc_floats(n, "AdamW second moment") : NULL;
    if (!o->v) {
        rotary_adamw_free(o);
        return ROTARY_ENOMEM;
    }
    return ROTARY_OK;
}

void rotary_adamw_free(rotary_adamw *o) {
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
    o->n = 0;
}

void rotary_adamw_step(rotary_adamw *o, rotary_model *m, const rotary_adamw_config *c) {
    o->step++;
    /* torch.optim.AdamW: p -= lr*wd*p; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps) */
    const double bc1 = 1.0 - pow(c->beta1, (double)o->step);
    const float bc2_sqrt = (float)sqrt(1.0 - pow(c->beta2, (double)o->step));
    const float step_size = (float)(c->lr / bc1);
    const size_t lo = o->offset, hi = o->offset + o->n;
    for (int ti = 0; ti < m->n_tensors; ti++) {
        const rotary_tensor *t = &m->tensors[ti];
        /* The part of this tensor inside the state's range [lo, hi). */
        size_t a = t->offset > lo ? t->offset : lo;
        size_t b = t->offset + t->numel < hi ? t->offset + t->numel : hi;
        if (a >= b) continue;
        const float decay = t->decay ? 1.0f - c->lr * c->weight_decay : 1.0f;
        float *p = m->params + a, *g = m->grads + a;
        float *mm = o->m + (a - lo), *vv = o->v + (a - lo);
        const long n = (long)(b - a);
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) {
            mm[i] = c->beta1 * mm[i] + (1.0f - c->beta1) * g[i];
            vv[i] = c->beta2 * vv[i] + (1.0f - c->beta2) * g[i] * g[i];
            p[i] = p[i] * decay - step_size * mm[i] / (sqrtf(vv[i]) / bc2_sqrt + c->eps);
        }
    }
}

void rotary_grad_sq_blocks(const float *grads, size_t n, double *part) {
    size_t nb = (n + ROTARY_NORM_BLOCK - 1) / ROTARY_NORM_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t end = (b + 1) * ROTARY_NORM_BLOCK < n ? (b + 1) * ROTARY_NORM_BLOCK : n;
        double s = 0.0;
        for (size_t i = b * ROTARY_NORM_BLOCK; i < end; i++) s += (double)grads[i] * grads[i];
        part[b] = s;
    }
}

float rotary_grad_norm_of_blocks(const double *part, size_t n_blocks) {
    double total = 0.0;
    for (size_t b = 0; b < n_blocks; b++) total += part[b];
    return (float)sqrt(total);
}

float rotary_clip_factor(float norm, float max_norm) {
    float s = max_norm / (norm + 1e-6f); /* torch's clip_coef */
    return max_norm > 0 && s < 1.0f ? s : 1.0f;
}

float rotary_clip_grad_norm(float *grads, size_t n, float max_norm) {
    /* Blocked partial sums in double, added in a fixed order: the same bits
     * for every thread count (and for shards cut at block bounds). */
    size_t nb = (n + ROTARY_NORM_BLOCK - 1) / ROTARY_NORM_BLOCK;
    double one, *part = nb > 1 ? malloc(nb * sizeof(double)) : &one;
    float norm;
    if (part) {
        rotary_grad_sq_blocks(grads, n, part);
        norm = rotary_grad_norm_of_blocks(part, nb);
        if (part != &one) free(part);
    } else {
        double total = 0.0;
        for (size_t i = 0; i < n; i++) total += (double)grads[i] * grads[i];
        norm = (float)sqrt(total);
    }
    float s = rotary_clip_factor(norm, max_norm);
    if (s < 1.0f) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) grads[i] *= s;
    }
    return norm;
}

float rotary_lr_at(long step, long warmup, long total, float lr, float min_lr) {
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (step >= total) return min_lr;
    double frac = (double)(step - warmup) / (double)(total - warmup > 0 ? total - warmup : 1);
    return (float)(min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(3.141592653589793 * frac)));
}
