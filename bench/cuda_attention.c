/* cuda_attention: causal attention forward and backward on the GPU
 * (gpu_attention_forward/backward: the tensor-core kernels for head sizes
 * that are multiples of 16), beside bench/torch_attention_gpu.py, which
 * times PyTorch's scaled_dot_product_attention (flash) on the same shape.
 *
 * usage: cuda_attention [--batch B] [--ctx T] [--heads H] [--kv-heads K]
 *                       [--head-dim D] [--reps N]
 *
 * Defaults: bench/cuda_train's attention (B 16, T 1024, 12 heads of 64).
 * Timed again with the mma.sync kernels (fwd_mma_ms, bwd_mma_ms; the
 * backward only for head sizes up to 64, WMMA's above), whose results are
 * compared with the WMMA kernels' (mma_vs_wmma_out, _dq, _dk, _dv: max
 * difference over the largest element; both round to bf16, so ~1e-2).
 * TFLOP/s counts the causal half of the products as FlashAttention's
 * benchmarks do: forward 4 B H T^2 D / 2, backward 2.5 times that.
 * Output: key=value lines. */
#include "rotary.h"
#include "cuda/kernels.h"
#include "half.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *dev_random(size_t n, rotary_rng *r) {
    float *h = malloc(n * sizeof(float)), *d = NULL;
    if (!h) return NULL;
    for (size_t i = 0; i < n; i++) h[i] = rotary_rng_normal(r);
    if (cudaMalloc((void **)&d, n * sizeof(float)) == cudaSuccess)
        cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice);
    free(h);
    return d;
}

static float *to_host(const float *d, size_t n) {
    float *h = malloc(n * sizeof(float));
    if (h && cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess) {
        free(h);
        h = NULL;
    }
    return h;
}

/* n bf16 values from the device, widened to fp32 (exact) */
static float *to_host16(const gpu_bf16 *d, size_t n) {
    float *h = malloc(n * sizeof(float));
    uint16_t *b = malloc(n * sizeof(uint16_t));
    if (h && b && cudaMemcpy(b, d, n * sizeof(uint16_t), cudaMemcpyDeviceToHost) == cudaSuccess) {
        for (size_t i = 0; i < n; i++) h[i] = rotary_bf16_to_f32(b[i]);
    } else {
        free(h);
        h = NULL;
    }
    free(b);
    return h;
}

/* max |a - b| over max |a|: how far the mma.sync results are from WMMA's */
static double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - b[i]), x = fabs((double)a[i]);
        d = e > d ? e : d;
        m = x > m ? x : m;
    }
    return m > 0 ? d / m : d;
}

int main(int argc, char **argv) {
    int B = 16, T = 1024, nh = 12, nkv = 12, hd = 64, reps = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        const int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--batch")) B = v;
        else if (!strcmp(argv[i], "--ctx")) T = v;
        else if (!strcmp(argv[i], "--heads")) nh = v;
        else if (!strcmp(argv[i], "--kv-heads")) nkv = v;
        else if (!strcmp(argv[i], "--head-dim")) hd = v;
        else if (!strcmp(argv[i], "--reps")) reps = v;
        else {
            fprintf(stderr, "cuda_attention: unknown option %s (see the comment at the top)\n",
                    argv[i]);
            return 2;
        }
    }
    if (B < 1 || T < 1 || nh < 1 || nkv < 1 || nh % nkv || hd < 2 || hd % 2 ||
        hd > GPU_ATTN_MAX_HD || reps < 1) {
        fprintf(stderr, "cuda_attention: bad shape\n");
        return 2;
    }
    if (gpu_device_count() < 1) {
        fprintf(stderr, "cuda_attention: no CUDA device\n");
        return 1;
    }
    rotary_rng r;
    rotary_rng_seed(&r, 3);
    const size_t nq = (size_t)B * nh * T * hd, nk = (size_t)B * nkv * T * hd;
    const size_t rows = (size_t)B * nh * T;
    float *q = dev_random(nq, &r), *k = dev_random(nk, &r), *v = dev_random(nk, &r);
    float *dout = dev_random(nq, &r), *lse, *dq, *dk, *dv, *dsum;
    gpu_bf16 *out; /* the attention's output is bf16 */
    if (!q || !k || !v || !dout || cudaMalloc((void **)&out, nq * sizeof(gpu_bf16)) ||
        cudaMalloc((void **)&lse, rows * 4) || cudaMalloc((void **)&dq, nq * 4) ||
        cudaMalloc((void **)&dk, nk * 4) ||
        cudaMalloc((void **)&dv, nk * 4) || cudaMalloc((void **)&dsum, rows * 4)) {
        fprintf(stderr, "cuda_attention: out of GPU memory\n");
        return 1;
    }
    /* q, k, v as the split kernel writes them: bf16 for the tensor cores;
     * dout in bf16, as the output projection's backward GEMM writes it */
    const void *qa = q, *ka = k, *va = v;
    gpu_bf16 *dout16 = NULL;
    if (cudaMalloc((void **)&dout16, nq * sizeof(gpu_bf16)) != cudaSuccess) {
        fprintf(stderr, "cuda_attention: out of GPU memory\n");
        return 1;
    }
    gpu_to_bf16(dout16, dout, nq);
    if (GPU_ATTN_TC(hd)) {
        gpu_bf16 *h[3] = {NULL, NULL, NULL};
        const float *src[3] = {q, k, v};
        const size_t len[3] = {nq, nk, nk};
        for (int i = 0; i < 3; i++) {
            if (cudaMalloc((void **)&h[i], len[i] * sizeof(gpu_bf16)) != cudaSuccess) {
                fprintf(stderr, "cuda_attention: out of GPU memory\n");
                return 1;
            }
            gpu_to_bf16(h[i], src[i], len[i]);
        }
        qa = h[0], ka = h[1], va = h[2];
    }
    cudaEvent_t e0, e1, e2;
    cudaEventCreate(&e0), cudaEventCreate(&e1), cudaEventCreate(&e2);
    /* [0]: the default (WMMA) kernels, [1]: mma.sync (flash_mma.cu), [2]:
     * the same with the one-kernel backward (dq atomic) */
    static const int sets[3] = {GPU_ATTN_WMMA, GPU_ATTN_MMA, GPU_ATTN_MMA_ATOMIC};
    float fwd_ms[3] = {0, 0, 0}, bwd_ms[3] = {0, 0, 0}, *res[3][4];
    for (int kn = 0; kn < 3; kn++) {
        gpu_attention_use(sets[kn]);
        for (int it = -3; it < reps; it++) { /* three untimed */
            cudaEventRecord(e0, 0);
            gpu_attention_forward(out, lse, qa, ka, va, NULL, NULL, B, T, nh, nkv, hd);
            cudaEventRecord(e1, 0);
            gpu_attention_backward(dq, dk, dv, dsum, dout16, out, qa, ka, va, lse, NULL, NULL,
                                   NULL, B, T, nh, nkv, hd);
            cudaEventRecord(e2, 0);
            if (gpu_sync()) {
                fprintf(stderr, "cuda_attention: %s\n", gpu_last_error());
                return 1;
            }
            float a, b;
            cudaEventElapsedTime(&a, e0, e1), cudaEventElapsedTime(&b, e1, e2);
            if (it >= 0) fwd_ms[kn] += a / reps, bwd_ms[kn] += b / reps;
        }
        /* the last pass's results, the same inputs every pass */
        const int g16 = gpu_attention_grads_bf16(hd, 0); /* dq, dk, dv bf16, or fp32 */
        res[kn][0] = to_host16(out, nq);
        res[kn][1] = g16 ? to_host16((gpu_bf16 *)dq, nq) : to_host(dq, nq);
        res[kn][2] = g16 ? to_host16((gpu_bf16 *)dk, nk) : to_host(dk, nk);
        res[kn][3] = g16 ? to_host16((gpu_bf16 *)dv, nk) : to_host(dv, nk);
    }
    gpu_attention_use(GPU_ATTN_WMMA);
    const double fwd_flop = 4.0 * B * nh * (double)T * T * hd / 2;
    printf("shape=B%d T%d heads %d kv %d dim %d\n", B, T, nh, nkv, hd);
    printf("kernels=%s\n", GPU_ATTN_TC(hd) ? "tensor cores (bf16)" : "fp32");
    printf("fwd_ms=%.3f\nbwd_ms=%.3f\n", fwd_ms[0], bwd_ms[0]);
    printf("fwd_tflops=%.1f\nbwd_tflops=%.1f\n", fwd_flop / fwd_ms[0] / 1e9,
           2.5 * fwd_flop / bwd_ms[0] / 1e9);
    if (GPU_ATTN_TC(hd))
        printf("fwd_mma_ms=%.3f\nbwd_mma_ms=%.3f\nfwd_mma_tflops=%.1f\nbwd_mma_tflops=%.1f\n"
               "bwd_mma_atomic_ms=%.3f\nbwd_mma_atomic_tflops=%.1f\n",
               fwd_ms[1], bwd_ms[1], fwd_flop / fwd_ms[1] / 1e9, 2.5 * fwd_flop / bwd_ms[1] / 1e9,
               bwd_ms[2], 2.5 * fwd_flop / bwd_ms[2] / 1e9);
    const char *what[4] = {"out", "dq", "dk", "dv"};
    const size_t len[4] = {nq, nq, nk, nk};
    for (int i = 0; i < 4; i++) {
        if (res[0][i] && res[1][i] && res[2][i] && GPU_ATTN_TC(hd)) {
            printf("mma_vs_wmma_%s=%.2e\n", what[i], rel_diff(res[0][i], res[1][i], len[i]));
            printf("mma_atomic_vs_wmma_%s=%.2e\n", what[i], rel_diff(res[0][i], res[2][i], len[i]));
        }
        free(res[0][i]), free(res[1][i]), free(res[2][i]);
    }
    return 0;
}
