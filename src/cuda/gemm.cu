/* gemm.cu: the linear layers on cuBLAS. Arrays stay fp32 (the master
 * weights and the activations); CUBLAS_COMPUTE_32F_FAST_16BF lets cuBLAS
 * round the inputs to bf16 for the tensor cores and accumulate in fp32.
 * cuBLAS is column-major: a row-major (r, c) array is its (c, r) transpose,
 * so each product below is written for the transposes. */
#include "common.cuh"

#include <cublas_v2.h>
#include <stdio.h>

static cublasHandle_t handle;
static void *workspace;
static cublasStatus_t first_error; /* of a GEMM since the last gpu_gemm_error */

extern "C" const char *gpu_gemm_error(void) {
    cublasStatus_t s = first_error;
    first_error = CUBLAS_STATUS_SUCCESS;
    return s == CUBLAS_STATUS_SUCCESS ? NULL : cublasGetStatusString(s);
}

extern "C" int gpu_gemm_init(void) {
    if (handle) return 0;
    if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) return -1;
    /* A fixed workspace: cuBLAS then never allocates during a step. */
    const size_t ws = (size_t)32 << 20;
    if (cudaMalloc(&workspace, ws) != cudaSuccess ||
        cublasSetWorkspace(handle, workspace, ws) != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(handle);
        handle = NULL;
        return -1;
    }
    return 0;
}

static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    const float alpha = 1.0f;
    cublasStatus_t s = cublasGemmEx(handle, ta, tb, m, n, k, &alpha, A, CUDA_R_32F, lda, B,
                                    CUDA_R_32F, ldb, &beta, C, CUDA_R_32F, ldc,
                                    CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS && first_error == CUBLAS_STATUS_SUCCESS) first_error = s;
}

__global__ void add_bias_kernel(float *out, const float *b, size_t n, int OC) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] += b[i % OC];
}

/* db[j] += sum_n dout[n][j]: 32 columns x 8 row-strided threads per block,
 * the eight partial sums added in shared memory, one atomic per column. */
__global__ void bias_grad_kernel(float *db, const float *dout, int N, int OC) {
    __shared__ float part[8][33];
    const int j = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (j < OC)
        for (int n = blockIdx.y * 8 + threadIdx.y; n < N; n += gridDim.y * 8)
            s += dout[(size_t)n * OC + j];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < OC) {
        for (int r = 1; r < 8; r++) s += part[r][threadIdx.x];
        atomicAdd(&db[j], s);
    }
}

extern "C" void gpu_linear_forward(float *out, const float *inp, const float *w, const float *b,
                                   int N, int C, int OC, int accumulate) {
    /* out^T (OC, N) = w (OC, C) . inp^T (C, N) */
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, w, C, inp, C, accumulate ? 1.0f : 0.0f, out, OC);
    if (b) {
        size_t n = (size_t)N * OC;
        add_bias_kernel<<<cdiv(n, 256), 256>>>(out, b, n, OC);
    }
}

extern "C" void gpu_linear_backward(float *dinp, float *dw, float *db, const float *dout,
                                    const float *inp, const float *w, int N, int C, int OC) {
    /* dinp^T (C, N) = w^T (C, OC) . dout^T (OC, N) */
    if (dinp) gemm(CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, w, C, dout, OC, 0.0f, dinp, C);
    /* dw^T (C, OC) += inp^T (C, N) . dout (N, OC) */
    gemm(CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, inp, C, dout, OC, 1.0f, dw, C);
    if (db) {
        dim3 grid(cdiv(OC, 32), N / 256 + 1 < 64 ? N / 256 + 1 : 64);
        bias_grad_kernel<<<grid, dim3(32, 8)>>>(db, dout, N, OC);
    }
}
