/* cuda_model.c: the forward and backward passes of model.c on the GPU.
 *
 * The sequence of operations is model.c's, one kernel (kernels.h) for each
 * of its ops, with four differences: attention saves the log-sum-exp of
 * each row instead of the probabilities; q, k and v are stored per head,
 * rotated as they leave the qkv projection; the classifier of a training
 * forward leaves the loss gradient in place of the logits; and what only a
 * GEMM reads is kept in bf16 (the norms' outputs, the MLP activation and the
 * gradient of its input, a training step's logits and their gradient, and a
 * copy of the weights that AdamW refreshes), so that the GEMMs read their
 * operands as they are. The residual stream, the other saved activations,
 * gradients and the master weights stay fp32. */
#include "internal.h"
#include "matvec.h"
#include "model_internal.h"
#include "cuda/cuda_model.h"
#include "cuda/kernels.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cuda_model {
    const rotary_model *host;
    rotary_config cfg;
    size_t n_params;
    float *params;                 /* n_params */
    gpu_bf16 *params16;            /* the weights in bf16, for the GEMMs (need_bf16) */
    float *grads, *m, *v;          /* cuda_model_trainable: one allocation, n_params grads */
    size_t opt_lo, opt_n;          /* and the moments of parameters [opt_lo, opt_lo + opt_n) */
    long step;                     /* AdamW steps taken */
    float *cos, *sin, *pos_table, *alibi; /* position tables, or NULL */
    int *bucket;                   /* T5: rotary_t5_bucket of each distance < pos_len */
    int pos_len;                   /* positions the tables on the device cover */
    unsigned tables;               /* counts uploads of the tables (they move) */
    int B, T, cur_B, cur_T, trained; /* capacity, last forward, grads in logits */
    float *buf;                    /* fp32 activations, one allocation */
    float *res, *res_mid, *mean1, *rstd1, *q, *k, *v_, *attout, *lse;
    float *lqkv, *feat, *rfeat, *den, *dfeat, *drfeat; /* linear attention */
    float *mean2, *rstd2, *meanf, *rstdf, *logits, *lsef, *losses;
    float *qkv, *dres, *dq, *dk, *dv, *dattout, *dsum;
    float *t5tab, *dt5;            /* T5: (nh, T) bias by distance, (B, nh, T) its grad */
    gpu_bf16 *buf16;               /* bf16 activations (GEMM inputs), one allocation */
    gpu_bf16 *h1, *h2, *up, *act, *attout16, *hf, *dh, *dact, *dup, *dqkv16, *dres16;
    double *partial;               /* a sum of squares a GPU_NORM_BLOCK of the gradients */
    int *tokens, *targets;         /* (B*T) each, device */
    float *host_losses;            /* (B*T) */
    void (*on_grads)(void *, size_t); /* cuda_model_on_grads */
    void *on_grads_ctx;
};

static int cuda_fail(cudaError_t e, const char *what) {
    return rotary_fail(ROTARY_EIO, "cuda: %s: %s", what, cudaGetErrorString(e));
}

/* " (F of the GPU's T MiB are free)", or "" if that cannot be read: for
 * the message of an allocation that failed (whose error it clears). */
static const char *gpu_room(char *buf, size_t cap) {
    size_t free_b = 0, total_b = 0;
    (void)cudaGetLastError();
    buf[0] = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
        snprintf(buf, cap, " (%.0f of the GPU's %.0f MiB are free)", free_b / 1048576.0,
                 total_b / 1048576.0);
    return buf;
}

/* An allocation of `bytes` that failed with e. */
static int alloc_fail(cudaError_t e, const char *what, size_t bytes) {
    char room[96];
    return rotary_fail(ROTARY_ENOMEM, "cuda: %.1f MiB for %s: %s%s", bytes / 1048576.0, what,
                       cudaGetErrorString(e), gpu_room(room, sizeof room));
}

/* Wait for the queued kernels; a failed launch or kernel becomes an error. */
static int sync_ok(const char *what) {
    if (gpu_sync()) return rotary_fail(ROTARY_EIO, "cuda: %s: %s", what, gpu_last_error());
    return ROTARY_OK;
}

int cuda_device_check(void) {
    if (gpu_device_count() < 1) {
        const char *why = gpu_last_error();
        return rotary_fail(ROTARY_EINVAL, "--device cuda: no CUDA device%s%s", *why ? ": " : "",
                           why);
    }
    return ROTARY_OK;
}

int cuda_device_use(int local_rank) {
    const int n = gpu_device_count();
    if (n < 1) return cuda_device_check();
    cudaError_t e = cudaSetDevice(local_rank % n);
    return e ? cuda_fail(e, "choosing the GPU") : ROTARY_OK;
}

int cuda_config_check(const rotary_config *c) {
    const int hd = c->d_model / c->n_head;
    if (hd % 2 || hd > GPU_ATTN_MAX_HD)
        return rotary_fail(ROTARY_EINVAL, "--device cuda: head_dim %d must be even and at most %d",
                           hd, GPU_ATTN_MAX_HD);
    if (c->d_model > 12288)
        return rotary_fail(ROTARY_EINVAL, "--device cuda: d_model %d is above 12288", c->d_model);
    return ROTARY_OK;
}

static void free_acts(cuda_model *g) {
    cudaFree(g->buf);
    cudaFree(g->buf16);
    cudaFree(g->tokens);
    free(g->host_losses);
    g->buf = NULL;
    g->buf16 = NULL;
    g->tokens = NULL;
    g->host_losses = NULL;
    g->B = g->T = 0;
}

/* Whether q, k, v per head are bf16 (the tensor-core attention), and the
 * floats that a token's q (width Q) or k, v (width KV) then take. */
static int bf16_heads(const rotary_config *c) {
    return GPU_ATTN_TC(c->d_model / c->n_head);
}
static size_t head_floats(const rotary_config *c, size_t width) {
    return bf16_heads(c) ? width / 2 : width;
}

void cuda_model_free(cuda_model *g) {
    if (!g) return;
    free_acts(g);
    cudaFree(g->params);
    cudaFree(g->grads);
    cudaFree(g->params16);
    cudaFree(g->cos);
    cudaFree(g->sin);
    cudaFree(g->pos_table);
    cudaFree(g->alibi);
    cudaFree(g->bucket);
    cudaFree(g->partial);
    free(g);
}

/* *dst (freed first) = a new device copy of src's bytes. */
static int upload(void **dst, const void *src, size_t bytes, const char *what) {
    cudaError_t e;
    cudaFree(*dst);
    *dst = NULL;
    if ((e = cudaMalloc(dst, bytes)) != cudaSuccess ||
        (e = cudaMemcpy(*dst, src, bytes, cudaMemcpyHostToDevice)) != cudaSuccess)
        return cuda_fail(e, what);
    return ROTARY_OK;
}

/* The host's position tables, when they cover more positions than ours. */
static int upload_tables(cuda_model *g) {
    const rotary_model *m = g->host;
    const rotary_config *c = &g->cfg;
    if (m->pos_len <= g->pos_len) return ROTARY_OK;
    g->tables++; /* they move: a decoder captures its graph again */
    int rc = ROTARY_OK;
    if (c->pos == ROTARY_POS_ROPE) {
        const size_t n = (size_t)m->rope.max_pos * (m->rope.rotary_dim / 2);
        if ((rc = upload((void **)&g->cos, m->rope.cos, n * sizeof(float), "rope cos table")) ||
            (rc = upload((void **)&g->sin, m->rope.sin, n * sizeof(float), "rope sin table")))
            return rc;
    } else if (c->pos == ROTARY_POS_SINUSOIDAL) {
        rc = upload((void **)&g->pos_table, m->pos_table,
                    (size_t)m->pos_len * c->d_model * sizeof(float), "sinusoidal table");
    } else if (c->pos == ROTARY_POS_ALIBI && !g->alibi) {
        rc = upload((void **)&g->alibi, m->alibi, (size_t)c->n_head * sizeof(float),
                    "alibi slopes");
    } else if (c->pos == ROTARY_POS_T5) {
        int *b = malloc((size_t)m->pos_len * sizeof(int));
        if (!b) return rotary_fail(ROTARY_ENOMEM, "cuda: out of memory");
        for (int n = 0; n < m->pos_len; n++)
            b[n] = rotary_t5_bucket(n, c->t5_buckets, c->t5_max_distance);
        rc = upload((void **)&g->bucket, b, (size_t)m->pos_len * sizeof(int), "t5 buckets");
        free(b);
    }
    if (!rc) g->pos_len = m->pos_len;
    return rc;
}

_Static_assert(GPU_NORM_BLOCK == ROTARY_NORM_BLOCK, "the GPU's norm blocks are the CPU's");
static size_t norm_blocks(size_t n) { return (n + GPU_NORM_BLOCK - 1) / GPU_NORM_BLOCK; }

int cuda_model_new(cuda_model **out, const rotary_model *m) {
    *out = NULL;
    int rc = cuda_device_check();
    if (rc || (rc = cuda_config_check(&m->cfg))) return rc;
    if (gpu_gemm_init()) return rotary_fail(ROTARY_EIO, "cuda: cannot create the cuBLAS handle");
    cuda_model *g = calloc(1, sizeof *g);
    if (!g) return rotary_fail(ROTARY_ENOMEM, "cuda: out of memory");
    g->host = m;
    g->cfg = m->cfg;
    g->n_params = m->n_params;
    cudaError_t e;
    if ((e = cudaMalloc((void **)&g->params, m->n_params * sizeof(float))) != cudaSuccess) {
        cuda_model_free(g);
        return alloc_fail(e, "the parameters", m->n_params * sizeof(float));
    }
    if ((e = cudaMemcpy(g->params, m->params, m->n_params * sizeof(float),
                        cudaMemcpyHostToDevice)) != cudaSuccess) {
        cuda_model_free(g);
        return cuda_fail(e, "copying the parameters");
    }
    if ((rc = upload_tables(g))) {
        cuda_model_free(g);
        return rc;
    }
    *out = g;
    return ROTARY_OK;
}

/* The bf16 copy of the weights that the GEMMs and --bf16 decoding read,
 * made when first needed: fp32 decoding holds none. */
static int need_bf16(cuda_model *g) {
    if (g->params16) return ROTARY_OK;
    cudaError_t e = cudaMalloc((void **)&g->params16, g->n_params * sizeof(gpu_bf16));
    if (e != cudaSuccess) {
        g->params16 = NULL;
        return alloc_fail(e, "the weights in bf16", g->n_params * sizeof(gpu_bf16));
    }
    gpu_to_bf16(g->params16, g->params, g->n_params);
    return ROTARY_OK;
}

int cuda_model_trainable(cuda_model *g, size_t lo, size_t hi) {
    if (lo > hi || hi > g->n_params)
        return rotary_fail(ROTARY_EINVAL, "cuda: AdamW state for [%zu, %zu) of %zu parameters",
                           lo, hi, g->n_params);
    int rc = need_bf16(g); /* AdamW keeps it */
    if (rc) return rc;
    cudaFree(g->grads);
    cudaFree(g->partial);
    g->grads = g->m = g->v = NULL, g->partial = NULL;
    const size_t n = g->n_params + 2 * (hi - lo), bytes = n * sizeof(float);
    cudaError_t e;
    if ((e = cudaMalloc((void **)&g->grads, bytes)) != cudaSuccess ||
        (e = cudaMemset(g->grads, 0, bytes)) != cudaSuccess ||
        (e = cudaMalloc((void **)&g->partial, norm_blocks(g->n_params) * sizeof(double))) !=
            cudaSuccess) {
        cudaFree(g->partial);
        g->partial = NULL;
        cudaFree(g->grads);
        g->grads = NULL;
        return alloc_fail(e, "the gradients and AdamW state",
                          bytes + norm_blocks(g->n_params) * sizeof(double));
    }
    g->m = g->grads + g->n_params;
    g->v = g->m + (hi - lo);
    g->opt_lo = lo, g->opt_n = hi - lo, g->step = 0;
    return ROTARY_OK;
}

static int need_grads(const cuda_model *g, const char *what) {
    return g->grads ? ROTARY_OK
                    : rotary_fail(ROTARY_EINVAL, "cuda %s: no gradients (cuda_model_trainable)",
                                  what);
}

int cuda_model_reserve(cuda_model *g, int B, int T) {
    const rotary_config *c = &g->cfg;
    int rc = upload_tables(g);
    if (rc || (rc = need_bf16(g))) return rc;
    if (B < 1 || T < 1 || T > g->pos_len)
        return rotary_fail(ROTARY_EINVAL, "cuda reserve: batch %d x %d (positions cover %d)", B, T,
                           g->pos_len);
    if (g->buf && B <= g->B && T <= g->T && (size_t)B * T <= (size_t)g->B * g->T) return ROTARY_OK;
    free_acts(g);
    const size_t N = (size_t)B * T, L = (size_t)c->n_layer, C = (size_t)c->d_model;
    const size_t nh = (size_t)c->n_head, hd = C / nh, Q = nh * hd, KV = (size_t)c->n_kv_head * hd;
    const size_t QKV = Q + 2 * KV, F = (size_t)c->d_ff, V = (size_t)c->vocab;
    const size_t U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F;
    /* Softmax attention keeps q, k, v per head and the rows' log-sum-exp;
     * linear attention the qkv rows, the features (twice with RoPE) and the
     * denominators. */
    const int lin = c->attn == ROTARY_ATTN_LINEAR;
    const size_t FS = lin ? Q + KV : 0, RF = lin && c->pos == ROTARY_POS_ROPE ? FS : 0;
    const size_t SQ = lin ? 0 : head_floats(c, Q), SKV = lin ? 0 : head_floats(c, KV);
    const size_t LQKV = lin ? QKV : 0, T5 = c->pos == ROTARY_POS_T5 ? nh : 0;
    const size_t LQ = lin ? Q : 0; /* linear attention's fp32 output and its gradient */
    const size_t per_layer = C + 4 + SQ + LQ + 2 * SKV + nh + LQKV + FS + RF;
    /* Each of the 31 fp32 and 11 bf16 arrays below starts at a multiple of 16
     * bytes (for cuBLAS and the vectorised bf16 rounding). */
    const size_t need = N * ((L + 1) * C + L * per_layer + 2 + V + 2 + QKV + C + Q + LQ + 2 * KV +
                             nh + 2 * FS + T5) + T5 * T + 4 * 31;
    /* bf16: h1, h2, up, act, attout16 (the attention's output) a layer; hf, dh, dact, dup, dqkv16,
     * dres16. */
    const size_t need16 = N * (L * (2 * C + U + F + Q) + C + C + F + U + QKV + C) + 8 * 11;
    cudaError_t e;
    if ((e = cudaMalloc((void **)&g->buf, need * sizeof(float))) != cudaSuccess ||
        (e = cudaMalloc((void **)&g->buf16, need16 * sizeof(gpu_bf16))) != cudaSuccess ||
        (e = cudaMalloc((void **)&g->tokens, 2 * N * sizeof(int))) != cudaSuccess) {
        free_acts(g);
        char room[96];
        return rotary_fail(ROTARY_ENOMEM, "cuda reserve: %.0f MiB of activations for batch %d x "
                           "%d: %s%s; a smaller batch needs less (train: --grad-accum K "
                           "passes 1/K of it at a time)", (need * 4 + need16 * 2) / 1048576.0, B,
                           T, cudaGetErrorString(e), gpu_room(room, sizeof room));
    }
    g->host_losses = malloc(N * sizeof(float));
    if (!g->host_losses) {
        free_acts(g);
        return rotary_fail(ROTARY_ENOMEM, "cuda reserve: out of memory");
    }
    g->targets = g->tokens + N;
    g->B = B, g->T = T;
    float *p = g->buf;
#define CARVE(field, n) (g->field = p, p += ((n) + 3) / 4 * 4)
    CARVE(res, (L + 1) * N * C);
    CARVE(res_mid, L * N * C);
    CARVE(mean1, L * N);
    CARVE(rstd1, L * N);
    CARVE(mean2, L * N);
    CARVE(rstd2, L * N);
    CARVE(q, L * N * SQ);
    CARVE(attout, L * N * LQ);
    CARVE(k, L * N * SKV);
    CARVE(v_, L * N * SKV);
    CARVE(lse, L * N * (lin ? 0 : nh));
    CARVE(lqkv, L * N * LQKV);
    CARVE(feat, L * N * FS);
    CARVE(rfeat, L * N * RF);
    CARVE(den, L * N * (lin ? nh : 0));
    CARVE(dfeat, N * FS);
    CARVE(drfeat, N * FS);
    CARVE(meanf, N);
    CARVE(rstdf, N);
    CARVE(logits, N * V);
    CARVE(lsef, N);
    CARVE(losses, N);
    CARVE(qkv, N * QKV);
    CARVE(dres, N * C);
    CARVE(dq, N * Q);
    CARVE(dattout, N * LQ);
    CARVE(dk, N * KV);
    CARVE(dv, N * KV);
    CARVE(dsum, N * nh);
    CARVE(t5tab, T5 * T);
    CARVE(dt5, N * T5);
#undef CARVE
    gpu_bf16 *p16 = g->buf16;
#define CARVE16(field, n) (g->field = p16, p16 += ((n) + 7) / 8 * 8)
    CARVE16(h1, L * N * C);
    CARVE16(h2, L * N * C);
    CARVE16(up, L * N * U);
    CARVE16(act, L * N * F);
    CARVE16(attout16, L * N * Q);
    CARVE16(hf, N * C);
    CARVE16(dh, N * C);
    CARVE16(dact, N * F);
    CARVE16(dup, N * U);
    CARVE16(dqkv16, N * QKV);
    CARVE16(dres16, N * C);
#undef CARVE16
    return ROTARY_OK;
}

#define P(off) (g->params + (off))
#define W(off) (g->params16 + (off))
#define G(off) (g->grads + (off))
#define OPT(base, off) ((off) == ABSENT ? NULL : (base) + (off))

/* Linear attention's saved slices of layer l. */
typedef struct {
    float *qkv, *feat, *rfeat, *den;
} linear_saved;

static linear_saved linear_slices(const cuda_model *g, int l) {
    const rotary_config *c = &g->cfg;
    const size_t capN = (size_t)g->B * g->T, nh = (size_t)c->n_head;
    const size_t hd = (size_t)c->d_model / nh, FS = (nh + (size_t)c->n_kv_head) * hd;
    linear_saved s;
    s.qkv = g->lqkv + l * capN * (FS + (size_t)c->n_kv_head * hd);
    s.feat = g->feat + l * capN * FS;
    s.rfeat = c->pos == ROTARY_POS_ROPE ? g->rfeat + l * capN * FS : s.feat;
    s.den = g->den + l * capN * nh;
    return s;
}

/* As model.c: features elu(x) + 1 of q | k, RoPE on a copy for the
 * numerator, then the running sums. */
static void linear_block_forward(cuda_model *g, int l, const gpu_bf16 *h1, float *attout, int B,
                                 int T) {
    const rotary_config *c = &g->cfg;
    const layer_params *lp = &g->host->layout->layer[l];
    const int N = B * T, C = c->d_model, nh = c->n_head, nkv = c->n_kv_head, hd = C / nh;
    const int FS = (nh + nkv) * hd, QKV = FS + nkv * hd;
    const linear_saved s = linear_slices(g, l);
    gpu_linear_forward(s.qkv, h1, W(lp->wqkv), OPT(g->params, lp->bqkv), N, C, QKV, 0);
    gpu_elu1_forward(s.feat, s.qkv, N, FS, QKV);
    if (c->pos == ROTARY_POS_ROPE) {
        cudaMemcpyAsync(s.rfeat, s.feat, (size_t)N * FS * sizeof(float), cudaMemcpyDeviceToDevice, 0);
        gpu_rope_rows(s.rfeat, g->cos, g->sin, B, T, nh + nkv, hd, g->host->rope.rotary_dim,
                      c->rope_pairing, FS, 1.0f);
    }
    gpu_linear_attention_forward(attout, s.den, s.feat, s.rfeat, s.qkv, B, T, nh, nkv, hd);
}

/* dattout to dqkv (in g->qkv, then g->dqkv16), as model.c's linear branch. */
static void linear_block_backward(cuda_model *g, int l, const float *attout, int B, int T) {
    const rotary_config *c = &g->cfg;
    const int N = B * T, C = c->d_model, nh = c->n_head, nkv = c->n_kv_head, hd = C / nh;
    const int FS = (nh + nkv) * hd, QKV = FS + nkv * hd;
    const linear_saved s = linear_slices(g, l);
    gpu_linear_attention_backward(g->dfeat, g->drfeat, g->qkv, g->dattout, s.feat, s.rfeat, s.qkv,
                                  attout, s.den, B, T, nh, nkv, hd);
    if (c->pos == ROTARY_POS_ROPE)
        gpu_rope_rows(g->drfeat, g->cos, g->sin, B, T, nh + nkv, hd, g->host->rope.rotary_dim,
                      c->rope_pairing, FS, -1.0f);
    gpu_add(g->dfeat, g->drfeat, (size_t)N * FS);
    gpu_elu1_backward(g->qkv, g->dfeat, s.qkv, N, FS, QKV);
    gpu_to_bf16(g->dqkv16, g->qkv, (size_t)N * QKV);
}

int cuda_model_forward(cuda_model *g, const int *tokens, const int *targets, int B, int T,
                       int train, float *loss) {
    const rotary_config *c = &g->cfg;
    const rotary_layout *lo = g->host->layout;
    int rc = cuda_model_reserve(g, B, T);
    if (rc) return rc;
    if (train && !targets) return rotary_fail(ROTARY_EINVAL, "cuda forward: training needs targets");
    const int N = B * T, C = c->d_model, nh = c->n_head, nkv = c->n_kv_head, hd = C / nh;
    const int Q = nh * hd, KV = nkv * hd, QKV = Q + 2 * KV, F = c->d_ff, V = c->vocab;
    const int U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F, layer_norm = c->norm == ROTARY_NORM_LAYER;
    const int rd = c->pos == ROTARY_POS_ROPE ? g->host->rope.rotary_dim : 0;
    const size_t capN = (size_t)g->B * g->T;
    for (int i = 0; i < N; i++) {
        if (tokens[i] < 0 || tokens[i] >= V)
            return rotary_fail(ROTARY_EINVAL, "forward: token %d at index %d outside vocab %d",
                               tokens[i], i, V);
        if (targets && (targets[i] < 0 || targets[i] >= V))
            return rotary_fail(ROTARY_EINVAL, "forward: target %d at index %d outside vocab %d",
                               targets[i], i, V);
    }
    cudaError_t e;
    if ((e = cudaMemcpy(g->tokens, tokens, (size_t)N * sizeof(int), cudaMemcpyHostToDevice)) ||
        (targets && (e = cudaMemcpy(g->targets, targets, (size_t)N * sizeof(int),
                                    cudaMemcpyHostToDevice))))
        return cuda_fail(e, "copying tokens");
    g->cur_B = B, g->cur_T = T, g->trained = 0;

    const float *ptab = c->pos == ROTARY_POS_LEARNED ? P(lo->pos_emb) : g->pos_table;
    gpu_embed_forward(g->res, g->tokens, P(lo->tok_emb), ptab, NULL, N, T, C);
    const float *t5 = c->pos == ROTARY_POS_T5 ? g->t5tab : NULL; /* one table for every layer */
    if (t5) gpu_t5_table(g->t5tab, P(lo->rel_bias), g->bucket, nh, T);
    for (int l = 0; l < c->n_layer; l++) {
        const layer_params *lp = &lo->layer[l];
        float *x = g->res + l * capN * C, *xmid = g->res_mid + l * capN * C;
        gpu_bf16 *h1 = g->h1 + l * capN * C, *h2 = g->h2 + l * capN * C;
        const size_t sq = head_floats(c, Q), skv = head_floats(c, KV);
        float *q = g->q + l * capN * sq, *k = g->k + l * capN * skv, *v = g->v_ + l * capN * skv;
        float *lse = g->lse + l * capN * nh;
        gpu_bf16 *attout16 = g->attout16 + l * capN * Q, *act = g->act + l * capN * F;
        gpu_bf16 *up = g->up + l * capN * U;

        /* The residual stream: x holds the last block's output projection
         * until norm1 adds the block's input in (the embedding is whole). */
        gpu_norm_forward(NULL, h1, layer_norm ? g->mean1 + l * capN : NULL, g->rstd1 + l * capN,
                         x, l ? g->res_mid + (l - 1) * capN * C : NULL, P(lp->norm1_w),
                         OPT(g->params, lp->norm1_b), N, C, c->norm_eps);
        if (c->attn == ROTARY_ATTN_LINEAR) {
            float *attout = g->attout + l * capN * Q;
            linear_block_forward(g, l, h1, attout, B, T);
            gpu_to_bf16(attout16, attout, (size_t)N * Q);
        } else {
            /* qkv in bf16, in the room of the fp32 scratch linear attention uses */
            gpu_bf16 *qkv16 = (gpu_bf16 *)g->qkv;
            gpu_linear_forward_bf16(qkv16, h1, W(lp->wqkv), OPT(g->params, lp->bqkv), N, C, QKV);
            gpu_qkv_split_rope(q, k, v, qkv16, rd ? g->cos : NULL, rd ? g->sin : NULL, B, T, nh,
                               nkv, hd, rd, c->rope_pairing, bf16_heads(c));
            gpu_attention_forward(attout16, lse, q, k, v, g->alibi, t5, B, T, nh, nkv, hd);
        }
        gpu_linear_forward(xmid, attout16, W(lp->wo), OPT(g->params, lp->bo), N, Q, C, 0);
        gpu_norm_forward(NULL, h2, layer_norm ? g->mean2 + l * capN : NULL, g->rstd2 + l * capN,
                         xmid, x, P(lp->norm2_w), OPT(g->params, lp->norm2_b), N, C, c->norm_eps);
        gpu_linear_forward_bf16(up, h2, W(lp->wup), OPT(g->params, lp->bup), N, C, U);
        if (c->mlp == ROTARY_MLP_SWIGLU) gpu_swiglu_forward(NULL, act, NULL, up, N, F);
        else gpu_gelu_forward(NULL, act, NULL, up, (size_t)N * F);
        gpu_linear_forward(x + capN * C, act, W(lp->wdown), OPT(g->params, lp->bdown), N, F, C, 0);
    }
    const int L = c->n_layer;
    gpu_norm_forward(NULL, g->hf, layer_norm ? g->meanf : NULL, g->rstdf, g->res + L * capN * C,
                     L ? g->res_mid + (L - 1) * capN * C : NULL, P(lo->normf_w),
                     OPT(g->params, lo->normf_b), N, C, c->norm_eps);
    /* A training step's logits are bf16, in the room of the fp32 ones: the
     * classifier turns them into their gradient, the backward GEMM's input. */
    gpu_bf16 *logits16 = train ? (gpu_bf16 *)g->logits : NULL;
    if (train) gpu_linear_forward_bf16(logits16, g->hf, W(lo->head), NULL, N, C, V);
    else gpu_linear_forward(g->logits, g->hf, W(lo->head), NULL, N, C, V, 0);
    if (!targets) {
        if (loss) *loss = NAN;
        return sync_ok("forward");
    }
    gpu_crossentropy(train ? NULL : g->logits, logits16, g->lsef, g->losses, g->targets, N, V,
                     train ? 1.0f / N : 0.0f);
    if ((rc = sync_ok("forward"))) return rc;
    if ((e = cudaMemcpy(g->host_losses, g->losses, (size_t)N * sizeof(float),
                        cudaMemcpyDeviceToHost)))
        return cuda_fail(e, "copying the losses");
    double sum = 0; /* in order, in double: the same for every run */
    for (int i = 0; i < N; i++) sum += g->host_losses[i];
    if (loss) *loss = (float)(sum / N);
    g->trained = train;
    return ROTARY_OK;
}

int cuda_model_logits(const cuda_model *g, float *out) {
    if (!g->buf || g->trained)
        return rotary_fail(ROTARY_EINVAL, "cuda logits: no forward pass without training");
    cudaError_t e = cudaMemcpy(out, g->logits, (size_t)g->cur_B * g->cur_T * g->cfg.vocab *
                               sizeof(float), cudaMemcpyDeviceToHost);
    return e ? cuda_fail(e, "copying the logits") : ROTARY_OK;
}

int cuda_model_logits_row(const cuda_model *g, size_t row, float *out) {
    if (!g->buf || g->trained || row >= (size_t)g->cur_B * g->cur_T)
        return rotary_fail(ROTARY_EINVAL, "cuda logits: no such row of the last forward");
    cudaError_t e = cudaMemcpy(out, g->logits + row * g->cfg.vocab, (size_t)g->cfg.vocab *
                               sizeof(float), cudaMemcpyDeviceToHost);
    return e ? cuda_fail(e, "copying the logits") : ROTARY_OK;
}

int cuda_model_zero_grad(cuda_model *g) {
    if (need_grads(g, "zero_grad")) return ROTARY_EINVAL;
    cudaError_t e = cudaMemset(g->grads, 0, g->n_params * sizeof(float));
    return e ? cuda_fail(e, "zeroing the gradients") : ROTARY_OK;
}

int cuda_model_backward(cuda_model *g) {
    const rotary_config *c = &g->cfg;
    const rotary_layout *lo = g->host->layout;
    if (!g->trained)
        return rotary_fail(ROTARY_EINVAL, "backward: no training forward pass to differentiate");
    if (need_grads(g, "backward")) return ROTARY_EINVAL;
    const int B = g->cur_B, T = g->cur_T, N = B * T, C = c->d_model, nh = c->n_head;
    const int nkv = c->n_kv_head, hd = C / nh, Q = nh * hd, KV = nkv * hd, QKV = Q + 2 * KV;
    const int F = c->d_ff, U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F;
    const int layer_norm = c->norm == ROTARY_NORM_LAYER;
    const int rd = c->pos == ROTARY_POS_ROPE ? g->host->rope.rotary_dim : 0;
    const size_t capN = (size_t)g->B * g->T;

    /* The logits hold their gradient in bf16 (the training forward's classifier). */
    gpu_linear_backward(NULL, g->dh, G(lo->head), NULL, (const gpu_bf16 *)g->logits, g->hf,
                        W(lo->head), N, C, c->vocab);
    cudaMemsetAsync(g->dres, 0, (size_t)N * C * sizeof(float), 0);
    gpu_norm_backward(g->dres, g->dres16, G(lo->normf_w), OPT(g->grads, lo->normf_b), g->dh,
                      g->res + c->n_layer * capN * C, P(lo->normf_w), layer_norm ? g->meanf : NULL,
                      g->rstdf, N, C);
    for (int l = c->n_layer - 1; l >= 0; l--) {
        const layer_params *lp = &lo->layer[l];
        const float *x = g->res + l * capN * C, *xmid = g->res_mid + l * capN * C;
        const gpu_bf16 *h1 = g->h1 + l * capN * C, *h2 = g->h2 + l * capN * C;
        const size_t sq = head_floats(c, Q), skv = head_floats(c, KV);
        const float *q = g->q + l * capN * sq, *k = g->k + l * capN * skv;
        const float *v = g->v_ + l * capN * skv;
        const float *lse = g->lse + l * capN * nh;
        const gpu_bf16 *attout16 = g->attout16 + l * capN * Q, *act = g->act + l * capN * F;
        const gpu_bf16 *up = g->up + l * capN * U;

        /* dres16: dres in bf16, from the norm backward that last wrote dres */
        gpu_linear_backward(NULL, g->dact, G(lp->wdown), OPT(g->grads, lp->bdown), g->dres16, act,
                            W(lp->wdown), N, F, C);
        if (c->mlp == ROTARY_MLP_SWIGLU) gpu_swiglu_backward(g->dup, g->dact, up, N, F);
        else gpu_gelu_backward(g->dup, g->dact, up, (size_t)N * F);
        gpu_linear_backward(NULL, g->dh, G(lp->wup), OPT(g->grads, lp->bup), g->dup, h2,
                            W(lp->wup), N, C, U);
        gpu_norm_backward(g->dres, g->dres16, G(lp->norm2_w), OPT(g->grads, lp->norm2_b), g->dh,
                          xmid, P(lp->norm2_w), layer_norm ? g->mean2 + l * capN : NULL,
                          g->rstd2 + l * capN, N, C);

        /* The attention output's gradient: fp32 for linear attention; bf16
         * for softmax attention, in dqkv16 until the merge writes over it. */
        const int lin = c->attn == ROTARY_ATTN_LINEAR;
        gpu_linear_backward(lin ? g->dattout : NULL, lin ? NULL : g->dqkv16, G(lp->wo),
                            OPT(g->grads, lp->bo), g->dres16, attout16, W(lp->wo), N, Q, C);
        if (lin) {
            linear_block_backward(g, l, g->attout + l * capN * Q, B, T);
        } else {
            const int t5 = c->pos == ROTARY_POS_T5; /* g->t5tab: the forward's table */
            gpu_attention_backward(g->dq, g->dk, g->dv, g->dsum, g->dqkv16, attout16, q, k, v, lse,
                                   g->alibi, t5 ? g->t5tab : NULL, t5 ? g->dt5 : NULL, B, T, nh,
                                   nkv, hd);
            if (t5)
                gpu_t5_table_backward(G(lo->rel_bias), g->dt5, g->bucket, B, nh, T,
                                      c->t5_buckets);
            gpu_qkv_merge_rope_backward(g->dqkv16, g->dq, g->dk, g->dv, rd ? g->cos : NULL,
                                        rd ? g->sin : NULL, B, T, nh, nkv, hd, rd, c->rope_pairing,
                                        gpu_attention_grads_bf16(hd, t5));
        }
        gpu_linear_backward(NULL, g->dh, G(lp->wqkv), OPT(g->grads, lp->bqkv), g->dqkv16, h1,
                            W(lp->wqkv), N, C, QKV);
        gpu_norm_backward(g->dres, g->dres16, G(lp->norm1_w), OPT(g->grads, lp->norm1_b), g->dh,
                          x, P(lp->norm1_w), layer_norm ? g->mean1 + l * capN : NULL,
                          g->rstd1 + l * capN, N, C);
        /* Layer l starts at norm1_w: it and all after it (later layers, the
         * final norm, an untied head) are done; T5's table, shared by every
         * layer, lies before the layers. */
        if (g->on_grads) g->on_grads(g->on_grads_ctx, lp->norm1_w);
    }
    gpu_embed_backward(G(lo->tok_emb), c->pos == ROTARY_POS_LEARNED ? G(lo->pos_emb) : NULL,
                       g->dres, g->tokens, N, T, C);
    if (g->on_grads) g->on_grads(g->on_grads_ctx, 0);
    g->trained = 0; /* the logits were consumed */
    return sync_ok("backward");
}

int cuda_model_grad_sq_blocks(cuda_model *g, size_t lo, size_t hi, double *part) {
    if (need_grads(g, "grad_sq_blocks")) return ROTARY_EINVAL;
    if (lo % GPU_NORM_BLOCK || lo > hi || hi > g->n_params)
        return rotary_fail(ROTARY_EINVAL, "cuda grad_sq_blocks: [%zu, %zu) of %zu", lo, hi,
                           g->n_params);
    const size_t b0 = lo / GPU_NORM_BLOCK, nb = norm_blocks(hi) - b0;
    gpu_sumsq_blocks(g->partial + b0, g->grads + lo, hi - lo);
    cudaError_t e = cudaMemcpy(part + b0, g->partial + b0, nb * sizeof(double),
                               cudaMemcpyDeviceToHost);
    return e ? cuda_fail(e, "gradient norm") : ROTARY_OK;
}

int cuda_model_grad_norm(cuda_model *g, float *norm) {
    const size_t nb = norm_blocks(g->n_params);
    double *part = malloc((nb ? nb : 1) * sizeof(double));
    if (!part) return rotary_fail(ROTARY_ENOMEM, "gradient norm: out of memory");
    int rc = cuda_model_grad_sq_blocks(g, 0, g->n_params, part);
    if (rc == ROTARY_OK) *norm = rotary_grad_norm_of_blocks(part, nb);
    free(part);
    return rc;
}

int cuda_model_adamw_step(cuda_model *g, const rotary_adamw_config *c, float grad_scale) {
    const rotary_model *m = g->host;
    if (need_grads(g, "adamw")) return ROTARY_EINVAL;
    g->step++;
    /* As rotary_adamw_step (torch.optim.AdamW). */
    const double bc1 = 1.0 - pow(c->beta1, (double)g->step);
    const float bc2_sqrt = (float)sqrt(1.0 - pow(c->beta2, (double)g->step));
    const float step_size = (float)(c->lr / bc1);
    /* Each tensor's part in [opt_lo, opt_hi): all of it, or a ZeRO-1 shard. */
    const size_t opt_hi = g->opt_lo + g->opt_n;
    for (int ti = 0; ti < m->n_tensors; ti++) {
        const rotary_tensor *t = &m->tensors[ti];
        const size_t a = t->offset > g->opt_lo ? t->offset : g->opt_lo;
        const size_t b = t->offset + t->numel < opt_hi ? t->offset + t->numel : opt_hi;
        if (a >= b) continue;
        const float decay = t->decay ? 1.0f - c->lr * c->weight_decay : 1.0f;
        gpu_adamw(g->params + a, g->params16 + a, g->grads + a, g->m + (a - g->opt_lo),
                  g->v + (a - g->opt_lo), b - a, c->beta1, c->beta2, c->eps, decay, step_size,
                  bc2_sqrt, grad_scale);
    }
    return sync_ok("adamw");
}

float *cuda_model_grads(cuda_model *g) { return g->grads; }
float *cuda_model_params(cuda_model *g) { return g->params; }

void cuda_model_params_changed(cuda_model *g) {
    if (g->params16) gpu_to_bf16(g->params16, g->params, g->n_params);
}

void cuda_model_on_grads(cuda_model *g, void (*fn)(void *ctx, size_t from), void *ctx) {
    g->on_grads = fn, g->on_grads_ctx = ctx;
}

/* opt covers the parameters whose moments the device keeps. */
static int opt_matches(const cuda_model *g, const rotary_adamw *opt, const char *what) {
    if (need_grads(g, what)) return ROTARY_EINVAL;
    if (opt->offset != g->opt_lo || opt->n != g->opt_n)
        return rotary_fail(ROTARY_EINVAL, "cuda %s: AdamW state for [%zu, %zu), not [%zu, %zu)",
                           what, opt->offset, opt->offset + opt->n, g->opt_lo,
                           g->opt_lo + g->opt_n);
    return ROTARY_OK;
}

int cuda_model_download(const cuda_model *g, float *params, float *grads, rotary_adamw *opt) {
    const size_t bytes = g->n_params * sizeof(float), obytes = g->opt_n * sizeof(float);
    if ((grads && need_grads(g, "download")) || (opt && opt_matches(g, opt, "download")))
        return ROTARY_EINVAL;
    cudaError_t e = cudaSuccess;
    if (params) e = cudaMemcpy(params, g->params, bytes, cudaMemcpyDeviceToHost);
    if (!e && grads) e = cudaMemcpy(grads, g->grads, bytes, cudaMemcpyDeviceToHost);
    if (!e && opt) {
        if (!(e = cudaMemcpy(opt->m, g->m, obytes, cudaMemcpyDeviceToHost)))
            e = cudaMemcpy(opt->v, g->v, obytes, cudaMemcpyDeviceToHost);
        opt->step = g->step;
    }
    return e ? cuda_fail(e, "copying to the host") : ROTARY_OK;
}

int cuda_model_upload(cuda_model *g, const float *params, const rotary_adamw *opt) {
    const size_t bytes = g->n_params * sizeof(float), obytes = g->opt_n * sizeof(float);
    if (opt && opt_matches(g, opt, "upload")) return ROTARY_EINVAL;
    cudaError_t e = cudaSuccess;
    if (params && !(e = cudaMemcpy(g->params, params, bytes, cudaMemcpyHostToDevice)))
        cuda_model_params_changed(g);
    if (!e && opt) {
        if (!(e = cudaMemcpy(g->m, opt->m, obytes, cudaMemcpyHostToDevice)))
            e = cudaMemcpy(g->v, opt->v, obytes, cudaMemcpyHostToDevice);
        g->step = opt->step;
    }
    return e ? cuda_fail(e, "copying to the device") : ROTARY_OK;
}

/* ---------------------------------------------------------------- decoder */

/* A step's kernels read the token and its position from device memory (tp),
 * so every step launches the same sequence with the same arguments: the
 * first step captures it as a CUDA graph and each step replays that, one
 * launch instead of about ten a layer, whose host-side cost bounded decoding
 * (docs/performance.md). */
struct cuda_decoder {
    cuda_model *g;
    int max_T, n;
    float *buf;             /* everything below, one allocation */
    float *kc, *vc;         /* (n_layer, n_kv_head, max_T, head_dim) */
    float *S, *z;           /* linear attention instead: (n_layer, n_kv_head, hd, hd), (.., hd) */
    float *x, *h, *qkv, *q, *att, *up, *act, *logits, *scratch;
    float *part;            /* the decode attention's partial results, or NULL */
    float *t5tab;           /* T5: (nh, max_T) bias by distance, or NULL */
    int *tp;                /* device: the token, its position */
    int graph_on;           /* use a graph (cuda_decoder_set_graph) */
    int fused;              /* gpu_decode_matvec (cuda_decoder_set_fused) */
    int wfmt;               /* the linear layers' weights: GPU_W_F32 (g->params), GPU_W_Q8
                               (q8) or GPU_W_BF16 (g->params16), the last two fused */
    void *q8;               /* device: Q8_0 matrices (cuda_decoder_quantize), or NULL */
    cudaGraphExec_t graph;  /* the captured step, or NULL */
    unsigned tables;        /* g->tables when it was captured */
    int graphed;            /* the last step replayed it */
    char why[160];          /* why capture failed, or "" */
};

void cuda_decoder_free(cuda_decoder *d) {
    if (!d) return;
    if (d->graph) cudaGraphExecDestroy(d->graph);
    cudaFree(d->q8);
    cudaFree(d->buf);
    cudaFree(d->tp);
    free(d);
}

void cuda_decoder_reset(cuda_decoder *d) { d->n = 0; }

int cuda_decoder_full(const cuda_decoder *d) { return d->n >= d->max_T; }

void cuda_decoder_set_graph(cuda_decoder *d, int on) {
    d->graph_on = on;
    d->why[0] = 0;
}

void cuda_decoder_set_fused(cuda_decoder *d, int on) {
    if (d->graph && d->fused != on) cudaGraphExecDestroy(d->graph), d->graph = NULL;
    d->fused = on;
}

/* ROTARY_CUDA_DECODE at the first decoder: "fused" or "cublas" (the
 * default until the fused kernels are measured on a GPU). */
static int fused_default(void) {
    static int fused = -1;
    if (fused < 0) {
        const char *e = getenv("ROTARY_CUDA_DECODE");
        fused = e && !strcmp(e, "fused");
        if (e && *e && !fused && strcmp(e, "cublas"))
            fprintf(stderr, "rotary: ROTARY_CUDA_DECODE=%s: not fused or cublas; using cublas\n",
                    e);
    }
    return fused;
}

int cuda_decoder_graphed(const cuda_decoder *d, const char **why) {
    if (why) *why = d->why;
    return d->graphed;
}

int cuda_decoder_new(cuda_decoder **out, cuda_model *g, int max_T) {
    const rotary_config *c = &g->cfg;
    *out = NULL;
    int rc = upload_tables(g);
    if (rc) return rc;
    if (max_T < 1 || max_T > g->pos_len || max_T > GPU_DECODE_MAX_T)
        return rotary_fail(ROTARY_EINVAL, "cuda decoder: %d positions (the tables cover %d, at "
                           "most %d)", max_T, g->pos_len, GPU_DECODE_MAX_T);
    const size_t C = (size_t)c->d_model, hd = C / (size_t)c->n_head, Q = (size_t)c->n_head * hd;
    const size_t KV = (size_t)c->n_kv_head * hd, F = (size_t)c->d_ff, V = (size_t)c->vocab;
    const size_t U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F;
    /* Softmax attention caches k and v of every position; linear attention
     * keeps S and z per kv head, whatever the length. */
    const int linear = c->attn == ROTARY_ATTN_LINEAR;
    const size_t state = (size_t)c->n_layer * c->n_kv_head * (hd * hd + hd);
    const size_t cache = linear ? state : 2 * (size_t)c->n_layer * max_T * KV;
    const size_t t5 = c->pos == ROTARY_POS_T5 ? (size_t)c->n_head * max_T : 0;
    const size_t part = linear ? 0 : gpu_decode_attention_part(c->n_head, (int)hd, max_T);
    const size_t need = cache + 2 * C + (Q + 2 * KV) + 2 * Q + U + F + V + 2 + t5 + part;
    cuda_decoder *d = calloc(1, sizeof *d);
    if (!d) return rotary_fail(ROTARY_ENOMEM, "cuda decoder: out of memory");
    cudaError_t e;
    if ((e = cudaMalloc((void **)&d->buf, need * sizeof(float))) != cudaSuccess ||
        (e = cudaMalloc((void **)&d->tp, 2 * sizeof(int))) != cudaSuccess) {
        cuda_decoder_free(d);
        char room[96];
        return rotary_fail(ROTARY_ENOMEM, "cuda decoder: %.0f MiB for %d positions (the key/value "
                           "cache and its scratch): %s%s; fewer positions (--ctx) need less",
                           need * 4 / 1048576.0, max_T, cudaGetErrorString(e),
                           gpu_room(room, sizeof room));
    }
    float *p = d->buf;
#define CARVE(field, n) (d->field = p, p += (n))
    if (linear) {
        CARVE(S, (size_t)c->n_layer * c->n_kv_head * hd * hd);
        CARVE(z, (size_t)c->n_layer * KV);
    } else {
        CARVE(kc, (size_t)c->n_layer * max_T * KV);
        CARVE(vc, (size_t)c->n_layer * max_T * KV);
    }
    CARVE(x, C);
    CARVE(h, C);
    CARVE(qkv, Q + 2 * KV);
    CARVE(q, Q);
    CARVE(att, Q);
    CARVE(up, U);
    CARVE(act, F);
    CARVE(logits, V);
    CARVE(scratch, 2); /* mean and rstd of the one row */
    if (t5) CARVE(t5tab, t5);
    if (part) CARVE(part, part);
#undef CARVE
    if (part && (e = cudaMemset(d->part, 0, part * sizeof(float))) != cudaSuccess) {
        cuda_decoder_free(d);
        return cuda_fail(e, "decoder cache");
    }
    d->g = g;
    d->max_T = max_T;
    d->graph_on = 1;
    d->fused = fused_default();
    d->wfmt = GPU_W_F32;
    *out = d;
    return ROTARY_OK;
}

/* Matrix `which` of layer l (l == n_layer: the classifier) in d->q8. */
static const void *q8_dev(const cuda_decoder *d, int l, int which) {
    return (const char *)d->q8 + q8_matrix_offset(&d->g->cfg, l, which);
}

/* The device's fp32 matrix at offset `off` (rows x cols) into its place in
 * d->q8, through the host buffers w (floats) and q (Q8_0) that fit it. */
static cudaError_t quantize_matrix(cuda_decoder *d, int l, int which, size_t off, int rows,
                                   int cols, float *w, void *q) {
    cudaError_t e = cudaMemcpy(w, d->g->params + off, (size_t)rows * cols * sizeof(float),
                               cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) return e;
    q8_quantize_matrix(q, w, rows, cols);
    return cudaMemcpy((void *)q8_dev(d, l, which), q, q8_matrix_bytes(rows, cols),
                      cudaMemcpyHostToDevice);
}

int cuda_decoder_quantize(cuda_decoder *d) {
    cuda_model *g = d->g;
    const rotary_config *c = &g->cfg;
    const rotary_layout *lo = g->host->layout;
    int rows[Q8_N], cols[Q8_N];
    q8_layer_shapes(c, rows, cols);
    size_t widest = (size_t)c->vocab * c->d_model, qmax = q8_matrix_bytes(c->vocab, c->d_model);
    for (int i = 0; i < Q8_N; i++) {
        if ((size_t)rows[i] * cols[i] > widest) widest = (size_t)rows[i] * cols[i];
        if (q8_matrix_bytes(rows[i], cols[i]) > qmax) qmax = q8_matrix_bytes(rows[i], cols[i]);
    }
    /* Each matrix from the device's weights (the host copy may be older),
     * quantized by the CPU's code, then copied back. */
    float *w = malloc(widest * sizeof(float));
    void *q = malloc(qmax);
    cudaError_t e = cudaSuccess;
    int rc = ROTARY_OK;
    if (!w || !q) rc = rotary_fail(ROTARY_ENOMEM, "cuda decoder: out of memory for int8 weights");
    else if (!d->q8) e = cudaMalloc(&d->q8, q8_weights_bytes(c));
    for (int l = 0; l <= c->n_layer && rc == ROTARY_OK && e == cudaSuccess; l++)
        for (int i = 0; i < DECODER_MATRICES(c, l) && e == cudaSuccess; i++) {
            int r, k;
            const size_t off = decoder_matrix(c, lo, l, i, &r, &k);
            e = quantize_matrix(d, l, i, off, r, k, w, q);
        }
    if (e != cudaSuccess) rc = cuda_fail(e, "int8 weights");
    free(w);
    free(q);
    /* The graph holds the weights' addresses, in d->q8 or not: capture again. */
    if (d->graph) cudaGraphExecDestroy(d->graph), d->graph = NULL;
    if (rc == ROTARY_OK) {
        d->wfmt = GPU_W_Q8;
    } else {
        cudaFree(d->q8);
        d->q8 = NULL;
        if (d->wfmt == GPU_W_Q8) d->wfmt = GPU_W_F32;
    }
    return rc;
}

int cuda_decoder_bf16(cuda_decoder *d) {
    int rc = need_bf16(d->g);
    if (rc) return rc;
    /* The graph holds the weights' addresses: capture again. */
    if (d->graph) cudaGraphExecDestroy(d->graph), d->graph = NULL;
    cudaFree(d->q8);
    d->q8 = NULL;
    d->wfmt = GPU_W_BF16;
    return ROTARY_OK;
}

/* Queue one step: the token and position already in d->tp. */
static void decoder_launch(cuda_decoder *d) {
    cuda_model *g = d->g;
    const rotary_config *c = &g->cfg;
    const rotary_layout *lo = g->host->layout;
    const int C = c->d_model, nh = c->n_head, nkv = c->n_kv_head, hd = C / nh;
    const int Q = nh * hd, KV = nkv * hd, QKV = Q + 2 * KV, F = c->d_ff;
    const int U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F, layer_norm = c->norm == ROTARY_NORM_LAYER;
    const int rd = c->pos == ROTARY_POS_ROPE ? g->host->rope.rotary_dim : 0;
    const float *ptab = c->pos == ROTARY_POS_LEARNED ? P(lo->pos_emb) : g->pos_table;
    const int *pos = d->tp + 1;
    float *mean = layer_norm ? d->scratch : NULL, *rstd = d->scratch + 1;
    gpu_embed_forward(d->x, d->tp, P(lo->tok_emb), ptab, pos, 1, 1, C);
    if (d->t5tab) gpu_t5_table(d->t5tab, P(lo->rel_bias), g->bucket, nh, d->max_T);
    const int act = c->mlp == ROTARY_MLP_SWIGLU ? GPU_PRE_SWIGLU : GPU_PRE_GELU;
    const float eps = c->norm_eps;
    const int wf = d->wfmt, fused = d->fused || wf != GPU_W_F32;
    /* matrix i of layer l: Q8_0, or the bf16 or fp32 weights at offset w */
#define WM(l, i, w)                                                                              \
    (wf == GPU_W_Q8     ? q8_dev(d, l, i)                                                        \
     : wf == GPU_W_BF16 ? (const void *)W(w)                                                     \
                        : (const void *)P(w))
    for (int l = 0; l < c->n_layer; l++) {
        const layer_params *lp = &lo->layer[l];
        float *kc = d->S ? NULL : d->kc + (size_t)l * d->max_T * KV;
        float *vc = d->S ? NULL : d->vc + (size_t)l * d->max_T * KV;
        const float *cs = rd ? g->cos : NULL, *sn = rd ? g->sin : NULL;
        if (fused && kc) { /* the product puts q, k, v in place, rotated */
            gpu_decode_matvec_split(d->q, kc, vc, d->x, WM(l, Q8_WQKV, lp->wqkv), wf,
                                    OPT(g->params, lp->bqkv), P(lp->norm1_w),
                                    OPT(g->params, lp->norm1_b), layer_norm, eps, C, cs, sn, pos,
                                    d->max_T, nh, nkv, hd, rd, c->rope_pairing);
        } else if (fused) {
            gpu_decode_matvec(d->qkv, d->x, WM(l, Q8_WQKV, lp->wqkv), wf,
                              OPT(g->params, lp->bqkv), C, QKV, 0, GPU_PRE_NORM, P(lp->norm1_w),
                              OPT(g->params, lp->norm1_b), layer_norm, eps);
        } else {
            gpu_norm_forward(d->h, NULL, mean, rstd, d->x, NULL, P(lp->norm1_w),
                             OPT(g->params, lp->norm1_b), 1, C, eps);
            gpu_matvec(d->qkv, d->h, P(lp->wqkv), OPT(g->params, lp->bqkv), C, QKV, 0);
        }
        if (d->S) {
            gpu_decode_linear(d->att, d->S + (size_t)l * nkv * hd * hd, d->z + (size_t)l * KV,
                              d->qkv, cs, sn, pos, nh, nkv, hd, rd, c->rope_pairing);
        } else {
            if (!fused)
                gpu_decode_split_rope(d->q, kc, vc, d->qkv, cs, sn, pos, d->max_T, nh, nkv, hd,
                                      rd, c->rope_pairing);
            gpu_decode_attention(d->att, d->part, d->q, kc, vc, g->alibi, d->t5tab, pos,
                                 d->max_T, nh, nkv, hd);
        }
        if (fused) {
            gpu_decode_matvec(d->x, d->att, WM(l, Q8_WO, lp->wo), wf, OPT(g->params, lp->bo), Q,
                              C, 1, GPU_PRE_NONE, NULL, NULL, 0, 0);
            gpu_decode_matvec(d->up, d->x, WM(l, Q8_WUP, lp->wup), wf, OPT(g->params, lp->bup),
                              C, U, 0, GPU_PRE_NORM, P(lp->norm2_w), OPT(g->params, lp->norm2_b),
                              layer_norm, eps);
            gpu_decode_matvec(d->x, d->up, WM(l, Q8_WDOWN, lp->wdown), wf,
                              OPT(g->params, lp->bdown), F, C, 1, act, NULL, NULL, 0, 0);
            continue;
        }
        gpu_matvec(d->x, d->att, P(lp->wo), OPT(g->params, lp->bo), Q, C, 1);
        gpu_norm_forward(d->h, NULL, mean, rstd, d->x, NULL, P(lp->norm2_w),
                         OPT(g->params, lp->norm2_b), 1, C, eps);
        gpu_matvec(d->up, d->h, P(lp->wup), OPT(g->params, lp->bup), C, U, 0);
        if (act == GPU_PRE_SWIGLU) gpu_swiglu_forward(d->act, NULL, d->up, NULL, 1, F);
        else gpu_gelu_forward(d->act, NULL, d->up, NULL, (size_t)F);
        gpu_matvec(d->x, d->act, P(lp->wdown), OPT(g->params, lp->bdown), F, C, 1);
    }
    if (fused) {
        gpu_decode_matvec(d->logits, d->x, WM(c->n_layer, 0, lo->head), wf, NULL, C, c->vocab, 0,
                          GPU_PRE_NORM, P(lo->normf_w), OPT(g->params, lo->normf_b), layer_norm,
                          eps);
        return;
    }
#undef WM
    gpu_norm_forward(d->h, NULL, mean, rstd, d->x, NULL, P(lo->normf_w),
                     OPT(g->params, lo->normf_b), 1, C, eps);
    gpu_matvec(d->logits, d->h, P(lo->head), NULL, C, c->vocab, 0);
}

/* Capture decoder_launch as d->graph. On failure the decoder goes on
 * launching kernel by kernel (the same kernels) and says why in d->why. */
static void decoder_capture(cuda_decoder *d) {
    cudaGraph_t graph = NULL;
    if (d->graph) cudaGraphExecDestroy(d->graph);
    d->graph = NULL;
    cudaError_t e = cudaStreamBeginCapture(cudaStreamPerThread, cudaStreamCaptureModeThreadLocal);
    if (e == cudaSuccess) {
        decoder_launch(d);
        e = cudaStreamEndCapture(cudaStreamPerThread, &graph);
    }
    const char *gemm = gpu_gemm_error();
    if (e == cudaSuccess && !gemm) e = cudaGraphInstantiate(&d->graph, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (e != cudaSuccess || gemm) {
        snprintf(d->why, sizeof d->why, "CUDA graph capture failed (%s): launching kernel by kernel",
                 gemm ? gemm : cudaGetErrorString(e));
        cudaGetLastError(); /* not sticky: clear it */
        d->graph = NULL;
        d->graph_on = 0;
    }
    d->tables = d->g->tables;
}

int cuda_decoder_step(cuda_decoder *d, int token, float *logits) {
    cuda_model *g = d->g;
    const rotary_config *c = &g->cfg;
    if (d->n >= d->max_T)
        return rotary_fail(ROTARY_EINVAL, "cuda decoder: the cache holds %d positions", d->max_T);
    if (token < 0 || token >= c->vocab)
        return rotary_fail(ROTARY_EINVAL, "decoder: token %d outside vocab %d", token, c->vocab);
    const int tp[2] = {token, d->n};
    cudaError_t e = cudaMemcpy(d->tp, tp, sizeof tp, cudaMemcpyHostToDevice);
    if (e) return cuda_fail(e, "copying the token");
    /* The graph holds the tables' addresses: capture again after they move. */
    if (!d->graph_on && d->graph) cudaGraphExecDestroy(d->graph), d->graph = NULL;
    if (d->graph_on && (!d->graph || d->tables != g->tables)) decoder_capture(d);
    d->graphed = d->graph != NULL;
    if (d->graph) {
        if ((e = cudaGraphLaunch(d->graph, cudaStreamPerThread)))
            return cuda_fail(e, "launching the decoder's graph");
    } else {
        decoder_launch(d);
    }
    if ((e = cudaMemcpy(logits, d->logits, (size_t)c->vocab * sizeof(float),
                        cudaMemcpyDeviceToHost)))
        return cuda_fail(e, "copying the logits");
    int rc = sync_ok("decoder step");
    if (!rc) d->n++;
    return rc;
}
