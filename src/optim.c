/* optim.c: AdamW, gradient clipping and the learning-rate schedule. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>

int rotary_adamw_init(rotary_adamw *o, size_t n) {
    o->n = n;
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
    for (int ti = 0; ti < m->n_tensors; ti++) {
        const rotary_tensor *t = &m->tensors[ti];
        const float decay = t->decay ? 1.0f - c->lr * c->weight_decay : 1.0f;
        float *p = m->params + t->offset, *g = m->grads + t->offset;
        float *mm = o->m + t->offset, *vv = o->v + t->offset;
        const long n = (long)t->numel;
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) {
            mm[i] = c->beta1 * mm[i] + (1.0f - c->beta1) * g[i];
            vv[i] = c->beta2 * vv[i] + (1.0f - c->beta2) * g[i] * g[i];
            p[i] = p[i] * decay - step_size * mm[i] / (sqrtf(vv[i]) / bc2_sqrt + c->eps);
        }
    }
}

float rotary_clip_grad_norm(float *grads, size_t n, float max_norm) {
    /* Blocked partial sums in double, added in a fixed order: the same bits
     * for every thread count. */
    enum { BLOCK = 16384 };
    size_t nb = (n + BLOCK - 1) / BLOCK;
    double total = 0.0;
    double *part = malloc((nb ? nb : 1) * sizeof(double));
    if (part) {
#pragma omp parallel for schedule(static)
        for (size_t b = 0; b < nb; b++) {
            size_t end = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;
            double s = 0.0;
            for (size_t i = b * BLOCK; i < end; i++) s += (double)grads[i] * grads[i];
            part[b] = s;
        }
        for (size_t b = 0; b < nb; b++) total += part[b];
        free(part);
    } else {
        for (size_t i = 0; i < n; i++) total += (double)grads[i] * grads[i];
    }
    float norm = (float)sqrt(total);
    float s = max_norm / (norm + 1e-6f); /* torch's clip_coef */
    if (max_norm > 0 && s < 1.0f) {
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
