/* model_internal.h: where the weights of each layer live (shared by the
 * training path in model.c and the decoder in sample.c). */
#ifndef ROTARY_MODEL_INTERNAL_H
#define ROTARY_MODEL_INTERNAL_H

#include "rotary.h"

#include <stdint.h>

#define ABSENT SIZE_MAX

/* Offsets (in floats) of one layer's parameters; ABSENT when not present.
 * q, k, v weights are adjacent, so together they are one (QKV, C) matrix;
 * the same holds for their biases and for swiglu's gate and up. */
typedef struct {
    size_t norm1_w, norm1_b, wqkv, bqkv, wo, bo, norm2_w, norm2_b, wup, bup, wdown, bdown;
} layer_params;

struct rotary_layout {
    size_t tok_emb, pos_emb, normf_w, normf_b, head;
    size_t rel_bias; /* (t5_buckets, n_head), pos T5 only */
    layer_params layer[]; /* n_layer entries */
};

/* The matrices a decoder keeps in Q8_0 for --int8 (sample.c on the CPU,
 * cuda_model.c on the GPU), in this order in each layer, then the
 * classifier (vocab, C): their shapes (rows, cols). Each (matvec.h's
 * layout) starts on a 64-byte boundary. Offset: where matrix `which` of
 * layer l (l == n_layer: the classifier) starts among them, in bytes;
 * weights_bytes: all of them. */
enum { Q8_WQKV, Q8_WO, Q8_WUP, Q8_WDOWN, Q8_N };
void q8_layer_shapes(const rotary_config *c, int rows[Q8_N], int cols[Q8_N]);
size_t q8_matrix_offset(const rotary_config *c, int l, int which);
size_t q8_weights_bytes(const rotary_config *c);
/* Matrix `which` of layer l (l == n_layer: the classifier, which 0) in the
 * model's parameters: its offset, and its shape in *rows, *cols. */
size_t decoder_matrix(const rotary_config *c, const rotary_layout *lo, int l, int which, int *rows,
                      int *cols);
/* The matrices of a model: layers 0..n_layer, and DECODER_MATRICES(c, l)
 * of layer l (the classifier's "layer" has one). */
#define DECODER_MATRICES(c, l) ((l) < (c)->n_layer ? Q8_N : 1)

/* rotary_model_build without gradients when with_grads is 0 (models loaded
 * for inference only: backward then fails cleanly). */
int model_build(rotary_model *m, const rotary_config *cfg, int with_grads);

#endif
