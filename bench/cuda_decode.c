/* cuda_decode: one-token decoding on the GPU (cuda_decoder) against the
 * memory-bandwidth bound, for the llama2.c stories110M shape (12 layers,
 * d_model 768, 12 heads, hidden 2048, vocab 32000, ctx 1024, tied; random
 * weights) as bench/decode.c does on the CPU.
 *
 * usage: cuda_decode [--tokens N]
 *
 * A token reads every weight once (fp32: 4 bytes each) plus the KV cache up
 * to its position, so tokens/s <= bandwidth / bytes per token. The bandwidth
 * is measured here: device-to-device copies of 1 GiB, bytes read plus
 * written per second. Greedy decoding from one token, five times: launching
 * the kernels one by one (tok_s_launches), replaying the step as one CUDA
 * graph (tok_s, the decoder's default), the graph with the fused
 * linear layers (tok_s_fused: cuda_decoder_set_fused, each norm and
 * activation inside the product after it), those with Q8_0 weights
 * (tok_s_int8, generate --int8: 34 bytes per 32 weights of the matrices,
 * its own bound) and with the model's bf16 copy of the weights (tok_s_bf16,
 * cuda_decoder_bf16: 2 bytes a weight of the matrices, its own bound); the
 * first 16 steps of each are not timed. Then the floor of a step: the same
 * bf16 step of a model with the same layers, heads, vocab and cache but
 * head size 16 and hidden 128 (floor_tok_s; 5 MB of layer weights), which
 * launches the same kernels and copies the same logits: where tok_s_bf16
 * comes close to it, the launches and their latency bound a token, not
 * the bytes. Output: key=value lines. */
#include "rotary.h"
#include "cuda/cuda_model.h"
#include "matvec.h"
#include "model_internal.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int die(const char *what) {
    fprintf(stderr, "cuda_decode: %s: %s\n", what, rotary_last_error());
    return 1;
}

static double copy_bandwidth(void) {
    const size_t n = (size_t)1 << 30;
    void *a, *b;
    if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) return 0;
    cudaMemset(a, 1, n);
    cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
    cudaDeviceSynchronize();
    double t0 = now_s();
    for (int i = 0; i < 10; i++) cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
    cudaDeviceSynchronize();
    double t = now_s() - t0;
    cudaFree(a);
    cudaFree(b);
    return 10.0 * 2.0 * (double)n / t;
}

/* Greedy decoding from token 1 for ntok steps; tokens/s over all but the
 * first 16 (0 after printing the error). */
static double decode_rate(cuda_decoder *d, int vocab, int ntok, float *logits) {
    cuda_decoder_reset(d);
    int tok = 1;
    double t0 = 0;
    for (int i = 0; i < ntok; i++) {
        if (i == 16) t0 = now_s();
        if (cuda_decoder_step(d, tok, logits)) return die("step"), 0;
        int best = 0;
        for (int v = 1; v < vocab; v++) best = logits[v] > logits[best] ? v : best;
        tok = best;
    }
    return (ntok - 16) / (now_s() - t0);
}

/* floor_tok_s (above): big's layers, heads, vocab and cache with head
 * size 16 and hidden 128, its step as fast as this decoder goes (bf16, the
 * fused layers, a graph); 0 after printing the error. */
static double floor_rate(const rotary_config *big, int ntok, float *logits) {
    rotary_config c = *big;
    c.d_model = 16 * c.n_head, c.d_ff = 128;
    rotary_model m;
    cuda_model *g = NULL;
    cuda_decoder *d = NULL;
    double rate = 0;
    if (rotary_model_build(&m, &c)) return die("floor model"), 0;
    rotary_model_init(&m, 42);
    if (cuda_model_new(&g, &m) || cuda_decoder_new(&d, g, c.ctx) || cuda_decoder_bf16(d))
        die("floor decoder");
    else
        rate = decode_rate(d, c.vocab, ntok, logits);
    cuda_decoder_free(d);
    cuda_model_free(g);
    rotary_model_free(&m);
    return rate;
}

int main(int argc, char **argv) {
    int ntok = 512;
    if (argc == 3 && !strcmp(argv[1], "--tokens")) ntok = atoi(argv[2]);
    if (ntok < 32 || ntok > 1024) {
        fprintf(stderr, "usage: cuda_decode [--tokens 32..1024]\n");
        return 2;
    }
    if (cuda_device_check()) return die("device");
    rotary_config c;
    rotary_config_default(&c);
    c.n_layer = 12, c.n_head = 12, c.n_kv_head = 12, c.d_model = 768, c.d_ff = 2048;
    c.ctx = 1024, c.vocab = 32000, c.tied = 1;
    rotary_model m;
    cuda_model *g;
    cuda_decoder *d;
    if (rotary_model_build(&m, &c)) return die("model");
    rotary_model_init(&m, 42);
    if (cuda_model_new(&g, &m) || cuda_decoder_new(&d, g, c.ctx)) return die("cuda decoder");
    float *logits = malloc((size_t)c.vocab * sizeof(float));
    /* Kernel by kernel first, then replaying the step's CUDA graph, then
     * the graph of the fused layers on fp32, int8 and bf16 weights: the
     * same tokens, timed the same way. */
    double tps[5];
    const char *why = "";
    int graphed = 0;
    for (int run = 0; run < 5; run++) {
        const int graph = run > 0;
        cuda_decoder_set_graph(d, graph);
        cuda_decoder_set_fused(d, run >= 2);
        if (run == 3 && cuda_decoder_quantize(d)) return die("quantize");
        if (run == 4 && cuda_decoder_bf16(d)) return die("bf16");
        if (!(tps[run] = decode_rate(d, c.vocab, ntok, logits))) return 1;
        if (run == 1) graphed = cuda_decoder_graphed(d, &why);
    }
    const double floor = floor_rate(&c, ntok, logits);
    if (!floor) return 1;
    const double bw = copy_bandwidth(), hd = c.d_model / c.n_head;
    const double weights = 4.0 * (double)m.n_params;
    /* int8 and bf16: the matrices in Q8_0 or bf16, the rest (norms; one
     * embedding row) fp32 */
    int rows[Q8_N], cols[Q8_N];
    q8_layer_shapes(&c, rows, cols);
    double mat = (double)c.vocab * c.d_model, q8 = (double)q8_matrix_bytes(c.vocab, c.d_model);
    for (int i = 0; i < Q8_N; i++) {
        mat += (double)c.n_layer * rows[i] * cols[i];
        q8 += (double)c.n_layer * (double)q8_matrix_bytes(rows[i], cols[i]);
    }
    const double weights8 = q8 + 4.0 * ((double)m.n_params - mat);
    const double weights16 = 2.0 * mat + 4.0 * ((double)m.n_params - mat);
    const double kv = 2.0 * c.n_layer * c.n_kv_head * hd * 4 * ((16 + ntok) / 2.0);
    printf("device_copy_gb_s=%.1f\n", bw / 1e9);
    printf("params=%zu\nweight_mb_per_token=%.1f\nkv_mb_per_token=%.1f\n", m.n_params,
           weights / 1e6, kv / 1e6);
    printf("graph=%s\n", graphed ? "yes" : *why ? why : "no");
    printf("tok_s_launches=%.1f\ntok_s=%.1f\ngraph_speedup=%.2f\n", tps[0], tps[1],
           tps[1] / tps[0]);
    printf("tok_s_fused=%.1f\nfused_speedup=%.2f\n", tps[2], tps[2] / tps[1]);
    printf("int8_weight_mb_per_token=%.1f\ntok_s_int8=%.1f\nbound_tok_s_int8=%.1f\n"
           "of_bound_int8=%.3f\n", weights8 / 1e6, tps[3], bw / (weights8 + kv),
           tps[3] / (bw / (weights8 + kv)));
    printf("bf16_weight_mb_per_token=%.1f\ntok_s_bf16=%.1f\nbound_tok_s_bf16=%.1f\n"
           "of_bound_bf16=%.3f\n", weights16 / 1e6, tps[4], bw / (weights16 + kv),
           tps[4] / (bw / (weights16 + kv)));
    printf("floor_tok_s=%.1f\nbf16_of_floor=%.3f\n", floor, tps[4] / floor);
    printf("bound_tok_s=%.1f\nof_bound=%.3f\nof_bound_fused=%.3f\n", bw / (weights + kv),
           tps[1] / (bw / (weights + kv)), tps[2] / (bw / (weights + kv)));
    cuda_decoder_free(d);
    cuda_model_free(g);
    rotary_model_free(&m);
    free(logits);
    return 0;
}
