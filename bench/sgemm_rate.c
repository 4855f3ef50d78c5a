/* sgemm_rate: single-precision GEMM throughput of the BLAS librotary links.
 *
 * usage: sgemm_rate [--threads P] [--reps N] [M N K ...]
 *
 * Times C = A B (row-major, no transpose) for each (M, N, K) triple given, or
 * by default for 1024^3 and two shapes typical of the training benchmark
 * (a (B*T) x d activation times a d x 3d weight at shape S and M). Threads
 * come from OpenMP (OMP_NUM_THREADS or --threads), as in librotary.
 * Prints `key=value` lines; `sgemm_gflops` is the 1024^3 rate (the reference
 * the train-vs-pytorch table divides by), or the first shape's if given. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* GFLOP/s of the best of `reps` timed batches, each at least ~0.2 s. */
static double rate(int M, int N, int K, int reps) {
    float *a = malloc(sizeof(float) * (size_t)M * K), *b = malloc(sizeof(float) * (size_t)K * N);
    float *c = malloc(sizeof(float) * (size_t)M * N);
    if (!a || !b || !c) return fprintf(stderr, "sgemm_rate: out of memory\n"), exit(1), 0.0;
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f - 0.3f;
    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = (float)(i % 5) * 0.1f - 0.2f;
    const double flop = 2.0 * M * N * K;
    int iters = (int)(2e8 / flop) + 1; /* ~0.2 s at 1 TFLOP/s-ish lower bound */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    double best = 0.0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        for (int i = 0; i < iters; i++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f,
                        c, N);
        double g = flop * iters / (now_s() - t0) * 1e-9;
        if (g > best) best = g;
    }
    free(a), free(b), free(c);
    return best;
}

int main(int argc, char **argv) {
    int reps = 5, shapes[16][3], ns = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) omp_set_num_threads(atoi(argv[++i]));
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (i + 2 < argc && ns < 16) {
            for (int j = 0; j < 3; j++) shapes[ns][j] = atoi(argv[i + j]);
            ns++, i += 2;
        } else {
            fprintf(stderr, "usage: sgemm_rate [--threads P] [--reps N] [M N K ...]\n");
            return 2;
        }
    }
    if (ns == 0) {
        int def[3][3] = {{1024, 1024, 1024}, {4096, 384, 128}, {4096, 1152, 384}};
        memcpy(shapes, def, sizeof def);
        ns = 3;
    }
    printf("threads=%d\n", omp_get_max_threads());
    for (int s = 0; s < ns; s++) {
        double g = rate(shapes[s][0], shapes[s][1], shapes[s][2], reps);
        if (s == 0) printf("sgemm_gflops=%.2f\n", g);
        printf("sgemm_gflops_%dx%dx%d=%.2f\n", shapes[s][0], shapes[s][1], shapes[s][2], g);
    }
    return 0;
}
