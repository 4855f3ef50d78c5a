/* runtime.cc: the CUDA runtime and cuBLAS calls of the GPU backend, on the
 * CPU, for the emulated build (tests/cuda/emu, docs/performance.md). Device
 * memory is host memory; copies and sets happen at once; kernels run as
 * cuda_emu.h launches them. Stream capture records the kernels and GEMMs
 * (with their scalars, as cuBLAS captures host-pointer scalars) and a graph
 * launch replays them in order. cuBLAS products follow the BLAS
 * definitions, column-major, bf16 or fp32 operands, fp32 accumulation. */
#define ROTARY_CUDA_EMU 1
#include "cuda_emu.h"

#include <cublas_v2.h>

#include <climits>
#include <mutex>
#include <unordered_map>

extern "C" {
#include "cuda/kernels.h"
}

/* ------------------------------------------------------------- runtime */

cudaError_t CUDARTAPI cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device) {
    (void)device;
    *value = attr == cudaDevAttrMultiProcessorCount ? 132 : 0; /* an H100's */
    return cudaSuccess;
}

/* One GPU, or EMU_DEVICES of them (all the same memory): how many ranks of
 * one machine may each take their own (src/cuda/comm.c). */
static int device_count(void) {
    const char *e = getenv("EMU_DEVICES");
    return e && atoi(e) > 0 ? atoi(e) : 1;
}
cudaError_t CUDARTAPI cudaGetDeviceCount(int *count) {
    *count = device_count();
    return cudaSuccess;
}
static int current_device;
cudaError_t CUDARTAPI cudaSetDevice(int device) {
    if (device < 0 || device >= device_count()) return cudaErrorInvalidDevice;
    current_device = device;
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetDevice(int *device) {
    *device = current_device;
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t CUDARTAPI cudaGetLastError(void) { return cudaSuccess; }
const char *CUDARTAPI cudaGetErrorString(cudaError_t e) {
    return e == cudaSuccess                ? "no error"
           : e == cudaErrorMemoryAllocation ? "out of memory"
                                            : "emulated CUDA error";
}
const char *CUDARTAPI cudaGetErrorName(cudaError_t e) {
    return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated";
}
cudaError_t CUDARTAPI cudaFuncSetAttribute(const void *, enum cudaFuncAttribute, int) {
    return cudaSuccess;
}

/* EMU_DEVICE_MEMORY (bytes): the device's size, so that tests can see what
 * a full GPU says; else 80 GiB, an H100's. Allocations count against it
 * until freed. */
static size_t device_memory(void) {
    const char *e = getenv("EMU_DEVICE_MEMORY");
    return e && strtoull(e, NULL, 10) > 0 ? (size_t)strtoull(e, NULL, 10) : (size_t)80 << 30;
}
static std::mutex alloc_lock;
static std::unordered_map<void *, size_t> alloc_size;
static size_t allocated;
cudaError_t CUDARTAPI cudaMalloc(void **p, size_t n) {
    std::lock_guard<std::mutex> hold(alloc_lock);
    const size_t bytes = (n + 255) / 256 * 256;
    *p = allocated + bytes <= device_memory() ? aligned_alloc(256, bytes ? bytes : 256) : NULL;
    if (!*p) return cudaErrorMemoryAllocation;
    alloc_size[*p] = bytes, allocated += bytes;
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaFree(void *p) {
    std::lock_guard<std::mutex> hold(alloc_lock);
    auto it = alloc_size.find(p);
    if (it != alloc_size.end()) allocated -= it->second, alloc_size.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemGetInfo(size_t *free_bytes, size_t *total) {
    std::lock_guard<std::mutex> hold(alloc_lock);
    *total = device_memory();
    *free_bytes = *total - allocated;
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMallocHost(void **p, size_t n) {
    *p = aligned_alloc(256, (n + 255) / 256 * 256);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t CUDARTAPI cudaFreeHost(void *p) {
    free(p);
    return cudaSuccess;
}

/* Copies and sets run at once, or are recorded while a stream captures. */
static void now_or_later(std::function<void()> f) {
    if (emu::capturing) emu::capturing->push_back(std::move(f));
    else f();
}
cudaError_t CUDARTAPI cudaMemcpy(void *d, const void *s, size_t n, enum cudaMemcpyKind) {
    memcpy(d, s, n);
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemcpyAsync(void *d, const void *s, size_t n, enum cudaMemcpyKind,
                                      cudaStream_t) {
    now_or_later([=] { memcpy(d, s, n); });
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemset(void *d, int v, size_t n) {
    memset(d, v, n);
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t) {
    now_or_later([=] { memset(d, v, n); });
    return cudaSuccess;
}

/* Streams and events: every operation runs when it is called, in order,
 * so a second stream and the events that order two streams change nothing
 * here (comm.c's NCCL stream). */
struct CUstream_st {};
struct CUevent_st {};
cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) {
    *s = new CUstream_st;
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t s) {
    delete s;
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) {
    *e = new CUevent_st;
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t CUDARTAPI cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) {
    return cudaSuccess;
}

/* Graphs: what a capture recorded, replayed in order. */
struct CUgraph_st {
    std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
    std::vector<std::function<void()>> ops;
};
cudaError_t CUDARTAPI cudaStreamBeginCapture(cudaStream_t, enum cudaStreamCaptureMode) {
    if (emu::capturing) return cudaErrorIllegalState;
    emu::capturing = new std::vector<std::function<void()>>();
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamEndCapture(cudaStream_t, cudaGraph_t *g) {
    if (!emu::capturing) return cudaErrorIllegalState;
    *g = new CUgraph_st{std::move(*emu::capturing)};
    delete emu::capturing;
    emu::capturing = nullptr;
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long) {
    *e = new CUgraphExec_st{g->ops};
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
    for (auto &op : e->ops) op();
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGraphDestroy(cudaGraph_t g) {
    delete g;
    return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGraphExecDestroy(cudaGraphExec_t e) {
    delete e;
    return cudaSuccess;
}

/* ---------------------------------------------------------------- cuBLAS */

struct cublasContext {};

cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t *h) {
    *h = new cublasContext;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasSetWorkspace_v2(cublasHandle_t, void *, size_t) {
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t, cudaStream_t) {
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
const char *CUBLASWINAPI cublasGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_NOT_SUPPORTED";
}

static float load(const void *p, cudaDataType t, size_t i) {
    return t == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)p)[i]) : ((const float *)p)[i];
}

/* C (m x n, ldc) = alpha op(A) op(B) + beta C, column-major: op(A) (m x k)
 * is A (lda) or the transpose of A (k x m). */
cublasStatus_t CUBLASWINAPI cublasGemmEx(cublasHandle_t, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const void *alpha, const void *A, cudaDataType at,
                                         int lda, const void *B, cudaDataType bt, int ldb,
                                         const void *beta, void *C, cudaDataType ct, int ldc,
                                         cublasComputeType_t, cublasGemmAlgo_t) {
    if ((at != CUDA_R_16BF && at != CUDA_R_32F) || (bt != CUDA_R_16BF && bt != CUDA_R_32F) ||
        (ct != CUDA_R_16BF && ct != CUDA_R_32F))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    const float al = *(const float *)alpha, be = *(const float *)beta;
    now_or_later([=] {
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float s = 0.0f;
                for (int p = 0; p < k; p++) {
                    const size_t ai = ta == CUBLAS_OP_N ? i + (size_t)p * lda : p + (size_t)i * lda;
                    const size_t bi = tb == CUBLAS_OP_N ? p + (size_t)j * ldb : j + (size_t)p * ldb;
                    s += load(A, at, ai) * load(B, bt, bi);
                }
                const size_t ci = i + (size_t)j * ldc;
                const float c = al * s + (be != 0.0f ? be * load(C, ct, ci) : 0.0f);
                if (ct == CUDA_R_16BF) ((__nv_bfloat16 *)C)[ci] = __float2bfloat16(c);
                else ((float *)C)[ci] = c;
            }
    });
    return CUBLAS_STATUS_SUCCESS;
}

/* y = alpha op(A) x + beta y, A (m x n, lda) column-major. */
cublasStatus_t CUBLASWINAPI cublasSgemv_v2(cublasHandle_t, cublasOperation_t t, int m, int n,
                                           const float *alpha, const float *A, int lda,
                                           const float *x, int incx, const float *beta, float *y,
                                           int incy) {
    const float al = *alpha, be = *beta;
    now_or_later([=] {
        const int rows = t == CUBLAS_OP_N ? m : n, len = t == CUBLAS_OP_N ? n : m;
        for (int r = 0; r < rows; r++) {
            float s = 0.0f;
            for (int p = 0; p < len; p++) {
                const size_t ai = t == CUBLAS_OP_N ? r + (size_t)p * lda : p + (size_t)r * lda;
                s += A[ai] * x[(size_t)p * incx];
            }
            float *yr = &y[(size_t)r * incy];
            *yr = al * s + (be != 0.0f ? be * *yr : 0.0f);
        }
    });
    return CUBLAS_STATUS_SUCCESS;
}

/* ---------------------------------------------------------------- NCCL */

/* What src/cuda/comm.c calls: a communicator of all MPI ranks (the
 * emulation has no other), whose all-reduce is MPI's on the device
 * memory, which here is host memory. */
#ifdef ROTARY_MPI
#define OMPI_SKIP_MPICXX 1 /* MPI's C interface only, as librotary links */
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <nccl.h>

struct ncclComm {
    int nranks;
};

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0x5a, sizeof *id);
    return ncclSuccess;
}
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    (void)id;
    int size = 0, me = -1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    if (nranks != size || rank != me) return ncclInvalidArgument;
    *comm = new ncclComm{nranks};
    return ncclSuccess;
}
/* Between ncclGroupStart and ncclGroupEnd the calls are queued, and run
 * at the end, as NCCL may defer them: code that reads a result before the
 * group ends reads the old values. Outside a group each runs at once. */
static int group_depth;
static std::vector<std::function<bool()>> group_calls;
static ncclResult_t now_or_in_group(std::function<bool()> f) {
    if (group_depth) {
        group_calls.push_back(std::move(f));
        return ncclSuccess;
    }
    return f() ? ncclSuccess : ncclSystemError;
}
ncclResult_t ncclGroupStart(void) {
    group_depth++;
    return ncclSuccess;
}
ncclResult_t ncclGroupEnd(void) {
    if (group_depth == 0) return ncclInvalidUsage;
    if (--group_depth) return ncclSuccess;
    bool ok = true;
    for (auto &f : group_calls) ok = f() && ok;
    group_calls.clear();
    return ok ? ncclSuccess : ncclSystemError;
}
static int mpi_rank(void) {
    int me = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    return me;
}
ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    if (type != ncclFloat || (op != ncclSum && op != ncclAvg) || count > INT_MAX)
        return ncclInvalidArgument;
    return now_or_in_group([=]() {
        float *x = (float *)recv;
        if (send != recv) memcpy(x, send, count * sizeof(float));
        if (MPI_Allreduce(MPI_IN_PLACE, x, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD))
            return false;
        if (op == ncclAvg)
            for (size_t i = 0; i < count; i++) x[i] /= (float)comm->nranks;
        return true;
    });
}
ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    if (type != ncclFloat || count > INT_MAX || root < 0 || root >= comm->nranks)
        return ncclInvalidArgument;
    return now_or_in_group([=]() {
        if (mpi_rank() == root && send != recv) memcpy(recv, send, count * sizeof(float));
        return MPI_Bcast(recv, (int)count, MPI_FLOAT, root, MPI_COMM_WORLD) == MPI_SUCCESS;
    });
}
ncclResult_t ncclReduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                        ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    if (type != ncclFloat || (op != ncclSum && op != ncclAvg) || count > INT_MAX || root < 0 ||
        root >= comm->nranks)
        return ncclInvalidArgument;
    return now_or_in_group([=]() {
        float *x = (float *)recv;
        if (mpi_rank() != root) /* recv is root's alone */
            return MPI_Reduce(send, NULL, (int)count, MPI_FLOAT, MPI_SUM, root,
                              MPI_COMM_WORLD) == MPI_SUCCESS;
        if (send != recv) memcpy(x, send, count * sizeof(float));
        if (MPI_Reduce(MPI_IN_PLACE, x, (int)count, MPI_FLOAT, MPI_SUM, root, MPI_COMM_WORLD))
            return false;
        if (op == ncclAvg)
            for (size_t i = 0; i < count; i++) x[i] /= (float)comm->nranks;
        return true;
    });
}
ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    delete comm;
    return ncclSuccess;
}
ncclResult_t ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }
const char *ncclGetErrorString(ncclResult_t r) {
    return r == ncclSuccess ? "no error" : "emulated NCCL error";
}
#endif
