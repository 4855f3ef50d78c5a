/* test_layer_emu: the kernels of src/cuda/layer.cu (norms, activations,
 * embedding, classifier, AdamW, the squared-gradient sums), their own
 * source, run on the CPU by the emulation of cuda_emu.h, against the same
 * operations computed here in double: fp32 results within 1e-5 of the
 * largest element (1e-4 where a row sums thousands of terms), bf16 results
 * within their rounding: 8 significant bits move a value by up to 2^-8 of
 * itself (4e-3). Built and run as test_flash_emu is (tests/cuda/cuda.cmake). */
#define ROTARY_CUDA_EMU 1
#include "cuda_emu.h"

#include "../../../src/cuda/layer.cu"

#include "emu_check.h"

#include <random>

static int failures, checks;
static std::mt19937 rng(7);

static void check(const char *name, const std::vector<float> &got, const std::vector<double> &ref,
                  double tol) {
    const double e = rel_err(got, ref);
    checks++;
    if (!(e <= tol)) failures++;
    printf("%s %-56s rel err %.2e (<= %.1e)\n", e <= tol ? "ok  " : "FAIL", name, e, tol);
}

static std::vector<float> randn(size_t n, float scale = 1.0f) {
    std::normal_distribution<float> N01;
    std::vector<float> x(n);
    for (auto &e : x) e = scale * N01(rng);
    return x;
}

/* x rounded to bf16 in place, and those bf16 values: inputs both sides
 * then read alike. */
static std::vector<gpu_bf16> round_in_place(std::vector<float> &x) {
    std::vector<gpu_bf16> y = narrow(x);
    x = widen(y);
    return y;
}

static void test_norm(bool layer, int N, int C) {
    char name[96];
    const char *kind = layer ? "layernorm" : "rmsnorm";
    const double eps = 1e-5;
    auto x = randn((size_t)N * C, 2.0f), w = randn(C), b = randn(C), d = randn((size_t)N * C);
    auto dx0 = randn((size_t)N * C), dw0 = randn(C), db0 = randn(C);
    const auto d16 = round_in_place(d); /* the GEMM's bf16 gradient */
    std::vector<double> out((size_t)N * C), mean(N), rstd(N), dx(dx0.begin(), dx0.end());
    std::vector<double> dw(dw0.begin(), dw0.end()), db(db0.begin(), db0.end());
    for (int n = 0; n < N; n++) {
        const float *xr = &x[(size_t)n * C];
        double m = 0, v = 0;
        if (layer) {
            for (int i = 0; i < C; i++) m += xr[i];
            m /= C;
        }
        for (int i = 0; i < C; i++) v += (xr[i] - m) * (xr[i] - m);
        const double r = 1 / sqrt(v / C + eps);
        mean[n] = m, rstd[n] = r;
        double sd = 0, sdx = 0;
        for (int i = 0; i < C; i++) {
            const double xh = (xr[i] - m) * r, dn = (double)d[(size_t)n * C + i] * w[i];
            out[(size_t)n * C + i] = xh * w[i] + (layer ? b[i] : 0.0);
            sd += dn, sdx += dn * xh;
            dw[i] += d[(size_t)n * C + i] * xh;
            if (layer) db[i] += d[(size_t)n * C + i];
        }
        sd = layer ? sd / C : 0, sdx /= C;
        for (int i = 0; i < C; i++) {
            const double xh = (xr[i] - m) * r;
            dx[(size_t)n * C + i] += r * ((double)d[(size_t)n * C + i] * w[i] - sd - xh * sdx);
        }
    }
    std::vector<float> gout((size_t)N * C), gmean(N), grstd(N);
    std::vector<gpu_bf16> gout16((size_t)N * C), gdx16((size_t)N * C);
    gpu_norm_forward(gout.data(), NULL, layer ? gmean.data() : NULL, grstd.data(), x.data(), NULL,
                     w.data(), layer ? b.data() : NULL, N, C, (float)eps);
    snprintf(name, sizeof name, "%s forward %dx%d", kind, N, C);
    check(name, gout, out, 1e-5);
    snprintf(name, sizeof name, "%s forward rstd", kind);
    check(name, grstd, rstd, 1e-5);
    gpu_norm_forward(NULL, gout16.data(), layer ? gmean.data() : NULL, grstd.data(), x.data(), NULL,
                     w.data(), layer ? b.data() : NULL, N, C, (float)eps);
    snprintf(name, sizeof name, "%s forward to bf16", kind);
    check(name, widen(gout16), out, 4e-3);
    /* the backward from the kernel's own mean and rstd, as the model runs it */
    std::vector<float> gdx(dx0), gdw(dw0), gdb(db0);
    gpu_norm_backward(gdx.data(), gdx16.data(), gdw.data(), layer ? gdb.data() : NULL, d16.data(),
                      x.data(), w.data(), layer ? gmean.data() : NULL, grstd.data(), N, C);
    snprintf(name, sizeof name, "%s backward dinp (+=)", kind);
    check(name, gdx, dx, 1e-5);
    snprintf(name, sizeof name, "%s backward dinp, also in bf16", kind);
    check(name, widen(gdx16), dx, 4e-3);
    snprintf(name, sizeof name, "%s backward dw (+=)", kind);
    check(name, gdw, dw, 1e-5);
    if (layer) check("layernorm backward db (+=)", gdb, db, 1e-5);
}

static void test_activations(int N, int F) {
    const size_t n = (size_t)N * F;
    const double K = 0.7978845608028654;
    auto x = randn(2 * n, 2.0f), d = randn(n);
    /* training reads bf16 (the GEMMs' outputs); decoding fp32 of the same values */
    const auto x16 = round_in_place(x), d16 = round_in_place(d);
    std::vector<double> gelu(n), dgelu(n), sw(n), dsw(2 * n);
    for (size_t i = 0; i < n; i++) {
        const double a = x[i], th = tanh(K * (a + 0.044715 * a * a * a));
        gelu[i] = 0.5 * a * (1 + th);
        dgelu[i] = d[i] * (0.5 * (1 + th) + 0.5 * a * (1 - th * th) * K * (1 + 3 * 0.044715 * a * a));
    }
    for (int r = 0; r < N; r++)
        for (int f = 0; f < F; f++) {
            const double g = x[(size_t)r * 2 * F + f], u = x[(size_t)r * 2 * F + F + f];
            const double sg = 1 / (1 + exp(-g)), dd = d[(size_t)r * F + f];
            sw[(size_t)r * F + f] = g * sg * u;
            dsw[(size_t)r * 2 * F + F + f] = dd * g * sg;
            dsw[(size_t)r * 2 * F + f] = dd * u * sg * (1 + g * (1 - sg));
        }
    std::vector<float> out(n);
    std::vector<gpu_bf16> out16(n), din16(2 * n);
    gpu_gelu_forward(out.data(), NULL, x.data(), NULL, n);
    check("gelu forward", out, gelu, 1e-5);
    gpu_gelu_forward(NULL, out16.data(), NULL, x16.data(), n);
    check("gelu forward in bf16", widen(out16), gelu, 4e-3);
    gpu_gelu_backward(din16.data(), d16.data(), x16.data(), n);
    check("gelu backward (bf16)", widen(std::vector<gpu_bf16>(din16.begin(), din16.begin() + n)),
          dgelu, 4e-3);
    gpu_swiglu_forward(out.data(), NULL, x.data(), NULL, N, F);
    check("swiglu forward", out, sw, 1e-5);
    gpu_swiglu_forward(NULL, out16.data(), NULL, x16.data(), N, F);
    check("swiglu forward in bf16", widen(out16), sw, 4e-3);
    gpu_swiglu_backward(din16.data(), d16.data(), x16.data(), N, F);
    check("swiglu backward (bf16)", widen(din16), dsw, 4e-3);
}

static void test_embed(int N, int T, int C, int V, int start) {
    char name[96];
    auto emb = randn((size_t)V * C), pos = randn((size_t)(start + T) * C), d = randn((size_t)N * C);
    auto dtok0 = randn((size_t)V * C), dpos0 = randn((size_t)(start + T) * C);
    std::vector<int> tok(N + 1);
    for (int i = 0; i < N; i++) tok[i] = (int)(rng() % V);
    tok[N] = start;
    std::vector<double> out((size_t)N * C), dtok(dtok0.begin(), dtok0.end());
    std::vector<double> dpos(dpos0.begin(), dpos0.end());
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            out[(size_t)n * C + c] = (double)emb[(size_t)tok[n] * C + c] +
                                     pos[(size_t)(start + n % T) * C + c];
            dtok[(size_t)tok[n] * C + c] += d[(size_t)n * C + c];
            dpos[(size_t)(n % T) * C + c] += d[(size_t)n * C + c];
        }
    std::vector<float> gout((size_t)N * C), gdtok(dtok0), gdpos(dpos0);
    gpu_embed_forward(gout.data(), tok.data(), emb.data(), pos.data(), start ? &tok[N] : NULL, N,
                      T, C);
    snprintf(name, sizeof name, "embedding forward, positions from %d", start);
    check(name, gout, out, 1e-6);
    if (start) return;
    gpu_embed_backward(gdtok.data(), gdpos.data(), d.data(), tok.data(), N, T, C);
    check("embedding backward dtok (+=, atomics)", gdtok, dtok, 1e-5);
    check("embedding backward dpos (+=, atomics)", gdpos, dpos, 1e-5);
}

static void test_crossentropy(int N, int V, bool bf16) {
    char name[96];
    const char *kind = bf16 ? " (bf16 logits)" : "";
    auto z = randn((size_t)N * V, 3.0f);
    std::vector<gpu_bf16> z16((size_t)N * V);
    if (bf16) z16 = round_in_place(z); /* the reference sees the rounded logits */
    std::vector<int> tg(N);
    for (auto &t : tg) t = (int)(rng() % V);
    const float dscale = 1.0f / N;
    std::vector<double> lse(N), loss(N), grad((size_t)N * V);
    for (int n = 0; n < N; n++) {
        const float *r = &z[(size_t)n * V];
        double m = -INFINITY, s = 0;
        for (int i = 0; i < V; i++) m = r[i] > m ? r[i] : m;
        for (int i = 0; i < V; i++) s += exp(r[i] - m);
        lse[n] = m + log(s), loss[n] = lse[n] - r[tg[n]];
        for (int i = 0; i < V; i++)
            grad[(size_t)n * V + i] = (exp(r[i] - lse[n]) - (i == tg[n])) * dscale;
    }
    std::vector<float> glse(N), gloss(N);
    gpu_crossentropy(bf16 ? NULL : z.data(), bf16 ? z16.data() : NULL, glse.data(), gloss.data(),
                     tg.data(), N, V, dscale);
    snprintf(name, sizeof name, "classifier lse %dx%d%s", N, V, kind);
    check(name, glse, lse, 1e-5);
    snprintf(name, sizeof name, "classifier losses %dx%d%s", N, V, kind);
    check(name, gloss, loss, 1e-5);
    snprintf(name, sizeof name, "classifier fused gradient %dx%d%s", N, V, kind);
    check(name, bf16 ? widen(z16) : z, grad, bf16 ? 4e-3 : 1e-4);
}

static void test_adamw(size_t n) {
    auto p = randn(n), g = randn(n), m = randn(n, 0.1f), v = randn(n, 0.1f);
    for (auto &e : v) e = e * e;
    const float b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, decay = 0.999f, step = 3e-3f, bc2 = 0.3f;
    const float gs = 0.7f;
    std::vector<double> rp(n), rm(n), rv(n);
    for (size_t i = 0; i < n; i++) {
        const double gi = (double)g[i] * gs;
        rm[i] = b1 * (double)m[i] + (1 - (double)b1) * gi;
        rv[i] = b2 * (double)v[i] + (1 - (double)b2) * gi * gi;
        rp[i] = p[i] * (double)decay - step * rm[i] / (sqrt(rv[i]) / bc2 + eps);
    }
    std::vector<gpu_bf16> p16(n);
    gpu_adamw(p.data(), p16.data(), g.data(), m.data(), v.data(), n, b1, b2, eps, decay, step,
              bc2, gs);
    check("adamw weights", p, rp, 1e-5);
    check("adamw weights, their bf16 copy", widen(p16), rp, 4e-3);
    check("adamw first moments", m, rm, 1e-5);
    check("adamw second moments", v, rv, 1e-5);
}

static void test_sumsq(size_t n, size_t off) {
    auto xs = randn(n + off);
    const float *x = xs.data() + off; /* off % 4: one value an access */
    const size_t nb = (n + GPU_NORM_BLOCK - 1) / GPU_NORM_BLOCK;
    std::vector<double> part(nb + 1, -1.0);
    std::vector<float> got(nb + 1);
    std::vector<double> ref(nb + 1, 0.0);
    gpu_sumsq_blocks(part.data(), x, n);
    for (size_t b = 0; b < nb; b++) {
        for (size_t i = b * GPU_NORM_BLOCK; i < n && i < (b + 1) * GPU_NORM_BLOCK; i++)
            ref[b] += (double)x[i] * x[i];
        got[b] = (float)part[b];
    }
    ref[nb] = -1.0, got[nb] = (float)part[nb]; /* nothing written past the last block */
    check("sum of squares a norm block", got, ref, 1e-6);
}

int main(int argc, char **argv) {
    const bool quick = argc > 1 && !strcmp(argv[1], "--quick");
    test_norm(true, 37, 100); /* C % 4 == 0: four columns a lane at a time */
    test_norm(false, 9, 768);
    test_norm(true, 5, 90); /* one at a time */
    if (!quick) {
        test_activations(5, 200); /* eight elements a thread */
        test_activations(3, 36);  /* one */
        test_embed(24, 8, 48, 61, 0);
        test_embed(1, 1, 48, 61, 17);
        test_crossentropy(6, 3001, false); /* one logit a thread at a time */
        test_crossentropy(6, 3001, true);
        test_crossentropy(4, 3000, false); /* eight (bf16) or four (fp32) */
        test_crossentropy(4, 3000, true);
        test_adamw(5000);
        test_sumsq(300000, 0); /* 19 blocks, the last shorter */
        test_sumsq(1001, 0);   /* four at a time, then one left over */
        test_sumsq(40000, 1);  /* one at a time */
    }
    printf("test_layer_emu: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
