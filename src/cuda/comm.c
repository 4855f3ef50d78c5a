/* comm.c: the mean of the ranks' gradients for cuda_train under mpirun
 * (docs/distributed.md). NCCL's all-reduce runs on the GPUs themselves
 * (NVLink or PCIe between them, the network between machines); it needs
 * a build with NCCL's header (ROTARY_NCCL, where the CUDA toolkit has it),
 * libnccl.so.2 at run time, and a GPU of its own for every rank.
 * Otherwise each rank copies its gradients to host memory, MPI averages
 * them (rotary_dist_allreduce_mean) and each copies the mean back. The
 * ranks choose together: a path some rank cannot take is taken by none. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "cuda/cuda_model.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef ROTARY_NCCL
#include <dlfcn.h>
#include <nccl.h>

/* NCCL's functions, looked up when first needed: in the program itself
 * (one linked with NCCL, or the emulation's), else in libnccl.so.2. Not
 * linked: its 200 MB stay out of every other process, and a build runs
 * where NCCL is missing, averaging through host memory. */
static struct {
    int tried;
    char why[160];
    ncclResult_t (*get_unique_id)(ncclUniqueId *);
    ncclResult_t (*init_rank)(ncclComm_t *, int, ncclUniqueId, int);
    ncclResult_t (*all_reduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t,
                               ncclComm_t, cudaStream_t);
    ncclResult_t (*broadcast)(const void *, void *, size_t, ncclDataType_t, int, ncclComm_t,
                              cudaStream_t);
    ncclResult_t (*reduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, int,
                           ncclComm_t, cudaStream_t);
    ncclResult_t (*group_start)(void), (*group_end)(void);
    ncclResult_t (*destroy)(ncclComm_t);
    ncclResult_t (*abort_comm)(ncclComm_t);
    const char *(*error_string)(ncclResult_t);
} nccl;

static void *nccl_sym(void *lib, const char *name) {
    void *f = dlsym(RTLD_DEFAULT, name);
    return f ? f : lib ? dlsym(lib, name) : NULL;
}

/* 1 when NCCL's functions are at hand; else why not in nccl.why. */
static int nccl_load(void) {
    if (nccl.tried) return nccl.get_unique_id != NULL;
    nccl.tried = 1;
    void *lib = NULL;
    if (!dlsym(RTLD_DEFAULT, "ncclAllReduce") && !(lib = dlopen("libnccl.so.2", RTLD_NOW))) {
        snprintf(nccl.why, sizeof nccl.why, "%s", dlerror());
        return 0;
    }
    *(void **)&nccl.get_unique_id = nccl_sym(lib, "ncclGetUniqueId");
    *(void **)&nccl.init_rank = nccl_sym(lib, "ncclCommInitRank");
    *(void **)&nccl.all_reduce = nccl_sym(lib, "ncclAllReduce");
    *(void **)&nccl.broadcast = nccl_sym(lib, "ncclBroadcast");
    *(void **)&nccl.reduce = nccl_sym(lib, "ncclReduce");
    *(void **)&nccl.group_start = nccl_sym(lib, "ncclGroupStart");
    *(void **)&nccl.group_end = nccl_sym(lib, "ncclGroupEnd");
    *(void **)&nccl.destroy = nccl_sym(lib, "ncclCommDestroy");
    *(void **)&nccl.abort_comm = nccl_sym(lib, "ncclCommAbort");
    *(void **)&nccl.error_string = nccl_sym(lib, "ncclGetErrorString");
    if (!nccl.get_unique_id || !nccl.init_rank || !nccl.all_reduce || !nccl.broadcast ||
        !nccl.reduce || !nccl.group_start || !nccl.group_end || !nccl.destroy || !nccl.abort_comm ||
        !nccl.error_string) {
        snprintf(nccl.why, sizeof nccl.why, "libnccl.so.2 lacks a function rotary calls");
        nccl.get_unique_id = NULL;
        return 0;
    }
    return 1;
}
#endif

struct cuda_comm {
    const rotary_dist *d;
    size_t n;
    int zero;    /* ZeRO-1: NCCL brings each rank the mean of its shard only */
    float *host; /* the host path's copy, or NULL */
    int pinned;  /* host is page-locked (cudaMallocHost), not malloc'd */
#ifdef ROTARY_NCCL
    ncclComm_t nccl;         /* or NULL */
    cudaStream_t stream;     /* NCCL's all-reduces, beside the backward */
    cudaEvent_t queued, done; /* the backward's stream -> stream, and back */
    size_t pending;          /* [0, pending) not yet started this step */
    char failed[256];        /* why starting a part failed, or "" */
#endif
    char how[200];
};

#ifdef ROTARY_NCCL
/* 1 when this rank can use NCCL; else why not. */
static int nccl_possible(const rotary_dist *d, char *why, size_t len) {
    const char *e = getenv("ROTARY_CUDA_COMM");
    if (e && !strcmp(e, "host")) return snprintf(why, len, "ROTARY_CUDA_COMM=host"), 0;
    if (e && *e && strcmp(e, "nccl"))
        fprintf(stderr, "rotary: ROTARY_CUDA_COMM=%s: not nccl or host; using nccl\n", e);
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < d->local_size)
        return snprintf(why, len, "%d ranks share this machine's %d GPU%s; NCCL needs one each",
                        d->local_size, n, n == 1 ? "" : "s"),
               0;
    if (!nccl_load()) return snprintf(why, len, "%s", nccl.why), 0;
    return 1;
}

static int nccl_fail(ncclResult_t r, const char *what) {
    return rotary_fail(ROTARY_EIO, "NCCL %s: %s", what, nccl.error_string(r));
}

/* The communicator of all ranks: rank 0's id, sent to every rank by MPI. */
static int nccl_start(cuda_comm *c) {
    const rotary_dist *d = c->d;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t r = d->rank == 0 ? nccl.get_unique_id(&id) : ncclSuccess;
    int rc = rotary_dist_agree(d, r == ncclSuccess ? ROTARY_OK : nccl_fail(r, "unique id"));
    if (rc || (rc = dist_bcast(d, &id, (int)sizeof id))) return rc;
    r = nccl.init_rank(&c->nccl, d->size, id, d->rank);
    if (r != ncclSuccess) c->nccl = NULL;
    cudaError_t e = cudaSuccess;
    if (r == ncclSuccess &&
        ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) ||
         (e = cudaEventCreateWithFlags(&c->queued, cudaEventDisableTiming)) ||
         (e = cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming))))
        rc = rotary_fail(ROTARY_EIO, "cuda: NCCL's stream: %s", cudaGetErrorString(e));
    else rc = r == ncclSuccess ? ROTARY_OK : nccl_fail(r, "start");
    c->pending = c->n;
    return rotary_dist_agree(d, rc);
}

/* NCCL's stream waits for what the calling thread's stream has queued. */
static int nccl_after(cuda_comm *c) {
    cudaError_t e;
    if ((e = cudaEventRecord(c->queued, cudaStreamPerThread)) ||
        (e = cudaStreamWaitEvent(c->stream, c->queued, 0)))
        return rotary_fail(ROTARY_EIO, "cuda: ordering NCCL after the kernels: %s",
                           cudaGetErrorString(e));
    return ROTARY_OK;
}

/* The calling thread's stream waits for what NCCL's has queued. */
static int nccl_before(cuda_comm *c) {
    cudaError_t e;
    if ((e = cudaEventRecord(c->done, c->stream)) ||
        (e = cudaStreamWaitEvent(cudaStreamPerThread, c->done, 0)))
        return rotary_fail(ROTARY_EIO, "cuda: waiting for NCCL: %s", cudaGetErrorString(e));
    return ROTARY_OK;
}

/* For each rank k, the part of dev[from, to) in k's shard: reduced to k
 * (the mean) or broadcast from k, on NCCL's stream, in one group. Shards
 * differ in size by a norm block, and NCCL's reduce-scatter and all-gather
 * take equal parts only. */
static int by_shard(cuda_comm *c, float *dev, size_t from, size_t to, int reduce) {
    ncclResult_t r = nccl.group_start();
    for (int k = 0; r == ncclSuccess && k < c->d->size; k++) {
        size_t lo, hi;
        rotary_dist_shard(c->d, c->n, k, &lo, &hi);
        lo = lo > from ? lo : from, hi = hi < to ? hi : to;
        if (hi <= lo) continue;
        r = reduce ? nccl.reduce(dev + lo, dev + lo, hi - lo, ncclFloat, ncclAvg, k, c->nccl,
                                 c->stream)
                   : nccl.broadcast(dev + lo, dev + lo, hi - lo, ncclFloat, k, c->nccl, c->stream);
    }
    /* the group ends even after a failed call, which it then reports */
    ncclResult_t r2 = nccl.group_end();
    return r != ncclSuccess    ? nccl_fail(r, reduce ? "reduce" : "broadcast")
           : r2 != ncclSuccess ? nccl_fail(r2, "group")
                               : ROTARY_OK;
}

/* The mean of dev[from, pending) (all of it, or under ZeRO-1 each shard's
 * part to its rank), once the backward's stream has reached the point
 * where it is final. */
static int start_part(cuda_comm *c, float *dev, size_t from) {
    int rc = nccl_after(c);
    if (rc) return rc;
    if (c->zero) {
        rc = by_shard(c, dev, from, c->pending, 1);
    } else {
        ncclResult_t r = nccl.all_reduce(dev + from, dev + from, c->pending - from, ncclFloat,
                                         ncclAvg, c->nccl, c->stream);
        rc = r == ncclSuccess ? ROTARY_OK : nccl_fail(r, "all-reduce");
    }
    c->pending = from;
    return rc;
}

static void free_stream(cuda_comm *c) {
    if (c->done) cudaEventDestroy(c->done);
    if (c->queued) cudaEventDestroy(c->queued);
    if (c->stream) cudaStreamDestroy(c->stream);
    c->stream = NULL, c->queued = c->done = NULL;
}
#endif

int cuda_comm_new(cuda_comm **out, const rotary_dist *d, size_t n, int zero) {
    cuda_comm *c = calloc(1, sizeof *c);
    *out = c;
    int rc = rotary_dist_agree(d, c ? ROTARY_OK : rotary_fail(ROTARY_ENOMEM, "out of memory"));
    if (rc) return rc;
    c->d = d, c->n = n, c->zero = zero;
    char why[160] = "";
#ifdef ROTARY_NCCL
    double can[1] = {nccl_possible(d, why, sizeof why)};
    if ((rc = dist_sum(d, can, 1))) return rc;
    if (can[0] == d->size) {
        if (nccl_start(c) == ROTARY_OK) {
            snprintf(c->how, sizeof c->how, "NCCL on the GPUs");
            return ROTARY_OK;
        }
        /* Every rank saw the failure: each leaves NCCL, and says why. */
        snprintf(why, sizeof why, "%s", rotary_last_error());
        if (c->nccl) nccl.abort_comm(c->nccl);
        c->nccl = NULL;
        free_stream(c);
    } else if (why[0] == 0) {
        snprintf(why, sizeof why, "another rank cannot use NCCL");
    }
#else
    snprintf(why, sizeof why, "built without NCCL");
#endif
    /* Page-locked, so that the copies go straight to and from it by DMA
     * (pageable memory goes through the driver's staging buffer); pageable
     * where the system refuses. */
    if (cudaMallocHost((void **)&c->host, (n ? n : 1) * sizeof(float)) == cudaSuccess) {
        c->pinned = 1;
    } else {
        (void)cudaGetLastError();
        c->host = rotary_alloc_floats(n, "gradients (host copy)");
    }
    snprintf(c->how, sizeof c->how, "host memory and MPI (%s)", why);
    return rotary_dist_agree(d, c->host ? ROTARY_OK : ROTARY_ENOMEM);
}

void cuda_comm_ready(cuda_comm *c, float *dev, size_t from) {
#ifdef ROTARY_NCCL
    if (!c || !c->nccl || c->failed[0] || from >= c->pending) return;
    if (start_part(c, dev, from)) snprintf(c->failed, sizeof c->failed, "%s", rotary_last_error());
#else
    (void)c, (void)dev, (void)from;
#endif
}

int cuda_comm_mean(cuda_comm *c, float *dev) {
#ifdef ROTARY_NCCL
    if (c->nccl) {
        int rc = c->failed[0]       ? rotary_fail(ROTARY_EIO, "%s", c->failed)
                 : c->pending > 0 ? start_part(c, dev, 0)
                                    : ROTARY_OK;
        c->pending = c->n, c->failed[0] = 0; /* the next step's */
        return rc ? rc : nccl_before(c);
    }
#endif
    const size_t bytes = c->n * sizeof(float);
    cudaError_t e = cudaMemcpy(c->host, dev, bytes, cudaMemcpyDeviceToHost);
    if (e) return rotary_fail(ROTARY_EIO, "cuda: gradients to the host: %s", cudaGetErrorString(e));
    int rc = rotary_dist_allreduce_mean(c->d, c->host, c->n);
    if (rc == ROTARY_OK && (e = cudaMemcpy(dev, c->host, bytes, cudaMemcpyHostToDevice)))
        rc = rotary_fail(ROTARY_EIO, "cuda: gradients to the GPU: %s", cudaGetErrorString(e));
    return rc;
}

int cuda_comm_allgather(cuda_comm *c, float *dev) {
    const rotary_dist *d = c->d;
    size_t lo, hi;
#ifdef ROTARY_NCCL
    if (c->nccl) {
        int rc = nccl_after(c);
        if (rc == ROTARY_OK && (rc = by_shard(c, dev, 0, c->n, 0)) == ROTARY_OK)
            rc = nccl_before(c);
        return rc;
    }
#endif
    rotary_dist_shard(d, c->n, d->rank, &lo, &hi);
    cudaError_t e = cudaMemcpy(c->host + lo, dev + lo, (hi - lo) * sizeof(float),
                               cudaMemcpyDeviceToHost);
    if (e) return rotary_fail(ROTARY_EIO, "cuda: weights to the host: %s", cudaGetErrorString(e));
    int rc = dist_allgather(d, c->host, c->n);
    if (rc == ROTARY_OK &&
        (e = cudaMemcpy(dev, c->host, c->n * sizeof(float), cudaMemcpyHostToDevice)))
        rc = rotary_fail(ROTARY_EIO, "cuda: weights to the GPU: %s", cudaGetErrorString(e));
    return rc;
}

const char *cuda_comm_how(const cuda_comm *c) { return c ? c->how : ""; }

void cuda_comm_free(cuda_comm *c) {
    if (!c) return;
#ifdef ROTARY_NCCL
    if (c->nccl) nccl.destroy(c->nccl);
    free_stream(c);
#endif
    if (c->pinned) cudaFreeHost(c->host);
    else free(c->host);
    free(c);
}
