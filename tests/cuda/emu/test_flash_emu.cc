/* test_flash_emu: the tensor-core attention kernels, their own source run on
 * the CPU by the emulation of cuda_emu.h, against causal attention computed
 * here in double: the mma.sync kernels (flash_mma.cu) and the WMMA ones
 * (flash_fwd.cu, flash_bwd.cu), forward (output, log-sum-exp) and backward
 * (dq, dk, dv), for head sizes, GQA, ALiBi, T5's table (WMMA only; with its
 * gradient) and sequence lengths that leave partial tiles. Built in CUDA
 * builds (it needs the toolkit's headers, not a GPU) under ASan and UBSan, and
 * again under ThreadSanitizer (test_flash_emu_tsan), which would see a barrier
 * the kernels lack. The kernel files are compiled apart (their wrappers in the
 * build's emu/) and called through kernels.h.
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

/* A kernel set: its forward, its backward (t5, dt5: T5's table and its
 * gradient, or NULL), the head sizes the backward takes, whether it writes
 * dq, dk, dv in bf16 (else fp32) and whether it takes T5's table. */
struct kernels {
    const char *name;
    void (*forward)(gpu_bf16 *, float *, const gpu_bf16 *, const gpu_bf16 *, const gpu_bf16 *,
                    const float *, const float *, int, int, int, int, int);
    void (*backward)(void *, void *, void *, const float *, const gpu_bf16 *, const gpu_bf16 *,
                     const gpu_bf16 *, const gpu_bf16 *, const float *, const float *,
                     const float *, float *, int, int, int, int, int);
    bool (*has_backward)(int hd);
    bool bf16_grads, t5;
};
static void mma_fwd(gpu_bf16 *out, float *lse, const gpu_bf16 *q, const gpu_bf16 *k,
                    const gpu_bf16 *v, const float *alibi, const float *, int B, int T, int nh,
                    int nkv, int hd) {
    gpu_flash_forward_mma(out, lse, q, k, v, alibi, B, T, nh, nkv, hd);
}
static void mma_bwd(void *dq, void *dk, void *dv, const float *dsum, const gpu_bf16 *dout,
                    const gpu_bf16 *q, const gpu_bf16 *k, const gpu_bf16 *v, const float *lse,
                    const float *alibi, const float *, float *, int B, int T, int nh, int nkv,
                    int hd) {
    gpu_flash_backward_mma(dq, dk, dv, dsum, dout, q, k, v, lse, alibi, B, T, nh, nkv, hd, 0);
}
static void mma_atomic_bwd(void *dq, void *dk, void *dv, const float *dsum,
                           const gpu_bf16 *dout, const gpu_bf16 *q, const gpu_bf16 *k,
                           const gpu_bf16 *v, const float *lse, const float *alibi, const float *,
                           float *, int B, int T, int nh, int nkv, int hd) {
    gpu_flash_backward_mma(dq, dk, dv, dsum, dout, q, k, v, lse, alibi, B, T, nh, nkv, hd, 1);
}
static void wmma_bwd(void *dq, void *dk, void *dv, const float *dsum, const gpu_bf16 *dout,
                     const gpu_bf16 *q, const gpu_bf16 *k, const gpu_bf16 *v, const float *lse,
                     const float *alibi, const float *t5, float *dt5, int B, int T, int nh,
                     int nkv, int hd) {
    gpu_flash_backward_tc((gpu_bf16 *)dq, (gpu_bf16 *)dk, (gpu_bf16 *)dv, dsum, dout, q, k, v,
                          lse, alibi, t5, dt5, B, T, nh, nkv, hd);
}
static const kernels MMA = {"mma", mma_fwd, mma_bwd,
                            [](int hd) { return (bool)GPU_ATTN_MMA_BWD(hd); }, true, false};
static const kernels MMA_ATOMIC = {"mma-atomic-dq", mma_fwd, mma_atomic_bwd,
                                   [](int hd) { return (bool)GPU_ATTN_MMA_BWD(hd); }, false,
                                   false};
static const kernels WMMA = {"wmma", gpu_flash_forward_tc, wmma_bwd,
                             [](int hd) { return (bool)GPU_ATTN_TC(hd); }, true, true};

static int failures, checks;

static void check(bool ok, const char *name, double err, double tol) {
    checks++;
    if (!ok) failures++;
    printf("%s %-58s rel err %.2e (<= %.1e)\n", ok ? "ok  " : "FAIL", name, err, tol);
}

/* bias: 0 none, 1 ALiBi, 2 T5's table (nh, T) by distance, random. */
static void test(const kernels &K, int B, int T, int nh, int nkv, int hd, int bias,
                 unsigned seed) {
    if (bias == 2 && !K.t5) return;
    char cfg[96], name[160];
    snprintf(cfg, sizeof cfg, "B%d T%d nh%d nkv%d hd%d%s", B, T, nh, nkv, hd,
             bias == 1 ? " alibi" : bias == 2 ? " t5" : "");
    std::mt19937 rng(seed);
    std::normal_distribution<float> N01;
    const size_t nq = (size_t)B * nh * T * hd, nk = (size_t)B * nkv * T * hd;
    /* q (B, nh, T, hd), k, v (B, nkv, T, hd) per head; out, dout (B, T, nh*hd) */
    std::vector<float> q(nq), k(nk), v(nk), dout(nq), slopes(nh), tab((size_t)nh * T);
    for (auto *x : {&q, &k, &v, &dout, &tab})
        for (auto &e : *x) e = N01(rng);
    for (int h = 0; h < nh; h++) slopes[h] = exp2f(-8.0f * (h + 1) / nh);
    const float *al = bias == 1 ? slopes.data() : nullptr;
    const float *t5 = bias == 2 ? tab.data() : nullptr;
    const double scale = 1.0 / sqrt((double)hd);
    const int group = nh / nkv;

    /* Reference in double, head by head; dt5 (B, nh, T): the sum of dS
     * along each distance. */
    std::vector<double> out(nq), lse((size_t)B * nh * T), dq(nq, 0.0), dk(nk, 0.0), dv(nk, 0.0);
    std::vector<double> dt5((size_t)B * nh * T, 0.0);
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
                    x = x * scale - (al ? al[h] * (double)(i - j) : 0.0) +
                        (t5 ? t5[(size_t)h * T + i - j] : 0.0);
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
            for (int i = 0; i < T; i++)
                for (int j = 0; j <= i; j++)
                    dt5[((size_t)b * nh + h) * T + i - j] += dS[(size_t)i * T + j];
        }

    /* q, k, v in bf16, as the split kernel writes them for the tensor cores */
    const std::vector<gpu_bf16> q16 = narrow(q), k16 = narrow(k), v16 = narrow(v);
    std::vector<gpu_bf16> gout16(nq);
    std::vector<float> glse((size_t)B * nh * T);
    K.forward(gout16.data(), glse.data(), q16.data(), k16.data(), v16.data(), al, t5, B, T, nh,
              nkv, hd);
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
    std::vector<float> gdt5((size_t)B * nh * T, 0.0f); /* the kernels add to zeros */
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
                   k16.data(), v16.data(), glse.data(), al, t5, t5 ? gdt5.data() : nullptr, B, T,
                   nh, nkv, hd);
        gdq = widen(hdq), gdk = widen(hdk), gdv = widen(hdv);
    } else {
        K.backward(gdq.data(), gdk.data(), gdv.data(), dsum.data(), dout16.data(), q16.data(),
                   k16.data(), v16.data(), glse.data(), al, t5, t5 ? gdt5.data() : nullptr, B, T,
                   nh, nkv, hd);
    }
    const std::vector<float> *got[3] = {&gdq, &gdk, &gdv};
    const std::vector<double> *ref[3] = {&dq, &dk, &dv};
    const char *what[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "%s backward %s %s", K.name, what[i], cfg);
        e = rel_err(*got[i], *ref[i]);
        check(e <= 1.5e-2, name, e, 1.5e-2);
    }
    if (t5) {
        snprintf(name, sizeof name, "%s backward t5 table %s", K.name, cfg);
        e = rel_err(gdt5, dt5);
        check(e <= 1.5e-2, name, e, 1.5e-2);
    }
}

int main(int argc, char **argv) {
    /* B, T, nh, nkv, hd, bias (1 ALiBi, 2 T5): partial tiles, GQA, every
     * head size the kernels take (the forwards pad 24 and 128; the mma
     * backward stops at 64), each case with every kernel set that takes it.
     * --quick: the first three (for ThreadSanitizer, which is slower). */
    const bool quick = argc > 1 && !strcmp(argv[1], "--quick");
    for (const kernels *K : {&MMA, &MMA_ATOMIC, &WMMA}) {
        test(*K, 1, 70, 2, 1, 32, 1, 1);
        test(*K, 1, 130, 2, 2, 64, 0, 2);
        test(*K, 2, 100, 3, 1, 32, 2, 8);
        if (quick) continue;
        test(*K, 2, 33, 3, 3, 48, 1, 3);
        test(*K, 1, 65, 1, 1, 128, 0, 4);
        test(*K, 1, 80, 4, 1, 16, 1, 5);
        test(*K, 1, 45, 2, 1, 24, 0, 6);
        test(*K, 1, 300, 4, 2, 64, 1, 7); /* three mma forward blocks, five key tiles */
        test(*K, 1, 200, 2, 2, 128, 2, 9);
    }
    printf("test_flash_emu: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
