/* rotary.h: the public API of librotary.
 *
 * A C11 library for decoder-only transformers with rotary position embeddings
 * (RoPE) and the alternatives (learned, sinusoidal, ALiBi, T5 bias, none).
 *
 * Conventions (see docs/ and DESIGN.md):
 * - Arrays are row-major float32; each function states its layout.
 * - Functions that can fail return ROTARY_OK (0) or a negative ROTARY_E* code
 *   and leave a message for rotary_last_error(). The library never prints or
 *   exits on its own.
 * - Results are deterministic for a given seed and thread count.
 */
#ifndef ROTARY_H
#define ROTARY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ROTARY_VERSION "0.1.0"

/* ------------------------------------------------------------------ errors */

enum {
    ROTARY_OK = 0,
    ROTARY_EINVAL = -1,  /* bad argument or configuration */
    ROTARY_ENOMEM = -2,  /* allocation failed or size overflow */
    ROTARY_EIO = -3,     /* open/read/write/rename failed */
    ROTARY_EFORMAT = -4, /* a file is malformed or not what was expected */
    ROTARY_EINTR = -5,   /* stopped on request (training saved a checkpoint) */
};

/* The message of the last failure on this thread ("" if none). */
const char *rotary_last_error(void);

/* Write n bytes to path so that a crash or power cut leaves either the old
 * file or the new one, never part of one: a temporary file beside path
 * ("PATH.tmp.XXXXXX"), fsync, rename, fsync of the directory. On failure
 * (disk full, read-only directory...) the old file is untouched and the
 * temporary file removed. */
int rotary_write_file(const char *path, const void *data, size_t n);

/* Bytes of memory this process can still use: the kernel's MemAvailable,
 * or less under an address-space limit (ulimit -v); 0 when unknown. Every
 * large buffer the library allocates (weights, gradients, optimizer state,
 * activations, KV caches) is checked against it first, so a model that
 * cannot fit is refused with the bytes it needs instead of being killed. */
double rotary_mem_available(void);

/* splitmix64-seeded xorshift64*; the same stream on every platform.
 * Functions at the end of this header. */
typedef struct { uint64_t s; } rotary_rng;

/* -------------------------------------------------------------------- RoPE */

/* How the rotated coordinates of one head are paired.
 * INTERLEAVED: pairs (2i, 2i+1), as RoFormer, GPT-J, Meta's LLaMA, llama2.c.
 * HALF:        pairs (i, i + rotary_dim/2), as GPT-NeoX and HF LLaMA. */
typedef enum { ROTARY_ROPE_INTERLEAVED = 0, ROTARY_ROPE_HALF = 1 } rotary_rope_pairing;

/* Frequency scaling for running a model past the context it was trained at
 * (docs/rope.md has each formula and its paper). s = factor, L0 = original_ctx,
 * d = rotary_dim, w_i = 2 pi / inv_freq_i (the wavelength of pair i).
 * NONE:        inv_freq_i = base^(-2i/d).
 * LINEAR:      inv_freq_i / s (position interpolation, Chen et al. 2023).
 * NTK:         base' = base * s^(d/(d-2)) ("NTK-aware" scaling).
 * DYNAMIC_NTK: NTK with s = max(1, L / L0), L the length the tables are built
 *              for (factor is not used).
 * YARN:        per-pair ramp between inv_freq_i / s and inv_freq_i by
 *              r_i = L0 / w_i (Peng et al. 2023), and the tables scaled by
 *              mscale = 0.1 ln s + 1.
 * LLAMA3:      w_i > L0/low_freq_factor: inv_freq_i / s; w_i < L0/high_freq_factor:
 *              unchanged; between: a smooth mix (Meta's Llama 3.1).
 * FACTORS:     inv_freq_i / freq_factors[i], one divisor per pair as a file
 *              states them (GGUF's rope_freqs.weight: llama.cpp writes
 *              Llama 3.1's scaling so); factor and original_ctx unused. */
typedef enum {
    ROTARY_ROPE_SCALING_NONE = 0,
    ROTARY_ROPE_SCALING_LINEAR,
    ROTARY_ROPE_SCALING_NTK,
    ROTARY_ROPE_SCALING_DYNAMIC_NTK,
    ROTARY_ROPE_SCALING_YARN,
    ROTARY_ROPE_SCALING_LLAMA3,
    ROTARY_ROPE_SCALING_FACTORS,
} rotary_rope_scaling_type;

/* FACTORS: at most this many pairs (head_dim 256). */
#define ROTARY_ROPE_MAX_FACTORS 128

/* Ints first, then doubles, then floats: no padding, so two configs compare
 * with memcmp (unused freq_factors stay 0, as rotary_rope_scaling_default
 * leaves them). */
typedef struct {
    int type;                /* rotary_rope_scaling_type */
    int original_ctx;        /* L0, the training context (> 0 unless NONE, FACTORS) */
    int n_factors;           /* FACTORS: pairs given, rotary_dim/2 (else 0) */
    int reserved;            /* 0; an even number of ints keeps the doubles aligned */
    double factor;           /* s >= 1 */
    double yarn_alpha;       /* YaRN ramp: r <= alpha interpolates fully (default 1) */
    double yarn_beta;        /* r >= beta keeps the frequency (default 32) */
    double low_freq_factor;  /* Llama 3 (default 1) */
    double high_freq_factor; /* Llama 3 (default 4), > low_freq_factor */
    double mscale;           /* factor on cos and sin; 0 = the type's own
                              * (YaRN: 0.1 ln s + 1, the others: 1) */
    float freq_factors[ROTARY_ROPE_MAX_FACTORS]; /* FACTORS: divisor of pair i,
                              * finite and > 0, for i < n_factors */
} rotary_rope_scaling;

/* NONE with the default parameters above (factor 1). */
void rotary_rope_scaling_default(rotary_rope_scaling *s);
/* Checks the fields the type uses; ROTARY_EINVAL with a message naming one. */
int rotary_rope_scaling_validate(const rotary_rope_scaling *s);
/* The factor the tables are multiplied by (mscale resolved); NULL: 1. */
double rotary_rope_scaling_mscale(const rotary_rope_scaling *s);
/* "none", "linear", "ntk", "dynamic-ntk", "yarn", "llama3", "factors"; parse returns -1
 * for an unknown name, name NULL for an unknown type. */
const char *rotary_rope_scaling_name(int type);
int rotary_rope_scaling_parse(const char *name);

/* The scaled inverse frequencies in float64: out (rotary_dim/2). seq_len is
 * the length L for DYNAMIC_NTK (ignored by the others); s NULL = NONE.
 * FACTORS needs n_factors == rotary_dim/2. */
int rotary_rope_inv_freq(double *out, int rotary_dim, double base, const rotary_rope_scaling *s,
                         int seq_len);

/* Precomputed RoPE tables for positions 0..max_pos-1.
 * inv_freq: (rotary_dim/2) from rotary_rope_inv_freq with seq_len = max_pos.
 * cos/sin: (max_pos, rotary_dim/2) of mscale * cos|sin(pos * inv_freq[i]),
 * computed in float64, stored as float32. */
typedef struct {
    int head_dim;    /* size of one head */
    int rotary_dim;  /* leading dims of each head that rotate (even, <= head_dim) */
    int pairing;     /* rotary_rope_pairing */
    int max_pos;     /* number of table rows */
    double base;
    rotary_rope_scaling scaling;
    double mscale;   /* resolved: what cos and sin are multiplied by */
    double *inv_freq;
    float *cos, *sin;
} rotary_rope;

/* Build the tables. rotary_dim == 0 means head_dim; scaling NULL = none.
 * DYNAMIC_NTK takes its factor from max_pos, so rebuild to extend. */
int rotary_rope_init(rotary_rope *r, int head_dim, int rotary_dim, double base,
                     rotary_rope_pairing pairing, int max_pos,
                     const rotary_rope_scaling *scaling);
void rotary_rope_free(rotary_rope *r);

/* Rotate x in place. x: (B, T, n_head, head_dim); consecutive tokens are
 * `row_stride` floats apart (n_head*head_dim when contiguous), heads are
 * head_dim apart. pos: (T) the position of each time step, shared by the B
 * rows, each in [0, max_pos). Dims >= rotary_dim pass through unchanged.
 * Returns ROTARY_EINVAL on a bad shape or position. */
int rotary_rope_forward(const rotary_rope *r, float *x, int B, int T, int n_head,
                        int row_stride, const int *pos);
/* Backward: dx <- R(-theta) dx, the transpose of the forward rotation. */
int rotary_rope_backward(const rotary_rope *r, float *dx, int B, int T, int n_head,
                         int row_stride, const int *pos);

/* ---------------------------------------------- other position encodings */

typedef enum {
    ROTARY_POS_ROPE = 0,
    ROTARY_POS_LEARNED,     /* trained table added to token embeddings */
    ROTARY_POS_SINUSOIDAL,  /* fixed sin/cos table added to token embeddings */
    ROTARY_POS_ALIBI,       /* per-head linear bias on attention scores */
    ROTARY_POS_NONE,        /* NoPE: causal mask only */
    ROTARY_POS_T5,          /* learned bias per (distance bucket, head) on scores */
} rotary_pos;

/* Sinusoidal table out: (T, C). out[t][2i] = a*sin(t*w_i), out[t][2i+1] =
 * a*cos(t*w_i), w_i = 10000^(-2i/C). C must be even. */
void rotary_sinusoidal_table(float *out, int T, int C, float amplitude);

/* ALiBi slopes (n_head): the geometric sequence of Press et al., with the
 * interleaved extension for head counts that are not powers of two. */
void rotary_alibi_slopes(float *slopes, int n_head);

/* The T5 bucket (0..n_buckets-1) of a causal distance n = i - j >= 0:
 * n itself below n_buckets/2, then logarithmically wider buckets up to
 * max_distance, past which all distances share the last bucket. Needs
 * n_buckets >= 2 and max_distance > n_buckets/2 (rotary_config_validate). */
int rotary_t5_bucket(int n, int n_buckets, int max_distance);

/* Name <-> enum helpers; the parse functions return -1 for unknown names. */
const char *rotary_pos_name(int pos);
int rotary_pos_parse(const char *s);

/* ------------------------------------------------------------------- model */

typedef enum { ROTARY_NORM_LAYER = 0, ROTARY_NORM_RMS = 1 } rotary_norm;
typedef enum { ROTARY_MLP_GELU = 0, ROTARY_MLP_SWIGLU = 1 } rotary_mlp;
/* SOFTMAX: causal softmax attention. LINEAR: causal linear attention with
 * the feature map elu(x) + 1, RoPE in the numerator only (RoFormer section
 * 3.3; docs/model.md); not with pos ALIBI or T5. */
typedef enum { ROTARY_ATTN_SOFTMAX = 0, ROTARY_ATTN_LINEAR = 1 } rotary_attn;

typedef struct {
    int n_layer, n_head, n_kv_head; /* n_head % n_kv_head == 0 (GQA) */
    int d_model, d_ff, ctx, vocab;  /* head_dim = d_model / n_head */
    int norm;                       /* rotary_norm */
    int mlp;                        /* rotary_mlp: gelu (tanh approx.) | swiglu */
    int pos;                        /* rotary_pos */
    int rope_pairing;               /* rotary_rope_pairing */
    double rope_base;
    int rotary_dim;                 /* 0 = head_dim */
    rotary_rope_scaling rope_scaling; /* NONE by default; only with pos ROPE */
    int tied;                       /* output head shares tok_emb */
    int bias;                       /* biases in linear layers and LayerNorm */
    float norm_eps;
    float init_std;                 /* weight init std (default 0.02) */
    float sin_amplitude;            /* sinusoidal table amplitude, see docs/model.md */
    int attn;                       /* rotary_attn: softmax | linear */
    int t5_buckets;                 /* pos T5: buckets (default 32) */
    int t5_max_distance;            /* pos T5: distance of the last bucket (default 128) */
} rotary_config;

/* A small, trainable default (byte vocabulary, RoPE, RMSNorm, SwiGLU). */
void rotary_config_default(rotary_config *c);
/* Checks every field; returns ROTARY_EINVAL with a message naming the field. */
int rotary_config_validate(const rotary_config *c);

/* One named parameter tensor: a view into the flat parameter buffer. */
typedef struct {
    char name[64];
    int ndim;
    int shape[2];
    size_t offset, numel; /* in floats */
    int decay;            /* AdamW weight decay applies (matrices, embeddings) */
} rotary_tensor;

typedef struct rotary_acts rotary_acts;     /* activations, internal */
typedef struct rotary_layout rotary_layout; /* parameter offsets, internal */

typedef struct {
    rotary_config cfg;
    size_t n_params;
    float *params;   /* (n_params) every weight, in tensor-table order */
    float *grads;    /* (n_params) same layout; accumulated by backward */
    rotary_tensor *tensors;
    int n_tensors;
    rotary_rope rope;      /* tables for positions 0..ctx-1 (pos == ROPE) */
    int pos_len;           /* positions the tables cover (ctx, or more after extend) */
    float *pos_table;      /* (pos_len, d_model) sinusoidal table or NULL */
    float *alibi;          /* (n_head) slopes or NULL */
    rotary_layout *layout; /* where each layer's weights are */
    rotary_acts *acts;     /* sized by rotary_model_reserve */
    /* Called by backward when grads[from, n_params) are final for this pass,
     * so that they can travel to other processes while the rest is
     * computed (src/dist.c); NULL: not called. */
    void (*grads_ready)(void *ctx, size_t from);
    void *grads_ready_ctx;
} rotary_model;

/* Allocate parameters and gradients for cfg (zeroed). */
int rotary_model_build(rotary_model *m, const rotary_config *cfg);
void rotary_model_free(rotary_model *m);
/* Deterministic init from seed: N(0, init_std) for matrices and embeddings,
 * scaled by 1/sqrt(2*n_layer) for the two residual output projections; norm
 * weights 1, biases 0. */
void rotary_model_init(rotary_model *m, uint64_t seed);
/* Allocate activations for batches of up to B sequences of T <= ctx tokens. */
int rotary_model_reserve(rotary_model *m, int B, int T);
/* Switch the RoPE frequency scaling (NULL = none) and rebuild the tables for
 * the positions they cover now; m->cfg.rope_scaling follows. On failure the
 * model is unchanged. Only for pos ROPE (NONE is accepted for any). */
int rotary_model_set_rope_scaling(rotary_model *m, const rotary_rope_scaling *s);
/* Look up a tensor by name; NULL if the model has none. */
const rotary_tensor *rotary_model_tensor(const rotary_model *m, const char *name);

/* Forward pass over tokens (B, T) at positions 0..T-1. With targets (B, T),
 * *loss receives the mean cross-entropy (nats); targets may be NULL.
 * Token ids must lie in [0, vocab). */
int rotary_model_forward(rotary_model *m, const int *tokens, const int *targets,
                         int B, int T, float *loss);
/* Logits (B, T, vocab) of the last forward. */
const float *rotary_model_logits(const rotary_model *m);
/* Backward of the last forward with targets; adds into m->grads. */
int rotary_model_backward(rotary_model *m);
void rotary_model_zero_grad(rotary_model *m);

/* --------------------------------------------------------------- optimizer */

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} rotary_adamw_config;

typedef struct {
    size_t n;
    size_t offset; /* the state covers parameters [offset, offset + n): 0 and
                      n_params for the whole model, a shard under ZeRO-1 */
    float *m, *v;  /* (n) first and second moments, parameter layout */
    long step;     /* steps taken */
} rotary_adamw;

/* State for the whole model (offset 0). For a shard, set offset after init. */
int rotary_adamw_init(rotary_adamw *o, size_t n);
void rotary_adamw_free(rotary_adamw *o);
/* One AdamW step (decoupled weight decay on tensors with decay set, bias
 * correction), as torch.optim.AdamW defines it, on the parameters the state
 * covers; the others are left alone. */
void rotary_adamw_step(rotary_adamw *o, rotary_model *m, const rotary_adamw_config *c);
/* Scale grads so their global L2 norm is at most max_norm (as
 * torch.nn.utils.clip_grad_norm_); returns the norm before clipping. The
 * squares are summed in double over blocks of ROTARY_NORM_BLOCK floats, then
 * the block sums in order: the same bits for any thread count. */
float rotary_clip_grad_norm(float *grads, size_t n, float max_norm);
enum { ROTARY_NORM_BLOCK = 16384 };
/* The pieces of rotary_clip_grad_norm, for a norm over shards held by
 * different processes: part[k] = the sum of squares (double) of block k of
 * grads (n floats, blocks of ROTARY_NORM_BLOCK, the last one short), and
 * the clip factor of the norm of blocks summed in order (1 when not clipping).
 * rotary_clip_grad_norm(g, n, c) == norm of rotary_grad_sq_blocks(g, n),
 * factor min(1, c / (norm + 1e-6)). */
void rotary_grad_sq_blocks(const float *grads, size_t n, double *part);
float rotary_grad_norm_of_blocks(const double *part, size_t n_blocks);
float rotary_clip_factor(float norm, float max_norm);
/* Linear warmup to lr over `warmup` steps, then cosine decay to min_lr at
 * step `total`. step counts from 0. */
float rotary_lr_at(long step, long warmup, long total, float lr, float min_lr);

/* ------------------------------------------------------------- safetensors */

typedef enum { ROTARY_F32 = 0, ROTARY_I32 = 1 } rotary_dtype;

/* A tensor to write, or a view of one read from a file. */
typedef struct {
    const char *name;
    int dtype;         /* rotary_dtype */
    int ndim;          /* 0..4 */
    int64_t shape[4];
    const void *data;  /* little-endian on disk; native here (x86/ARM LE) */
} rotary_st_tensor;

/* Write a safetensors file atomically (temp file, fsync, rename). meta holds
 * n_meta (key, value) string pairs for __metadata__ (may be NULL). */
int rotary_st_write(const char *path, const rotary_st_tensor *t, int n,
                    const char *const *meta, int n_meta);

typedef struct rotary_st_file rotary_st_file;
/* Open and validate a safetensors file (mapped read-only): header size,
 * JSON, dtypes, shapes and every offset are checked before use. */
int rotary_st_open(rotary_st_file **f, const char *path);
void rotary_st_close(rotary_st_file *f);
/* Find a tensor by name; ROTARY_EFORMAT if absent. out->data points into
 * the mapping and stays valid until rotary_st_close. */
int rotary_st_find(const rotary_st_file *f, const char *name, rotary_st_tensor *out);
/* A __metadata__ value, or NULL. */
const char *rotary_st_meta(const rotary_st_file *f, const char *key);

/* Save a model checkpoint: every parameter tensor (F32) with the config in
 * __metadata__, plus n_extra (key, value) pairs of extra metadata. */
int rotary_checkpoint_save(const char *path, const rotary_model *m,
                           const char *const *extra_meta, int n_extra);
/* The same plus the AdamW state (tensors "optim.m", "optim.v" and metadata
 * "optim.step"), for resuming training; opt may be NULL. */
int rotary_checkpoint_save_state(const char *path, const rotary_model *m,
                                 const rotary_adamw *opt, const char *const *extra_meta,
                                 int n_extra);
/* Read the AdamW state of such a checkpoint into opt (sized for m, or for a
 * shard of it: the moments of parameters [opt->offset, opt->offset + opt->n)). */
int rotary_checkpoint_load_optim(const char *path, const rotary_model *m, rotary_adamw *opt);
/* Build *m from a checkpoint (config from its metadata, then weights; any
 * optimizer state is ignored).
 * On failure *m is left empty and the message says what was wrong. */
int rotary_checkpoint_load(const char *path, rotary_model *m);

/* -------------------------------------------------------------------- data */

/* Token file: a 32-byte header (magic "RTOKENS1", u32 vocab, u32 bytes per
 * token (2 or 4), u64 token count, 8 zero bytes), then the little-endian ids.
 * See docs/formats.md. */
int rotary_tokens_save(const char *path, const int *ids, size_t n, int vocab);
/* Reads and validates a token file (every id < vocab); *ids is malloc'd. */
int rotary_tokens_load(const char *path, int **ids, size_t *n, int *vocab);
/* 1 if the file starts with the token-file magic, 0 if not, <0 on error. */
int rotary_tokens_is_file(const char *path);

/* A training batch: B windows of T+1 tokens from ids (n >= T+1), their
 * starts drawn from (seed, step) alone, so any step's batch can be rebuilt
 * without replaying the ones before it. tok, tgt: (B, T). */
void rotary_batch(const int *ids, size_t n, int B, int T, uint64_t seed, uint64_t step,
                  int *tok, int *tgt);
/* Windows i0..i1-1 (0 <= i0 <= i1 <= B) of that batch: tok, tgt (i1-i0, T).
 * The ranks of a data-parallel job each take a slice, and together see the
 * batch one process would. */
void rotary_batch_slice(const int *ids, size_t n, int B, int T, uint64_t seed, uint64_t step,
                        int i0, int i1, int *tok, int *tgt);

/* ------------------------------------------------------ data parallelism */

/* Training on several processes (docs/distributed.md): started by
 * `mpirun -np N`, each process (rank) runs the same model on its own slice
 * of every batch, and the gradients are averaged across ranks. Needs a
 * librotary built with -DROTARY_MPI=ON; without it, and in a process not
 * started by mpirun, there is one rank and nothing is communicated. */
typedef struct {
    int rank, size;  /* this process, and the number of processes */
    int local_rank;  /* its rank among the processes on its machine (the GPU
                        it takes with --device cuda) */
    int local_size;  /* the number of processes on its machine */
    int mpi;         /* MPI was initialised by rotary_dist_init */
    size_t bucket;   /* floats per collective call (0: ROTARY_DIST_BUCKET) */
    void *impl;      /* buffers and requests in flight, internal */
} rotary_dist;
enum { ROTARY_DIST_BUCKET = 1 << 20 };

/* 1 if librotary was built with MPI. */
int rotary_dist_available(void);
/* Join the job when this process was started by mpirun (MPI_Init_thread;
 * MPI errors then return instead of aborting); otherwise, or without MPI,
 * rank 0 of 1 without touching MPI. */
int rotary_dist_init(rotary_dist *d, int *argc, char ***argv);
/* Leave the job (MPI_Finalize); every rank must call it. */
void rotary_dist_finalize(rotary_dist *d);
/* Stop every process of the job with exit status code (MPI_Abort), for a
 * rank that failed alone (the others would wait for it forever). Returns
 * only without MPI. */
void rotary_dist_abort(const rotary_dist *d, int code);
/* The parameters rank r keeps the optimizer state for under ZeRO-1:
 * [*lo, *hi) of n, in contiguous shards whose bounds are multiples of
 * ROTARY_NORM_BLOCK (so a norm over the shards adds the same blocks in the
 * same order as over the whole buffer); the last shards may be empty when n
 * is small. */
void rotary_dist_shard(const rotary_dist *d, size_t n, int r, size_t *lo, size_t *hi);
/* x (n floats, the same n on every rank) <- the mean over the ranks, in
 * buckets of d->bucket floats (MPI_Allreduce sum, then times 1/size). */
int rotary_dist_allreduce_mean(const rotary_dist *d, float *x, size_t n);
/* The lowest (worst) of the rcs of all ranks, so ranks fail together; a rank
 * whose rc was ROTARY_OK gets a message naming the rank that failed. */
int rotary_dist_agree(const rotary_dist *d, int rc);

/* -------------------------------------------------------------- training */

typedef struct {
    long step;          /* steps done */
    long steps;         /* total */
    float train_loss;   /* of the last step */
    float val_loss;     /* of the last evaluation, NAN before the first */
    int evaluated;      /* this step ran an evaluation */
    float lr;
    double tokens_per_s;
    double elapsed_s;   /* training time, across resumes */
} rotary_train_status;

typedef struct {
    const char *run_dir;          /* metrics.csv, checkpoint.safetensors */
    const int *train_ids, *val_ids;
    size_t n_train, n_val;
    int batch;                    /* sequences per step; T is the model's ctx */
    int accum;                    /* micro-batches a step (0 or 1: none): each
                                     process's part of the batch goes through
                                     forward and backward in `accum` equal
                                     parts, gradients summed, so the step is
                                     the same with 1/accum of the activation
                                     memory (up to the order of the sums) */
    long steps, warmup;
    float lr, min_lr, weight_decay, clip, beta1, beta2, eps;
    long eval_every, ckpt_every;  /* 0: only at the end */
    int eval_batches;
    uint64_t seed;
    int resume;                   /* continue from run_dir/checkpoint.safetensors */
    /* Called after every step; a non-zero return stops the run after a
     * checkpoint (rotary_train then returns ROTARY_EINTR). May be NULL. */
    int (*on_step)(void *ctx, const rotary_train_status *s);
    void *ctx;
    /* Data parallelism (NULL: one process). batch is the global batch, a
     * multiple of dist->size; rank r trains on windows [r b, (r+1) b) of
     * it, b = batch / size. Rank 0 alone writes metrics and checkpoints;
     * on_step runs on every rank, and any rank asking to stop stops all. */
    const rotary_dist *dist;
    int zero1;   /* ZeRO stage 1: each rank keeps the AdamW state of its
                    shard (rotary_dist_shard) only; checkpoints still hold
                    the whole state */
} rotary_train_opts;

/* Train m (built, initialised, or loaded from the run's checkpoint when
 * resuming) with AdamW and the warmup + cosine schedule. Writes
 * run_dir/metrics.csv and run_dir/checkpoint.safetensors (with optimizer
 * state). Same seed and threads give the same bits, resumed or not. A
 * non-finite loss stops the run, keeping the last checkpoint. */
int rotary_train(rotary_model *m, const rotary_train_opts *o);
/* Bytes of AdamW state (both moments) each rank keeps for m under o. */
size_t rotary_train_optim_bytes(const rotary_model *m, const rotary_train_opts *o);
/* Mean validation loss over n_batches fixed windows (drawn from seed). */
int rotary_eval_loss(rotary_model *m, const int *ids, size_t n, int B, int n_batches,
                     uint64_t seed, float *loss);

/* -------------------------------------------------- decoding and sampling */

/* Grow the position tables so the model accepts sequences of T tokens
 * (T may exceed ctx for every encoding but learned; T5 buckets saturate).
 * RoPE tables are rebuilt for T with the model's scaling, so dynamic NTK
 * takes its factor from T. */
int rotary_model_extend(rotary_model *m, int T);

/* Incremental decoding with a key/value cache: each step costs one
 * position. Positions run 0..max_T-1. Linear attention keeps its running
 * sums instead of a cache, so a step costs the same at every position. */
typedef struct {
    rotary_model *m;
    int max_T, n;       /* capacity, tokens in the cache */
    float *buf;         /* one allocation for everything below */
    float *k, *v;       /* (n_layer, n_kv_head, max_T, head_dim); softmax only */
    float *S, *z;       /* (n_layer, n_kv_head, head_dim, head_dim) and
                           (n_layer, n_kv_head, head_dim); linear only */
    float *feat, *rfeat; /* ((n_head + n_kv_head) * head_dim) phi(q) | phi(k),
                            and rotated (linear only) */
    int *bucket;        /* (max_T) T5 bucket of each distance, or NULL */
    float *x, *h, *qkv, *att, *attout, *up, *act, *logits; /* att: (n_head, max_T);
                           h, act: one row per thread (threads, d_model|d_ff,
                           rows padded to 16 floats) */
    int threads;        /* OpenMP threads a step may use: omp_get_max_threads()
                           at init (fewer if fewer are set when it runs) */
    void *team;         /* how the threads share out the rows of each
                           matrix: one cursor (64 bytes) per thread */
    void *q8;           /* rotary_decoder_quantize: one allocation with the
                           Q8_0 copy of every matrix and each thread's
                           quantized input; NULL: the step reads the float32
                           weights (or the bf16 copy) */
    size_t q8_bytes;    /* its size */
    void *bf16;         /* rotary_decoder_bf16: the bfloat16 copy of every
                           matrix, or NULL */
} rotary_decoder;

int rotary_decoder_init(rotary_decoder *d, rotary_model *m, int max_T);
/* Bytes rotary_decoder_init would allocate for m and max_T positions (the
 * KV cache and the step's buffers), for checking memory before asking. */
double rotary_decoder_bytes(const rotary_model *m, int max_T);
void rotary_decoder_free(rotary_decoder *d);
void rotary_decoder_reset(rotary_decoder *d);
/* Feed one token at position d->n; *logits (vocab) stays valid until the
 * next call. Fails when the cache is full or the token is out of range. */
int rotary_decoder_step(rotary_decoder *d, int token, const float **logits);
/* Switch the decoder's matrix-vector products to 8-bit weights: every
 * matrix (q|k|v, output, MLP, classifier) quantized in groups of 32 values
 * with one float16 scale each (GGUF's Q8_0), the input vector likewise per
 * group with a float32 scale, products summed in integers. Call after init
 * (again after changing the model's weights); costs about 1.06 bytes per
 * weight in memory. The token embedding stays float32. Logits differ from
 * the float32 path by the rounding of weights and inputs (about 0.4% of
 * each group's largest value). rotary_decoder_free releases the copy. */
int rotary_decoder_quantize(rotary_decoder *d);
/* Switch them to bfloat16 weights instead: the same matrices rounded to
 * nearest even, 2 bytes a weight (half of float32's, so about twice the
 * speed where memory bandwidth bounds a step). The input vector and the
 * sums stay float32, so the logits are the float32 path's on the rounded
 * weights, up to the order of the sums. Call after init (again after
 * changing the weights). This and rotary_decoder_quantize replace each
 * other; rotary_decoder_free releases the copy. */
int rotary_decoder_bf16(rotary_decoder *d);

typedef struct {
    float temperature;  /* 0: greedy */
    int top_k;          /* 0: off */
    float top_p;        /* 1: off */
    rotary_rng rng;
    int vocab;
    void *work;         /* (vocab) candidates, internal */
} rotary_sampler;

int rotary_sampler_init(rotary_sampler *s, int vocab, float temperature, int top_k,
                        float top_p, uint64_t seed);
void rotary_sampler_free(rotary_sampler *s);
int rotary_sample(rotary_sampler *s, const float *logits);

/* --------------------------------------------------------------- tokenizer */

/* A tokenizer maps bytes to ids and back, exactly, for any byte string.
 * bytes: 256 ids, id = byte value.
 * bpe:   byte-level BPE: ids 0..255 are the bytes, id 256+i is merge i, a pair
 *        of earlier ids. Text is first cut into chunks (docs/tokenizer.md,
 *        rule "rotary-v1") and merges never cross a chunk boundary. */
typedef struct rotary_tokenizer rotary_tokenizer;
typedef struct rotary_gguf rotary_gguf;
typedef struct rotary_gguf_writer rotary_gguf_writer;

int rotary_tokenizer_bytes(rotary_tokenizer **t);
/* Learn up to vocab_size - 256 merges (256 <= vocab_size <= 65536) from text,
 * which must be non-empty valid UTF-8 (ROTARY_EINVAL names the byte offset of
 * the first bad sequence). Stops early when no pair occurs twice, so the
 * vocabulary may come out smaller. Ties go to the smallest (left, right) ids.
 * progress (may be NULL) is called after each merge. */
int rotary_tokenizer_train(rotary_tokenizer **t, const unsigned char *text, size_t n,
                           int vocab_size,
                           void (*progress)(void *ctx, int merges_done, int merges_total),
                           void *ctx);
void rotary_tokenizer_free(rotary_tokenizer *t);

/* Encode any bytes (valid UTF-8 or not). *ids is allocated (free()) and holds
 * *n_ids ids; decoding them gives the input back bit for bit. */
int rotary_tokenizer_encode(const rotary_tokenizer *t, const unsigned char *text, size_t n,
                            int **ids, size_t *n_ids);
/* Concatenate the pieces of ids into *out (allocated, free()); ROTARY_EINVAL
 * on an id outside [0, vocab_size). */
int rotary_tokenizer_decode(const rotary_tokenizer *t, const int *ids, size_t n,
                            unsigned char **out, size_t *n_out);
/* The bytes of one token (not NUL-terminated), *len set; NULL if out of range.
 * Valid until rotary_tokenizer_free. */
const unsigned char *rotary_tokenizer_piece(const rotary_tokenizer *t, int id, int *len);
int rotary_tokenizer_vocab_size(const rotary_tokenizer *t);
int rotary_tokenizer_is_bytes(const rotary_tokenizer *t);

/* JSON file (docs/tokenizer.md), written atomically (temp file, fsync, rename).
 * load checks format, version, type, sizes and that each merge refers only to
 * earlier ids. */
int rotary_tokenizer_save(const rotary_tokenizer *t, const char *path);
int rotary_tokenizer_load(rotary_tokenizer **t, const char *path);

/* Tokenizers of existing models (docs/tokenizer.md). Their ids and pieces
 * are the model's own: encode follows that model's rules (SentencePiece adds
 * a leading space and falls back to <0xXX> byte tokens; GPT-2 splits with its
 * pattern and maps bytes to printable characters), and rotary_tokenizer_piece
 * gives the bytes a token stands for (empty for control tokens such as BOS).
 * Special tokens written in the text are encoded as plain text; BOS is never
 * added by encode. */
/* llama2.c's tokenizer.bin: vocab_size entries (the model's vocab_size;
 * fewer in the file is an error), or with vocab_size 0 every entry up to the
 * end of the file. Ids 0 <unk>, 1 BOS, 2 EOS, <0xXX> byte tokens; add_bos. */
int rotary_tokenizer_load_llama2c(rotary_tokenizer **t, const char *path, int vocab_size);
/* tokenizer.ggml.model "llama" (SentencePiece BPE) or "gpt2" (byte-level BPE,
 * pre-tokenizer "gpt-2"); also our own tokenizers as rotary_tokenizer_to_gguf
 * writes them. Every count, id, type, merge and spelling is checked. */
int rotary_tokenizer_from_gguf(rotary_tokenizer **t, const rotary_gguf *g);
/* Add the tokenizer.ggml.* keys from which rotary_tokenizer_from_gguf
 * rebuilds t exactly (our byte and BPE tokenizers, as model "gpt2" with
 * pre-tokenizer "rotary-v1" plus rotary.tokenizer.merges, the merges' ids;
 * a model's tokenizer with its own tokens, types, scores or merges). */
int rotary_tokenizer_to_gguf(const rotary_tokenizer *t, rotary_gguf_writer *w);
int rotary_tokenizer_bos(const rotary_tokenizer *t);     /* -1: none */
int rotary_tokenizer_eos(const rotary_tokenizer *t);     /* -1: none */
int rotary_tokenizer_add_bos(const rotary_tokenizer *t); /* prompts start with BOS */
/* 1 if encode puts a space in front of non-empty text (SentencePiece): the
 * first piece after BOS then starts with that space, which a program
 * printing the text drops (as llama2.c and SentencePiece's decoder do). */
int rotary_tokenizer_space_prefix(const rotary_tokenizer *t);
/* The id of the control or user-defined token the model spells as text
 * ("<|eot_id|>", "<|im_start|>"), or -1. Such tokens are never produced by
 * encode; chat templates put them in by id. */
int rotary_tokenizer_special(const rotary_tokenizer *t, const char *text);

/* -------------------------------------------------------------------- GGUF */

/* GGUF (versions 2 and 3), llama.cpp's file format: typed metadata
 * key/values, then tensor descriptions, then aligned tensor data
 * (docs/formats.md). The reader maps the file read-only and validates every
 * count, length, type, dimension and offset before anything is used. */
typedef enum {
    ROTARY_GGUF_U8 = 0, ROTARY_GGUF_I8 = 1, ROTARY_GGUF_U16 = 2, ROTARY_GGUF_I16 = 3,
    ROTARY_GGUF_U32 = 4, ROTARY_GGUF_I32 = 5, ROTARY_GGUF_F32 = 6, ROTARY_GGUF_BOOL = 7,
    ROTARY_GGUF_STRING = 8, ROTARY_GGUF_ARRAY = 9, ROTARY_GGUF_U64 = 10, ROTARY_GGUF_I64 = 11,
    ROTARY_GGUF_F64 = 12,
} rotary_gguf_type;

/* Tensor types we convert (ggml's numbering). Q8_0: blocks of 32 values,
 * each a float16 scale d then 32 int8 q (34 bytes); value = d * q.
 * rotary_gguf_open also accepts tensors of ggml's other types (Q4_K, I32,
 * ...: their sizes are checked like any other), so that the metadata of
 * any model can be read; rotary_gguf_tensor_f32 refuses those by name.
 * A type number ggml does not define fails the open. */
enum { ROTARY_GGML_F32 = 0, ROTARY_GGML_F16 = 1, ROTARY_GGML_Q8_0 = 8, ROTARY_GGML_BF16 = 30 };

typedef struct {
    const char *name;   /* NUL-terminated, 1..64 bytes */
    int type;           /* ggml type: ROTARY_GGML_* or another ggml type */
    int n_dims;         /* 1..4 */
    int64_t ne[4];      /* ggml order: ne[0] is the contiguous dimension; unused = 1 */
    int64_t n_elements;
    size_t n_bytes;
    const void *data;   /* into the mapping; valid until rotary_gguf_close.
                           Aligned to the file's alignment (32 unless the
                           file says otherwise): read with memcpy if that
                           may be smaller than the element */
} rotary_gguf_tensor;

/* typedef struct rotary_gguf rotary_gguf; (declared with the tokenizer) */

/* Open and validate path (little-endian GGUF v2 or v3; v1 and big-endian
 * files are refused). On failure *g is NULL and the message names the file,
 * the item and its byte offset. Keys and tensor names are 1..65535 and
 * 1..64 bytes without NUL and unique; bools are 0 or 1; general.alignment,
 * if present, is a U32 power of two. Cost: one pass over the header; string
 * arrays get an index (8 bytes per element). */
int rotary_gguf_open(rotary_gguf **g, const char *path);
void rotary_gguf_close(rotary_gguf *g); /* NULL is fine */
int rotary_gguf_version(const rotary_gguf *g);
/* Key/values in file order, i in [0, n_kv); out of range: NULL and -1. */
int rotary_gguf_n_kv(const rotary_gguf *g);
const char *rotary_gguf_kv_key(const rotary_gguf *g, int i); /* NUL-terminated */
int rotary_gguf_kv_type(const rotary_gguf *g, int i);        /* rotary_gguf_type */
int rotary_gguf_find(const rotary_gguf *g, const char *key); /* index or -1; O(1) */
/* The bytes of value i as stored (little-endian), for what the typed
 * getters below cannot give (a U64 above INT64_MAX, arrays of arrays):
 * *data points into the mapping at the value (a STRING: its u64 length then
 * the bytes; an ARRAY: its u32 element type, u64 count, then the elements)
 * and *n_bytes is its size. */
int rotary_gguf_kv_value(const rotary_gguf *g, int i, const void **data, size_t *n_bytes);
/* Scalar values. get_int takes any integer type or bool (EFORMAT if the
 * value does not fit int64); get_float takes any float or integer type
 * (U64/I64 rounded to the nearest double); get_string a STRING (not
 * NUL-terminated, may hold NUL: use len; it points into the mapping). Each
 * returns ROTARY_EFORMAT with a message naming the key when it is missing or
 * of another type (ROTARY_EINVAL for NULL arguments). */
int rotary_gguf_get_int(const rotary_gguf *g, const char *key, int64_t *out);
int rotary_gguf_get_float(const rotary_gguf *g, const char *key, double *out);
int rotary_gguf_get_string(const rotary_gguf *g, const char *key, const char **s, size_t *len);
/* Arrays: the element type and length, then element i (O(1) for every
 * element type, strings included), converted as the scalar getters do.
 * ROTARY_EINVAL when i >= n. Arrays of arrays are accepted by open, but only
 * get_array and rotary_gguf_kv_value read them. */
int rotary_gguf_get_array(const rotary_gguf *g, const char *key, int *elem_type, uint64_t *n);
int rotary_gguf_array_int(const rotary_gguf *g, const char *key, uint64_t i, int64_t *out);
int rotary_gguf_array_float(const rotary_gguf *g, const char *key, uint64_t i, double *out);
int rotary_gguf_array_string(const rotary_gguf *g, const char *key, uint64_t i, const char **s,
                             size_t *len);

int rotary_gguf_n_tensors(const rotary_gguf *g);
const rotary_gguf_tensor *rotary_gguf_tensor_at(const rotary_gguf *g, int i);
const rotary_gguf_tensor *rotary_gguf_find_tensor(const rotary_gguf *g, const char *name);
/* All n_elements values of t as float32 into out (n_elements, ggml order:
 * ne[0] fastest): F32 copied, F16 and BF16 converted exactly (subnormals,
 * inf, NaN), Q8_0 dequantized exactly (d * q in float32). Other types:
 * ROTARY_EFORMAT naming the type and the tensor. OpenMP above 64k values. */
int rotary_gguf_tensor_f32(const rotary_gguf_tensor *t, float *out);

/* Writer: collect key/values and tensors, then write a version-3 file
 * (alignment 32) atomically (temp file, fsync, rename). Keys are written in
 * the order they were first set; setting a key again replaces its value
 * (and type) in place. Keys must be 1..65535 bytes, tensor names 1..63
 * bytes (what llama.cpp reads) and unique (ROTARY_EINVAL otherwise); the
 * writer refuses, and allocates nothing for, bad input at the set/add call,
 * and a failed write leaves no file behind. A general.alignment key set
 * as a U32 power of two changes the alignment the file is laid out with.
 * (rotary_gguf_writer is declared with the tokenizer.) */
int rotary_gguf_writer_new(rotary_gguf_writer **w);
void rotary_gguf_writer_free(rotary_gguf_writer *w);
int rotary_gguf_set_u32(rotary_gguf_writer *w, const char *key, uint32_t v);
int rotary_gguf_set_i32(rotary_gguf_writer *w, const char *key, int32_t v);
int rotary_gguf_set_f32(rotary_gguf_writer *w, const char *key, float v);
int rotary_gguf_set_bool(rotary_gguf_writer *w, const char *key, int v);
int rotary_gguf_set_string(rotary_gguf_writer *w, const char *key, const char *s, size_t len);
/* Any scalar type but STRING and ARRAY: value points to one value of that
 * type (uint8_t ... double; BOOL: a uint8_t 0 or 1). */
int rotary_gguf_set_scalar(rotary_gguf_writer *w, const char *key, int type, const void *value);
/* A numeric array (elem_type not STRING or ARRAY; BOOL elements are bytes
 * 0 or 1); data (n elements) is copied. */
int rotary_gguf_set_array(rotary_gguf_writer *w, const char *key, int elem_type,
                          const void *data, uint64_t n);
/* A string array: string i is s[i] of len[i] bytes (len NULL: each s[i]
 * is NUL-terminated); the strings are copied. */
int rotary_gguf_set_strings(rotary_gguf_writer *w, const char *key, const char *const *s,
                            const size_t *len, uint64_t n);
/* A tensor of type F32, F16, BF16 or Q8_0 (ne[0..n_dims) in ggml order,
 * ne[0] contiguous, each >= 1; Q8_0 needs ne[0] % 32 == 0 and data already
 * in blocks); data is referenced, not copied: it must stay valid until
 * rotary_gguf_write. Tensors are written in the order added. */
int rotary_gguf_add_tensor(rotary_gguf_writer *w, const char *name, int type, int n_dims,
                           const int64_t *ne, const void *data);
int rotary_gguf_write(const rotary_gguf_writer *w, const char *path);

/* ------------------------------------------------- other model formats */

/* A llama2.c checkpoint (.bin: 7 int32 dim, hidden_dim, n_layers, n_heads,
 * n_kv_heads, vocab_size (negative: separate classifier), seq_len, then
 * float32 weights) into *m: RMSNorm (eps 1e-5), SwiGLU, interleaved RoPE
 * with base 10000 over the whole head. Weights are copied into our layout. */
int rotary_model_load_llama2c(rotary_model *m, const char *path);
/* A GGUF model of architecture `llama` into *m (weights converted to
 * float32). GGUF's llama rotates adjacent pairs, so m gets the interleaved
 * pairing; rope scaling keys, or the per-pair factors of an F32 tensor
 * rope_freqs.weight (rotary_dim/2 values, Llama 3.1 files; not both),
 * become m->cfg.rope_scaling. */
int rotary_model_load_gguf(rotary_model *m, const rotary_gguf *g);
/* Write m as GGUF architecture `llama` with tokenizer t inside. Refuses
 * models that architecture cannot express (LayerNorm, GELU, biases, position
 * encodings other than RoPE, linear attention, dynamic-ntk and llama3
 * scaling); scaling FACTORS goes out as the tensor rope_freqs.weight. A
 * half-pairing model has the rows of wq and wk permuted within each head
 * into the adjacent-pair order, so both programs compute the same function. */
int rotary_model_export_gguf(const rotary_model *m, const rotary_tokenizer *t, const char *path);

/* ------------------------------------------------------------------- misc */

/* Debian's OpenBLAS 0.3.21 predates Zen 4 and falls back to its Haswell
 * kernels on AVX-512 AMD CPUs, 1.4-1.7x slower than its SkylakeX kernels
 * there. OpenBLAS reads OPENBLAS_CORETYPE once, when it loads: this returns
 * the value a program should set (and re-execute itself with) to get the
 * faster kernels, or NULL when there is nothing to do. */
const char *rotary_blas_coretype_hint(void);

/* The random number generator (rotary_rng) is declared at the top. */
void rotary_rng_seed(rotary_rng *r, uint64_t seed);
uint64_t rotary_rng_next(rotary_rng *r);
float rotary_rng_uniform(rotary_rng *r); /* [0, 1) */
float rotary_rng_normal(rotary_rng *r);  /* N(0, 1) */

#ifdef __cplusplus
}
#endif
#endif /* ROTARY_H */
