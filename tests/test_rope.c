/* test_rope.c: RoPE tables and apply against a float64 reference written here.
 * Exit 0 when every check passes; one summary line per check. */
#include "internal.h"
#include "rotary.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
static rotary_rng rng;

static void report(const char *name, double err, double tol) {
    int ok = err <= tol; /* false for NaN */
    printf("%-4s %-58s max err %.3e (tol %.0e)\n", ok ? "ok" : "FAIL", name, err, tol);
    if (!ok) failures++;
}

static void fill_normal(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = rotary_rng_normal(&rng);
}

static int rand_int(int n) { return (int)(rotary_rng_next(&rng) % (uint64_t)n); }

static const char *pairing_name(int p) { return p == ROTARY_ROPE_HALF ? "half" : "interleaved"; }

static void must(int rc, const char *what) {
    if (rc != ROTARY_OK) {
        fprintf(stderr, "FAIL %s: %s\n", what, rotary_last_error());
        exit(1);
    }
}

/* Coordinates rotated together by pair i of a head, by pairing. */
static void pair_index(int pairing, int rd, int i, int *j0, int *j1) {
    *j0 = pairing == ROTARY_ROPE_HALF ? i : 2 * i;
    *j1 = pairing == ROTARY_ROPE_HALF ? i + rd / 2 : 2 * i + 1;
}

/* float64 reference: out = R(pos) x for one head; pos may be negative. */
static void ref_rotate(double *out, const float *x, int hd, int rd, int pairing, double base,
                       double pos) {
    for (int j = 0; j < hd; j++) out[j] = x[j];
    for (int i = 0; i < rd / 2; i++) {
        double a = pos * pow(base, -2.0 * i / rd), c = cos(a), s = sin(a);
        int j0, j1;
        pair_index(pairing, rd, i, &j0, &j1);
        out[j0] = x[j0] * c - x[j1] * s;
        out[j1] = x[j0] * s + x[j1] * c;
    }
}

static double dotf(const float *a, const float *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static double dotfd(const float *a, const double *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* (a) <R_m q, R_n k> depends only on m - n. Errors are relative to |q||k|,
 * the scale of the score, because a score itself can be ~0. */
static void check_relative(void) {
    const int shifts[] = {1, 7, 100, 1000, 4097, 30000, 65535, 65536};
    const int ns = (int)(sizeof shifts / sizeof shifts[0]);
    const int span = 4096, max_pos = span + 65536;
    const int hds[] = {64, 128};
    const double bases[] = {10000.0, 500000.0};
    for (int ih = 0; ih < 2; ih++)
        for (int pairing = 0; pairing < 2; pairing++)
            for (int ib = 0; ib < 2; ib++) {
                int hd = hds[ih];
                double base = bases[ib];
                rotary_rope r;
                must(rotary_rope_init(&r, hd, 0, base, pairing, max_pos, NULL), "init");
                float q[128], k[128], qk[256];
                double kref[128];
                double err_shift = 0, err_ref = 0;
                for (int trial = 0; trial < 20; trial++) {
                    fill_normal(q, hd);
                    fill_normal(k, hd);
                    int m = rand_int(span), n = rand_int(span);
                    double scale = sqrt(dotf(q, q, hd) * dotf(k, k, hd));
                    ref_rotate(kref, k, hd, hd, pairing, base, (double)(n - m));
                    double want = dotfd(q, kref, hd);
                    double s0 = 0;
                    for (int is = -1; is < ns; is++) {
                        int sft = is < 0 ? 0 : shifts[is];
                        int pos[2] = {m + sft, n + sft};
                        /* q and k as two time steps of one head */
                        memcpy(qk, q, hd * sizeof(float));
                        memcpy(qk + hd, k, hd * sizeof(float));
                        must(rotary_rope_forward(&r, qk, 1, 2, 1, hd, pos), "forward");
                        double sc = dotf(qk, qk + hd, hd);
                        if (is < 0) s0 = sc;
                        err_shift = fmax(err_shift, fabs(sc - s0) / scale);
                        err_ref = fmax(err_ref, fabs(sc - want) / scale);
                    }
                }
                char name[128];
                snprintf(name, sizeof name, "(a) shift invariance hd=%d %s base=%g", hd,
                         pairing_name(pairing), base);
                report(name, err_shift, 1e-4);
                snprintf(name, sizeof name, "(a) score vs f64 f(m-n) hd=%d %s base=%g", hd,
                         pairing_name(pairing), base);
                report(name, err_ref, 1e-4);
                rotary_rope_free(&r);
            }
}

/* (b) each head keeps its norm; (d) forward/backward match the float64
 * reference and the tail dims >= rotary_dim stay bit-identical. */
static void check_against_reference(int hd, int rd, double base, int check_norm) {
    const int B = 2, T = 9, H = 3, max_pos = 65536;
    const size_t n = (size_t)B * T * H * hd;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    double ref[128];
    for (int pairing = 0; pairing < 2; pairing++) {
        rotary_rope r;
        must(rotary_rope_init(&r, hd, rd, base, pairing, max_pos, NULL), "init");
        int pos[9];
        for (int t = 0; t < T; t++) pos[t] = t < 3 ? t : rand_int(max_pos);
        pos[T - 1] = max_pos - 1;
        fill_normal(x, n);
        double err_norm = 0, err_ref[2] = {0, 0};
        int tail_same = 1;
        for (int dir = 0; dir < 2; dir++) {
            memcpy(y, x, n * sizeof(float));
            int rc = dir == 0 ? rotary_rope_forward(&r, y, B, T, H, H * hd, pos)
                              : rotary_rope_backward(&r, y, B, T, H, H * hd, pos);
            must(rc, "apply");
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++)
                    for (int h = 0; h < H; h++) {
                        size_t o = (((size_t)b * T + t) * H + h) * hd;
                        ref_rotate(ref, x + o, hd, rd, pairing, base,
                                   dir == 0 ? pos[t] : -(double)pos[t]);
                        for (int j = 0; j < hd; j++)
                            err_ref[dir] = fmax(err_ref[dir], fabs(y[o + j] - ref[j]));
                        double nx = sqrt(dotf(x + o, x + o, hd));
                        double ny = sqrt(dotf(y + o, y + o, hd));
                        err_norm = fmax(err_norm, fabs(ny - nx) / nx);
                        if (memcmp(y + o + rd, x + o + rd, (size_t)(hd - rd) * sizeof(float)))
                            tail_same = 0;
                    }
        }
        char name[128];
        const char *pn = pairing_name(pairing);
        if (check_norm) {
            snprintf(name, sizeof name, "(b) head norm kept hd=%d rd=%d %s (rel)", hd, rd, pn);
            report(name, err_norm, 1e-5);
        }
        snprintf(name, sizeof name, "(d) forward vs f64 hd=%d rd=%d %s base=%g", hd, rd, pn,
                 base);
        report(name, err_ref[0], 1e-6);
        snprintf(name, sizeof name, "(d) backward vs f64 R(-theta) hd=%d rd=%d %s", hd, rd, pn);
        report(name, err_ref[1], 1e-6);
        if (rd < hd) {
            snprintf(name, sizeof name, "(d) tail dims bit-identical hd=%d rd=%d %s", hd, rd, pn);
            report(name, tail_same ? 0.0 : INFINITY, 0.0);
        }
        rotary_rope_free(&r);
    }
    free(x);
    free(y);
}

/* (c) backward is the transpose: <g, R x> == <R^T g, x>, plus finite
 * differences of L(x) = <g, R x>. L is linear, so a large step is exact up to
 * float rounding of R x, which the tolerance covers. */
static void check_transpose(void) {
    const int B = 2, T = 3, H = 2, hd = 16, max_pos = 70000;
    const int n = B * T * H * hd;
    float x[192], g[192], rx[192], rtg[192], xp[192];
    for (int pairing = 0; pairing < 2; pairing++)
        for (int rd = 16; rd >= 8; rd -= 8) {
            rotary_rope r;
            must(rotary_rope_init(&r, hd, rd, 10000.0, pairing, max_pos, NULL), "init");
            int pos[3] = {5, 1234, 69999};
            double err_t = 0, err_fd = 0;
            for (int trial = 0; trial < 10; trial++) {
                fill_normal(x, n);
                fill_normal(g, n);
                memcpy(rx, x, sizeof x);
                memcpy(rtg, g, sizeof g);
                must(rotary_rope_forward(&r, rx, B, T, H, H * hd, pos), "forward");
                must(rotary_rope_backward(&r, rtg, B, T, H, H * hd, pos), "backward");
                double scale = sqrt(dotf(g, g, n) * dotf(x, x, n));
                err_t = fmax(err_t, fabs(dotf(g, rx, n) - dotf(rtg, x, n)) / scale);
            }
            /* central differences on the last trial, every coordinate */
            const float step = 0.25f;
            double gnorm = sqrt(dotf(g, g, n));
            for (int j = 0; j < n; j++) {
                double l[2];
                for (int sgn = 0; sgn < 2; sgn++) {
                    memcpy(xp, x, sizeof x);
                    xp[j] += sgn ? -step : step;
                    must(rotary_rope_forward(&r, xp, B, T, H, H * hd, pos), "forward");
                    l[sgn] = dotf(g, xp, n);
                }
                double fd = (l[0] - l[1]) / ((double)(x[j] + step) - (double)(x[j] - step));
                err_fd = fmax(err_fd, fabs(fd - rtg[j]) / gnorm);
            }
            char name[128];
            snprintf(name, sizeof name, "(c) <g,Rx> == <R^T g,x> rd=%d %s (rel)", rd,
                     pairing_name(pairing));
            report(name, err_t, 1e-5);
            snprintf(name, sizeof name, "(c) finite differences vs backward rd=%d %s (rel)", rd,
                     pairing_name(pairing));
            report(name, err_fd, 1e-4);
            rotary_rope_free(&r);
        }
}

/* (e) q and k inside a packed (T, (nh + 2*nkv)*hd) qkv row equal a
 * contiguous copy, and v is untouched. */
static void check_strided(void) {
    const int B = 2, T = 7, nh = 4, nkv = 2, hd = 32, C = (nh + 2 * nkv) * hd;
    const size_t rows = (size_t)B * T;
    float *qkv = malloc(rows * C * sizeof(float)), *orig = malloc(rows * C * sizeof(float));
    float *q = malloc(rows * nh * hd * sizeof(float)), *k = malloc(rows * nkv * hd * sizeof(float));
    for (int pairing = 0; pairing < 2; pairing++)
        for (int dir = 0; dir < 2; dir++) {
            rotary_rope r;
            must(rotary_rope_init(&r, hd, 0, 10000.0, pairing, 4096, NULL), "init");
            int pos[7] = {100, 101, 102, 4095, 0, 7, 3000};
            fill_normal(qkv, rows * C);
            memcpy(orig, qkv, rows * C * sizeof(float));
            for (size_t i = 0; i < rows; i++) {
                memcpy(q + i * nh * hd, qkv + i * C, nh * hd * sizeof(float));
                memcpy(k + i * nkv * hd, qkv + i * C + nh * hd, nkv * hd * sizeof(float));
            }
            int (*apply)(const rotary_rope *, float *, int, int, int, int, const int *) =
                dir == 0 ? rotary_rope_forward : rotary_rope_backward;
            must(apply(&r, qkv, B, T, nh, C, pos), "strided q");
            must(apply(&r, qkv + nh * hd, B, T, nkv, C, pos), "strided k");
            must(apply(&r, q, B, T, nh, nh * hd, pos), "contiguous q");
            must(apply(&r, k, B, T, nkv, nkv * hd, pos), "contiguous k");
            double err = 0;
            for (size_t i = 0; i < rows; i++) {
                for (int j = 0; j < nh * hd; j++)
                    err = fmax(err, fabs(qkv[i * C + j] - q[i * nh * hd + j]));
                for (int j = 0; j < nkv * hd; j++)
                    err = fmax(err, fabs(qkv[i * C + nh * hd + j] - k[i * nkv * hd + j]));
                if (memcmp(qkv + i * C + (nh + nkv) * hd, orig + i * C + (nh + nkv) * hd,
                           nkv * hd * sizeof(float)))
                    err = INFINITY;
            }
            char name[128];
            snprintf(name, sizeof name, "(e) packed qkv row == contiguous %s %s",
                     dir ? "backward" : "forward", pairing_name(pairing));
            report(name, err, 0.0);
            rotary_rope_free(&r);
        }
    free(qkv);
    free(orig);
    free(q);
    free(k);
}

/* (e) a call big enough to run threaded equals one call per row (serial). */
static void check_threaded(void) {
    const int B = 3, T = 200, H = 4, hd = 64, max_pos = 8192;
    const size_t n = (size_t)B * T * H * hd;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    int pos[200];
    for (int pairing = 0; pairing < 2; pairing++) {
        rotary_rope r;
        must(rotary_rope_init(&r, hd, 48, 10000.0, pairing, max_pos, NULL), "init");
        for (int t = 0; t < T; t++) pos[t] = rand_int(max_pos);
        fill_normal(x, n);
        memcpy(y, x, n * sizeof(float));
        must(rotary_rope_forward(&r, x, B, T, H, H * hd, pos), "forward");
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                must(rotary_rope_forward(&r, y + ((size_t)b * T + t) * H * hd, 1, 1, H, H * hd,
                                         &pos[t]),
                     "forward one row");
        char name[128];
        snprintf(name, sizeof name, "(e) large (threaded) call == row by row %s",
                 pairing_name(pairing));
        report(name, memcmp(x, y, n * sizeof(float)) ? INFINITY : 0.0, 0.0);
        rotary_rope_free(&r);
    }
    free(x);
    free(y);
}

/* (f) bad input returns an error with a message and leaves x untouched. */
static int bad_count, bad_failed;

static void expect_error(int rc, const char *what) {
    const char *msg = rotary_last_error();
    bad_count++;
    if (rc >= 0 || !msg[0]) {
        printf("     bad input not rejected: %s (rc %d)\n", what, rc);
        bad_failed++;
    }
    rotary_fail(ROTARY_OK, "%s", ""); /* clear, so the next check sees a fresh message */
}

static void check_bad_input(void) {
    rotary_rope r;
    rotary_fail(ROTARY_OK, "%s", "");
    expect_error(rotary_rope_init(&r, 64, 15, 1e4, ROTARY_ROPE_HALF, 16, NULL), "odd rotary_dim");
    expect_error(rotary_rope_init(&r, 64, 66, 1e4, ROTARY_ROPE_HALF, 16, NULL), "rotary_dim > head_dim");
    expect_error(rotary_rope_init(&r, 64, -2, 1e4, ROTARY_ROPE_HALF, 16, NULL), "negative rotary_dim");
    expect_error(rotary_rope_init(&r, 0, 0, 1e4, ROTARY_ROPE_HALF, 16, NULL), "head_dim 0");
    expect_error(rotary_rope_init(&r, 63, 0, 1e4, ROTARY_ROPE_HALF, 16, NULL), "odd head_dim, full");
    expect_error(rotary_rope_init(&r, 64, 0, 1.0, ROTARY_ROPE_HALF, 16, NULL), "base 1");
    expect_error(rotary_rope_init(&r, 64, 0, NAN, ROTARY_ROPE_HALF, 16, NULL), "base NaN");
    expect_error(rotary_rope_init(&r, 64, 0, INFINITY, ROTARY_ROPE_HALF, 16, NULL), "base inf");
    expect_error(rotary_rope_init(&r, 64, 0, 1e4, (rotary_rope_pairing)7, 16, NULL), "pairing 7");
    expect_error(rotary_rope_init(&r, 64, 0, 1e4, ROTARY_ROPE_HALF, 0, NULL), "max_pos 0");
    expect_error(rotary_rope_init(&r, 64, 0, 1e4, ROTARY_ROPE_HALF, -5, NULL), "max_pos < 0");
    expect_error(rotary_rope_init(&r, INT_MAX - 1, 0, 1e4, ROTARY_ROPE_HALF, INT_MAX, NULL),
                 "huge table");
    expect_error(rotary_rope_init(NULL, 64, 0, 1e4, ROTARY_ROPE_HALF, 16, NULL), "NULL rope");
    rotary_rope_free(&r); /* zeroed by the failed init: must be harmless */

    rotary_rope empty = {0};
    float x[4 * 2 * 8], x0[4 * 2 * 8];
    fill_normal(x, 64);
    memcpy(x0, x, sizeof x);
    int ok_pos[4] = {0, 1, 2, 3};
    expect_error(rotary_rope_forward(&empty, x, 1, 4, 2, 16, ok_pos), "uninitialised rope");
    must(rotary_rope_init(&r, 8, 0, 1e4, ROTARY_ROPE_INTERLEAVED, 16, NULL), "init");
    int neg[4] = {0, 1, 2, -1}, big[4] = {0, 1, 2, 16}, huge[4] = {0, INT_MAX, 2, 3};
    for (int dir = 0; dir < 2; dir++) {
        int (*apply)(const rotary_rope *, float *, int, int, int, int, const int *) =
            dir == 0 ? rotary_rope_forward : rotary_rope_backward;
        expect_error(apply(&r, x, 1, 4, 2, 16, neg), "negative position");
        expect_error(apply(&r, x, 1, 4, 2, 16, big), "position == max_pos");
        expect_error(apply(&r, x, 1, 4, 2, 16, huge), "position INT_MAX");
        expect_error(apply(&r, x, 0, 4, 2, 16, ok_pos), "B = 0");
        expect_error(apply(&r, x, -1, 4, 2, 16, ok_pos), "B < 0");
        expect_error(apply(&r, x, 1, 0, 2, 16, ok_pos), "T = 0");
        expect_error(apply(&r, x, 1, -3, 2, 16, ok_pos), "T < 0");
        expect_error(apply(&r, x, 1, 4, 0, 16, ok_pos), "n_head = 0");
        expect_error(apply(&r, x, 1, 4, 2, 15, ok_pos), "row_stride < n_head*head_dim");
        expect_error(apply(&r, x, INT_MAX, INT_MAX, 2, INT_MAX, ok_pos), "size overflow");
        expect_error(apply(&r, NULL, 1, 4, 2, 16, ok_pos), "NULL x");
        expect_error(apply(&r, x, 1, 4, 2, 16, NULL), "NULL pos");
        expect_error(apply(NULL, x, 1, 4, 2, 16, ok_pos), "NULL rope");
    }
    int untouched = memcmp(x, x0, sizeof x) == 0;
    rotary_rope_free(&r);
    rotary_rope_free(&r); /* twice: harmless */
    char name[128];
    snprintf(name, sizeof name, "(f) %d bad inputs rejected with a message", bad_count);
    report(name, bad_failed, 0);
    report("(f) data untouched by rejected calls", untouched ? 0.0 : INFINITY, 0.0);
}

int main(void) {
    rotary_rng_seed(&rng, 1234);
    check_relative();
    check_against_reference(64, 64, 10000.0, 1);
    check_against_reference(128, 128, 500000.0, 1);
    check_against_reference(64, 16, 10000.0, 1);
    check_against_reference(40, 24, 10000.0, 1);
    check_transpose();
    check_strided();
    check_threaded();
    check_bad_input();
    if (failures) {
        printf("test_rope: %d check(s) FAILED\n", failures);
        return 1;
    }
    printf("test_rope: all checks passed\n");
    return 0;
}
