/* test_decode_emu: the decoding kernels of src/cuda/decode.cu, their own
 * source, run on the CPU by the emulation of cuda_emu.h, position by
 * position as cuda_decoder_step calls them, against RoPE and causal
 * attention computed here in double: step t splits row t of qkv into q and
 * row t of the caches (RoPE at position t, read from device memory), and
 * its output must be row t of causal attention over rows 0..t. The caches
 * start as NaN, so a read past the position shows. Both pairings, partial
 * rotation, GQA, ALiBi, head sizes 24 to 128. fp32 throughout: 1e-5.
 * Built and run as test_flash_emu is (tests/cuda/cuda.cmake). */
#define ROTARY_CUDA_EMU 1
#include "cuda_emu.h"

#include "../../../src/cuda/decode.cu"

#include "emu_check.h"

#include <random>

static int failures, checks;

static void check(bool ok, const char *name, const char *fmt, double a) {
    checks++;
    if (!ok) failures++;
    printf("%s %-60s ", ok ? "ok  " : "FAIL", name);
    printf(fmt, a);
    printf("\n");
}

static void test(int T, int nh, int nkv, int hd, int rd, int pairing, bool alibi, unsigned seed) {
    char cfg[96], name[160];
    snprintf(cfg, sizeof cfg, "T%d nh%d nkv%d hd%d rd%d %s%s", T, nh, nkv, hd, rd,
             pairing ? "half" : "interleaved", alibi ? " alibi" : "");
    std::mt19937 rng(seed);
    std::normal_distribution<float> N01;
    const int S = (nh + 2 * nkv) * hd, Q = nh * hd, max_T = T + 5, r2 = rd / 2, group = nh / nkv;
    std::vector<float> qkv((size_t)T * S), cs((size_t)max_T * r2), sn((size_t)max_T * r2);
    std::vector<float> slopes(nh);
    for (auto &e : qkv) e = N01(rng);
    for (int t = 0; t < max_T; t++)
        for (int i = 0; i < r2; i++) {
            const double a = t * pow(10000.0, -2.0 * i / rd);
            cs[(size_t)t * r2 + i] = (float)cos(a), sn[(size_t)t * r2 + i] = (float)sin(a);
        }
    for (int h = 0; h < nh; h++) slopes[h] = exp2f(-8.0f * (h + 1) / nh);

    /* Reference: rotate q and k of every row in double, then attend. */
    std::vector<double> rot(qkv.begin(), qkv.end());
    for (int t = 0; t < T; t++)
        for (int s = 0; s < nh + nkv; s++)
            for (int i = 0; i < r2; i++) {
                double *x = &rot[(size_t)t * S + (size_t)s * hd];
                const int e0 = pairing ? i : 2 * i, e1 = pairing ? i + r2 : 2 * i + 1;
                const double c = cs[(size_t)t * r2 + i], si = sn[(size_t)t * r2 + i];
                const double a = x[e0], b = x[e1];
                x[e0] = a * c - b * si, x[e1] = a * si + b * c;
            }
    std::vector<double> qref((size_t)T * Q), out((size_t)T * Q);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++) {
            const double *qh = &rot[(size_t)t * S + (size_t)h * hd];
            for (int d = 0; d < hd; d++) qref[(size_t)t * Q + (size_t)h * hd + d] = qh[d];
            const int g = h / group;
            std::vector<double> p(t + 1);
            double m = -INFINITY, sum = 0;
            for (int j = 0; j <= t; j++) {
                const double *kj = &rot[(size_t)j * S + Q + (size_t)g * hd];
                double x = 0;
                for (int d = 0; d < hd; d++) x += qh[d] * kj[d];
                p[j] = x / sqrt((double)hd) - (alibi ? slopes[h] * (double)(t - j) : 0.0);
                m = p[j] > m ? p[j] : m;
            }
            for (int j = 0; j <= t; j++) sum += (p[j] = exp(p[j] - m));
            for (int d = 0; d < hd; d++) {
                double o = 0;
                for (int j = 0; j <= t; j++)
                    o += p[j] * rot[(size_t)j * S + Q + (size_t)(nkv + g) * hd + d];
                out[(size_t)t * Q + (size_t)h * hd + d] = o / sum;
            }
        }

    /* The kernels, step by step, with the caches NaN to start with. */
    const size_t cache = (size_t)nkv * max_T * hd;
    std::vector<float> kc(cache), vc(cache), q(Q), qs((size_t)T * Q), gout((size_t)T * Q);
    memset(kc.data(), 0xff, cache * sizeof(float));
    memset(vc.data(), 0xff, cache * sizeof(float));
    std::vector<float> part(gpu_decode_attention_part(nh, hd, max_T) + 1);
    std::vector<int> pos(T);
    for (int t = 0; t < T; t++) pos[t] = t;
    for (int t = 0; t < T; t++) {
        gpu_decode_split_rope(q.data(), kc.data(), vc.data(), &qkv[(size_t)t * S],
                              rd ? cs.data() : nullptr, rd ? sn.data() : nullptr, &pos[t], max_T,
                              nh, nkv, hd, rd, pairing);
        gpu_decode_attention(&gout[(size_t)t * Q], part.data(), q.data(), kc.data(), vc.data(),
                             alibi ? slopes.data() : nullptr, nullptr, &pos[t], max_T, nh, nkv, hd);
        std::copy(q.begin(), q.end(), qs.begin() + (size_t)t * Q);
    }
    snprintf(name, sizeof name, "decode split: q, %s", cfg);
    double e = rel_err(qs, qref);
    check(e <= 1e-5, name, "rel err %.2e (<= 1e-5)", e);
    double worst = 0;
    size_t untouched = 0;
    for (int g = 0; g < nkv; g++)
        for (int t = 0; t < max_T; t++)
            for (int d = 0; d < hd; d++) {
                const size_t c = ((size_t)g * max_T + t) * hd + d;
                if (t >= T) {
                    untouched += std::isnan(kc[c]) && std::isnan(vc[c]);
                    continue;
                }
                const double *row = &rot[(size_t)t * S + Q];
                const double ek = fabs(kc[c] - row[(size_t)g * hd + d]);
                const double ev = fabs(vc[c] - row[(size_t)(nkv + g) * hd + d]);
                worst = std::isnan(ek) || std::isnan(ev) ? INFINITY : std::max(worst, std::max(ek, ev));
            }
    snprintf(name, sizeof name, "decode split: cache rows, %s", cfg);
    check(worst <= 1e-5 && untouched == (size_t)nkv * (max_T - T) * hd, name,
          "max abs err %.2e (<= 1e-5), later rows untouched", worst);
    snprintf(name, sizeof name, "decode attention, every position, %s", cfg);
    e = rel_err(gout, out);
    check(e <= 1e-5, name, "rel err %.2e (<= 1e-5)", e);
}

int main(int argc, char **argv) {
    /* T, nh, nkv, hd, rd, pairing, alibi; --quick: the first (for
     * ThreadSanitizer, which is slower). */
    test(70, 4, 2, 64, 64, 0, false, 1); /* 2 chunks a head */
    if (argc > 1 && !strcmp(argv[1], "--quick")) {
        printf("test_decode_emu: %d checks, %d failed\n", checks, failures);
        return failures ? 1 : 0;
    }
    test(21, 6, 2, 40, 24, 1, false, 2);
    test(3, 2, 1, 128, 128, 1, true, 3);
    test(37, 4, 4, 32, 16, 0, true, 4);
    test(9, 2, 2, 24, 0, 0, false, 5);
    test(200, 3, 1, 32, 32, 1, true, 6); /* 4 chunks a head */
    printf("test_decode_emu: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
