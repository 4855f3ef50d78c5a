/* gpu_check.h: what the GPU comparison tests share (tests/cuda/).
 *
 * Inputs are fresh random numbers for every check (never zeros), from the
 * project's rng; results are compared with the CPU implementation by the
 * relative error max|gpu - cpu| / max|cpu| over the whole array. Tests exit
 * with SKIP (77, CTest's SKIP_RETURN_CODE) when there is no CUDA device. */
#ifndef ROTARY_TESTS_GPU_CHECK_H
#define ROTARY_TESTS_GPU_CHECK_H

#define CHECK_NAME_WIDTH 52
#include "../check.h"
#include "cuda/kernels.h"
#include "half.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define SKIP 77

static rotary_rng test_rng;
static uint64_t test_seed = 1;

/* Exit with SKIP unless a device is there. */
static inline void gpu_or_skip(const char *test) {
    if (gpu_device_count() < 1) {
        printf("%s: skipped: no CUDA device (%s)\n", test, gpu_last_error());
        exit(SKIP);
    }
    if (gpu_gemm_init()) {
        printf("FAIL %s: cannot create the cuBLAS handle\n", test);
        exit(1);
    }
}

/* n floats ~ N(0, scale^2), a new stream for each call. */
static inline float *randn(size_t n, float scale) {
    rotary_rng_seed(&test_rng, test_seed++);
    float *x = malloc((n ? n : 1) * sizeof(float));
    if (!x) exit(2);
    for (size_t i = 0; i < n; i++) x[i] = scale * rotary_rng_normal(&test_rng);
    return x;
}

static inline float *host_copy(const float *x, size_t n) {
    float *y = malloc((n ? n : 1) * sizeof(float));
    if (!y) exit(2);
    memcpy(y, x, n * sizeof(float));
    return y;
}

/* Device copy of host x (n floats); NULL x gives zeros. */
static inline float *dev(const float *x, size_t n) {
    float *d;
    if (cudaMalloc((void **)&d, (n ? n : 1) * sizeof(float)) != cudaSuccess) {
        printf("FAIL cudaMalloc of %zu floats\n", n);
        exit(1);
    }
    if (x) cudaMemcpy(d, x, n * sizeof(float), cudaMemcpyHostToDevice);
    else cudaMemset(d, 0, n * sizeof(float));
    return d;
}

/* Wait for the kernels; a failure ends the test. */
static inline void gpu_wait(void) {
    if (gpu_sync()) {
        printf("FAIL kernel: %s\n", gpu_last_error());
        exit(1);
    }
}

/* A host copy of `bytes` at device d, after the kernels. */
static inline void *host_of(const void *d, size_t bytes) {
    gpu_wait();
    void *h = malloc(bytes ? bytes : 1);
    if (!h) exit(2);
    cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost);
    return h;
}

/* Host copy of device d (n floats). */
static inline float *back(const float *d, size_t n) { return host_of(d, n * sizeof(float)); }

/* x rounded to bf16 (nearest, ties to even; x finite), as a float. */
static inline float round_bf16(float x) { return rotary_bf16_to_f32(rotary_f32_to_bf16(x)); }

/* A bf16 device copy of host x (n floats), rounded by gpu_to_bf16. */
static inline gpu_bf16 *dev16(const float *x, size_t n) {
    float *d = dev(x, n);
    gpu_bf16 *h;
    if (cudaMalloc((void **)&h, (n ? n : 1) * sizeof(gpu_bf16)) != cudaSuccess) {
        printf("FAIL cudaMalloc of %zu bf16 values\n", n);
        exit(1);
    }
    gpu_to_bf16(h, d, n);
    gpu_wait();
    cudaFree(d);
    return h;
}

/* Host floats from device bf16 d (n values), after the kernels. */
static inline float *back16(const gpu_bf16 *d, size_t n) {
    uint16_t *b = host_of(d, n * sizeof(uint16_t));
    float *h = malloc((n ? n : 1) * sizeof(float));
    if (!h) exit(2);
    for (size_t i = 0; i < n; i++) h[i] = rotary_bf16_to_f32(b[i]);
    free(b);
    return h;
}

/* max |gpu - cpu| / max(max |cpu|, lo); a NaN gives infinity. */
static inline double rel_err_floor(const float *gpu, const float *cpu, size_t n, double lo) {
    double num = 0, den = lo;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)gpu[i] - cpu[i]);
        if (d != d) return INFINITY; /* a NaN fails */
        if (d > num) num = d;
        if (fabs(cpu[i]) > den) den = fabs(cpu[i]);
    }
    return num / (den > 0 ? den : 1e-30);
}

static inline double rel_err(const float *gpu, const float *cpu, size_t n) {
    return rel_err_floor(gpu, cpu, n, 0);
}

/* One comparison: name, error, threshold; frees the GPU result. */
static inline void compare(const char *name, float *gpu_host, const float *cpu, size_t n,
                           double tol) {
    double e = rel_err(gpu_host, cpu, n);
    check(e <= tol, name, "rel err %.2e (<= %.0e)", e, tol);
    free(gpu_host);
}

#endif
