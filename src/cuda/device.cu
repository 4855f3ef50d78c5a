/* device.cu: device discovery and error reporting for the C side. */
#include "common.cuh"

#include <stdio.h>

static char last_error[256];

extern "C" int gpu_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(last_error, sizeof last_error, "%s", cudaGetErrorString(e));
        cudaGetLastError(); /* not sticky: clear it */
        return 0;
    }
    return n;
}

extern "C" const char *gpu_last_error(void) { return last_error; }

extern "C" int gpu_sync(void) {
    cudaError_t e = cudaDeviceSynchronize();
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) {
        snprintf(last_error, sizeof last_error, "%s: %s", cudaGetErrorName(e), cudaGetErrorString(e));
        return -1;
    }
    const char *g = gpu_gemm_error();
    if (g) {
        snprintf(last_error, sizeof last_error, "GEMM: %s", g);
        return -1;
    }
    return 0;
}
