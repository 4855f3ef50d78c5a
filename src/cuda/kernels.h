/* kernels.h: the CUDA kernels of the GPU backend, as C functions (internal).
 *
 * Each mirrors an operation of src/ops.h, src/attention.c or src/rope.c with
 * the same shapes in its signature; every pointer is device memory, arrays
 * are row-major float32 unless typed gpu_bf16, and launches are asynchronous
 * on the calling thread's default stream (errors surface at the next
 * gpu_sync in cuda_model.c). Backward functions
 * say whether they overwrite (=) or add (+=), as in ops.h. Gradients of
 * shared parameters are summed with atomics, so GPU runs are reproducible to
 * rounding, not bit for bit. */
#ifndef ROTARY_CUDA_KERNELS_H
#define ROTARY_CUDA_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Devices: the number of usable CUDA devices (0 when none or no driver). */
int gpu_device_count(void);
/* The message of the last CUDA error ("" if none), and clear it. */
const char *gpu_last_error(void);
/* Wait for the device; 0, or -1 when a kernel, copy or GEMM failed. */
int gpu_sync(void);

/* bf16 values as the C side stores them (__nv_bfloat16 in the .cu files):
 * the operands of the GEMMs. gpu_to_bf16: dst = src rounded to nearest
 * even, n values. */
typedef unsigned short gpu_bf16;
void gpu_to_bf16(gpu_bf16 *dst, const float *src, size_t n);

/* GEMMs (gemm.cu): cuBLAS on the tensor cores, bf16 operands, fp32
 * accumulation; fp32 results where fp32 is kept (the residual stream and
 * what the CPU-comparison tests read), bf16 where the result only feeds an
 * elementwise kernel and then another GEMM (as PyTorch's bf16 autocast).
 * gpu_gemm_init creates the handle once per process; 0 or -1. */
int gpu_gemm_init(void);
/* The first cuBLAS failure since the last call (and clear it), or NULL. */
const char *gpu_gemm_error(void);
/* out (N, OC) (+)= inp (N, C) @ w (OC, C)^T + b (OC); b may be NULL. */
void gpu_linear_forward(float *out, const gpu_bf16 *inp, const gpu_bf16 *w, const float *b, int N,
                        int C, int OC, int accumulate);
/* The same (=) in bf16 (fp32 accumulation; with b, rounded once more after
 * adding it): the qkv and MLP projections, and a training step's logits. */
void gpu_linear_forward_bf16(gpu_bf16 *out, const gpu_bf16 *inp, const gpu_bf16 *w,
                             const float *b, int N, int C, int OC);
/* dinp (N, C) = dout @ w into dinp (fp32) or dinp16 (bf16): one of them or
 * neither (NULL), both is an error (gpu_gemm_error); dw += dout^T @ inp;
 * db += sum dout (db may be NULL). */
void gpu_linear_backward(float *dinp, gpu_bf16 *dinp16, float *dw, float *db,
                         const gpu_bf16 *dout, const gpu_bf16 *inp, const gpu_bf16 *w, int N,
                         int C, int OC);
/* One row in fp32, for decoding: out (OC) (+)= w (OC, C) @ inp (C) + b (b may
 * be NULL); cuBLAS SGEMV, bound by reading w. */
void gpu_matvec(float *out, const float *inp, const float *w, const float *b, int C, int OC,
                int accumulate);

/* Norms (layer.cu), one warp per row; mean NULL means RMSNorm (b ignored).
 * C <= 12288 (the backward sums dw in shared memory). The forward first
 * adds add (N, C) into inp when add is not NULL (the residual connection of
 * the block before, so it needs no pass of its own), and writes out in fp32
 * or out16 in bf16 (a GEMM's input), whichever is not NULL. */
void gpu_norm_forward(float *out, gpu_bf16 *out16, float *mean, float *rstd, float *inp,
                      const float *add, const float *w, const float *b, int N, int C, float eps);
/* dinp +=; dw +=; db += (db may be NULL); dout is bf16 (the GEMM's
 * gradient); dinp16, if not NULL, = the new dinp in bf16 (the residual
 * gradient the next GEMM back reads). */
void gpu_norm_backward(float *dinp, gpu_bf16 *dinp16, float *dw, float *db, const gpu_bf16 *dout,
                       const float *inp, const float *w, const float *mean, const float *rstd,
                       int N, int C);

/* Activations (layer.cu): as ops.h. The forward reads and writes fp32
 * (inp, out: decoding) or bf16 (inp16, out16: training, between two GEMMs);
 * the backward reads and writes bf16. */
void gpu_gelu_forward(float *out, gpu_bf16 *out16, const float *inp, const gpu_bf16 *inp16,
                      size_t n);
void gpu_gelu_backward(gpu_bf16 *dinp, const gpu_bf16 *dout, const gpu_bf16 *inp, size_t n);
void gpu_swiglu_forward(float *out, gpu_bf16 *out16, const float *gu, const gpu_bf16 *gu16, int N,
                        int F);
void gpu_swiglu_backward(gpu_bf16 *dgu, const gpu_bf16 *dout, const gpu_bf16 *gu, int N, int F);

/* Embedding: out (N, C) = tok_emb[tokens[n]] + pos[start + n % T] (pos
 * (>= start + T, C) or NULL; start read from device memory, 0 when NULL).
 * Backward: dtok, dpos += (atomics). */
void gpu_embed_forward(float *out, const int *tokens, const float *tok_emb, const float *pos,
                       const int *start, int N, int T, int C);
void gpu_embed_backward(float *dtok, float *dpos, const float *dout, const int *tokens, int N,
                        int T, int C);

/* Fused classifier (layer.cu): one block per row of logits (N, V): lse (N) and
 * losses (N) = lse - logits[target]; with dscale != 0 the same kernel then
 * turns the row into its gradient (softmax - onehot) * dscale in place, so
 * the probabilities are never stored. The logits are fp32 (logits) or bf16
 * (logits16, a training step's: the gradient is then bf16 too, the input of
 * the classifier's backward GEMM), whichever is not NULL. */
void gpu_crossentropy(float *logits, gpu_bf16 *logits16, float *lse, float *losses,
                      const int *targets, int N, int V, float dscale);

/* AdamW on n elements as rotary_adamw_step, the gradient read times gscale
 * (the clipping factor) instead of clipped in a pass of its own; p16 gets
 * the new weights in bf16 (the GEMMs' copy). */
void gpu_adamw(float *p, gpu_bf16 *p16, const float *g, float *m, float *v, size_t n, float beta1,
               float beta2, float eps, float decay, float step_size, float bc2_sqrt, float gscale);
/* part[b] = the sum of x^2 over x[b GPU_NORM_BLOCK, (b + 1) GPU_NORM_BLOCK)
 * (the last block shorter), in double, the same for every run: the blocks
 * of rotary_grad_sq_blocks (ROTARY_NORM_BLOCK), so that a ZeRO-1 shard's
 * blocks are those of the whole buffer. */
#define GPU_NORM_BLOCK 16384
void gpu_sumsq_blocks(double *part, const float *x, size_t n);

/* Attention (attention.cu). qkv (B, T, (nh + 2*nkv)*hd) per token q | k | v
 * (the projection's output, bf16) <-> q (B, nh, T, hd), k, v (B, nkv, T, hd)
 * per head, bf16 (gpu_bf16) when bf16 (GPU_ATTN_TC: the tensor cores' input),
 * else fp32, RoPE applied to q and k on the way (cos, sin (>= T, rd/2): the
 * tables of rotary_rope, position t = row t; NULL: no rotation; pairing as
 * rotary_rope_pairing, rd the rotated dims). hd must be even.
 * Backward: dqkv (=, bf16: the input of the projection's backward GEMM)
 * from dq, dk, dv (bf16 or fp32 as bf16_grads, gpu_attention_grads_bf16
 * says which the attention backward wrote), rotated back by -theta. */
void gpu_qkv_split_rope(void *q, void *k, void *v, const gpu_bf16 *qkv, const float *cos,
                        const float *sin, int B, int T, int nh, int nkv, int hd, int rd,
                        int pairing, int bf16);
void gpu_qkv_merge_rope_backward(gpu_bf16 *dqkv, const void *dq, const void *dk, const void *dv,
                                 const float *cos, const float *sin, int B, int T, int nh, int nkv,
                                 int hd, int rd, int pairing, int bf16_grads);
/* Causal attention, tiled with an online softmax (no T x T matrix): out
 * (B, T, nh*hd) token-major in bf16 (the output projection's input, and the
 * O of the backward's rowsum(dout * out), as in FlashAttention-2), lse (B,
 * nh, T) the log-sum-exp of each row's scores for the backward. alibi (nh)
 * slopes or NULL; t5 (nh, T) or NULL: t5[h*T + i - j] is added to the scaled
 * score of query i and key j (T5's bias by distance, as attention_forward's
 * dist_bias). Query head h reads
 * kv head h / (nh/nkv). hd <= GPU_ATTN_MAX_HD. q, k, v as
 * gpu_qkv_split_rope writes them: bf16 when GPU_ATTN_TC(hd) (the tensor
 * cores), else fp32 (the CUDA-core kernels of attention.cu). */
#define GPU_ATTN_MAX_HD 128
void gpu_attention_forward(gpu_bf16 *out, float *lse, const void *q, const void *k, const void *v,
                           const float *alibi, const float *t5, int B, int T, int nh, int nkv,
                           int hd);
/* dq (B, nh, T, hd), dk, dv (B, nkv, T, hd) (=) from dout (B, T, nh*hd,
 * bf16: the output projection's backward GEMM writes it so), recomputing the
 * probabilities from lse; dsum (B, nh, T) is scratch. dq, dk, dv are bf16
 * when gpu_attention_grads_bf16(hd, t5 != NULL) (the tensor-core kernels,
 * but for the atomic dq of GPU_ATTN_MMA_ATOMIC, which sums in fp32), else
 * fp32. dt5 (B, nh, T), NULL
 * without t5 (=): dt5[b][h][n] the sum over i of the gradient of the biased
 * score (i, i - n), as attention_backward's dbias (summed atomically, so not
 * the same bits every run). */
int gpu_attention_grads_bf16(int hd, int t5);
void gpu_attention_backward(void *dq, void *dk, void *dv, float *dsum, const gpu_bf16 *dout,
                            const gpu_bf16 *out, const void *q, const void *k,
                            const void *v, const float *lse, const float *alibi, const float *t5,
                            float *dt5, int B, int T, int nh, int nkv, int hd);
/* T5's table by distance for T positions: tab (nh, T), tab[h*T + n] =
 * rel[bucket[n]*nh + h] (rel: the model's (buckets, nh) rel_bias, bucket:
 * rotary_t5_bucket of each distance, >= T of them). Backward: drel (+=)
 * from dtab (B, nh, T), one thread a table entry summing its distances in
 * order (no atomics). */
void gpu_t5_table(float *tab, const float *rel, const int *bucket, int nh, int T);
void gpu_t5_table_backward(float *drel, const float *dtab, const int *bucket, int B, int nh, int T,
                           int n_buckets);

/* The same two on the tensor cores (flash_fwd.cu, flash_bwd.cu), which the
 * two above call when GPU_ATTN_TC(hd): q, k, v and dout in bf16, the
 * products accumulate in fp32, the softmax and lse stay fp32, and dq, dk,
 * dv are written in bf16. Same layouts and meaning; dsum must already hold
 * rowsum(dout * out), and dt5 (with t5) zeros. */
#define GPU_ATTN_TC(hd) ((hd) % 16 == 0 && (hd) <= 128)
void gpu_flash_forward_tc(gpu_bf16 *out, float *lse, const gpu_bf16 *q, const gpu_bf16 *k,
                          const gpu_bf16 *v, const float *alibi, const float *t5, int B, int T,
                          int nh, int nkv, int hd);
void gpu_flash_backward_tc(gpu_bf16 *dq, gpu_bf16 *dk, gpu_bf16 *dv, const float *dsum,
                           const gpu_bf16 *dout, const gpu_bf16 *q, const gpu_bf16 *k,
                           const gpu_bf16 *v, const float *lse, const float *alibi,
                           const float *t5, float *dt5, int B, int T, int nh, int nkv, int hd);
/* The same two with mma.sync and the score tiles and accumulators in
 * registers (flash_mma.cu, FlashAttention-2's layout), same arguments and
 * results (q, k, v and dout 16-byte aligned and hd a multiple of 8: they
 * are copied 16 bytes at a time) but for T5's table, which they do not take
 * (with one, gpu_attention_forward/backward call the two above); the
 * backward for head sizes GPU_ATTN_MMA_BWD(hd). Not yet run on a GPU, so
 * gpu_attention_forward/backward take them only after
 * gpu_attention_use(GPU_ATTN_MMA or GPU_ATTN_MMA_ATOMIC, the latter with
 * atomic_dq), or when the environment has ROTARY_CUDA_ATTN=mma (or
 * mma-atomic) at the first call; GPU_ATTN_WMMA (flash_fwd.cu, flash_bwd.cu)
 * is the default. */
#define GPU_ATTN_MMA_BWD(hd) ((hd) % 16 == 0 && (hd) <= 64)
void gpu_flash_forward_mma(gpu_bf16 *out, float *lse, const gpu_bf16 *q, const gpu_bf16 *k,
                           const gpu_bf16 *v, const float *alibi, int B, int T, int nh, int nkv,
                           int hd);
/* atomic_dq: FlashAttention-2's backward, one kernel that also sums dq
 * atomically (five products instead of seven; dq's bits vary from run to
 * run) and dq, dk, dv in fp32; else two kernels with one writer for each
 * element, and dq, dk, dv in bf16. */
void gpu_flash_backward_mma(void *dq, void *dk, void *dv, const float *dsum,
                            const gpu_bf16 *dout, const gpu_bf16 *q, const gpu_bf16 *k, const gpu_bf16 *v,
                            const float *lse, const float *alibi, int B, int T, int nh, int nkv,
                            int hd, int atomic_dq);
enum { GPU_ATTN_WMMA = 0, GPU_ATTN_MMA = 1, GPU_ATTN_MMA_ATOMIC = 2 };
void gpu_attention_use(int kernel);

/* Linear attention (RoFormer 3.3), as linear_attention_forward/backward in
 * ops.h and with their layouts: feat, rfeat (B, T, (nh+nkv)*hd) token-major
 * (rfeat may equal feat), v read from qkv. One block per (batch, kv head)
 * walks the sequence with the hd x hd state in shared memory. */
void gpu_linear_attention_forward(float *out, float *den, const float *feat, const float *rfeat,
                                  const float *qkv, int B, int T, int nh, int nkv, int hd);
/* dfeat, drfeat (=), and the v part of dqkv (=). */
void gpu_linear_attention_backward(float *dfeat, float *drfeat, float *dqkv, const float *dout,
                                   const float *feat, const float *rfeat, const float *qkv,
                                   const float *out, const float *den, int B, int T, int nh,
                                   int nkv, int hd);
/* elu(x) + 1 and its backward, as elu1_forward/backward (ops.h). */
void gpu_elu1_forward(float *out, const float *inp, int N, int C, int ldi);
void gpu_elu1_backward(float *dinp, const float *dout, const float *inp, int N, int C, int ldi);
/* RoPE in place on token-major rows (B*T rows, ld floats apart, heads of hd
 * from column 0), position t = row % T; sign +1 forward, -1 backward. */
void gpu_rope_rows(float *x, const float *cos, const float *sin, int B, int T, int heads, int hd,
                   int rd, int pairing, int ld, float sign);
/* y += x, n floats. */
void gpu_add(float *y, const float *x, size_t n);

/* Decoding (decode.cu): the position t of the token being decoded is
 * read from device memory (*pos), so that a step's launches do not change
 * from one position to the next (cuda_model.c replays them as a CUDA graph).
 * Split: the token's qkv row ((nh + 2*nkv)*hd) -> q (nh*hd) and row t of
 * the caches kc, vc (nkv, max_T, hd), q and k rotated as
 * gpu_qkv_split_rope rotates row t. Attention: out (nh*hd) for q against
 * cache rows 0..t, the keys of a head split over several blocks whose
 * partial results go through part (gpu_decode_attention_part(nh, hd,
 * max_T) floats, zeros before the first call, and left so: its last nh
 * are counters; none needed, and part may be NULL, when that is 0), alibi
 * or t5 (nh, max_T: a gpu_t5_table for max_T positions) as
 * gpu_attention_forward's; hd <= GPU_ATTN_MAX_HD, max_T <=
 * GPU_DECODE_MAX_T. */
#define GPU_DECODE_MAX_T 32768
void gpu_decode_split_rope(float *q, float *kc, float *vc, const float *qkv, const float *cos,
                           const float *sin, const int *pos, int max_T, int nh, int nkv, int hd,
                           int rd, int pairing);
size_t gpu_decode_attention_part(int nh, int hd, int max_T);
void gpu_decode_attention(float *out, float *part, const float *q, const float *kc,
                          const float *vc, const float *alibi, const float *t5, const int *pos,
                          int max_T, int nh, int nkv, int hd);
/* Linear attention instead of the split and the attention: the token's qkv
 * row updates each kv head's state S (nkv, hd, hd) and z (nkv, hd), reset
 * at position 0, and the query heads read out (nh*hd), as sample.c's
 * linear_step (features elu + 1, rotated for the numerator as
 * gpu_rope_rows rotates row t). */
void gpu_decode_linear(float *out, float *S, float *z, const float *qkv, const float *cos,
                       const float *sin, const int *pos, int nh, int nkv, int hd, int rd,
                       int pairing);
/* A linear layer on one row with the elementwise step before it fused in
 * (one launch instead of two): out (OC) (+)= W (OC, C) x' + b (b may be
 * NULL), x' = PRE(x): GPU_PRE_NONE x; GPU_PRE_NORM the norm of x (RMSNorm
 * with nw, or LayerNorm with nw and nb (may be NULL) when layer_norm; eps)
 * as gpu_norm_forward; GPU_PRE_SWIGLU silu(gate) * up of x = gate | up (2C
 * values) and GPU_PRE_GELU gelu(x), as gpu_swiglu/gelu_forward. W is, by
 * wfmt: GPU_W_F32 fp32; GPU_W_Q8 a Q8_0 matrix in src/matvec.h's layout
 * (16-byte aligned), whose weights d * q are taken as they are; GPU_W_BF16
 * bf16 (gpu_bf16, row-major, rows C apart, 2-byte aligned will do), each
 * weight widened exactly. x' and the sums stay fp32 whatever the weights,
 * unlike the CPU's int8 products. out must not overlap x. */
enum { GPU_PRE_NONE = 0, GPU_PRE_NORM = 1, GPU_PRE_SWIGLU = 2, GPU_PRE_GELU = 3 };
enum { GPU_W_F32 = 0, GPU_W_Q8 = 1, GPU_W_BF16 = 2 };
void gpu_decode_matvec(float *out, const float *x, const void *W, int wfmt, const float *b,
                       int C, int OC, int accumulate, int pre, const float *nw, const float *nb,
                       int layer_norm, float eps);
/* The qkv product after the first norm (gpu_decode_matvec, GPU_PRE_NORM,
 * OC = (nh + 2 nkv) hd) and gpu_decode_split_rope of its row, in one
 * kernel: each warp makes the two coordinates of a RoPE pair and puts them,
 * rotated, in q or row *pos of the caches. The same values, bit for bit,
 * as the two kernels. */
void gpu_decode_matvec_split(float *q, float *kc, float *vc, const float *x, const void *W,
                             int wfmt, const float *b, const float *nw, const float *nb,
                             int layer_norm, float eps, int C, const float *cos,
                             const float *sin, const int *pos, int max_T, int nh, int nkv, int hd,
                             int rd, int pairing);

#ifdef __cplusplus
}
#endif
#endif
