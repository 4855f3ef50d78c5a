/* test_flash_emu: the tensor-core attention kernels, their own source run
 * on the CPU by the emulation of cuda_emu.h, against causal attention
 * computed here in double: the mma.sync kernels (flash_mma.cu) and the WMMA
 * ones (flash_fwd.cu, flash_bwd.cu), forward (output, log-sum-exp) and
 * backward (dq, dk, dv), for head sizes, GQA, ALiBi and sequence lengths
 * that leave partial tiles. Built in CUDA builds (it needs the toolkit's
 * headers, not a GPU) under ASan and UBSan, and again under ThreadSanitizer
 * (test_flash_emu_tsan), which would see a barrier the kernels lack. The
 * kernel files are compiled apart (their wrappers in the build's emu/) and
 * called through kernels.h.
 *
 * The products round their inputs to bf16 (8 significant bits), which
 * moves the results by a few 2^-9 of the largest element: measured at most
 * 4.3e-3 forward (the output is bf16), 1.6e-3 for the log-sum-exp and
 * 7.9e-3 backward (dq, dk, dv are bf16 too but for the atomic dq set). The
 * inputs are the same every run (fixed seeds), so the thresholds are about
 * twice that, 8e-3, 4e-3 and 1.5e-2, tighter than test_cuda_kernels' for
 * the GPU's (1.5e-2, 1e-2, 3e-2): one stale key row in 65 moves the output
 * by 1.3e-2. */
#include "cuda/kernels.h"
#include "emu_check.h"

#include <cuda_bf16.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

/* A kernel set: its forward, its backward, the head sizes the backward
 * takes and whether it writes dq, dk, dv in bf16 (else fp32). */
struct kernels {
    const char *name;
    void (*forward)(gpu_bf16 *, float *, const gpu_bf16 *, const gpu_bf16 *, const gpu_bf16 *,
                    const float *, int, int, int, int, int);
    void (*backward)(void *, void *, void *, const float *, const gpu_bf16 *, const gpu_bf16 *,
                     const gpu_bf16 *, const gpu_bf16 *, const float *, const float *, int, int,
                     int, int, int);
    bool (*has_backward)(int hd);
    bool bf16_grads;
};
static void mma_bwd(void *dq, void *dk, void *dv, const float *dsum, const gpu_bf16 *dout,
                    const gpu_bf16 *q, const gpu_bf16 *k, const gpu_bf16 *v, const float *lse,
                    const float *alibi, int B, int T, int nh, int nkv, int hd) {
    gpu_flash_backward_mma(dq, dk, dv, dsum, dout, q, k, v, lse, alibi, B, T, nh, nkv, hd, 0);
}
static void mma_atomic_bwd(void *dq, void *dk, void *dv, const float *dsum,
                           const gpu_bf16 *dout, const gpu_bf16 *q, const gpu_bf16 *k,
                           const gpu_bf16 *v, const float *lse, const float *alibi, int B, int T,
                           int nh, int nkv, int hd) {
    gpu_flash_backward_mma(dq, dk, dv, dsum, dout, q, k, v, lse, alibi, B, T, nh, nkv, hd, 1);
}
static void wmma_bwd(void *dq, void *dk, void *dv, const float *dsum, const gpu_bf16 *dout,
                     const gpu_bf16 *q, const gpu_bf16 *k, const gpu_bf16 *v, const float *lse,
                     const float *alibi, int B, int T, int nh, int nkv, int hd) {
    gpu_flash_backward_tc((gpu_bf16 *)dq, (gpu_bf16 *)dk, (gpu_bf16 *)dv, dsum, dout, q, k, v,
                          lse, alibi, B, T, nh, nkv, hd);
}
static const kernels MMA = {"mma", gpu_flash_forward_mma, mma_bwd,
                            [](int hd) { return (bool)GPU_ATTN_MMA_BWD(hd); }, true};
static const kernels MMA_ATOMIC = {"mma-atomic-dq", gpu_flash_forward_mma, mma_atomic_bwd,
                                   [](int hd) { return (bool)GPU_ATTN_MMA_BWD(hd); }, false};
static const kernels WMMA = {"wmma", gpu_flash_forward_tc, wmma_bwd,
                             [](int hd) { return (bool)GPU_ATTN_TC(hd); }, true};

static int failures, checks;

static void check(bool ok, const char *name, double err, double tol) {
    checks++;
    if (!ok) failures++;
    printf("%s %-58s rel err %.2e (<= %.1e)\n", ok ? "ok  " : "FAIL", name, err, tol);
}

static void test(const kernels &K, int B, int T, int nh, int nkv, int hd, bool alibi,
                 unsigned seed) {
    char cfg[96], name[160];
    snprintf(cfg, sizeof cfg, "B%d T%d nh%d nkv%d hd%d%s", B, T, nh, nkv, hd,
             alibi ? " alibi" : "");
    std::mt19937 rng(seed);
    std::normal_distribution<float> N01;
    const size_t nq = (size_t)B * nh * T * hd, nk = (size_t)B * nkv * T * hd;
    /* q (B, nh, T, hd), k, v (B, nkv, T, hd) per head; out, dout (B, T, nh*hd) */
    std::vector<float> q(nq), k(nk), v(nk), dout(nq), slopes(nh);
    for (auto *x : {&q, &k, &v, &dout})
        for (auto &e : *x) e = N01(rng);
    for (int h = 0; h < nh; h++) slopes[h] = exp2f(-8.0f * (h + 1) / nh);
    const float *al = alibi ? slopes.data() : nullptr;
    const double scale = 1.0 / sqrt((double)hd);
    const int group = nh / nkv;

    /* Reference in double, head by head. */
    std::vector<double> out(nq), lse((size_t)B * nh * T), dq(nq, 0.0), dk(nk, 0.0), dv(nk, 0.0);
    std::vector<double> P((size_t)T * T), dS((size_t)T * T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            const size_t kvo = ((size_t)b * nkv + h / group) * T * hd, qo = ((size_t)b * nh + h) * T * hd;
            auto Q = [&](int i, int d) { return (double)q[qo + (size_t)i * hd + d]; };
            auto K = [&](int j, int d) { return (double)k[kvo + (size_t)j * hd + d]; };
            auto V = [&](int j, int d) { return (double)v[kvo + (size_t)j * hd + d]; };
            auto O = [&](int i) { return &out[(((size_t)b * T + i) * nh + h) * hd]; };
            auto dO = [&](int i, int d) { return (double)dout[(((size_t)b * T + i) * nh + h) * hd + d]; };
            for (int i = 0; i < T; i++) {
                double m = -INFINITY, s = 0;
                for (int j = 0; j <= i; j++) {
                    double x = 0;
                    for (int d = 0; d < hd; d++) x += Q(i, d) * K(j, d);
                    x = x * scale - (al ? al[h] * (double)(i - j) : 0.0);
                    P[(size_t)i * T + j] = x;
                    m = x > m ? x : m;
                }
                for (int j = 0; j <= i; j++) s += exp(P[(size_t)i * T + j] - m);
                lse[((size_t)b * nh + h) * T + i] = m + log(s);
                for (int j = 0; j <= i; j++) P[(size_t)i * T + j] = exp(P[(size_t)i * T + j] - m) / s;
                for (int d = 0; d < hd; d++) {
                    double o = 0;
                    for (int j = 0; j <= i; j++) o += P[(size_t)i * T + j] * V(j, d);
                    O(i)[d] = o;
                }
                double D = 0;
                for (int d = 0; d < hd; d++) D += dO(i, d) * O(i)[d];
                for (int j = 0; j <= i; j++) {
                    double dp = 0;
                    for (int d = 0; d < hd; d++) dp += dO(i, d) * V(j, d);
                    dS[(size_t)i * T + j] = P[(size_t)i * T + j] * (dp - D);
                }
            }
            for (int i = 0; i < T; i++)
                for (int j = 0; j <= i; j++)
                    for (int d = 0; d < hd; d++) {
                        const double ps = P[(size_t)i * T + j], ds = dS[(size_t)i * T + j];
                        dq[qo + (size_t)i * hd + d] += ds * K(j, d) * scale;
                        dk[kvo + (size_t)j * hd + d] += ds * Q(i, d) * scale;
                        dv[kvo + (size_t)j * hd + d] += ps * dO(i, d);
                    }
        }

    /* q, k, v in bf16, as the split kernel writes them for the tensor cores */
    const std::vector<gpu_bf16> q16 = narrow(q), k16 = narrow(k), v16 = narrow(v);
    std::vector<gpu_bf16> gout16(nq);
    std::vector<float> glse((size_t)B * nh * T);
    K.forward(gout16.data(), glse.data(), q16.data(), k16.data(), v16.data(), al, B, T, nh, nkv,
              hd);
    const std::vector<float> gout = widen(gout16); /* the output is bf16 */
    snprintf(name, sizeof name, "%s forward out %s", K.name, cfg);
    double e = rel_err(gout, out);
    check(e <= 8e-3, name, e, 8e-3);
    snprintf(name, sizeof name, "%s forward lse %s", K.name, cfg);
    e = rel_err(glse, lse);
    check(e <= 4e-3, name, e, 4e-3);
    if (!K.has_backward(hd)) return;

    /* dsum = rowsum(dout * out) from the kernel's own output, as attention.cu does. */
    /* NaN: the kernels must write every gradient element */
    std::vector<float> dsum((size_t)B * nh * T), gdq(nq, NAN), gdk(nk, NAN), gdv(nk, NAN);
    const std::vector<gpu_bf16> nan16 = narrow(std::vector<float>(nq, NAN));
    std::vector<gpu_bf16> hdq(nan16), hdk(nan16.begin(), nan16.begin() + nk), hdv(hdk);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++)
            for (int h = 0; h < nh; h++) {
                const size_t o = (((size_t)b * T + i) * nh + h) * hd;
                double s = 0;
                for (int d = 0; d < hd; d++) s += (double)dout[o + d] * gout[o + d];
                dsum[((size_t)b * nh + h) * T + i] = (float)s;
            }
    const std::vector<gpu_bf16> dout16 = narrow(dout);
    if (K.bf16_grads) {
        K.backward(hdq.data(), hdk.data(), hdv.data(), dsum.data(), dout16.data(), q16.data(),
                   k16.data(), v16.data(), glse.data(), al, B, T, nh, nkv, hd);
        gdq = widen(hdq), gdk = widen(hdk), gdv = widen(hdv);
    } else {
        K.backward(gdq.data(), gdk.data(), gdv.data(), dsum.data(), dout16.data(), q16.data(),
                   k16.data(), v16.data(), glse.data(), al, B, T, nh, nkv, hd);
    }
    const std::vector<float> *got[3] = {&gdq, &gdk, &gdv};
    const std::vector<double> *ref[3] = {&dq, &dk, &dv};
    const char *what[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "%s backward %s %s", K.name, what[i], cfg);
        e = rel_err(*got[i], *ref[i]);
        check(e <= 1.5e-2, name, e, 1.5e-2);
    }
}

int main(int argc, char **argv) {
    /* B, T, nh, nkv, hd, alibi: partial tiles, GQA, every head size the
     * kernels take (the forwards pad 24 and 128; the mma backward stops at
     * 64), each case with every kernel set. --quick: the first two (for
     * ThreadSanitizer, which is slower). */
    const bool quick = argc > 1 && !strcmp(argv[1], "--quick");
    for (const kernels *K : {&MMA, &MMA_ATOMIC, &WMMA}) {
        test(*K, 1, 70, 2, 1, 32, true, 1);
        test(*K, 1, 130, 2, 2, 64, false, 2);
        if (quick) continue;
        test(*K, 2, 33, 3, 3, 48, true, 3);
        test(*K, 1, 65, 1, 1, 128, false, 4);
        test(*K, 1, 80, 4, 1, 16, true, 5);
        test(*K, 1, 45, 2, 1, 24, false, 6);
        test(*K, 1, 300, 4, 2, 64, true, 7); /* three mma forward blocks, five key tiles */
    }
    printf("test_flash_emu: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
