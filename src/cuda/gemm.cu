/* gemm.cu: the linear layers on cuBLAS, in bf16 on the tensor cores with
 * fp32 accumulation; results in fp32 (the residual stream) or in bf16 (what
 * only an elementwise kernel reads before the next GEMM: the qkv and MLP
 * projections, the logits, the gradients into the activations and norms).
 * The operands arrive in bf16: the kernels that produce them write bf16
 * (norms, activations, their gradients), AdamW keeps a bf16 copy of the
 * weights, and the few fp32 arrays that also feed a GEMM are rounded by
 * gpu_to_bf16 (cuda_model.c).
 * (Asking cuBLAS for CUBLAS_COMPUTE_32F_FAST_16BF on fp32 arrays instead gave
 * TF32 kernels on an H100, at half the bf16 rate.) One row (decoding) is an
 * fp32 SGEMV. cuBLAS is column-major: a row-major (r, c) array is its (c, r)
 * transpose, so each product below is written for the transposes. */
#include "common.cuh"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>

static cublasHandle_t handle;
static void *workspace;
static const char *first_error; /* since the last gpu_gemm_error */

static void fail(const char *what) {
    if (!first_error) first_error = what;
}

extern "C" const char *gpu_gemm_error(void) {
    const char *s = first_error;
    first_error = NULL;
    return s;
}

extern "C" int gpu_gemm_init(void) {
    if (handle) return 0;
    if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) return -1;
    /* A fixed workspace: cuBLAS then never allocates during a step (nor
     * while the decoder captures a graph); the stream is the one every
     * kernel here is launched on (rotary_cuda.cmake). */
    const size_t ws = (size_t)32 << 20;
    if (cudaMalloc(&workspace, ws) != cudaSuccess ||
        cublasSetWorkspace(handle, workspace, ws) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(handle, cudaStreamPerThread) != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(handle);
        handle = NULL;
        return -1;
    }
    return 0;
}

/* V values a thread per step: V = 4 (one 16-byte load, one 8-byte store)
 * for 16-byte aligned sources and n % 4 == 0, else 1. */
template <int V>
__global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * V; i < n;
         i += (size_t)gridDim.x * blockDim.x * V) {
        float x[V];
        load_vec<V>(x, src + i);
        store_vec<V>(dst + i, x);
    }
}

extern "C" void gpu_to_bf16(gpu_bf16 *dst, const float *src, size_t n) {
    typedef __nv_bfloat16 bf16;
    if (vec_ok(src, 16) && vec_ok(dst, 8) && n % 4 == 0) {
        const size_t n4 = n / 4;
        GPU_LAUNCH(to_bf16_kernel<4>, cdiv(n4, 256) < 16384 ? cdiv(n4, 256) : 16384, 256, 0)(
            (bf16 *)dst, src, n);
    } else if (n) {
        GPU_LAUNCH(to_bf16_kernel<1>, cdiv(n, 256) < 16384 ? cdiv(n, 256) : 16384, 256, 0)(
            (bf16 *)dst, src, n);
    }
}

/* C (ctype: CUDA_R_32F or CUDA_R_16BF) = A B + beta C. */
static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                 const gpu_bf16 *A, int lda, const gpu_bf16 *B, int ldb, float beta, void *C,
                 cudaDataType ctype, int ldc) {
    const float alpha = 1.0f;
    cublasStatus_t s = cublasGemmEx(handle, ta, tb, m, n, k, &alpha, A, CUDA_R_16BF, lda, B,
                                    CUDA_R_16BF, ldb, &beta, C, ctype, ldc, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) fail(cublasGetStatusString(s));
}

template <typename T>
__global__ void add_bias_kernel(T *out, const float *b, size_t n, int OC) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) put(&out[i], get(&out[i]) + b[i % OC]);
}

template <typename T>
static void add_bias(T *out, const float *b, int N, int OC) {
    const size_t n = (size_t)N * OC;
    GPU_LAUNCH(add_bias_kernel<T>, cdiv(n, 256), 256, 0)(out, b, n, OC);
}

/* db[j] += sum_n dout[n][j]: 32 columns x 8 row-strided threads per block,
 * the eight partial sums added in shared memory, one atomic per column. */
__global__ void bias_grad_kernel(float *db, const __nv_bfloat16 *dout, int N, int OC) {
    __shared__ float part[8][33];
    const int j = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (j < OC)
        for (int n = blockIdx.y * 8 + threadIdx.y; n < N; n += gridDim.y * 8)
            s += __bfloat162float(dout[(size_t)n * OC + j]);
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < OC) {
        for (int r = 1; r < 8; r++) s += part[r][threadIdx.x];
        atomicAdd(&db[j], s);
    }
}

extern "C" void gpu_linear_forward(float *out, const gpu_bf16 *inp, const gpu_bf16 *w,
                                   const float *b, int N, int C, int OC, int accumulate) {
    /* out^T (OC, N) = w (OC, C) . inp^T (C, N) */
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, w, C, inp, C, accumulate ? 1.0f : 0.0f, out,
         CUDA_R_32F, OC);
    if (b) add_bias(out, b, N, OC);
}

extern "C" void gpu_linear_forward_bf16(gpu_bf16 *out, const gpu_bf16 *inp, const gpu_bf16 *w,
                                        const float *b, int N, int C, int OC) {
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, w, C, inp, C, 0.0f, out, CUDA_R_16BF, OC);
    if (b) add_bias((__nv_bfloat16 *)out, b, N, OC);
}

extern "C" void gpu_linear_backward(float *dinp, gpu_bf16 *dinp16, float *dw, float *db,
                                    const gpu_bf16 *dout, const gpu_bf16 *inp, const gpu_bf16 *w,
                                    int N, int C, int OC) {
    /* dinp^T (C, N) = w^T (C, OC) . dout^T (OC, N), in one type */
    if (dinp && dinp16) fail("gpu_linear_backward: both dinp and dinp16 given");
    else if (dinp || dinp16)
        gemm(CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, w, C, dout, OC, 0.0f,
             dinp ? (void *)dinp : (void *)dinp16, dinp ? CUDA_R_32F : CUDA_R_16BF, C);
    /* dw^T (C, OC) += inp^T (C, N) . dout (N, OC) */
    gemm(CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, inp, C, dout, OC, 1.0f, dw, CUDA_R_32F, C);
    if (db) {
        dim3 grid(cdiv(OC, 32), N / 256 + 1 < 64 ? N / 256 + 1 : 64);
        GPU_LAUNCH(bias_grad_kernel, grid, dim3(32, 8), 0)(db, (const __nv_bfloat16 *)dout, N, OC);
    }
}

extern "C" void gpu_matvec(float *out, const float *inp, const float *w, const float *b, int C,
                           int OC, int accumulate) {
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    cublasStatus_t s = cublasSgemv(handle, CUBLAS_OP_T, C, OC, &one, w, C, inp, 1, &beta, out, 1);
    if (s != CUBLAS_STATUS_SUCCESS) fail(cublasGetStatusString(s));
    if (b) add_bias(out, b, 1, OC);
}
