/* test_cuda_kernels: every CUDA kernel (src/cuda/kernels.h) against the CPU
 * operation it mirrors (src/ops.c, src/attention.c, src/rope.c) on random
 * inputs. Thresholds on the relative error (gpu_check.h):
 * - GEMMs take both inputs in bf16 (8 significant bits, relative error
 *   <= 2^-8 each) and accumulate in fp32; with random signs the error of a
 *   sum is about 2^-8 of its typical size, so 1.5e-2 of the largest element
 *   leaves a margin of ~4x. Kernels that write bf16 for a GEMM are within
 *   their own rounding: 8 significant bits move a value by up to 2^-8 of
 *   itself, 4e-3 of the largest element (test_layer_emu measured up to 3.1e-3
 *   on the CPU). The one-row product (SGEMV) is fp32.
 * - Attention with hd a multiple of 16 runs on the tensor cores
 *   (flash_fwd.cu, flash_bwd.cu), which round q, k, v, dout and the
 *   probabilities to bf16 the same way: 1.5e-2 forward; the backward chains
 *   two such products (dP, then dS times q or k): 3e-2. Other head sizes and
 *   T5 take the fp32 kernels, whose one rounding is the bf16 output (4e-3,
 *   as any bf16 result); the backward's D = rowsum(dout * out) reads that
 *   output, and dS = P (dP - D) can cancel, so dq, dk and T5's table get
 *   1.5e-2 (measured up to 7e-3 on the CPU) and dv, which does not use D,
 *   2e-4. The tensor-core cases run three times: with
 *   the WMMA kernels and with the two mma.sync sets (flash_mma.cu), which
 *   round the same values.
 * - Everything else is fp32 on both sides and differs only in summation
 *   order and in expf/tanhf against rotary_expf (2 ulp): 1e-4 (5e-4 where a
 *   row sums thousands of terms).
 * It also runs on the CPU, on the emulated kernels (test_cuda_kernels_emu,
 * tests/cuda/emu), with --quick: without the longest attention and
 * decoding cases, which test_flash_emu and test_decode_emu cover there. */
#include "gpu_check.h"
#include "matvec.h"
#include "ops.h"

#include <omp.h>

/* ---------------------------------------------------------------- GEMMs */

/* gpu_to_bf16 against rounding on the host: every bit, through the
 * vectorised path (aligned, n % 4 == 0) and the scalar one. */
static void test_to_bf16(size_t n, size_t offset) {
    char name[96];
    float *x = randn(n + offset, 3.0f), *d_x = dev(x, n + offset);
    gpu_bf16 *d_y;
    cudaMalloc((void **)&d_y, (n + offset) * sizeof(gpu_bf16));
    gpu_to_bf16(d_y + offset, d_x + offset, n);
    float *got = back16(d_y + offset, n);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += got[i] != round_bf16(x[offset + i]);
    snprintf(name, sizeof name, "to bf16, %zu values from offset %zu", n, offset);
    check(differ == 0, name, "%zu of %zu differ from rounding to nearest even", differ, n);
    free(x), free(got);
    cudaFree(d_x), cudaFree(d_y);
}

/* inp and w rounded to bf16 on the device, against the CPU's fp32 product
 * of the unrounded values; dout is rounded on the host first, so that the
 * bias gradient (summed from bf16 dout) can be held to fp32 accuracy. */
static void test_linear(int N, int C, int OC, int bias) {
    char name[96];
    float *inp = randn((size_t)N * C, 1.0f), *w = randn((size_t)OC * C, 0.5f);
    float *b = bias ? randn(OC, 1.0f) : NULL, *out0 = randn((size_t)N * OC, 1.0f);
    gpu_bf16 *d_inp = dev16(inp, (size_t)N * C), *d_w = dev16(w, (size_t)OC * C);
    float *d_b = b ? dev(b, OC) : NULL;
    for (int acc = 0; acc <= 1; acc++) {
        float *ref = host_copy(out0, (size_t)N * OC), *d_out = dev(out0, (size_t)N * OC);
        linear_forward(ref, inp, w, b, N, C, OC, acc);
        gpu_linear_forward(d_out, d_inp, d_w, d_b, N, C, OC, acc);
        snprintf(name, sizeof name, "linear forward %dx%dx%d bias %d acc %d", N, C, OC, bias, acc);
        compare(name, back(d_out, (size_t)N * OC), ref, (size_t)N * OC, 1.5e-2);
        free(ref);
        cudaFree(d_out);
    }
    /* bf16 output (a training step's projections and logits): one more
     * rounding, 2^-8 (two with the bias). */
    float *ref = malloc((size_t)N * OC * sizeof(float));
    gpu_bf16 *d_out16;
    cudaMalloc((void **)&d_out16, (size_t)N * OC * sizeof(gpu_bf16));
    linear_forward(ref, inp, w, b, N, C, OC, 0);
    gpu_linear_forward_bf16(d_out16, d_inp, d_w, d_b, N, C, OC);
    snprintf(name, sizeof name, "linear forward to bf16 %dx%dx%d bias %d", N, C, OC, bias);
    compare(name, back16(d_out16, (size_t)N * OC), ref, (size_t)N * OC, 1.5e-2);
    free(ref);
    cudaFree(d_out16);
    /* Backward: dw and db add onto what is there (random), dinp is set. */
    float *dout = randn((size_t)N * OC, 1.0f), *dw0 = randn((size_t)OC * C, 1.0f);
    for (size_t i = 0; i < (size_t)N * OC; i++) dout[i] = round_bf16(dout[i]);
    float *db0 = randn(OC, 1.0f);
    float *dinp = malloc((size_t)N * C * sizeof(float)), *dw = host_copy(dw0, (size_t)OC * C);
    float *db = host_copy(db0, OC);
    gpu_bf16 *d_dout = dev16(dout, (size_t)N * OC);
    float *d_dinp = dev(NULL, (size_t)N * C), *d_dw = dev(dw0, (size_t)OC * C), *d_db = dev(db0, OC);
    gpu_bf16 *d_dinp16;
    cudaMalloc((void **)&d_dinp16, (size_t)N * C * sizeof(gpu_bf16));
    linear_backward(dinp, dw, bias ? db : NULL, dout, inp, w, N, C, OC);
    gpu_linear_backward(d_dinp, NULL, d_dw, bias ? d_db : NULL, d_dout, d_inp, d_w, N, C, OC);
    snprintf(name, sizeof name, "linear backward dinp %dx%dx%d", N, C, OC);
    compare(name, back(d_dinp, (size_t)N * C), dinp, (size_t)N * C, 1.5e-2);
    /* dinp in bf16 instead, onto a second copy of dw */
    float *d_dw2 = dev(dw0, (size_t)OC * C);
    gpu_linear_backward(NULL, d_dinp16, d_dw2, NULL, d_dout, d_inp, d_w, N, C, OC);
    snprintf(name, sizeof name, "linear backward dinp in bf16 %dx%dx%d", N, C, OC);
    compare(name, back16(d_dinp16, (size_t)N * C), dinp, (size_t)N * C, 1.5e-2);
    snprintf(name, sizeof name, "linear backward dw (+=) beside a bf16 dinp %dx%dx%d", N, C, OC);
    compare(name, back(d_dw2, (size_t)OC * C), dw, (size_t)OC * C, 1.5e-2);
    /* both types at once: refused */
    gpu_linear_backward(d_dinp, d_dinp16, d_dw2, NULL, d_dout, d_inp, d_w, N, C, OC);
    const char *err = gpu_gemm_error();
    check(err && strstr(err, "both"), "linear backward: dinp and dinp16 both given", "%s",
          err ? err : "no error");
    cudaFree(d_dinp16);
    cudaFree(d_dw2);
    snprintf(name, sizeof name, "linear backward dw (+=) %dx%dx%d", N, C, OC);
    compare(name, back(d_dw, (size_t)OC * C), dw, (size_t)OC * C, 1.5e-2);
    if (bias) {
        snprintf(name, sizeof name, "linear backward db (+=) %dx%d", N, OC);
        compare(name, back(d_db, OC), db, OC, 1e-4);
    }
    free(inp), free(w), free(b), free(out0), free(dout), free(dw0), free(db0), free(dinp);
    free(dw), free(db);
    cudaFree(d_inp), cudaFree(d_w), cudaFree(d_b), cudaFree(d_dout), cudaFree(d_dinp);
    cudaFree(d_dw), cudaFree(d_db);
}

/* One row in fp32 (SGEMV, as the decoder uses): fp32 accuracy. */
static void test_matvec(int C, int OC, int bias) {
    char name[96];
    float *inp = randn(C, 1.0f), *w = randn((size_t)OC * C, 0.5f);
    float *b = bias ? randn(OC, 1.0f) : NULL, *out0 = randn(OC, 1.0f);
    float *d_inp = dev(inp, C), *d_w = dev(w, (size_t)OC * C), *d_b = b ? dev(b, OC) : NULL;
    for (int acc = 0; acc <= 1; acc++) {
        float *ref = host_copy(out0, OC), *d_out = dev(out0, OC);
        linear_forward(ref, inp, w, b, 1, C, OC, acc);
        gpu_matvec(d_out, d_inp, d_w, d_b, C, OC, acc);
        snprintf(name, sizeof name, "matvec (fp32) %dx%d bias %d acc %d", C, OC, bias, acc);
        compare(name, back(d_out, OC), ref, OC, 1e-5);
        free(ref);
        cudaFree(d_out);
    }
    free(inp), free(w), free(b), free(out0);
    cudaFree(d_inp), cudaFree(d_w), cudaFree(d_b);
}

/* Decoding's fused linear layers (gpu_decode_matvec) against the CPU's
 * norm or activation followed by linear_forward: fp32, only the order of
 * the sums differs. pre: GPU_PRE_*; for GPU_PRE_NORM, layer_norm picks
 * LayerNorm (with a bias) or RMSNorm. wfmt: GPU_W_Q8, the weights in Q8_0
 * (matvec.h), against linear_forward on the CPU's dequantized rows;
 * GPU_W_BF16, rounded to bf16 on the host, against linear_forward on the
 * rounded weights. skew (fp32, bf16): W starts that many values past an
 * aligned address, so that the kernel takes its one-value loads. */
static void test_decode_matvec(int pre, int layer_norm, int C, int OC, int bias, int acc,
                               int wfmt, int skew) {
    char name[160];
    const int in = pre == GPU_PRE_SWIGLU ? 2 * C : C;
    float *x = randn(in, 1.5f), *w = randn((size_t)OC * C, 0.5f), *b = bias ? randn(OC, 1.0f) : NULL;
    float *nw = randn(C, 1.0f), *nb = randn(C, 1.0f), *out0 = randn(OC, 1.0f);
    for (int i = 0; i < C; i++) x[i] += 0.7f; /* a mean for LayerNorm to remove */
    float *xp = malloc(C * sizeof(float)), stat[2];
    if (pre == GPU_PRE_NORM && layer_norm) layernorm_forward(xp, stat, stat + 1, x, nw, nb, 1, C, 1e-5f);
    else if (pre == GPU_PRE_NORM) rmsnorm_forward(xp, stat + 1, x, nw, 1, C, 1e-5f);
    else if (pre == GPU_PRE_SWIGLU) swiglu_forward(xp, x, 1, C);
    else if (pre == GPU_PRE_GELU) gelu_forward(xp, x, C);
    else memcpy(xp, x, C * sizeof(float));
    /* The reference multiplies the weights the device reads. */
    const size_t n = (size_t)OC * C;
    void *wq = NULL, *d_base;
    char *d_w;
    if (wfmt == GPU_W_Q8) {
        const size_t qb = q8_matrix_bytes(OC, C);
        wq = malloc(qb);
        q8_quantize_matrix(wq, w, OC, C);
        for (int r = 0; r < OC; r++) q8_dequantize_row(w + (size_t)r * C, wq, OC, C, r);
        cudaMalloc(&d_base, qb);
        cudaMemcpy(d_base, wq, qb, cudaMemcpyHostToDevice);
        d_w = d_base;
    } else if (wfmt == GPU_W_BF16) {
        uint16_t *h = malloc(n * sizeof(uint16_t));
        for (size_t i = 0; i < n; i++) {
            h[i] = rotary_f32_to_bf16(w[i]);
            w[i] = rotary_bf16_to_f32(h[i]);
        }
        cudaMalloc(&d_base, (n + skew) * sizeof(uint16_t));
        d_w = (char *)d_base + skew * sizeof(uint16_t);
        cudaMemcpy(d_w, h, n * sizeof(uint16_t), cudaMemcpyHostToDevice);
        wq = h;
    } else {
        cudaMalloc(&d_base, (n + skew) * sizeof(float));
        d_w = (char *)d_base + skew * sizeof(float);
        cudaMemcpy(d_w, w, n * sizeof(float), cudaMemcpyHostToDevice);
    }
    float *ref = host_copy(out0, OC);
    linear_forward(ref, xp, w, b, 1, C, OC, acc);
    float *d_x = dev(x, in), *d_b = b ? dev(b, OC) : NULL;
    float *d_nw = dev(nw, C), *d_nb = dev(nb, C), *d_out = dev(out0, OC);
    gpu_decode_matvec(d_out, d_x, d_w, wfmt, d_b, C, OC, acc, pre, d_nw,
                      layer_norm ? d_nb : NULL, layer_norm, 1e-5f);
    static const char *what[] = {"", " after rmsnorm", " after swiglu", " after gelu"};
    static const char *fmt[] = {"", " (q8_0)", " (bf16)"};
    char at[32] = "";
    if (skew) snprintf(at, sizeof at, " W at +%d", skew);
    snprintf(name, sizeof name, "decode matvec%s%s %dx%d bias %d acc %d%s", fmt[wfmt],
             pre == GPU_PRE_NORM && layer_norm ? " after layernorm" : what[pre], C, OC, bias, acc,
             at);
    compare(name, back(d_out, OC), ref, OC, 1e-5);
    free(x), free(w), free(b), free(nw), free(nb), free(out0), free(xp), free(ref), free(wq);
    cudaFree(d_x), cudaFree(d_base), cudaFree(d_b), cudaFree(d_nw), cudaFree(d_nb);
    cudaFree(d_out);
}

/* The qkv product with the split fused in (gpu_decode_matvec_split)
 * against the two kernels it replaces, gpu_decode_matvec after the norm
 * and gpu_decode_split_rope, at position pos of caches of max_T rows that
 * start as NaN: the same bits in q and in both caches, rows other than pos
 * untouched. wfmt GPU_W_F32 or GPU_W_BF16 (the bits of W: random). */
static void test_decode_matvec_split(int C, int nh, int nkv, int hd, int rd, int pairing,
                                     int bias, int layer_norm, int wfmt) {
    char name[160];
    const int OC = (nh + 2 * nkv) * hd, max_T = 9, pos = 5;
    const size_t n = (size_t)OC * C, cache = (size_t)nkv * max_T * hd;
    rotary_rope_scaling sc;
    rotary_rope_scaling_default(&sc);
    rotary_rope r;
    must(rotary_rope_init(&r, hd, rd, 10000.0, (rotary_rope_pairing)pairing, max_T, &sc),
         "rope init");
    const size_t tab = (size_t)max_T * (r.rotary_dim / 2);
    float *x = randn(C, 1.5f), *w = randn(n, 0.5f), *b = randn(OC, 1.0f), *nw = randn(C, 1.0f);
    float *nb = randn(C, 1.0f);
    void *d_w;
    if (wfmt == GPU_W_BF16) {
        uint16_t *h = malloc(n * sizeof(uint16_t));
        for (size_t i = 0; i < n; i++) h[i] = rotary_f32_to_bf16(w[i]);
        cudaMalloc(&d_w, n * sizeof(uint16_t));
        cudaMemcpy(d_w, h, n * sizeof(uint16_t), cudaMemcpyHostToDevice);
        free(h);
    } else {
        d_w = dev(w, n);
    }
    float *d_x = dev(x, C), *d_b = dev(b, OC), *d_nw = dev(nw, C), *d_nb = dev(nb, C);
    float *d_cos = dev(r.cos, tab), *d_sin = dev(r.sin, tab), *d_qkv = dev(NULL, OC);
    float *d_q[2], *d_kc[2], *d_vc[2];
    for (int i = 0; i < 2; i++) {
        d_q[i] = dev(NULL, (size_t)nh * hd), d_kc[i] = dev(NULL, cache), d_vc[i] = dev(NULL, cache);
        cudaMemset(d_kc[i], 0xff, cache * sizeof(float)); /* NaN */
        cudaMemset(d_vc[i], 0xff, cache * sizeof(float));
    }
    int *d_pos;
    cudaMalloc((void **)&d_pos, sizeof(int));
    cudaMemcpy(d_pos, &pos, sizeof(int), cudaMemcpyHostToDevice);
    const float *cs = rd ? d_cos : NULL, *sn = rd ? d_sin : NULL;
    gpu_decode_matvec(d_qkv, d_x, d_w, wfmt, bias ? d_b : NULL, C, OC, 0, GPU_PRE_NORM, d_nw,
                      layer_norm ? d_nb : NULL, layer_norm, 1e-5f);
    gpu_decode_split_rope(d_q[0], d_kc[0], d_vc[0], d_qkv, cs, sn, d_pos, max_T, nh, nkv, hd,
                          r.rotary_dim, pairing);
    gpu_decode_matvec_split(d_q[1], d_kc[1], d_vc[1], d_x, d_w, wfmt, bias ? d_b : NULL, d_nw,
                            layer_norm ? d_nb : NULL, layer_norm, 1e-5f, C, cs, sn, d_pos, max_T,
                            nh, nkv, hd, r.rotary_dim, pairing);
    size_t differ = 0, total = 0;
    float *d_a[3] = {d_q[0], d_kc[0], d_vc[0]}, *d_f[3] = {d_q[1], d_kc[1], d_vc[1]};
    const size_t len[3] = {(size_t)nh * hd, cache, cache};
    for (int i = 0; i < 3; i++) {
        float *a = back(d_a[i], len[i]), *f = back(d_f[i], len[i]);
        for (size_t j = 0; j < len[i]; j++) differ += memcmp(&a[j], &f[j], sizeof(float)) != 0;
        total += len[i];
        free(a), free(f);
    }
    snprintf(name, sizeof name, "decode matvec + split%s C%d nh%d nkv%d hd%d rd%d %s%s%s",
             wfmt == GPU_W_BF16 ? " (bf16)" : "", C, nh, nkv, hd, rd,
             pairing ? "half" : "interleaved", bias ? " bias" : "",
             layer_norm ? " layernorm" : "");
    check(differ == 0, name, "%zu of %zu values differ in a bit from the two kernels'", differ,
          total);
    rotary_rope_free(&r);
    free(x), free(w), free(b), free(nw), free(nb);
    cudaFree(d_w), cudaFree(d_x), cudaFree(d_b), cudaFree(d_nw), cudaFree(d_nb);
    cudaFree(d_cos), cudaFree(d_sin), cudaFree(d_qkv), cudaFree(d_pos);
    for (int i = 0; i < 2; i++) cudaFree(d_q[i]), cudaFree(d_kc[i]), cudaFree(d_vc[i]);
}

/* ---------------------------------------------------------------- norms */

static void test_norm(int layer, int bias, int N, int C) {
    char name[96];
    const char *kind = layer ? "layernorm" : "rmsnorm";
    const size_t NC = (size_t)N * C;
    float *x = randn(NC, 2.0f), *w = randn(C, 1.0f), *b = bias ? randn(C, 1.0f) : NULL;
    for (size_t i = 0; i < NC; i++) x[i] += 0.5f; /* a mean for LayerNorm to remove */
    float *out = malloc(NC * sizeof(float)), *mean = malloc(N * sizeof(float));
    float *rstd = malloc(N * sizeof(float));
    float *d_x = dev(x, NC), *d_w = dev(w, C), *d_b = b ? dev(b, C) : NULL, *d_out = dev(NULL, NC);
    float *d_mean = dev(NULL, N), *d_rstd = dev(NULL, N);
    if (layer) layernorm_forward(out, mean, rstd, x, w, b, N, C, 1e-5f);
    else rmsnorm_forward(out, rstd, x, w, N, C, 1e-5f);
    gpu_norm_forward(d_out, NULL, layer ? d_mean : NULL, d_rstd, d_x, NULL, d_w, d_b, N, C, 1e-5f);
    snprintf(name, sizeof name, "%s forward %dx%d bias %d", kind, N, C, bias);
    compare(name, back(d_out, NC), out, NC, 1e-4);
    /* The bf16 output (a GEMM's input), within bf16 rounding (2^-8), as the
     * model runs it: x arrives as a + r, the residual r added in place. */
    gpu_bf16 *d_out16;
    cudaMalloc((void **)&d_out16, NC * sizeof(gpu_bf16));
    float *r = randn(NC, 1.0f), *a = malloc(NC * sizeof(float));
    for (size_t i = 0; i < NC; i++) a[i] = x[i] - r[i];
    for (size_t i = 0; i < NC; i++) x[i] = a[i] + r[i]; /* as the kernel adds them */
    if (layer) layernorm_forward(out, mean, rstd, x, w, b, N, C, 1e-5f);
    else rmsnorm_forward(out, rstd, x, w, N, C, 1e-5f);
    float *d_a = dev(a, NC), *d_r = dev(r, NC);
    gpu_norm_forward(NULL, d_out16, layer ? d_mean : NULL, d_rstd, d_a, d_r, d_w, d_b, N, C,
                     1e-5f);
    snprintf(name, sizeof name, "%s forward to bf16 %dx%d bias %d, residual added", kind, N, C,
             bias);
    compare(name, back16(d_out16, NC), out, NC, 4e-3);
    float *sum = back(d_a, NC);
    size_t differ = 0;
    for (size_t i = 0; i < NC; i++) differ += sum[i] != x[i];
    snprintf(name, sizeof name, "%s forward: the residual sum left in place", kind);
    check(differ == 0, name, "%zu of %zu differ from a + r", differ, NC);
    cudaMemcpy(d_x, d_a, NC * sizeof(float), cudaMemcpyDeviceToDevice); /* x, mean, rstd agree */
    free(r), free(a), free(sum);
    cudaFree(d_out16), cudaFree(d_a), cudaFree(d_r);
    snprintf(name, sizeof name, "%s forward rstd", kind);
    compare(name, back(d_rstd, N), rstd, N, 1e-4);

    /* dout in bf16 (a GEMM's gradient), rounded here for both sides */
    float *dout = randn(NC, 1.0f), *dx0 = randn(NC, 1.0f), *dw0 = randn(C, 1.0f);
    for (size_t i = 0; i < NC; i++) dout[i] = round_bf16(dout[i]);
    float *db0 = randn(C, 1.0f);
    float *dx = host_copy(dx0, NC), *dw = host_copy(dw0, C), *db = host_copy(db0, C);
    gpu_bf16 *d_dout = dev16(dout, NC);
    float *d_dx = dev(dx0, NC), *d_dw = dev(dw0, C), *d_db = dev(db0, C);
    if (layer) layernorm_backward(dx, dw, bias ? db : NULL, dout, x, w, mean, rstd, N, C);
    else rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C);
    gpu_bf16 *d_dx16;
    cudaMalloc((void **)&d_dx16, NC * sizeof(gpu_bf16));
    gpu_norm_backward(d_dx, d_dx16, d_dw, bias ? d_db : NULL, d_dout, d_x, d_w,
                      layer ? d_mean : NULL, d_rstd, N, C);
    snprintf(name, sizeof name, "%s backward dinp (+=)", kind);
    compare(name, back(d_dx, NC), dx, NC, 1e-4);
    snprintf(name, sizeof name, "%s backward dinp, also in bf16", kind);
    compare(name, back16(d_dx16, NC), dx, NC, 4e-3);
    cudaFree(d_dx16);
    snprintf(name, sizeof name, "%s backward dw (+=)", kind);
    compare(name, back(d_dw, C), dw, C, 5e-4);
    if (layer && bias) compare("layernorm backward db (+=)", back(d_db, C), db, C, 5e-4);
    free(x), free(w), free(b), free(out), free(mean), free(rstd), free(dout), free(dx0);
    free(dw0), free(db0), free(dx), free(dw), free(db);
    cudaFree(d_x), cudaFree(d_w), cudaFree(d_b), cudaFree(d_out), cudaFree(d_mean);
    cudaFree(d_rstd), cudaFree(d_dout), cudaFree(d_dx), cudaFree(d_dw), cudaFree(d_db);
}

/* ---------------------------------------------------------- activations */

/* Forward in fp32 (decoding) and in bf16 (training), backward in bf16. The
 * bf16 inputs are rounded here for both sides, so bf16 results are within
 * their own rounding, 2^-8 of the largest element. */
static void test_activations(int N, int F) {
    const size_t n = (size_t)N * F;
    float *x = randn(2 * n, 2.0f), *dout = randn(n, 1.0f);
    float *out = malloc(2 * n * sizeof(float)), *dx = malloc(2 * n * sizeof(float));
    float *d_x = dev(x, 2 * n), *d_out = dev(NULL, n);
    gpu_bf16 *d_out16, *d_dx;
    cudaMalloc((void **)&d_out16, n * sizeof(gpu_bf16));
    cudaMalloc((void **)&d_dx, 2 * n * sizeof(gpu_bf16));
    gelu_forward(out, x, n);
    gpu_gelu_forward(d_out, NULL, d_x, NULL, n);
    compare("gelu forward", back(d_out, n), out, n, 1e-5);
    swiglu_forward(out, x, N, F);
    gpu_swiglu_forward(d_out, NULL, d_x, NULL, N, F);
    compare("swiglu forward", back(d_out, n), out, n, 1e-5);
    for (size_t i = 0; i < 2 * n; i++) x[i] = round_bf16(x[i]);
    for (size_t i = 0; i < n; i++) dout[i] = round_bf16(dout[i]);
    gpu_bf16 *d_x16 = dev16(x, 2 * n), *d_dout = dev16(dout, n);
    gelu_forward(out, x, n);
    gpu_gelu_forward(NULL, d_out16, NULL, d_x16, n);
    compare("gelu forward in bf16", back16(d_out16, n), out, n, 4e-3);
    gelu_backward(dx, dout, x, n);
    gpu_gelu_backward(d_dx, d_dout, d_x16, n);
    compare("gelu backward (bf16)", back16(d_dx, n), dx, n, 4e-3);
    swiglu_forward(out, x, N, F);
    gpu_swiglu_forward(NULL, d_out16, NULL, d_x16, N, F);
    compare("swiglu forward in bf16", back16(d_out16, n), out, n, 4e-3);
    swiglu_backward(dx, dout, x, N, F);
    gpu_swiglu_backward(d_dx, d_dout, d_x16, N, F);
    compare("swiglu backward (bf16)", back16(d_dx, 2 * n), dx, 2 * n, 4e-3);
    free(x), free(dout), free(out), free(dx);
    cudaFree(d_x), cudaFree(d_x16), cudaFree(d_dout), cudaFree(d_out), cudaFree(d_out16);
    cudaFree(d_dx);
}

/* The embedding sum of model.c's forward, and its backward, written out;
 * positions from start (st > 0: read from device memory, as the decoder
 * passes its position). */
static void test_embed(int B, int T, int C, int V, int st) {
    const int N = B * T;
    float *emb = randn((size_t)V * C, 1.0f), *pos = randn((size_t)(st + T) * C, 1.0f);
    float *dout = randn((size_t)N * C, 1.0f), *dtok0 = randn((size_t)V * C, 1.0f);
    float *dpos0 = randn((size_t)T * C, 1.0f);
    int *tok = malloc((N + 1) * sizeof(int)), *d_tok;
    for (int i = 0; i < N; i++) tok[i] = (int)(rotary_rng_next(&test_rng) % (uint64_t)V);
    tok[N] = st;
    cudaMalloc((void **)&d_tok, (N + 1) * sizeof(int));
    cudaMemcpy(d_tok, tok, (N + 1) * sizeof(int), cudaMemcpyHostToDevice);
    float *out = malloc((size_t)N * C * sizeof(float));
    float *dtok = host_copy(dtok0, (size_t)V * C), *dpos = host_copy(dpos0, (size_t)T * C);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < C; i++) {
            out[(size_t)n * C + i] = emb[(size_t)tok[n] * C + i] +
                                     pos[(size_t)(st + n % T) * C + i];
            dtok[(size_t)tok[n] * C + i] += dout[(size_t)n * C + i];
            dpos[(size_t)(n % T) * C + i] += dout[(size_t)n * C + i];
        }
    float *d_emb = dev(emb, (size_t)V * C), *d_pos = dev(pos, (size_t)(st + T) * C);
    float *d_out = dev(NULL, (size_t)N * C), *d_dout = dev(dout, (size_t)N * C);
    float *d_dtok = dev(dtok0, (size_t)V * C), *d_dpos = dev(dpos0, (size_t)T * C);
    gpu_embed_forward(d_out, d_tok, d_emb, d_pos, st ? d_tok + N : NULL, N, T, C);
    char name[96];
    snprintf(name, sizeof name, "embedding forward (token + position from %d)", st);
    compare(name, back(d_out, (size_t)N * C), out, (size_t)N * C, 1e-6);
    if (!st) {
        gpu_embed_backward(d_dtok, d_dpos, d_dout, d_tok, N, T, C);
        compare("embedding backward dtok (+=)", back(d_dtok, (size_t)V * C), dtok,
                (size_t)V * C, 1e-5);
        compare("embedding backward dpos (+=)", back(d_dpos, (size_t)T * C), dpos,
                (size_t)T * C, 1e-5);
    }
    free(emb), free(pos), free(dout), free(dtok0), free(dpos0), free(tok), free(out), free(dtok);
    free(dpos);
    cudaFree(d_tok), cudaFree(d_emb), cudaFree(d_pos), cudaFree(d_out), cudaFree(d_dout);
    cudaFree(d_dtok), cudaFree(d_dpos);
}

/* ----------------------------------------------------------- classifier */

static void test_crossentropy(int N, int V, int bf16) {
    char name[96];
    const size_t NV = (size_t)N * V;
    const char *kind = bf16 ? " (bf16 logits)" : "";
    float *z = randn(NV, 3.0f), *lse = malloc(N * sizeof(float));
    /* bf16 logits: the CPU gets the same rounded values. */
    if (bf16)
        for (size_t i = 0; i < NV; i++) z[i] = round_bf16(z[i]);
    int *tg = malloc(N * sizeof(int)), *d_tg;
    for (int i = 0; i < N; i++) tg[i] = (int)(rotary_rng_next(&test_rng) % (uint64_t)V);
    cudaMalloc((void **)&d_tg, N * sizeof(int));
    cudaMemcpy(d_tg, tg, N * sizeof(int), cudaMemcpyHostToDevice);
    float *d_z = bf16 ? NULL : dev(z, NV), *d_lse = dev(NULL, N), *d_loss = dev(NULL, N);
    gpu_bf16 *d_z16 = bf16 ? dev16(z, NV) : NULL;
    const double loss = crossentropy_forward(lse, z, tg, N, V);
    crossentropy_backward(z, lse, tg, N, V, 1.0f / N);
    gpu_crossentropy(d_z, d_z16, d_lse, d_loss, d_tg, N, V, 1.0f / N);
    snprintf(name, sizeof name, "classifier lse %dx%d%s", N, V, kind);
    compare(name, back(d_lse, N), lse, N, 1e-5);
    float *l = back(d_loss, N);
    double s = 0;
    for (int i = 0; i < N; i++) s += l[i];
    free(l);
    float ref = (float)loss, got = (float)(s / N);
    snprintf(name, sizeof name, "classifier mean loss %dx%d%s", N, V, kind);
    compare(name, host_copy(&got, 1), &ref, 1, 1e-5);
    snprintf(name, sizeof name, "classifier fused gradient %dx%d%s", N, V, kind);
    compare(name, bf16 ? back16(d_z16, NV) : back(d_z, NV), z, NV, bf16 ? 4e-3 : 1e-4);
    free(z), free(lse), free(tg);
    cudaFree(d_tg), cudaFree(d_z), cudaFree(d_z16), cudaFree(d_lse), cudaFree(d_loss);
}

/* --------------------------------------------------- split, RoPE, attention */

/* Per-head (B, heads, T, hd) from the token-major rows of x (ld floats) at col. */
static float *heads_of(const float *x, int B, int T, int heads, int hd, int ld, int col) {
    float *o = malloc((size_t)B * heads * T * hd * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < heads; h++)
            for (int t = 0; t < T; t++)
                memcpy(o + (((size_t)b * heads + h) * T + t) * hd,
                       x + ((size_t)b * T + t) * ld + col + (size_t)h * hd, hd * sizeof(float));
    return o;
}

/* hd 16: q, k, v in bf16 for the tensor cores, within their rounding;
 * other head sizes fp32. */
static void test_split_rope(int hd, int pairing, int rd, int scaled) {
    char name[96];
    const int B = 2, T = 37, nh = 4, nkv = 2, S = (nh + 2 * nkv) * hd;
    const size_t n = (size_t)B * T * S;
    rotary_rope_scaling sc;
    rotary_rope_scaling_default(&sc);
    if (scaled) sc.type = ROTARY_ROPE_SCALING_YARN, sc.factor = 4, sc.original_ctx = 16;
    rotary_rope r;
    must(rotary_rope_init(&r, hd, rd, 10000.0, (rotary_rope_pairing)pairing, T, &sc), "rope init");
    int pos[64];
    for (int t = 0; t < T; t++) pos[t] = t;
    const size_t tab = (size_t)T * (r.rotary_dim / 2);
    float *d_cos = dev(r.cos, tab), *d_sin = dev(r.sin, tab);
    /* qkv in bf16 (the projection's output), rounded here for both sides */
    float *qkv = randn(n, 1.0f);
    for (size_t i = 0; i < n; i++) qkv[i] = round_bf16(qkv[i]);
    gpu_bf16 *d_qkv = dev16(qkv, n);
    float *d_q = dev(NULL, n), *d_k = dev(NULL, n), *d_v = dev(NULL, n);
    /* CPU: rotate q and k in place as model.c does, then read out the heads. */
    must(rotary_rope_forward(&r, qkv, B, T, nh, S, pos), "rope q");
    must(rotary_rope_forward(&r, qkv + nh * hd, B, T, nkv, S, pos), "rope k");
    gpu_qkv_split_rope(d_q, d_k, d_v, d_qkv, d_cos, d_sin, B, T, nh, nkv, hd, r.rotary_dim, pairing,
                       GPU_ATTN_TC(hd));
    const char *pn = pairing ? "half" : "interleaved";
    const char *what[3] = {"q", "k", "v"};
    const int heads[3] = {nh, nkv, nkv}, col[3] = {0, nh * hd, (nh + nkv) * hd};
    float *dd[3] = {d_q, d_k, d_v};
    for (int i = 0; i < 3; i++) {
        float *ref = heads_of(qkv, B, T, heads[i], hd, S, col[i]);
        const size_t len = (size_t)B * T * heads[i] * hd;
        snprintf(name, sizeof name, "split+rope %s hd %d%s %s rd %d%s", what[i], hd,
                 GPU_ATTN_TC(hd) ? " (bf16)" : "", pn, r.rotary_dim, scaled ? " yarn" : "");
        if (GPU_ATTN_TC(hd)) compare(name, back16((const gpu_bf16 *)dd[i], len), ref, len, 4e-3);
        else compare(name, back(dd[i], len), ref, len, 1e-6);
        free(ref);
    }
    /* Backward: per-head gradients (fp32, or bf16 as the tensor-core
     * attention writes them; values bf16 can hold either way) back to
     * token-major, rotated by -theta. */
    float *g = randn(n, 1.0f);
    for (size_t i = 0; i < n; i++) g[i] = round_bf16(g[i]);
    float *gq = heads_of(g, B, T, nh, hd, S, 0), *gk = heads_of(g, B, T, nkv, hd, S, nh * hd);
    float *gv = heads_of(g, B, T, nkv, hd, S, (nh + nkv) * hd);
    const size_t nq = (size_t)B * T * nh * hd, nkvh = (size_t)B * T * nkv * hd;
    must(rotary_rope_backward(&r, g, B, T, nh, S, pos), "rope backward q");
    must(rotary_rope_backward(&r, g + nh * hd, B, T, nkv, S, pos), "rope backward k");
    /* dqkv is bf16 (the backward GEMM's input): within its rounding. */
    gpu_bf16 *d_dqkv16;
    cudaMalloc((void **)&d_dqkv16, n * sizeof(gpu_bf16));
    for (int g16 = 0; g16 <= 1; g16++) {
        void *dg[3];
        if (g16) dg[0] = dev16(gq, nq), dg[1] = dev16(gk, nkvh), dg[2] = dev16(gv, nkvh);
        else dg[0] = dev(gq, nq), dg[1] = dev(gk, nkvh), dg[2] = dev(gv, nkvh);
        gpu_qkv_merge_rope_backward(d_dqkv16, dg[0], dg[1], dg[2], d_cos, d_sin, B, T, nh, nkv,
                                    hd, r.rotary_dim, pairing, g16);
        snprintf(name, sizeof name, "merge+rope backward dqkv (bf16) from %s %s rd %d",
                 g16 ? "bf16" : "fp32", pn, r.rotary_dim);
        compare(name, back16(d_dqkv16, n), g, n, 4e-3);
        for (int i = 0; i < 3; i++) cudaFree(dg[i]);
    }
    cudaFree(d_dqkv16);
    rotary_rope_free(&r);
    free(qkv), free(g), free(gq), free(gk), free(gv);
    cudaFree(d_cos), cudaFree(d_sin), cudaFree(d_qkv), cudaFree(d_q), cudaFree(d_k), cudaFree(d_v);
}

/* kernel: the tensor-core kernels to use (gpu_attention_use), GPU_ATTN_WMMA,
 * GPU_ATTN_MMA or GPU_ATTN_MMA_ATOMIC; bias: 0 none, 1 ALiBi, 2 a T5 table by distance (random,
 * with its gradient checked too). */
static void test_attention(int kernel, int B, int T, int nh, int nkv, int hd, int bias) {
    char name[128], cfg[80];
    gpu_attention_use(kernel);
    const int alibi = bias == 1, t5 = bias == 2, tc = GPU_ATTN_TC(hd);
    snprintf(cfg, sizeof cfg, "B%d T%d nh%d nkv%d hd%d%s%s", B, T, nh, nkv, hd,
             alibi ? " alibi" : t5 ? " t5" : "",
             !tc                               ? ""
             : kernel == GPU_ATTN_WMMA || t5    ? " (tensor cores)"
             : !GPU_ATTN_MMA_BWD(hd)   ? " (tensor cores, mma.sync forward)"
             : kernel == GPU_ATTN_MMA  ? " (tensor cores, mma.sync)"
                                       : " (tensor cores, mma.sync, atomic dq)");
    const int S = (nh + 2 * nkv) * hd, Q = nh * hd;
    const size_t n = (size_t)B * T * S, no = (size_t)B * T * Q, nb = (size_t)B * nh * T;
    float *qkv = randn(n, 1.0f), *slopes = malloc(nh * sizeof(float));
    for (size_t i = 0; i < n; i++) qkv[i] = round_bf16(qkv[i]); /* the projection's bf16 */
    float *tab = randn((size_t)nh * T, 1.0f);
    rotary_alibi_slopes(slopes, nh);
    float *out = malloc(no * sizeof(float)), *att = malloc((size_t)B * nh * T * T * sizeof(float));
    float *scratch = malloc((size_t)omp_get_max_threads() * ATTN_SCRATCH(T, hd) * sizeof(float));
    attention_forward(out, att, qkv, alibi ? slopes : NULL, t5 ? tab : NULL, B, T, nh, nkv, hd,
                      scratch);
    gpu_bf16 *d_qkv = dev16(qkv, n);
    float *d_q = dev(NULL, no), *d_k = dev(NULL, n), *d_v = dev(NULL, n);
    float *d_lse = dev(NULL, (size_t)B * nh * T);
    gpu_bf16 *d_out;
    cudaMalloc((void **)&d_out, no * sizeof(gpu_bf16));
    float *d_alibi = dev(slopes, nh), *d_tab = dev(tab, (size_t)nh * T), *d_dtab = dev(NULL, nb);
    cudaMemset(d_dtab, 0xff, nb * sizeof(float)); /* NaN: the backward must overwrite it */
    gpu_qkv_split_rope(d_q, d_k, d_v, d_qkv, NULL, NULL, B, T, nh, nkv, hd, 0, 0, tc);
    gpu_attention_forward(d_out, d_lse, d_q, d_k, d_v, alibi ? d_alibi : NULL, t5 ? d_tab : NULL,
                          B, T, nh, nkv, hd);
    snprintf(name, sizeof name, "attention forward %s", cfg);
    compare(name, back16(d_out, no), out, no, tc ? 1.5e-2 : 4e-3);

    /* dout in bf16 (the output projection's backward GEMM writes it so) */
    float *dout = randn(no, 1.0f), *dqkv = malloc(n * sizeof(float));
    for (size_t i = 0; i < no; i++) dout[i] = round_bf16(dout[i]);
    float *dtab = malloc(nb * sizeof(float));
    attention_backward(dqkv, t5 ? dtab : NULL, scratch, dout, qkv, att, B, T, nh, nkv, hd);
    float *d_dq = dev(NULL, no), *d_dk = dev(NULL, n);
    float *d_dv = dev(NULL, n), *d_dsum = dev(NULL, (size_t)B * nh * T);
    cudaMemset(d_dq, 0xff, no * sizeof(float)); /* NaN: every element must be written */
    gpu_bf16 *d_dout16 = dev16(dout, no);
    gpu_attention_backward(d_dq, d_dk, d_dv, d_dsum, d_dout16, d_out, d_q, d_k, d_v, d_lse,
                           alibi ? d_alibi : NULL, t5 ? d_tab : NULL, t5 ? d_dtab : NULL, B, T, nh,
                           nkv, hd);
    /* dq, dk and dv (per head) separately: each has its own scale. */
    const char *what[3] = {"dq", "dk", "dv"};
    const int heads[3] = {nh, nkv, nkv}, col[3] = {0, nh * hd, (nh + nkv) * hd};
    float *dd[3] = {d_dq, d_dk, d_dv};
    const int g16 = gpu_attention_grads_bf16(hd, t5);
    check(g16 == (tc && !(kernel == GPU_ATTN_MMA_ATOMIC && GPU_ATTN_MMA_BWD(hd) && !t5)),
          "attention backward: gradient type", "%s %s", g16 ? "bf16" : "fp32", cfg);
    for (int i = 0; i < 3; i++) {
        float *r = heads_of(dqkv, B, T, heads[i], hd, S, col[i]);
        const size_t len = (size_t)B * T * heads[i] * hd;
        snprintf(name, sizeof name, "attention backward %s%s %s", what[i], g16 ? " (bf16)" : "",
                 cfg);
        compare(name, g16 ? back16((const gpu_bf16 *)dd[i], len) : back(dd[i], len), r, len,
                tc ? 3e-2 : i < 2 ? 1.5e-2 : 2e-4);
        free(r);
    }
    if (t5) {
        snprintf(name, sizeof name, "attention backward t5 table %s", cfg);
        compare(name, back(d_dtab, nb), dtab, nb, 1.5e-2);
    }
    free(qkv), free(slopes), free(tab), free(out), free(att), free(scratch), free(dout);
    free(dqkv), free(dtab);
    cudaFree(d_tab), cudaFree(d_dtab);
    cudaFree(d_qkv), cudaFree(d_q), cudaFree(d_k), cudaFree(d_v), cudaFree(d_out), cudaFree(d_lse);
    cudaFree(d_alibi), cudaFree(d_dq), cudaFree(d_dk), cudaFree(d_dv);
    cudaFree(d_dsum), cudaFree(d_dout16);
}

/* The decoder's kernels position by position, as cuda_decoder_step calls
 * them, against the CPU's RoPE and causal attention over the whole
 * sequence: step p splits row p of qkv into q and row p of the caches, and
 * its output must be row p of the CPU's. The caches start as NaN, so a read
 * past the position shows. */
static void test_decode(int T, int nh, int nkv, int hd, int rd, int pairing, int alibi) {
    char name[128], cfg[80];
    snprintf(cfg, sizeof cfg, "T%d nh%d nkv%d hd%d rd%d %s%s", T, nh, nkv, hd, rd,
             pairing ? "half" : "interleaved", alibi ? " alibi" : "");
    const int S = (nh + 2 * nkv) * hd, Q = nh * hd, max_T = T + 5;
    const size_t n = (size_t)T * S, cache = (size_t)nkv * max_T * hd;
    rotary_rope_scaling sc;
    rotary_rope_scaling_default(&sc);
    rotary_rope r;
    must(rotary_rope_init(&r, hd, rd, 10000.0, (rotary_rope_pairing)pairing, max_T, &sc),
         "rope init");
    int pos[512];
    for (int t = 0; t < T; t++) pos[t] = t;
    const size_t tab = (size_t)max_T * (r.rotary_dim / 2);
    float *qkv = randn(n, 1.0f), *slopes = malloc(nh * sizeof(float));
    rotary_alibi_slopes(slopes, nh);
    float *d_qkv = dev(qkv, n), *d_cos = dev(r.cos, tab), *d_sin = dev(r.sin, tab);
    float *d_q = dev(NULL, Q), *d_out = dev(NULL, (size_t)T * Q), *d_alibi = dev(slopes, nh);
    float *d_kc = dev(NULL, cache), *d_vc = dev(NULL, cache);
    const size_t part = gpu_decode_attention_part(nh, hd, max_T);
    float *d_part = part ? dev(NULL, part) : NULL;
    cudaMemset(d_kc, 0xff, cache * sizeof(float)); /* NaN */
    cudaMemset(d_vc, 0xff, cache * sizeof(float));
    int *d_pos;
    cudaMalloc((void **)&d_pos, T * sizeof(int));
    cudaMemcpy(d_pos, pos, T * sizeof(int), cudaMemcpyHostToDevice);
    float *qs = malloc((size_t)T * Q * sizeof(float));
    for (int t = 0; t < T; t++) {
        gpu_decode_split_rope(d_q, d_kc, d_vc, d_qkv + (size_t)t * S, d_cos, d_sin, d_pos + t,
                              max_T, nh, nkv, hd, r.rotary_dim, pairing);
        gpu_decode_attention(d_out + (size_t)t * Q, d_part, d_q, d_kc, d_vc,
                             alibi ? d_alibi : NULL, NULL, d_pos + t, max_T, nh, nkv, hd);
        float *q = back(d_q, Q);
        memcpy(qs + (size_t)t * Q, q, Q * sizeof(float));
        free(q);
    }
    /* CPU: rotate q and k of every row, then attention over all of them. */
    must(rotary_rope_forward(&r, qkv, 1, T, nh, S, pos), "rope q");
    must(rotary_rope_forward(&r, qkv + Q, 1, T, nkv, S, pos), "rope k");
    float *ref = malloc((size_t)T * Q * sizeof(float));
    for (int t = 0; t < T; t++) memcpy(ref + (size_t)t * Q, qkv + (size_t)t * S, Q * sizeof(float));
    snprintf(name, sizeof name, "decode split: q rows %s", cfg);
    compare(name, qs, ref, (size_t)T * Q, 1e-6);
    float *kc = back(d_kc, cache), *vc = back(d_vc, cache);
    double kerr = 0, verr = 0;
    size_t unwritten = 0;
    for (int h = 0; h < nkv; h++)
        for (int t = 0; t < max_T; t++)
            for (int i = 0; i < hd; i++) {
                const float kg = kc[((size_t)h * max_T + t) * hd + i];
                const float vg = vc[((size_t)h * max_T + t) * hd + i];
                if (t >= T) {
                    unwritten += isnan(kg) && isnan(vg);
                    continue;
                }
                const float *row = qkv + (size_t)t * S + Q + (size_t)h * hd + i;
                kerr = fmax(kerr, isnan(kg) ? INFINITY : fabs(kg - row[0]));
                verr = fmax(verr, isnan(vg) ? INFINITY : fabs(vg - row[nkv * hd]));
            }
    snprintf(name, sizeof name, "decode split: cache rows %s", cfg);
    check(kerr <= 1e-5 && verr <= 1e-5 && unwritten == (size_t)nkv * (max_T - T) * hd, name,
          "k err %.1e, v err %.1e, %zu of %zu later values untouched", kerr, verr, unwritten,
          (size_t)nkv * (max_T - T) * hd);
    float *out = malloc((size_t)T * Q * sizeof(float)), *att = malloc((size_t)nh * T * T * sizeof(float));
    float *scratch = malloc((size_t)omp_get_max_threads() * ATTN_SCRATCH(T, hd) * sizeof(float));
    attention_forward(out, att, qkv, alibi ? slopes : NULL, NULL, 1, T, nh, nkv, hd, scratch);
    snprintf(name, sizeof name, "decode attention, every position %s", cfg);
    compare(name, back(d_out, (size_t)T * Q), out, (size_t)T * Q, 1e-5);
    rotary_rope_free(&r);
    free(qkv), free(slopes), free(ref), free(kc), free(vc), free(out), free(att), free(scratch);
    cudaFree(d_qkv), cudaFree(d_cos), cudaFree(d_sin), cudaFree(d_q), cudaFree(d_out);
    cudaFree(d_alibi), cudaFree(d_kc), cudaFree(d_vc), cudaFree(d_pos), cudaFree(d_part);
}

/* The linear-attention decoder kernel position by position against
 * linear_attention_forward over the whole sequence (row p of its output at
 * step p). The state starts as NaN, so a step 0 that fails to reset it
 * shows; a second pass over the same rows (the state dirty from the first)
 * must give the same bits. */
static void test_decode_linear(int T, int nh, int nkv, int hd, int rd, int pairing) {
    char name[128], cfg[80];
    snprintf(cfg, sizeof cfg, "T%d nh%d nkv%d hd%d rd%d %s", T, nh, nkv, hd, rd,
             pairing ? "half" : "interleaved");
    const int S = (nh + 2 * nkv) * hd, FS = (nh + nkv) * hd, Q = nh * hd;
    const size_t n = (size_t)T * S, nf = (size_t)T * FS, state = (size_t)nkv * (hd * hd + hd);
    rotary_rope r;
    must(rotary_rope_init(&r, hd, rd, 10000.0, (rotary_rope_pairing)pairing, T, NULL), "rope init");
    int pos[512];
    for (int t = 0; t < T; t++) pos[t] = t;
    const size_t tab = (size_t)T * (r.rotary_dim / 2);
    float *qkv = randn(n, 0.5f), *feat = malloc(nf * sizeof(float));
    float *d_qkv = dev(qkv, n), *d_cos = dev(r.cos, tab), *d_sin = dev(r.sin, tab);
    float *d_state = dev(NULL, state), *d_out = dev(NULL, (size_t)T * Q);
    cudaMemset(d_state, 0xff, state * sizeof(float)); /* NaN */
    int *d_pos;
    cudaMalloc((void **)&d_pos, T * sizeof(int));
    cudaMemcpy(d_pos, pos, T * sizeof(int), cudaMemcpyHostToDevice);
    float *first = NULL;
    for (int pass = 0; pass < 2; pass++) {
        for (int t = 0; t < T; t++)
            gpu_decode_linear(d_out + (size_t)t * Q, d_state, d_state + (size_t)nkv * hd * hd,
                              d_qkv + (size_t)t * S, d_cos, d_sin, d_pos + t, nh, nkv, hd,
                              r.rotary_dim, pairing);
        float *o = back(d_out, (size_t)T * Q);
        if (!pass) {
            first = o;
            continue;
        }
        snprintf(name, sizeof name, "decode linear: again from position 0 %s", cfg);
        check(!memcmp(o, first, (size_t)T * Q * sizeof(float)), name, "%s",
              "the same bits over a used state");
        free(o);
    }
    elu1_forward(feat, qkv, T, FS, S);
    float *rfeat = host_copy(feat, nf);
    must(rotary_rope_forward(&r, rfeat, 1, T, nh + nkv, FS, pos), "rope");
    float *out = malloc((size_t)T * Q * sizeof(float)), *den = malloc((size_t)T * nh * sizeof(float));
    float *scratch = malloc((size_t)omp_get_max_threads() * LINATTN_SCRATCH(hd) * sizeof(float));
    linear_attention_forward(out, den, feat, rfeat, qkv, 1, T, nh, nkv, hd, scratch);
    snprintf(name, sizeof name, "decode linear, every position %s", cfg);
    compare(name, first, out, (size_t)T * Q, 1e-5);
    rotary_rope_free(&r);
    free(qkv), free(feat), free(rfeat), free(out), free(den), free(scratch); /* compare freed first */
    cudaFree(d_qkv), cudaFree(d_cos), cudaFree(d_sin), cudaFree(d_state), cudaFree(d_out);
    cudaFree(d_pos);
}

/* Linear attention with RoPE features, as model.c computes them. */
static void test_linear_attention(int B, int T, int nh, int nkv, int hd, int pairing) {
    char name[128], cfg[64];
    snprintf(cfg, sizeof cfg, "B%d T%d nh%d nkv%d hd%d", B, T, nh, nkv, hd);
    const int S = (nh + 2 * nkv) * hd, FS = (nh + nkv) * hd, Q = nh * hd, N = B * T;
    const size_t n = (size_t)N * S, nf = (size_t)N * FS, no = (size_t)N * Q;
    float *qkv = randn(n, 0.5f), *feat = malloc(nf * sizeof(float));
    rotary_rope r;
    must(rotary_rope_init(&r, hd, 0, 10000.0, (rotary_rope_pairing)pairing, T, NULL), "rope init");
    int pos[512];
    for (int t = 0; t < T; t++) pos[t] = t;
    elu1_forward(feat, qkv, N, FS, S);
    float *rfeat = host_copy(feat, nf);
    must(rotary_rope_forward(&r, rfeat, B, T, nh + nkv, FS, pos), "rope");
    float *d_qkv = dev(qkv, n), *d_feat = dev(NULL, nf), *d_rfeat = dev(NULL, nf);
    float *d_cos = dev(r.cos, (size_t)T * hd / 2), *d_sin = dev(r.sin, (size_t)T * hd / 2);
    gpu_elu1_forward(d_feat, d_qkv, N, FS, S);
    compare("elu+1 features", back(d_feat, nf), feat, nf, 1e-6);
    cudaMemcpy(d_rfeat, rfeat, nf * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemcpy(d_feat, feat, nf * sizeof(float), cudaMemcpyHostToDevice);
    float *d_tmp = dev(feat, nf);
    gpu_rope_rows(d_tmp, d_cos, d_sin, B, T, nh + nkv, hd, hd, pairing, FS, 1.0f);
    snprintf(name, sizeof name, "rope on feature rows %s", pairing ? "half" : "interleaved");
    compare(name, back(d_tmp, nf), rfeat, nf, 1e-6);

    float *out = malloc(no * sizeof(float)), *den = malloc((size_t)N * nh * sizeof(float));
    float *scratch = malloc((size_t)omp_get_max_threads() * LINATTN_SCRATCH(hd) * sizeof(float));
    linear_attention_forward(out, den, feat, rfeat, qkv, B, T, nh, nkv, hd, scratch);
    float *d_out = dev(NULL, no), *d_den = dev(NULL, (size_t)N * nh);
    gpu_linear_attention_forward(d_out, d_den, d_feat, d_rfeat, d_qkv, B, T, nh, nkv, hd);
    snprintf(name, sizeof name, "linear attention forward %s", cfg);
    compare(name, back(d_out, no), out, no, 1e-4);
    compare("linear attention denominators", back(d_den, (size_t)N * nh), den, (size_t)N * nh, 1e-4);

    float *dout = randn(no, 1.0f), *dfeat = malloc(nf * sizeof(float));
    float *drfeat = malloc(nf * sizeof(float)), *dqkv = randn(n, 1.0f);
    float *d_dout = dev(dout, no), *d_dfeat = dev(NULL, nf), *d_drfeat = dev(NULL, nf);
    float *d_dqkv = dev(dqkv, n);
    linear_attention_backward(dfeat, drfeat, dqkv, scratch, dout, feat, rfeat, qkv, out, den, B, T,
                              nh, nkv, hd);
    gpu_linear_attention_backward(d_dfeat, d_drfeat, d_dqkv, d_dout, d_feat, d_rfeat, d_qkv, d_out,
                                  d_den, B, T, nh, nkv, hd);
    snprintf(name, sizeof name, "linear attention backward dfeat %s", cfg);
    compare(name, back(d_dfeat, nf), dfeat, nf, 5e-4);
    snprintf(name, sizeof name, "linear attention backward drfeat %s", cfg);
    compare(name, back(d_drfeat, nf), drfeat, nf, 5e-4);
    snprintf(name, sizeof name, "linear attention backward dv %s", cfg);
    compare(name, back(d_dqkv, n), dqkv, n, 5e-4); /* q, k parts untouched: equal */
    /* The features' gradient back through RoPE and elu+1, into dqkv. */
    must(rotary_rope_backward(&r, drfeat, B, T, nh + nkv, FS, pos), "rope backward");
    for (size_t i = 0; i < nf; i++) dfeat[i] += drfeat[i];
    elu1_backward(dqkv, dfeat, qkv, N, FS, S);
    gpu_rope_rows(d_drfeat, d_cos, d_sin, B, T, nh + nkv, hd, hd, pairing, FS, -1.0f);
    gpu_add(d_dfeat, d_drfeat, nf);
    gpu_elu1_backward(d_dqkv, d_dfeat, d_qkv, N, FS, S);
    snprintf(name, sizeof name, "linear attention dqkv through rope, elu+1 %s", cfg);
    compare(name, back(d_dqkv, n), dqkv, n, 5e-4);
    rotary_rope_free(&r);
    free(qkv), free(feat), free(rfeat), free(out), free(den), free(scratch), free(dout);
    free(dfeat), free(drfeat), free(dqkv);
    cudaFree(d_qkv), cudaFree(d_feat), cudaFree(d_rfeat), cudaFree(d_cos), cudaFree(d_sin);
    cudaFree(d_tmp), cudaFree(d_out), cudaFree(d_den), cudaFree(d_dout), cudaFree(d_dfeat);
    cudaFree(d_drfeat), cudaFree(d_dqkv);
}

int main(int argc, char **argv) {
    const int quick = argc > 1 && !strcmp(argv[1], "--quick");
    gpu_or_skip("test_cuda_kernels");
    test_to_bf16(4096, 0);
    test_to_bf16(1001, 3);
    test_linear(64, 96, 80, 1);
    test_linear(300, 256, 384, 0);
    test_linear(1, 768, 200, 1);
    test_matvec(768, 200, 1);
    test_matvec(100, 61, 0);
    for (int wf = GPU_W_F32; wf <= GPU_W_BF16; wf++) {
        test_decode_matvec(GPU_PRE_NONE, 0, 768, 200, 1, 1, wf, 0);
        test_decode_matvec(GPU_PRE_NORM, 0, 768, 2304, 0, 0, wf, 0);
        test_decode_matvec(GPU_PRE_NORM, 1, 96, 61, 1, 0, wf, 0);
        test_decode_matvec(GPU_PRE_NORM, 0, 90, 37, 0, 0, wf, 0); /* C % 4 != 0, C % 32 != 0 */
        test_decode_matvec(GPU_PRE_SWIGLU, 0, 2048, 768, 0, 1, wf, 0);
        test_decode_matvec(GPU_PRE_GELU, 0, 300, 100, 1, 1, wf, 0); /* C % 8 != 0 */
        test_decode_matvec(GPU_PRE_NORM, 0, 64, 9000, 0, 0, wf, 0); /* rows > blocks x warps */
        test_decode_matvec(GPU_PRE_SWIGLU, 0, 13000, 20, 1, 0, wf, 0); /* > 48 KiB shared */
        if (wf != GPU_W_Q8) /* C % 8 == 0 but W misaligned: one value a load */
            test_decode_matvec(GPU_PRE_NORM, 1, 256, 100, 1, 1, wf, 1);
    }
    /* C, nh, nkv, hd, rd, pairing, bias, layer_norm, weights */
    test_decode_matvec_split(64, 4, 2, 16, 16, 0, 0, 0, GPU_W_F32);
    test_decode_matvec_split(96, 3, 1, 32, 16, 1, 1, 1, GPU_W_F32);
    test_decode_matvec_split(128, 2, 2, 64, 0, 0, 1, 0, GPU_W_BF16); /* no rotation */
    test_decode_matvec_split(72, 6, 3, 24, 8, 1, 0, 0, GPU_W_BF16);
    test_norm(1, 1, 100, 96);
    test_norm(1, 0, 37, 768);
    test_norm(0, 0, 100, 96);
    test_norm(0, 0, 37, 768);
    test_norm(1, 1, 20, 90); /* C % 4 != 0: the one-column-a-lane kernels */
    test_norm(0, 0, 20, 90);
    test_activations(50, 200);
    test_activations(7, 36); /* F % 8 != 0: one element a thread */
    test_embed(3, 20, 48, 61, 0);
    test_embed(1, 1, 48, 61, 17);
    test_crossentropy(16, 50304, 0);
    test_crossentropy(40, 61, 0);
    test_crossentropy(16, 50304, 1);
    test_crossentropy(40, 61, 1);
    for (int pairing = 0; pairing <= 1; pairing++) {
        test_split_rope(16, pairing, 0, 0);
        test_split_rope(16, pairing, 8, 1);
        test_split_rope(20, pairing, 8, 1);
    }
    /* B, T, nh, nkv, hd, bias (1 ALiBi, 2 T5): several key tiles, GQA; hd 24
     * and 40 take the fp32 kernels. The tensor-core cases run with each
     * kernel set (with T5, each uses the WMMA kernels: the table must still
     * reach them). */
    static const int att[][6] = {{2, 70, 4, 2, 32, 1},  {1, 130, 2, 1, 64, 0}, {2, 33, 3, 3, 48, 1},
                                 {1, 65, 2, 2, 128, 0}, {1, 200, 4, 1, 16, 1}, {1, 300, 6, 2, 64, 1},
                                 {2, 45, 2, 1, 24, 0},  {1, 97, 2, 2, 40, 1},  {2, 70, 4, 2, 64, 2},
                                 {1, 97, 2, 1, 40, 2},  {1, 130, 3, 1, 32, 2}};
    for (int kernel = GPU_ATTN_WMMA; kernel <= GPU_ATTN_MMA_ATOMIC; kernel++)
        for (size_t i = 0; i < sizeof att / sizeof att[0]; i++)
            if ((kernel == GPU_ATTN_WMMA || GPU_ATTN_TC(att[i][4])) &&
                !(quick && att[i][1] > 200))
                test_attention(kernel, att[i][0], att[i][1], att[i][2], att[i][3], att[i][4],
                               att[i][5]);
    gpu_attention_use(GPU_ATTN_WMMA);
    /* T, nh, nkv, hd, rd, pairing, alibi: partial key groups, GQA, a head
     * size that is not a multiple of 32, partial rotation, both pairings. */
    test_decode(70, 4, 2, 64, 64, 0, 0);
    test_decode(45, 6, 2, 40, 24, 1, 0);
    test_decode(3, 2, 1, 128, 128, 1, 1);
    if (!quick) test_decode(130, 4, 4, 32, 16, 0, 1);
    if (!quick) test_decode(300, 2, 2, 64, 32, 1, 1); /* 5 chunks a head */
    test_decode_linear(60, 4, 2, 32, 32, 0);
    test_decode_linear(25, 6, 3, 40, 24, 1);
    if (!quick) test_decode_linear(70, 2, 1, 128, 64, 0);
    test_linear_attention(2, 50, 4, 2, 16, 0);
    test_linear_attention(1, 90, 2, 2, 64, 1);
    return check_summary("test_cuda_kernels");
}
