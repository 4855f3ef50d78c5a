/* test_rope_scaling.c: RoPE frequency scaling (linear, NTK, dynamic NTK, YaRN,
 * Llama 3, per-pair factors) against float64 formulas written here from the papers, the tables
 * built from them, the model's rebuilds, and the refusal of bad parameters.
 * Exit 0 when every check passes; one summary line per check. */
#include "internal.h"
#include "rotary.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static void report(const char *name, double err, double tol) {
    int ok = err <= tol; /* false for NaN */
    printf("%-4s %-62s max err %.3e (tol %.0e)\n", ok ? "ok" : "FAIL", name, err, tol);
    if (!ok) failures++;
}

static void must(int rc, const char *what) {
    if (rc != ROTARY_OK) {
        fprintf(stderr, "FAIL %s: %s\n", what, rotary_last_error());
        exit(1);
    }
}

static rotary_rope_scaling make(int type, double factor, int original_ctx) {
    rotary_rope_scaling s;
    rotary_rope_scaling_default(&s);
    s.type = type;
    s.factor = factor;
    s.original_ctx = original_ctx;
    return s;
}

/* ------------------------------------------------ the formulas, in float64 */

static double plain(int i, int d, double base) { return pow(base, -2.0 * i / d); }

/* Chen et al. 2023: positions divided by s, i.e. every frequency. */
static double ref_linear(int i, int d, double base, double s) { return plain(i, d, base) / s; }

/* NTK-aware: the base grows so the lowest frequency is divided by s. */
static double ref_ntk(int i, int d, double base, double s) {
    return pow(base * pow(s, d / (d - 2.0)), -2.0 * i / d);
}

static double ref_dynamic(int i, int d, double base, int L, int L0) {
    double s = (double)L / L0;
    return ref_ntk(i, d, base, s < 1 ? 1 : s);
}

/* Peng et al. 2023 (YaRN), eq. 16-18: r = L0 / lambda, lambda = 2 pi / theta. */
static double ref_yarn(int i, int d, double base, double s, int L0, double alpha, double beta) {
    double theta = plain(i, d, base), lambda = 2 * acos(-1.0) / theta, r = L0 / lambda;
    double gamma = r < alpha ? 0 : r > beta ? 1 : (r - alpha) / (beta - alpha);
    return (1 - gamma) * theta / s + gamma * theta;
}

/* Meta's Llama 3.1 scheme. */
static double ref_llama3(int i, int d, double base, double s, int L0, double lo, double hi) {
    double f = plain(i, d, base), wavelen = 2 * acos(-1.0) / f;
    if (wavelen < L0 / hi) return f;
    if (wavelen > L0 / lo) return f / s;
    double smooth = (L0 / wavelen - lo) / (hi - lo);
    return (1 - smooth) * f / s + smooth * f;
}

static double ref_freq(const rotary_rope_scaling *s, int i, int d, double base, int L) {
    switch (s->type) {
    case ROTARY_ROPE_SCALING_LINEAR: return ref_linear(i, d, base, s->factor);
    case ROTARY_ROPE_SCALING_NTK: return ref_ntk(i, d, base, s->factor);
    case ROTARY_ROPE_SCALING_DYNAMIC_NTK: return ref_dynamic(i, d, base, L, s->original_ctx);
    case ROTARY_ROPE_SCALING_YARN:
        return ref_yarn(i, d, base, s->factor, s->original_ctx, s->yarn_alpha, s->yarn_beta);
    case ROTARY_ROPE_SCALING_LLAMA3:
        return ref_llama3(i, d, base, s->factor, s->original_ctx, s->low_freq_factor,
                          s->high_freq_factor);
    case ROTARY_ROPE_SCALING_FACTORS: return plain(i, d, base) / s->freq_factors[i];
    default: return plain(i, d, base);
    }
}

/* YaRN's sqrt(1/t) = 0.1 ln s + 1 on q and k alike. */
static double ref_mscale(const rotary_rope_scaling *s) {
    return s->type == ROTARY_ROPE_SCALING_YARN ? 0.1 * log(s->factor) + 1 : 1.0;
}

/* Per-pair factors f_i = plain_i / llama3_i in float32, as llama.cpp's
 * converter writes a Llama 3.1 scaling into rope_freqs.weight. */
static rotary_rope_scaling factors_of_llama3(int d, double base, double s, int L0, double lo,
                                             double hi) {
    rotary_rope_scaling f;
    rotary_rope_scaling_default(&f);
    f.type = ROTARY_ROPE_SCALING_FACTORS;
    f.n_factors = d / 2;
    for (int i = 0; i < d / 2; i++)
        f.freq_factors[i] = (float)(plain(i, d, base) / ref_llama3(i, d, base, s, L0, lo, hi));
    return f;
}

/* ------------------------------------------------------------ the checks */

typedef struct {
    const char *label;
    rotary_rope_scaling s;
    int d;
    double base;
    int L; /* sequence length the tables are built for */
} scase;

static int n_cases;
static scase cases[64];

static void add(const char *label, rotary_rope_scaling s, int d, double base, int L) {
    cases[n_cases++] = (scase){label, s, d, base, L};
}

static void make_cases(void) {
    rotary_rope_scaling y = make(ROTARY_ROPE_SCALING_YARN, 4, 2048);
    rotary_rope_scaling y2 = make(ROTARY_ROPE_SCALING_YARN, 16, 4096);
    y2.yarn_alpha = 2, y2.yarn_beta = 16;
    rotary_rope_scaling l3 = make(ROTARY_ROPE_SCALING_LLAMA3, 8, 8192);
    rotary_rope_scaling l3b = make(ROTARY_ROPE_SCALING_LLAMA3, 4, 1024);
    l3b.low_freq_factor = 2, l3b.high_freq_factor = 8;
    add("none", make(ROTARY_ROPE_SCALING_NONE, 1, 0), 128, 10000, 4096);
    add("linear x4", make(ROTARY_ROPE_SCALING_LINEAR, 4, 1024), 128, 10000, 4096);
    add("linear x2.5, d 64", make(ROTARY_ROPE_SCALING_LINEAR, 2.5, 512), 64, 10000, 1280);
    add("ntk x4", make(ROTARY_ROPE_SCALING_NTK, 4, 1024), 128, 10000, 4096);
    add("ntk x8, d 32, base 5e5", make(ROTARY_ROPE_SCALING_NTK, 8, 256), 32, 500000, 2048);
    add("dynamic-ntk, L = L0/2 (no scaling)", make(ROTARY_ROPE_SCALING_DYNAMIC_NTK, 1, 1024), 128,
        10000, 512);
    add("dynamic-ntk, L = 3 L0", make(ROTARY_ROPE_SCALING_DYNAMIC_NTK, 1, 1024), 128, 10000, 3072);
    add("dynamic-ntk, L = 4.5 L0, d 64", make(ROTARY_ROPE_SCALING_DYNAMIC_NTK, 1, 100), 64, 10000,
        450);
    add("yarn x4, L0 2048", y, 128, 10000, 8192);
    add("yarn x16, alpha 2, beta 16, base 5e5", y2, 128, 500000, 4096);
    add("llama3 x8, L0 8192, base 5e5", l3, 128, 500000, 4096);
    add("llama3 x4, low 2, high 8, d 64", l3b, 64, 10000, 4096);
    add("factors of llama3 x8, L0 8192, base 5e5", factors_of_llama3(128, 500000, 8, 8192, 1, 4),
        128, 500000, 4096);
    add("factors of llama3 x4, low 2, high 8, d 64", factors_of_llama3(64, 10000, 4, 1024, 2, 8),
        64, 10000, 4096);
}

/* (a) rotary_rope_inv_freq against the formulas; (b) the float32 tables
 * against cos/sin of the float64 angles. */
static void check_formulas(void) {
    for (int k = 0; k < n_cases; k++) {
        const scase *c = &cases[k];
        int half = c->d / 2;
        double got[256], err = 0;
        must(rotary_rope_inv_freq(got, c->d, c->base, &c->s, c->L), "inv_freq");
        for (int i = 0; i < half; i++) {
            double want = ref_freq(&c->s, i, c->d, c->base, c->L);
            err = fmax(err, fabs(got[i] - want) / want);
        }
        char name[160];
        snprintf(name, sizeof name, "(a) inv_freq, %s", c->label);
        report(name, err, 1e-12);

        double ms = ref_mscale(&c->s);
        report("    mscale", fabs(rotary_rope_scaling_mscale(&c->s) - ms), 1e-15);
        rotary_rope r;
        must(rotary_rope_init(&r, c->d + 2, c->d, c->base, ROTARY_ROPE_HALF, c->L, &c->s), "init");
        double terr = 0;
        for (int p = 0; p < c->L; p++)
            for (int i = 0; i < half; i++) {
                double a = p * ref_freq(&c->s, i, c->d, c->base, c->L);
                terr = fmax(terr, fabs(r.cos[(size_t)p * half + i] - ms * cos(a)));
                terr = fmax(terr, fabs(r.sin[(size_t)p * half + i] - ms * sin(a)));
            }
        snprintf(name, sizeof name, "(b) cos/sin tables, %s", c->label);
        report(name, terr, 1e-6);
        rotary_rope_free(&r);
    }
}

/* (c) linear at factor s: position s*p sees what unscaled position p sees. */
static void check_linear_positions(void) {
    const double factors[] = {2, 4, 8, 2.5};
    for (int k = 0; k < 4; k++) {
        double s = factors[k];
        int P = 1000, d = 64;
        rotary_rope_scaling sc = make(ROTARY_ROPE_SCALING_LINEAR, s, P);
        rotary_rope a, b;
        must(rotary_rope_init(&a, d, 0, 10000, ROTARY_ROPE_INTERLEAVED, P, NULL), "init");
        must(rotary_rope_init(&b, d, 0, 10000, ROTARY_ROPE_INTERLEAVED, (int)(s * P), &sc), "init");
        double err = 0;
        for (int p = 0; p < P; p += (s == floor(s) ? 1 : 2)) { /* s*p an integer */
            int q = (int)(s * p);
            for (int i = 0; i < d / 2; i++) {
                err = fmax(err, fabs(a.cos[(size_t)p * d / 2 + i] - b.cos[(size_t)q * d / 2 + i]));
                err = fmax(err, fabs(a.sin[(size_t)p * d / 2 + i] - b.sin[(size_t)q * d / 2 + i]));
            }
        }
        char name[128];
        snprintf(name, sizeof name, "(c) linear x%g: tables at s*p equal unscaled at p", s);
        /* A power of two divides exactly, so the tables agree bit for bit. */
        report(name, err, s == 2.5 ? 1e-6 : 0);
        rotary_rope_free(&a);
        rotary_rope_free(&b);
    }
}

/* (d) where each scheme leaves frequencies alone and where it divides them. */
static void check_shapes(void) {
    const int d = 128, half = d / 2, L0 = 2048;
    const double base = 10000, s = 8, two_pi = 2 * acos(-1.0);
    double f0[64], f[64];
    must(rotary_rope_inv_freq(f0, d, base, NULL, 1), "plain");

    rotary_rope_scaling ntk = make(ROTARY_ROPE_SCALING_NTK, s, L0);
    must(rotary_rope_inv_freq(f, d, base, &ntk, 1), "ntk");
    report("(d) ntk: highest frequency unchanged", fabs(f[0] - f0[0]), 0);
    report("(d) ntk: lowest frequency divided by s", fabs(f[half - 1] * s / f0[half - 1] - 1), 1e-12);
    double bad = 0;
    for (int i = 1; i < half; i++) bad += !(f[i] < f0[i] && f[i] >= f0[i] / s * (1 - 1e-12));
    report("(d) ntk: every other frequency in [f/s, f)", bad, 0);

    /* YaRN: r_i = L0 / wavelength_i; above beta kept, below alpha divided. */
    rotary_rope_scaling y = make(ROTARY_ROPE_SCALING_YARN, s, L0);
    must(rotary_rope_inv_freq(f, d, base, &y, 1), "yarn");
    int n_keep = 0, n_div = 0, n_mid = 0;
    double e_keep = 0, e_div = 0;
    bad = 0;
    for (int i = 0; i < half; i++) {
        double r = L0 * f0[i] / two_pi;
        if (r >= y.yarn_beta) n_keep++, e_keep = fmax(e_keep, fabs(f[i] - f0[i]));
        else if (r <= y.yarn_alpha) n_div++, e_div = fmax(e_div, fabs(f[i] * s / f0[i] - 1));
        else n_mid++, bad += !(f[i] > f0[i] / s && f[i] < f0[i]);
    }
    printf("     yarn x8, L0 2048, d 128: %d pairs kept, %d interpolated, %d ramped\n", n_keep,
           n_div, n_mid);
    report("(d) yarn: high frequencies (r >= beta) unchanged", e_keep, 0);
    report("(d) yarn: low frequencies (r <= alpha) divided by s", e_div, 1e-15);
    report("(d) yarn: the ramp lies strictly between", bad + (n_keep && n_div && n_mid ? 0 : 1), 0);
    rotary_rope r;
    must(rotary_rope_init(&r, d, 0, base, ROTARY_ROPE_HALF, 16, &y), "yarn tables");
    double ms = 0.1 * log(s) + 1, e_row0 = 0;
    for (int i = 0; i < half; i++) e_row0 = fmax(e_row0, fabs(r.cos[i] - (float)ms) + fabs(r.sin[i]));
    report("(d) yarn: position 0 has cos = 0.1 ln s + 1, sin = 0", e_row0, 0);
    rotary_rope_free(&r);

    rotary_rope_scaling l3 = make(ROTARY_ROPE_SCALING_LLAMA3, s, L0);
    must(rotary_rope_inv_freq(f, d, base, &l3, 1), "llama3");
    n_keep = n_div = n_mid = 0, e_keep = e_div = 0, bad = 0;
    for (int i = 0; i < half; i++) {
        double w = two_pi / f0[i];
        if (w < L0 / l3.high_freq_factor) n_keep++, e_keep = fmax(e_keep, fabs(f[i] - f0[i]));
        else if (w > L0 / l3.low_freq_factor) n_div++, e_div = fmax(e_div, fabs(f[i] * s / f0[i] - 1));
        else n_mid++, bad += !(f[i] > f0[i] / s && f[i] < f0[i]);
    }
    printf("     llama3 x8, L0 2048, d 128: %d pairs kept, %d divided, %d smoothed\n", n_keep, n_div,
           n_mid);
    report("(d) llama3: short wavelengths unchanged", e_keep, 0);
    report("(d) llama3: long wavelengths divided by s", e_div, 1e-15);
    report("(d) llama3: the smooth part lies strictly between", bad + (n_keep && n_div && n_mid ? 0 : 1), 0);
}

/* (e) the model: set_rope_scaling rebuilds; extend rebuilds dynamic NTK for
 * the new length; failures leave the model as it was. */
static void check_model(void) {
    rotary_config c;
    rotary_config_default(&c);
    c.n_layer = 1, c.n_head = 2, c.n_kv_head = 2, c.d_model = 32, c.d_ff = 32, c.ctx = 64;
    c.vocab = 16;
    c.rope_scaling = make(ROTARY_ROPE_SCALING_DYNAMIC_NTK, 1, 64);
    rotary_model m;
    must(rotary_model_build(&m, &c), "build");
    const int d = 16, half = 8;
    double err = 0;
    for (int i = 0; i < half; i++) err = fmax(err, fabs(m.rope.inv_freq[i] - plain(i, d, 10000)));
    report("(e) dynamic-ntk model at its ctx: frequencies unscaled", err, 0);
    must(rotary_model_extend(&m, 256), "extend");
    err = m.rope.max_pos == 256 ? 0 : 1;
    for (int i = 0; i < half; i++)
        err = fmax(err, fabs(m.rope.inv_freq[i] / ref_ntk(i, d, 10000, 4) - 1));
    for (int p = 0; p < 256; p++)
        for (int i = 0; i < half; i++)
            err = fmax(err, fabs(m.rope.cos[p * half + i] - cos(p * ref_ntk(i, d, 10000, 4))));
    report("(e) dynamic-ntk extended to 4 ctx: ntk x4 tables", err, 1e-6);

    rotary_rope_scaling y = make(ROTARY_ROPE_SCALING_YARN, 4, 64);
    must(rotary_model_set_rope_scaling(&m, &y), "set yarn");
    err = memcmp(&m.cfg.rope_scaling, &y, sizeof y) != 0 || m.rope.max_pos != 256;
    for (int i = 0; i < half; i++)
        err = fmax(err, fabs(m.rope.inv_freq[i] / ref_yarn(i, d, 10000, 4, 64, 1, 32) - 1));
    err = fmax(err, fabs(m.rope.cos[0] - (float)(0.1 * log(4.0) + 1)));
    report("(e) set_rope_scaling yarn: config, frequencies, mscale", err, 1e-12);

    rotary_rope_scaling bad = make(ROTARY_ROPE_SCALING_LINEAR, 0.5, 64);
    int rc = rotary_model_set_rope_scaling(&m, &bad);
    err = rc == ROTARY_EINVAL && m.cfg.rope_scaling.type == ROTARY_ROPE_SCALING_YARN &&
                  m.rope.scaling.type == ROTARY_ROPE_SCALING_YARN
              ? 0 : 1;
    report("(e) a refused scaling leaves the model unchanged", err, 0);
    must(rotary_model_set_rope_scaling(&m, NULL), "set none");
    err = m.cfg.rope_scaling.type != ROTARY_ROPE_SCALING_NONE || m.rope.mscale != 1.0;
    for (int i = 0; i < half; i++) err = fmax(err, fabs(m.rope.inv_freq[i] - plain(i, d, 10000)));
    report("(e) set_rope_scaling NULL: back to plain RoPE", err, 0);
    rotary_model_free(&m);

    c.pos = ROTARY_POS_ALIBI;
    c.rope_scaling = make(ROTARY_ROPE_SCALING_NONE, 1, 0);
    must(rotary_model_build(&m, &c), "build alibi");
    rc = rotary_model_set_rope_scaling(&m, &y);
    printf("     alibi model, set yarn: %s\n", rotary_last_error());
    report("(e) scaling refused for a model without rope", rc == ROTARY_EINVAL ? 0 : 1, 0);
    rotary_model_free(&m);
    c.rope_scaling = y;
    rc = rotary_model_build(&m, &c);
    printf("     alibi config with yarn: %s\n", rotary_last_error());
    report("(e) config with scaling but pos alibi refused", rc == ROTARY_EINVAL ? 0 : 1, 0);
}

/* (f) the transpose still holds with mscale != 1: <g, F x> = <F^T g, x>. */
static void check_transpose(void) {
    rotary_rope_scaling y = make(ROTARY_ROPE_SCALING_YARN, 16, 128);
    rotary_rope r;
    must(rotary_rope_init(&r, 32, 24, 10000, ROTARY_ROPE_INTERLEAVED, 2048, &y), "init");
    rotary_rng rng;
    rotary_rng_seed(&rng, 5);
    enum { T = 16, H = 2, N = T * H * 32 };
    float x[N], g[N], fx[N], ftg[N];
    int pos[T];
    for (int i = 0; i < N; i++) x[i] = rotary_rng_normal(&rng), g[i] = rotary_rng_normal(&rng);
    for (int t = 0; t < T; t++) pos[t] = (int)(rotary_rng_next(&rng) % 2048);
    memcpy(fx, x, sizeof x);
    memcpy(ftg, g, sizeof g);
    must(rotary_rope_forward(&r, fx, 1, T, H, H * 32, pos), "forward");
    must(rotary_rope_backward(&r, ftg, 1, T, H, H * 32, pos), "backward");
    double a = 0, b = 0, n = 0;
    for (int i = 0; i < N; i++) a += (double)g[i] * fx[i], b += (double)ftg[i] * x[i], n += fabs(g[i] * x[i]);
    report("(f) yarn x16 (mscale 1.28): <g, F x> = <F^T g, x>", fabs(a - b) / n, 1e-6);
    rotary_rope_free(&r);
}

/* (g) bad parameters: refused, with a message that names the problem. */
static int bad_failed, bad_count;

static void expect_refused(const rotary_rope_scaling *s, const char *needle, const char *what) {
    double out[64];
    rotary_rope r;
    bad_count++;
    rotary_fail(ROTARY_OK, "%s", "");
    int rc1 = rotary_rope_scaling_validate(s);
    char msg[256];
    snprintf(msg, sizeof msg, "%s", rotary_last_error());
    int rc2 = rotary_rope_inv_freq(out, 64, 10000, s, 100);
    int rc3 = rotary_rope_init(&r, 64, 0, 10000, ROTARY_ROPE_HALF, 16, s);
    int ok = rc1 == ROTARY_EINVAL && rc2 == ROTARY_EINVAL && rc3 == ROTARY_EINVAL &&
             strstr(msg, needle) != NULL && r.cos == NULL;
    printf("     %-36s %s\n", what, msg);
    if (!ok) {
        printf("     ^ not refused as expected (rc %d %d %d, wanted \"%s\")\n", rc1, rc2, rc3, needle);
        bad_failed++;
    }
}

static void check_bad(void) {
    rotary_rope_scaling s;
    s = make(ROTARY_ROPE_SCALING_LINEAR, 0.5, 100);
    expect_refused(&s, "factor 0.5", "factor < 1");
    s = make(ROTARY_ROPE_SCALING_NTK, NAN, 100);
    expect_refused(&s, "factor nan", "factor NaN");
    s = make(ROTARY_ROPE_SCALING_YARN, INFINITY, 100);
    expect_refused(&s, "factor inf", "factor inf");
    s = make(ROTARY_ROPE_SCALING_YARN, 4, 100);
    s.yarn_alpha = 32, s.yarn_beta = 32;
    expect_refused(&s, "alpha < beta", "yarn alpha == beta");
    s.yarn_alpha = 40;
    expect_refused(&s, "alpha < beta", "yarn alpha > beta");
    s.yarn_alpha = -1, s.yarn_beta = 4;
    expect_refused(&s, "0 <= alpha", "yarn alpha < 0");
    s = make(ROTARY_ROPE_SCALING_LLAMA3, 8, 8192);
    s.low_freq_factor = 4, s.high_freq_factor = 4;
    expect_refused(&s, "low_freq_factor < high_freq_factor", "llama3 low == high");
    s = make(99, 4, 100);
    expect_refused(&s, "unknown type 99", "unknown type");
    s = make(-1, 4, 100);
    expect_refused(&s, "unknown type -1", "negative type");
    s = make(ROTARY_ROPE_SCALING_LINEAR, 4, 0);
    expect_refused(&s, "original_ctx 0", "original_ctx 0");
    s = make(ROTARY_ROPE_SCALING_DYNAMIC_NTK, 1, -8);
    expect_refused(&s, "original_ctx -8", "original_ctx < 0");
    s = make(ROTARY_ROPE_SCALING_LINEAR, 4, 100);
    s.mscale = -1;
    expect_refused(&s, "mscale", "mscale < 0");
    /* factors: count and values (64 dims here: 32 pairs) */
    s = factors_of_llama3(64, 10000, 4, 100, 1, 4);
    s.n_factors = 0;
    expect_refused(&s, "n_factors 0", "factors: none");
    s.n_factors = ROTARY_ROPE_MAX_FACTORS + 1;
    expect_refused(&s, "n_factors 129", "factors: 129");
    s.n_factors = 32;
    const float badf[4] = {NAN, 0.0f, -2.0f, INFINITY};
    const char *const badn[4] = {"factor 5 is nan", "factor 5 is 0", "factor 5 is -2",
                                 "factor 5 is inf"};
    for (int k = 0; k < 4; k++) {
        rotary_rope_scaling t = s;
        t.freq_factors[5] = badf[k];
        expect_refused(&t, badn[k], badn[k]);
    }
    char name[96];
    snprintf(name, sizeof name, "(g) %d bad scalings refused with a message", bad_count);
    report(name, bad_failed, 0);

    /* NONE ignores its parameters; other arguments are still checked. */
    s = make(ROTARY_ROPE_SCALING_NONE, 0.5, -3);
    double out[8];
    int err = rotary_rope_scaling_validate(&s) != ROTARY_OK;
    err += rotary_rope_inv_freq(out, 15, 10000, NULL, 1) != ROTARY_EINVAL;
    err += rotary_rope_inv_freq(out, 16, 1.0, NULL, 1) != ROTARY_EINVAL;
    err += rotary_rope_inv_freq(NULL, 16, 10000, NULL, 1) != ROTARY_EINVAL;
    s = make(ROTARY_ROPE_SCALING_DYNAMIC_NTK, 1, 100);
    err += rotary_rope_inv_freq(out, 16, 10000, &s, 0) != ROTARY_EINVAL;
    report("(g) none ignores its fields; dim, base, length checked", err, 0);

    rotary_config c;
    rotary_config_default(&c);
    c.rope_scaling = make(ROTARY_ROPE_SCALING_LINEAR, 0.25, 128);
    rotary_model m;
    int rc = rotary_model_build(&m, &c);
    printf("     config with factor 0.25: %s\n", rotary_last_error());
    report("(g) rotary_config_validate refuses a bad scaling", rc == ROTARY_EINVAL ? 0 : 1, 0);
}

/* (i) per-pair factors: those of a Llama 3 scaling give its frequencies (to
 * float32 rounding); their count must be the rope's pairs; the model takes
 * them and gives them up for another scaling. */
static void check_factors(void) {
    const int d = 64;
    double f3[32], ff[32];
    rotary_rope_scaling l3 = make(ROTARY_ROPE_SCALING_LLAMA3, 8, 100);
    rotary_rope_scaling fs = factors_of_llama3(d, 10000, 8, 100, 1, 4);
    must(rotary_rope_inv_freq(f3, d, 10000, &l3, 1), "llama3");
    must(rotary_rope_inv_freq(ff, d, 10000, &fs, 1), "factors");
    double err = 0;
    int n_one = 0, n_s = 0;
    for (int i = 0; i < d / 2; i++) {
        err = fmax(err, fabs(ff[i] / f3[i] - 1));
        n_one += fs.freq_factors[i] == 1.0f, n_s += fs.freq_factors[i] == 8.0f;
    }
    printf("     factors of llama3 x8, L0 100, d 64: %d are 1, %d are 8, %d between\n", n_one,
           n_s, d / 2 - n_one - n_s);
    report("(i) factors of llama3 give its frequencies", err + (n_one && n_s ? 0 : 1), 1.2e-7);

    /* Valid values, but 16 factors for 32 pairs. */
    rotary_rope_scaling few = fs;
    few.n_factors = 16;
    rotary_rope r;
    int e = rotary_rope_scaling_validate(&few) != ROTARY_OK;
    e += rotary_rope_inv_freq(ff, d, 10000, &few, 1) != ROTARY_EINVAL;
    e += !strstr(rotary_last_error(), "16 factors for rotary_dim 64");
    e += rotary_rope_init(&r, d, 0, 10000, ROTARY_ROPE_HALF, 8, &few) != ROTARY_EINVAL;
    e += r.cos != NULL;
    printf("     16 factors, rotary_dim 64: %s\n", rotary_last_error());

    rotary_config c;
    rotary_config_default(&c);
    c.n_layer = 1, c.n_head = 2, c.n_kv_head = 2, c.d_model = 128, c.d_ff = 32, c.ctx = 16;
    c.vocab = 16;
    c.rope_scaling = few;
    rotary_model m;
    e += rotary_model_build(&m, &c) != ROTARY_EINVAL;
    e += !strstr(rotary_last_error(), "16 factors, but rotary_dim 64 has 32 pairs");
    printf("     config, 16 factors: %s\n", rotary_last_error());
    report("(i) a count other than rotary_dim/2 refused", e, 0);

    c.rope_scaling = fs;
    must(rotary_model_build(&m, &c), "build with factors");
    err = memcmp(&m.cfg.rope_scaling, &fs, sizeof fs) != 0;
    for (int i = 0; i < d / 2; i++)
        err = fmax(err, fabs(m.rope.inv_freq[i] / (plain(i, d, 10000) / fs.freq_factors[i]) - 1));
    report("(i) model with factors: inv_freq = base^(-2i/d) / f_i", err, 1e-15);
    rotary_rope_scaling lin = make(ROTARY_ROPE_SCALING_LINEAR, 2, 16);
    must(rotary_model_set_rope_scaling(&m, &lin), "set linear");
    err = memcmp(&m.cfg.rope_scaling, &lin, sizeof lin) != 0;
    for (int i = 0; i < d / 2; i++)
        err = fmax(err, fabs(m.rope.inv_freq[i] / (plain(i, d, 10000) / 2) - 1));
    report("(i) set_rope_scaling linear replaces the factors", err, 1e-15);
    rotary_model_free(&m);
}

static void check_names(void) {
    int err = 0;
    for (int t = 0; t <= ROTARY_ROPE_SCALING_FACTORS; t++)
        err += rotary_rope_scaling_parse(rotary_rope_scaling_name(t)) != t;
    err += rotary_rope_scaling_parse("warp") != -1 || rotary_rope_scaling_parse(NULL) != -1;
    err += rotary_rope_scaling_name(7) != NULL || rotary_rope_scaling_name(-1) != NULL;
    err += strcmp(rotary_rope_scaling_name(ROTARY_ROPE_SCALING_DYNAMIC_NTK), "dynamic-ntk") != 0;
    err += strcmp(rotary_rope_scaling_name(ROTARY_ROPE_SCALING_FACTORS), "factors") != 0;
    report("(h) names: none ... llama3 factors round trip", err, 0);
}

int main(void) {
    make_cases();
    check_formulas();
    check_linear_positions();
    check_shapes();
    check_model();
    check_transpose();
    check_bad();
    check_factors();
    check_names();
    if (failures) {
        printf("test_rope_scaling: %d check(s) FAILED\n", failures);
        return 1;
    }
    printf("test_rope_scaling: all checks passed\n");
    return 0;
}
