/* cuda_model.h: the model on an NVIDIA GPU (internal; docs/performance.md).
 *
 * A cuda_model mirrors a host rotary_model: the same flat parameter buffer in
 * the same order (so checkpoints move between CPU and GPU unchanged), plus
 * gradients, AdamW moments and activations, all in device memory, fp32
 * master weights with bf16 tensor-core GEMMs. Supported: softmax or linear
 * attention with pos rope (any pairing, partial rotary dim, any scaling: the
 * tables come from the host), learned, sinusoidal, alibi or t5 (softmax) or
 * none; LayerNorm or RMSNorm; GELU or SwiGLU; GQA; tied or untied; biases;
 * head_dim even and at most 128; decoding with a KV cache, or linear
 * attention's state.
 *
 * Every function returns ROTARY_OK or an error code with the message in
 * rotary_last_error(). Built without CUDA (src/cuda/stub.c), each says so. */
#ifndef ROTARY_CUDA_MODEL_H
#define ROTARY_CUDA_MODEL_H

#include "rotary.h"

typedef struct cuda_model cuda_model;

/* ROTARY_OK when a CUDA device can be used; "built without CUDA" or
 * "no CUDA device" otherwise. */
int cuda_device_check(void);
/* ROTARY_OK when the GPU runs this configuration, else why not. */
int cuda_config_check(const rotary_config *c);

/* Copy m's parameters to a new device model. m must outlive it: its tensor
 * table, layout and position tables are read from there. It holds no
 * gradients or optimizer state until cuda_model_trainable. */
int cuda_model_new(cuda_model **g, const rotary_model *m);
void cuda_model_free(cuda_model *g); /* NULL is fine */
/* Gradients (all n_params, zero) and AdamW moments (zero, step 0) for the
 * parameters [lo, hi): 0 and n_params, or a ZeRO-1 shard, the only part
 * cuda_model_adamw_step then updates. Needed by the backward and the
 * optimizer calls below. */
int cuda_model_trainable(cuda_model *g, size_t lo, size_t hi);
/* Activations for batches of up to B x T (T <= m->pos_len); also refreshes
 * the device's position tables from m (after rotary_model_extend). */
int cuda_model_reserve(cuda_model *g, int B, int T);
/* Forward over tokens (B, T) at positions 0..T-1; with targets, *loss is the
 * mean cross-entropy. train: the classifier also leaves the gradient of the
 * loss in place of the logits, for cuda_model_backward. */
int cuda_model_forward(cuda_model *g, const int *tokens, const int *targets, int B, int T,
                       int train, float *loss);
/* Logits (B, T, vocab) of the last forward with train 0, to host memory. */
int cuda_model_logits(const cuda_model *g, float *out);
/* Row `row` (vocab floats) of those logits, to host memory. */
int cuda_model_logits_row(const cuda_model *g, size_t row, float *out);
/* Gradients of the last train forward, added into the device gradients. */
int cuda_model_backward(cuda_model *g);
/* fn(ctx, from), during cuda_model_backward, each time the kernels that
 * finish gradients [from, n_params) are queued on the calling thread's
 * stream: after each layer (later layers lie later in the buffer), and
 * last with 0; what fn queues behind them sees them final. NULL: none. */
void cuda_model_on_grads(cuda_model *g, void (*fn)(void *ctx, size_t from), void *ctx);
int cuda_model_zero_grad(cuda_model *g);
/* Global L2 norm of the gradients, as rotary_grad_norm_of_blocks of
 * their block sums (double, a fixed order: the same every run). */
int cuda_model_grad_norm(cuda_model *g, float *norm);
/* Those block sums (rotary_grad_sq_blocks) of gradients [lo, hi) into
 * part[lo / ROTARY_NORM_BLOCK ...] (host memory); lo a multiple of
 * ROTARY_NORM_BLOCK: a ZeRO-1 shard's, for dist_allgather_norm_blocks. */
int cuda_model_grad_sq_blocks(cuda_model *g, size_t lo, size_t hi, double *part);
/* One AdamW step as rotary_adamw_step, gradients read times grad_scale
 * (the clipping factor), on the parameters cuda_model_trainable gave
 * moments (and their bf16 copies); counts the step itself. */
int cuda_model_adamw_step(cuda_model *g, const rotary_adamw_config *c, float grad_scale);
/* Copy to host: params and grads (n_params each, either may be NULL), and
 * the AdamW state into opt (covering what cuda_model_trainable gave; may
 * be NULL). */
int cuda_model_download(const cuda_model *g, float *params, float *grads, rotary_adamw *opt);
/* Copy host parameters and AdamW state (may be NULL) to the device. */
int cuda_model_upload(cuda_model *g, const float *params, const rotary_adamw *opt);
/* The device's gradients and parameters (n_params floats each, device
 * memory). After writing the parameters, cuda_model_params_changed makes
 * the bf16 copies the GEMMs read again. */
float *cuda_model_grads(cuda_model *g);
float *cuda_model_params(cuda_model *g);
void cuda_model_params_changed(cuda_model *g);
/* Take GPU local_rank % (the number of GPUs) for every later call of this
 * thread: with several processes on one machine (mpirun), each its own GPU
 * where there are enough. Call before anything else touches the device. */
int cuda_device_use(int local_rank);

/* Incremental decoding on the GPU with a key/value cache (as
 * rotary_decoder): positions 0..max_T-1 (max_T <= the positions g's tables
 * cover, and <= 32768). g must outlive it; a step uses none of g's
 * activations, so training and decoding may alternate. */
typedef struct cuda_decoder cuda_decoder;
int cuda_decoder_new(cuda_decoder **d, cuda_model *g, int max_T);
void cuda_decoder_free(cuda_decoder *d); /* NULL is fine */
void cuda_decoder_reset(cuda_decoder *d);
int cuda_decoder_full(const cuda_decoder *d); /* 1 when the cache is full */
/* Feed token at the next position; logits (vocab) to host memory. */
int cuda_decoder_step(cuda_decoder *d, int token, float *logits);
/* Steps replay one CUDA graph captured at the first step (on, the default),
 * or launch their kernels one by one (off): the same kernels either way, so
 * the same results. */
void cuda_decoder_set_graph(cuda_decoder *d, int on);
/* The linear layers as gpu_decode_matvec, each with the norm or activation
 * before it fused in (on: 6 launches a layer instead of 9), or cuBLAS's
 * SGEMV after separate norm and activation kernels (off). The default is
 * off unless ROTARY_CUDA_DECODE=fused at the first decoder. Results differ
 * only by the order of the sums. */
void cuda_decoder_set_fused(cuda_decoder *d, int on);
/* --int8: the linear layers' weights (and the classifier's) in Q8_0 from
 * now on, quantized from the device's current weights as the CPU decoder's
 * rotary_decoder_quantize does (about a quarter of the bytes a token); the
 * fused layers dequantize them as they read, keeping the inputs in fp32.
 * Call again after the weights change. On failure the decoder reads fp32
 * weights where it read int8 ones. */
int cuda_decoder_quantize(cuda_decoder *d);
/* The linear layers (and the classifier) read the model's own bf16 copy of
 * the weights from now on (the one the training GEMMs read and AdamW keeps
 * current: no more memory, never stale), half the bytes of fp32, through
 * the fused layers; the inputs and sums stay fp32, so the logits are the
 * fp32 ones of the rounded weights up to the order of the sums. This and
 * cuda_decoder_quantize replace each other (the int8 copy is freed). */
int cuda_decoder_bf16(cuda_decoder *d);
/* 1 when the last step replayed the graph; 0 when off, or when capture
 * failed and the decoder fell back to single launches (*why then says why;
 * why may be NULL). */
int cuda_decoder_graphed(const cuda_decoder *d, const char **why);

/* The ranks' gradients averaged for cuda_train under mpirun (comm.c):
 * NCCL's all-reduce on the GPUs where the build has NCCL and every rank a
 * GPU of its own (ROTARY_CUDA_COMM=host says not to), else through host
 * memory and MPI. Collective: every rank of d calls each function. */
typedef struct cuda_comm cuda_comm;
/* For n floats a call; *c is to be freed even on failure. zero (ZeRO-1):
 * through NCCL, each rank receives the mean of its shard only (the rest
 * of dev is left as scratch: a reduce-scatter, the bytes of half an
 * all-reduce); through host memory, all of it. */
int cuda_comm_new(cuda_comm **c, const rotary_dist *d, size_t n, int zero);
/* dev (n floats, device memory) <- the mean over the ranks. With NCCL the
 * mean is taken in parts as the backward finishes them: cuda_comm_ready(c,
 * dev, from) when dev[from, n) is final (cuda_model_on_grads) starts the
 * all-reduce of what became final since the last call, on a stream of the
 * comm's own, while the backward goes on; cuda_comm_mean then averages
 * what is left (all of it through host memory) and has the calling
 * thread's stream wait for every part. The same calls, with the same
 * offsets, on every rank. */
void cuda_comm_ready(cuda_comm *c, float *dev, size_t from);
int cuda_comm_mean(cuda_comm *c, float *dev);
/* ZeRO-1: dev (n floats, device memory) <- each rank's shard of it
 * (rotary_dist_shard), on every rank: each rank updated only its own. */
int cuda_comm_allgather(cuda_comm *c, float *dev);
/* How: "NCCL on the GPUs", or "host memory and MPI (why)". */
const char *cuda_comm_how(const cuda_comm *c);
void cuda_comm_free(cuda_comm *c); /* NULL is fine */

/* rotary_train on the GPU: the same schedule, batches, metrics.csv,
 * checkpoints and resume, and under mpirun the same data parallelism (a
 * GPU a rank; not --zero1). m->params holds the trained weights on return. */
int cuda_train(rotary_model *m, const rotary_train_opts *o);
#endif
