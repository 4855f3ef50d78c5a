/* test_decode: float16/bfloat16 conversion, the float32, bfloat16 and
 * Q8_0 matrix-vector kernels against float64 references, Q8_0 round trips,
 * and the decoder with and without rotary_decoder_quantize against the full
 * forward pass, and with rotary_decoder_bf16 against the float32 decoder
 * on rounded weights. */
#include "half.h"
#include "matvec.h"
#include "rotary.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define EXPECT(cond, ...)                                       \
    do {                                                        \
        if (!(cond)) {                                          \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);         \
            printf(__VA_ARGS__);                                \
            printf("\n");                                       \
            failures++;                                         \
        }                                                       \
    } while (0)

static void *xalloc(size_t n) {
    void *p = aligned_alloc(64, (n + 63) & ~(size_t)63);
    if (!p) {
        printf("FAIL: out of memory\n");
        exit(1);
    }
    return p;
}

/* ------------------------------------------------------------ f16, bf16 */

/* Nearest-even check of a conversion result h for f: no representable
 * neighbour is strictly closer, and on a tie h is even. */
static void check_f16_rounding(float f, uint16_t h) {
    const double v = rotary_f16_to_f32(h), x = f;
    if (fabs(x) >= 65520.0) {
        EXPECT((h & 0x7fff) == 0x7c00 && (h >> 15) == (f < 0), "f16(%a) = %04x: not infinity", f,
               h);
        return;
    }
    EXPECT((h & 0x7c00) != 0x7c00, "f16(%a) = %04x: not finite", f, h);
    EXPECT(signbit(v) == signbit(x), "f16(%a) = %04x: sign", f, h);
    const double err = fabs(v - x);
    /* neighbours in magnitude: |h| - 1 and |h| + 1 (same sign) */
    const uint16_t mag = h & 0x7fff, sign = h & 0x8000;
    for (int dlt = -1; dlt <= 1; dlt += 2) {
        if ((mag == 0 && dlt < 0) || mag + dlt > 0x7bff) continue;
        const double n = rotary_f16_to_f32((uint16_t)(sign | (mag + dlt)));
        const double en = fabs(n - x);
        EXPECT(err < en || (err == en && (mag & 1) == 0), "f16(%a) = %04x (%.9g): %04x is closer",
               f, h, v, sign | (mag + dlt));
    }
}

static void test_half(void) {
    /* every f16 value: to float and back is the identity (NaN stays NaN) */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = rotary_f16_to_f32((uint16_t)h);
        const uint16_t back = rotary_f32_to_f16(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) bad += !isnan(f) || (back & 0x7fff) <= 0x7c00;
        else bad += back != h;
    }
    EXPECT(bad == 0, "f16 -> f32 -> f16: %d values changed", bad);
    EXPECT(rotary_f16_to_f32(0x0001) == 0x1p-24f && rotary_f16_to_f32(0x03ff) == 0x3ffp-24f &&
               rotary_f16_to_f32(0x0400) == 0x1p-14f && rotary_f16_to_f32(0x7bff) == 65504.0f &&
               rotary_f16_to_f32(0x3c00) == 1.0f && rotary_f16_to_f32(0xc000) == -2.0f &&
               isinf(rotary_f16_to_f32(0x7c00)),
           "f16 special values");
    /* ties: halfway between subnormals, between normals, at the top */
    EXPECT(rotary_f32_to_f16(0x1p-25f) == 0 && rotary_f32_to_f16(0x3p-25f) == 2 &&
               rotary_f32_to_f16(0x1.8p-25f) == 1 && rotary_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00 &&
               rotary_f32_to_f16(1.0f + 0x3p-11f) == 0x3c02 &&
               rotary_f32_to_f16(65519.99f) == 0x7bff &&
               rotary_f32_to_f16(65520.0f) == 0x7c00 && rotary_f32_to_f16(-1e-30f) == 0x8000,
           "f16 rounding of ties and edges");
    /* random floats over the f16 range and around it */
    rotary_rng rng;
    rotary_rng_seed(&rng, 5);
    for (int i = 0; i < 200000; i++) {
        const uint32_t e = 100 + (uint32_t)(rotary_rng_next(&rng) % 45); /* 2^-27 .. 2^17 */
        const uint32_t bits = (uint32_t)(rotary_rng_next(&rng) & 0x807fffffu) | (e << 23);
        const float f = rotary_bits_f32(bits);
        check_f16_rounding(f, rotary_f32_to_f16(f));
    }
    /* bf16: every value round trips; rounding is to nearest even */
    bad = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        const float f = rotary_bf16_to_f32((uint16_t)b);
        if (isnan(f)) bad += !isnan(rotary_bf16_to_f32(rotary_f32_to_bf16(f)));
        else bad += rotary_f32_to_bf16(f) != b;
    }
    EXPECT(bad == 0, "bf16 -> f32 -> bf16: %d values changed", bad);
    EXPECT(rotary_f32_to_bf16(rotary_bits_f32(0x3f808000u)) == 0x3f80 &&
               rotary_f32_to_bf16(rotary_bits_f32(0x3f818000u)) == 0x3f82 &&
               rotary_f32_to_bf16(rotary_bits_f32(0x3f808001u)) == 0x3f81 &&
               rotary_f32_to_bf16(rotary_bits_f32(0x7f7fffffu)) == 0x7f80 &&
               rotary_f32_to_bf16(rotary_bits_f32(0x00000001u)) == 0x0000,
           "bf16 rounding");
    printf("f16/bf16 conversions: ok\n");
}

/* ---------------------------------------------------------------- matvec */

static const int shapes[][2] = {{1, 1},    {3, 17},   {5, 32},   {7, 100},
                                {33, 288},  {13, 512}, {11, 530}, {64, 96},
                                {130, 64},  {37, 768}, {300, 2048}, {1000, 300}};
enum { N_SHAPES = sizeof shapes / sizeof *shapes };

static void fill(float *x, size_t n, rotary_rng *rng, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * rotary_rng_normal(rng);
}

/* matvec_f32 against float64: the error of any order of float32 sums with
 * C terms is at most C * 2^-24 * sum |w x| (plus the bias and accumulate
 * additions); bias and accumulate are checked too. */
static void test_matvec_f32(void) {
    rotary_rng rng;
    rotary_rng_seed(&rng, 1);
    double worst = 0;
    for (int s = 0; s < N_SHAPES; s++) {
        const int OC = shapes[s][0], C = shapes[s][1];
        float *w = xalloc((size_t)OC * C * 4), *x = xalloc((size_t)C * 4);
        float *b = xalloc((size_t)OC * 4);
        float *y = xalloc((size_t)OC * 4), *y0 = xalloc((size_t)OC * 4);
        fill(w, (size_t)OC * C, &rng, 1), fill(x, (size_t)C, &rng, 1), fill(b, (size_t)OC, &rng, 1);
        fill(y0, (size_t)OC, &rng, 1);
        for (int variant = 0; variant < 3; variant++) { /* plain, + bias, accumulate + bias */
            memcpy(y, y0, (size_t)OC * 4);
            matvec_f32(y, w, x, variant ? b : NULL, C, OC, variant == 2);
            for (int r = 0; r < OC; r++) {
                double ref = 0, mag = 0;
                for (int i = 0; i < C; i++) {
                    ref += (double)w[(size_t)r * C + i] * x[i];
                    mag += fabs((double)w[(size_t)r * C + i] * x[i]);
                }
                if (variant) ref += b[r], mag += fabs(b[r]);
                if (variant == 2) ref += y0[r], mag += fabs(y0[r]);
                const double err = fabs(y[r] - ref), bound = (C + 2) * 0x1p-24 * mag;
                EXPECT(err <= bound, "f32 %dx%d row %d: error %g > bound %g", OC, C, r, err, bound);
                worst = err / bound > worst ? err / bound : worst;
            }
        }
        free(w), free(x), free(b), free(y), free(y0);
    }
    printf("matvec_f32: %d shapes, worst error %.3f of the bound\n", N_SHAPES, worst);
}

/* matvec_bf16 against float64 on the rounded weights: the packed matrix
 * holds every weight rounded to nearest even (and zeros past C), and the
 * product is within matvec_f32's bound of the exact one on those weights.
 * x is followed by NaNs, which the kernel must not read into a sum. */
static void test_matvec_bf16(void) {
    rotary_rng rng;
    rotary_rng_seed(&rng, 2);
    double worst = 0;
    int bad_pack = 0;
    for (int s = 0; s < N_SHAPES; s++) {
        const int OC = shapes[s][0], C = shapes[s][1], R = bf16_row(C);
        float *w = xalloc((size_t)OC * C * 4), *x = xalloc((size_t)(C + 64) * 4);
        float *b = xalloc((size_t)OC * 4);
        float *y = xalloc((size_t)OC * 4), *y0 = xalloc((size_t)OC * 4);
        uint16_t *m = xalloc(bf16_matrix_bytes(OC, C));
        fill(w, (size_t)OC * C, &rng, 1), fill(x, (size_t)C, &rng, 1), fill(b, (size_t)OC, &rng, 1);
        for (int i = C; i < C + 64; i++) x[i] = NAN;
        fill(y0, (size_t)OC, &rng, 1);
        bf16_pack_matrix(m, w, OC, C);
        for (int r = 0; r < OC; r++) {
            for (int i = 0; i < C; i++)
                bad_pack += bf16_weight(m, C, r, i) !=
                            rotary_bf16_to_f32(rotary_f32_to_bf16(w[(size_t)r * C + i]));
            for (int i = C; i < R; i++) bad_pack += bf16_weight(m, C, r, i) != 0.0f;
        }
        for (int variant = 0; variant < 3; variant++) { /* plain, + bias, accumulate + bias */
            memcpy(y, y0, (size_t)OC * 4);
            matvec_bf16(y, m, x, variant ? b : NULL, C, OC, variant == 2);
            for (int r = 0; r < OC; r++) {
                double ref = 0, mag = 0;
                for (int i = 0; i < C; i++) {
                    const double p = (double)bf16_weight(m, C, r, i) * x[i];
                    ref += p, mag += fabs(p);
                }
                if (variant) ref += b[r], mag += fabs(b[r]);
                if (variant == 2) ref += y0[r], mag += fabs(y0[r]);
                const double err = fabs(y[r] - ref), bound = (C + 2) * 0x1p-24 * mag;
                EXPECT(err <= bound, "bf16 %dx%d row %d: %g vs %g (bound %g)", OC, C, r, y[r], ref,
                       bound);
                worst = err / bound > worst ? err / bound : worst;
            }
        }
        free(w), free(x), free(b), free(y), free(y0), free(m);
    }
    EXPECT(bad_pack == 0, "bf16_pack_matrix: %d weights not their rounding", bad_pack);
    printf("matvec_bf16: %d shapes, worst error %.3f of the bound\n", N_SHAPES, worst);
}

/* Quantize / dequantize: each value within half a step (d/2) of the
 * original, d within float16 rounding of max |x| / 127, |q| <= 127, padding
 * zero; and values already on the grid come back exactly. */
static void test_q8_roundtrip(void) {
    rotary_rng rng;
    rotary_rng_seed(&rng, 2);
    const int OC = 9, C = 200; /* 7 blocks, the last one 8 values long */
    const int nb = q8_blocks(C);
    float *w = xalloc((size_t)OC * C * 4), *back = xalloc((size_t)C * 4);
    float *back2 = xalloc((size_t)C * 4);
    fill(w, (size_t)OC * C, &rng, 0.05f);
    for (int i = 0; i < 32; i++) w[(size_t)3 * C + 32 + i] = 0; /* an all-zero block */
    w[(size_t)4 * C + 5] = 1e-9f;                               /* d underflows float16 */
    for (int i = 0; i < C; i++) w[(size_t)5 * C + i] = (float)(i % 9) - 4; /* large values */
    void *m = xalloc(q8_matrix_bytes(OC, C)), *m2 = xalloc(q8_matrix_bytes(OC, C));
    EXPECT(q8_matrix_bytes(OC, C) == (size_t)OC * nb * 34, "q8_matrix_bytes");
    q8_quantize_matrix(m, w, OC, C);
    const uint8_t *U = q8_matrix_u(m);
    const uint16_t *D = q8_matrix_d(m, OC, C);
    double worst = 0;
    for (int r = 0; r < OC; r++) {
        q8_dequantize_row(back, m, OC, C, r);
        for (int k = 0; k < nb; k++) {
            const int n = C - 32 * k < 32 ? C - 32 * k : 32;
            float amax = 0;
            for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(w[(size_t)r * C + 32 * k + i]));
            const double d = rotary_f16_to_f32(D[(size_t)r * nb + k]);
            EXPECT(fabs(d - amax / 127.0) <= amax / 127.0 * 0x1p-11 + 0x1p-25,
                   "row %d block %d: d %g for max %g", r, k, d, amax);
            for (int i = 0; i < 32; i++) {
                const int q = U[(size_t)r * nb * 32 + 32 * k + i] - 128;
                EXPECT(q >= -127 && q <= 127 && (i < n || q == 0), "row %d block %d: q[%d] = %d", r,
                       k, i, q);
                if (i >= n) continue;
                const double err = fabs(back[32 * k + i] - w[(size_t)r * C + 32 * k + i]);
                /* half a step, or the whole value when d is 0 (underflow) */
                const double bound = d > 0 ? d / 2 * (1 + 1e-6) : amax;
                EXPECT(err <= bound, "row %d value %d: error %g > %g", r, 32 * k + i, err, bound);
                worst = d > 0 && err / (d / 2) > worst ? err / (d / 2) : worst;
            }
        }
    }
    /* the grid is a fixed point: quantizing dequantized weights changes nothing */
    float *wb = xalloc((size_t)OC * C * 4);
    for (int r = 0; r < OC; r++) q8_dequantize_row(wb + (size_t)r * C, m, OC, C, r);
    q8_quantize_matrix(m2, wb, OC, C);
    EXPECT(memcmp(m, m2, q8_matrix_bytes(OC, C)) == 0, "quantize(dequantize(q)) != q");
    for (int r = 0; r < OC; r++) {
        q8_dequantize_row(back2, m2, OC, C, r);
        EXPECT(memcmp(back2, wb + (size_t)r * C, (size_t)C * 4) == 0, "row %d: second round trip",
               r);
    }
    printf("Q8_0 round trip: worst error %.3f of half a step\n", worst);
    free(w), free(back), free(back2), free(wb), free(m), free(m2);
}

/* matvec_q8 against float64:
 * tight: the exact product of the dequantized weights and the quantized-
 *   then-dequantized input, sum_k d_w d_x sum_i q_w q_x; the kernel sums
 *   integers exactly, so only the float32 scaling and accumulation of at
 *   most nb * 16 terms differ: bound (nb * 16 + 4) * 2^-24 * sum_k |d_w d_x s_k|.
 * loose: the float product w x. With |w - d_w q_w| <= d_w / 2 and
 *   |x - d_x q_x| <= d_x / 2 per value, w x - w' x' = (w - w') x + w' (x - x'),
 *   so the error is at most sum_k (d_w/2 sum|x| + d_x/2 sum|w'|) over the
 *   block's values (a bound on rounding, not a statistical estimate). */
static void test_matvec_q8(void) {
    rotary_rng rng;
    rotary_rng_seed(&rng, 3);
    double worst_tight = 0, worst_loose = 0, typical = 0;
    long n_rows = 0;
    for (int s = 0; s < N_SHAPES; s++) {
        const int OC = shapes[s][0], C = shapes[s][1], nb = q8_blocks(C);
        float *w = xalloc((size_t)OC * C * 4), *x = xalloc((size_t)C * 4);
        float *b = xalloc((size_t)OC * 4);
        float *y = xalloc((size_t)OC * 4), *y0 = xalloc((size_t)OC * 4);
        float *wq = xalloc((size_t)C * 4), *xq = xalloc((size_t)nb * 32 * 4);
        fill(w, (size_t)OC * C, &rng, 0.02f), fill(x, (size_t)C, &rng, 1);
        fill(b, (size_t)OC, &rng, 1);
        fill(y0, (size_t)OC, &rng, 1);
        x[C / 2] = 7; /* an outlier, as activations have */
        void *m = xalloc(q8_matrix_bytes(OC, C)), *scratch = xalloc(q8_act_bytes(C));
        q8_quantize_matrix(m, w, OC, C);
        q8_act a = q8_act_view(scratch, C);
        q8_quantize_act(&a, x, C);
        for (int i = 0; i < C; i++) xq[i] = a.d[i / 32] * a.q[i];
        for (int i = C; i < nb * 32; i++) EXPECT(a.q[i] == 0, "act padding");
        for (int i = 0; i < C; i++)
            EXPECT(fabs(xq[i] - x[i]) <= a.d[i / 32] / 2 * (1 + 1e-6), "act %d: %g vs %g", i, xq[i],
                   x[i]);
        for (int j = 0; j < nb * 8; j++)
            EXPECT(a.corr[j] == -128 * (a.q[4 * j] + a.q[4 * j + 1] + a.q[4 * j + 2] + a.q[4 * j + 3]),
                   "act corr %d", j);
        for (int variant = 0; variant < 3; variant++) {
            memcpy(y, y0, (size_t)OC * 4);
            if (variant == 0) matvec_q8(y, m, x, NULL, C, OC, 0, scratch);
            else matvec_q8_act(y, m, &a, b, C, OC, variant == 2);
            for (int r = 0; r < OC; r++) {
                q8_dequantize_row(wq, m, OC, C, r);
                const uint16_t *D = q8_matrix_d(m, OC, C) + (size_t)r * nb;
                double tight = 0, mag = 0, exact = 0, loose = 0;
                for (int k = 0; k < nb; k++) {
                    const int n = C - 32 * k < 32 ? C - 32 * k : 32;
                    double sk = 0, ax = 0, aw = 0;
                    for (int i = 32 * k; i < 32 * k + n; i++) {
                        sk += (double)wq[i] * xq[i];
                        exact += (double)w[(size_t)r * C + i] * x[i];
                        ax += fabs(x[i]), aw += fabs(wq[i]);
                    }
                    tight += sk, mag += fabs(sk);
                    loose += rotary_f16_to_f32(D[k]) / 2 * ax + a.d[k] / 2 * aw;
                }
                double extra = 0;
                if (variant) tight += b[r], exact += b[r], extra += fabs(b[r]);
                if (variant == 2) tight += y0[r], exact += y0[r], extra += fabs(y0[r]);
                const double bt = (nb * 16 + 4) * 0x1p-24 * (mag + extra) + 1e-30;
                const double et = fabs(y[r] - tight), el = fabs(y[r] - exact);
                const double bl = loose * (1 + 1e-5) + bt;
                EXPECT(et <= bt, "q8 %dx%d row %d: %g vs dequantized product %g (bound %g)", OC, C,
                       r, y[r], tight, bt);
                EXPECT(el <= bl, "q8 %dx%d row %d: %g vs float product %g (bound %g)", OC, C, r,
                       y[r], exact, bl);
                worst_tight = et / bt > worst_tight ? et / bt : worst_tight;
                worst_loose = el / bl > worst_loose ? el / bl : worst_loose;
                if (variant == 0) typical += el / (loose + 1e-30), n_rows++;
            }
        }
        free(w), free(x), free(b), free(y), free(y0), free(wq), free(xq), free(m), free(scratch);
    }
    printf("matvec_q8: worst error %.3f of the tight bound, %.3f of the quantization bound "
           "(mean %.3f)\n", worst_tight, worst_loose, typical / n_rows);
}

/* The Q8_0 kernel against a plain scalar reference that reads the same
 * bytes: per block the int32 sum s_k of (u - 128) q_x, then
 * y = sum_k s_k (d_w d_x) in float64, d_w d_x rounded to float32 as the
 * kernel rounds it. Shapes whose block counts are not a multiple of the
 * kernel's steps (2 blocks, 16 blocks per scale load) and row counts of
 * every remainder, on 1 and 2 threads. Random values: within 1e-5 of
 * sum_k |s_k d_w d_x|. Integer values with a maximum of 127 in every
 * block make every scale 1, so the sums are exact integers below 2^24 and
 * the result must be exactly the integer dot product. */
static void test_q8_kernel(void) {
    static const int cols[] = {32, 64, 96, 480, 544, 736, 800, 1000, 1056};
    static const int rows[] = {1, 2, 3, 5, 8, 45};
    rotary_rng rng;
    rotary_rng_seed(&rng, 11);
    const int nt = omp_get_max_threads();
    double worst = 0;
    for (size_t ci = 0; ci < sizeof cols / sizeof *cols; ci++)
        for (size_t ri = 0; ri < sizeof rows / sizeof *rows; ri++)
            for (int ints = 0; ints < 2; ints++) {
                const int C = cols[ci], OC = rows[ri], nb = q8_blocks(C);
                float *w = xalloc((size_t)OC * C * 4), *x = xalloc((size_t)C * 4);
                float *y = xalloc((size_t)OC * 4);
                if (ints) { /* integers in [-127, 127], +-127 somewhere in every block */
                    for (size_t i = 0; i < (size_t)OC * C; i++)
                        w[i] = (float)((int)(rotary_rng_uniform(&rng) * 255) - 127);
                    for (int i = 0; i < C; i++)
                        x[i] = (float)((int)(rotary_rng_uniform(&rng) * 255) - 127);
                    for (int i = 0; i < C; i += 32) x[i] = i & 32 ? 127.0f : -127.0f;
                    for (int r = 0; r < OC; r++)
                        for (int i = 0; i < C; i += 32)
                            w[(size_t)r * C + i] = r & 1 ? -127.0f : 127.0f;
                } else {
                    fill(w, (size_t)OC * C, &rng, 0.05f), fill(x, (size_t)C, &rng, 1);
                    x[C / 3] = 9; /* an outlier */
                }
                void *m = xalloc(q8_matrix_bytes(OC, C)), *scratch = xalloc(q8_act_bytes(C));
                q8_quantize_matrix(m, w, OC, C);
                q8_act a = q8_act_view(scratch, C);
                q8_quantize_act(&a, x, C);
                const uint8_t *U = q8_matrix_u(m);
                const uint16_t *D = q8_matrix_d(m, OC, C);
                for (int threads = 1; threads <= 2; threads++) {
                    omp_set_num_threads(threads);
                    memset(y, 0, (size_t)OC * 4);
                    matvec_q8_act(y, m, &a, NULL, C, OC, 0);
                    for (int r = 0; r < OC; r++) {
                        double ref = 0, mag = 0;
                        for (int k = 0; k < nb; k++) {
                            const uint8_t *u = U + ((size_t)r * nb + k) * 32;
                            const int8_t *q = a.q + (size_t)k * 32;
                            /* sum u q - 128 sum q: GCC 12 miscompiles
                             * sum (u - 128) q for VNNI targets */
                            int32_t sk = 0, sq = 0;
                            for (int i = 0; i < 32; i++) sk += u[i] * q[i], sq += q[i];
                            sk -= 128 * sq;
                            const float sc = rotary_f16_to_f32(D[(size_t)r * nb + k]) * a.d[k];
                            ref += (double)sk * sc, mag += fabs((double)sk * sc);
                        }
                        if (ints) {
                            double dot = 0;
                            for (int i = 0; i < C; i++) dot += (double)w[(size_t)r * C + i] * x[i];
                            EXPECT(ref == dot && y[r] == dot,
                                   "q8 kernel %dx%d row %d (integers): %.1f, reference %.1f, "
                                   "dot %.1f",
                                   OC, C, r, y[r], ref, dot);
                        } else {
                            const double e = fabs(y[r] - ref) / (mag + 1e-30);
                            EXPECT(e <= 1e-5, "q8 kernel %dx%d row %d: %.9g vs reference %.9g",
                                   OC, C, r, y[r], ref);
                            worst = e > worst ? e : worst;
                        }
                    }
                }
                free(w), free(x), free(y), free(m), free(scratch);
            }
    omp_set_num_threads(nt);
    printf("q8 kernel vs scalar reference: worst error %.2e of sum |s_k d_w d_x|\n", worst);
}

/* The same bits with 1, 2, 3 and 7 threads, every kernel (more threads
 * than cores: they are descheduled mid-matrix, so the others take chunks
 * from the backs of their shares). */
static void test_threads(void) {
    const int OC = 1000, C = 300;
    rotary_rng rng;
    rotary_rng_seed(&rng, 4);
    float *w = xalloc((size_t)OC * C * 4), *x = xalloc((size_t)C * 4);
    float *y1 = xalloc((size_t)OC * 4), *y2 = xalloc((size_t)OC * 4);
    fill(w, (size_t)OC * C, &rng, 1), fill(x, (size_t)C, &rng, 1);
    void *m = xalloc(q8_matrix_bytes(OC, C)), *scratch = xalloc(q8_act_bytes(C));
    uint16_t *h = xalloc(bf16_matrix_bytes(OC, C));
    q8_quantize_matrix(m, w, OC, C);
    bf16_pack_matrix(h, w, OC, C);
    const int nt = omp_get_max_threads(), counts[] = {1, 2, 3, 7};
    static const char *const kind[] = {"f32", "q8", "bf16"};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 4; i++) {
            omp_set_num_threads(counts[i]);
            float *y = i ? y2 : y1;
            if (k == 0) matvec_f32(y, w, x, NULL, C, OC, 0);
            else if (k == 1) matvec_q8(y, m, x, NULL, C, OC, 0, scratch);
            else matvec_bf16(y, h, x, NULL, C, OC, 0);
            EXPECT(!i || memcmp(y1, y2, (size_t)OC * 4) == 0, "%s: 1 and %d threads differ",
                   kind[k], counts[i]);
        }
    omp_set_num_threads(nt);
    free(w), free(x), free(y1), free(y2), free(m), free(scratch), free(h);
}

/* The team kernels called 600 times in one region (the cursors' epochs
 * wrap at 255), by 3 threads with cursors for 3 (rows shared out and
 * taken back) and for 2 (each thread its own share): each call adds every
 * row exactly once (accumulate onto zeros gives the 1-thread bits; a row
 * done twice would double, one skipped stays 0). */
static void test_team_calls(void) {
    const int OC = 997, C = 96, CALLS = 600;
    rotary_rng rng;
    rotary_rng_seed(&rng, 9);
    float *w = xalloc((size_t)OC * C * 4), *x = xalloc((size_t)C * 4), *y1 = xalloc((size_t)OC * 4);
    float *y = xalloc((size_t)CALLS * OC * 4);
    fill(w, (size_t)OC * C, &rng, 1), fill(x, (size_t)C, &rng, 1);
    matvec_cursor cur[3];
    matvec_f32(y1, w, x, NULL, C, OC, 0);
    for (int n = 3; n >= 2; n--) {
        matvec_team tm = {cur, n};
        matvec_team_reset(&tm);
        memset(y, 0, (size_t)CALLS * OC * 4);
#pragma omp parallel num_threads(3)
        for (int k = 0; k < CALLS; k++)
            matvec_f32_team(&tm, y + (size_t)k * OC, w, x, NULL, C, OC, 1);
        int bad = 0;
        for (int k = 0; k < CALLS; k++) bad += memcmp(y + (size_t)k * OC, y1, (size_t)OC * 4) != 0;
        EXPECT(bad == 0, "team of 3, cursors for %d: %d of %d calls differ", n, bad, CALLS);
    }
    free(w), free(x), free(y1), free(y);
}

/* --------------------------------------------------------------- decoder */

/* Large enough (over 2^20 matrix weights) that a step runs on all
 * threads (sample.c, STEP_PAR_MIN_WEIGHTS). */
static void config(rotary_config *c, int variant) {
    rotary_config_default(c);
    /* d_ff 352: 11 blocks, an odd count; vocab 1501: rows not a multiple of 4 */
    c->n_layer = 2, c->n_head = 4, c->n_kv_head = 4, c->d_model = 256, c->d_ff = 352;
    c->ctx = 32, c->vocab = 1501, c->init_std = 0.06f;
    c->norm = ROTARY_NORM_RMS, c->mlp = ROTARY_MLP_SWIGLU, c->pos = ROTARY_POS_ROPE, c->tied = 1;
    if (variant == 1) /* MQA, LayerNorm, GELU, biases, untied head, d_ff not a multiple
                       * of 32, RoPE on half of each head with the half pairing */
        c->n_kv_head = 1, c->norm = ROTARY_NORM_LAYER, c->mlp = ROTARY_MLP_GELU, c->bias = 1,
        c->tied = 0, c->d_ff = 360, c->rope_pairing = ROTARY_ROPE_HALF, c->rotary_dim = 32;
    if (variant == 2) /* linear attention */
        c->attn = ROTARY_ATTN_LINEAR;
    if (variant == 3) /* ALiBi, GQA */
        c->pos = ROTARY_POS_ALIBI, c->n_kv_head = 2;
}

/* The model of variant (config) with seeded weights; nonzero (counted as
 * a failure) when it cannot be built. */
static int test_model(rotary_model *m, rotary_config *c, int variant) {
    config(c, variant);
    if (rotary_model_build(m, c)) {
        printf("FAIL build: %s\n", rotary_last_error());
        failures++;
        return 1;
    }
    rotary_model_init(m, 9);
    if (c->bias) /* biases start at zero: give them values */
        for (int l = 0; l < c->n_layer; l++) {
            const char *names[] = {"attn.q.bias", "attn.o.bias", "mlp.up.bias", "mlp.down.bias"};
            for (int i = 0; i < 4; i++) {
                char nm[64];
                snprintf(nm, sizeof nm, "layers.%d.%s", l, names[i]);
                const rotary_tensor *t = rotary_model_tensor(m, nm);
                EXPECT(t != NULL, "no tensor %s", nm);
                for (size_t j = 0; t && j < t->numel; j++)
                    m->params[t->offset + j] = 0.05f * (float)((int)(j * 7 % 13) - 6);
            }
        }
    return 0;
}

/* Decode tok (T steps from a reset) with 2 threads, the logits into out
 * (T rows of vocab), then again with 1: the same bits. */
static void decode_twice(rotary_decoder *d, const int *tok, int T, float *out, const char *what) {
    const size_t V = (size_t)d->m->cfg.vocab;
    const int nt = omp_get_max_threads();
    for (int pass = 0; pass < 2; pass++) {
        omp_set_num_threads(pass ? 1 : 2);
        rotary_decoder_reset(d);
        for (int t = 0; t < T; t++) {
            const float *lg;
            EXPECT(rotary_decoder_step(d, tok[t], &lg) == 0, "%s step %d", what, t);
            if (!pass) memcpy(out + t * V, lg, V * sizeof(float));
            else
                EXPECT(memcmp(lg, out + t * V, V * sizeof(float)) == 0,
                       "%s position %d: 1 and 2 threads (or a reset) differ", what, t);
        }
    }
    omp_set_num_threads(nt);
}

/* Decoder logits at every position equal the full forward's (float32),
 * past the model's ctx (32); then the quantized decoder: close to the
 * float32 one, same argmax at most positions, the same bits with 1 and 2
 * threads, and after a reset. */
static void test_decoder(int variant) {
    enum { T = 40 };
    rotary_config c;
    rotary_model m;
    if (test_model(&m, &c, variant)) return;
    int *tok = malloc(T * sizeof(int));
    for (int t = 0; t < T; t++) tok[t] = (t * 37 + 11) % c.vocab;
    rotary_decoder d;
    EXPECT(rotary_decoder_init(&d, &m, T) == 0, "decoder init: %s", rotary_last_error());
    EXPECT(rotary_model_forward(&m, tok, NULL, 1, T, NULL) == 0, "forward: %s",
           rotary_last_error());
    const size_t V = (size_t)c.vocab;
    float *full = malloc(T * V * sizeof(float)), *f32 = malloc(T * V * sizeof(float));
    float *q8 = malloc(T * V * sizeof(float));
    memcpy(full, rotary_model_logits(&m), T * V * sizeof(float));
    double worst = 0, scale = 0;
    for (int t = 0; t < T; t++) {
        const float *lg;
        EXPECT(rotary_decoder_step(&d, tok[t], &lg) == 0, "step %d", t);
        memcpy(f32 + t * V, lg, V * sizeof(float));
        for (size_t i = 0; i < V; i++) {
            worst = fmax(worst, fabs(lg[i] - full[t * V + i]));
            scale = fmax(scale, fabs(full[t * V + i]));
        }
    }
    EXPECT(worst <= 1e-5 * scale, "decoder vs forward: max error %g (logits up to %g)", worst,
           scale);
    EXPECT(d.q8 == NULL, "float32 decoder has int8 weights");

    EXPECT(rotary_decoder_quantize(&d) == 0, "quantize: %s", rotary_last_error());
    EXPECT(d.q8 != NULL && d.q8_bytes > 0, "quantize: no copy");
    const double mlp = (c.mlp == ROTARY_MLP_SWIGLU ? 3.0 : 2.0) * c.d_ff * c.d_model;
    const double nw = (double)c.n_layer * ((c.n_head + 2 * c.n_kv_head) * 64.0 * c.d_model +
                                           (double)c.d_model * c.d_model + mlp) +
                      (double)c.vocab * c.d_model;
    EXPECT(nw >= 1 << 20, "the test model has only %.0f matrix weights", nw);
    EXPECT(d.q8_bytes < nw * 1.1 + 65536, "quantize: %zu bytes for %.0f weights", d.q8_bytes, nw);
    decode_twice(&d, tok, T, q8, "q8");
    double qworst = 0, qsum = 0;
    int same = 0;
    for (int t = 0; t < T; t++) {
        const float *lg = q8 + t * V;
        int a = 0, b = 0;
        for (size_t i = 0; i < V; i++) {
            const double e = fabs(lg[i] - f32[t * V + i]);
            qworst = fmax(qworst, e), qsum += e;
            a = lg[i] > lg[a] ? (int)i : a;
            b = f32[t * V + i] > f32[t * V + b] ? (int)i : b;
        }
        same += a == b;
    }
    /* Weights and inputs each move by up to half a step of 1/127 of their
     * block's largest value; through two layers and the head that is about
     * 0.5% of the largest logit on average here, 4% at worst (over 30000
     * logits). The bounds leave room for 2-3x that. */
    EXPECT(qsum / (T * (double)V) <= 0.015 * scale,
           "int8 vs float32 logits: mean difference %g (logits up to %g)", qsum / (T * (double)V),
           scale);
    EXPECT(qworst <= 0.08 * scale, "int8 vs float32 logits: max difference %g (logits up to %g)",
           qworst, scale);
    EXPECT(same >= T * 8 / 10, "int8 vs float32: same argmax at %d of %d positions", same, T);
    static const char *const names[] = {"llama  ", "variant", "linear ", "alibi  "};
    printf("decoder %s: float32 vs forward max %.2e; int8 vs float32 max %.2e, mean %.2e "
           "(logits up to %.2f), argmax equal at %d/%d; %zu bytes of int8 weights\n",
           names[variant], worst, qworst, qsum / (T * (double)V), scale, same, T, d.q8_bytes);
    /* quantize twice (after changing weights): the copy is replaced */
    EXPECT(rotary_decoder_quantize(&d) == 0, "quantize again");
    rotary_decoder_free(&d);
    EXPECT(d.q8 == NULL, "free leaves q8");
    rotary_decoder empty;
    memset(&empty, 0, sizeof empty);
    EXPECT(rotary_decoder_quantize(&empty) != 0, "quantize of an uninitialised decoder");
    free(tok), free(full), free(f32), free(q8);
    rotary_model_free(&m);
}

/* Round tensor `name` of m to bfloat16 in place (if m has it). */
static void round_tensor(rotary_model *m, const char *name) {
    const rotary_tensor *t = rotary_model_tensor(m, name);
    for (size_t j = 0; t && j < t->numel; j++)
        m->params[t->offset + j] = rotary_bf16_to_f32(rotary_f32_to_bf16(m->params[t->offset + j]));
}

/* rotary_decoder_bf16: the logits are the float32 decoder's on a copy of
 * the model whose matrices are rounded to bfloat16 (up to the order of the
 * sums), the same bits with 1 and 2 threads, and the int8 and bf16 copies
 * replace each other. A tied head is also the embedding, which the
 * decoder reads in float32: it is rounded for both. */
static void test_decoder_bf16(int variant) {
    enum { T = 24 };
    rotary_config c;
    rotary_model m;
    if (test_model(&m, &c, variant)) return;
    const size_t V = (size_t)c.vocab, np = m.n_params;
    int tok[T];
    for (int t = 0; t < T; t++) tok[t] = (t * 37 + 11) % c.vocab;
    if (c.tied) round_tensor(&m, "tok_emb.weight");
    float *saved = malloc(np * sizeof(float)), *ref = malloc(T * V * sizeof(float));
    memcpy(saved, m.params, np * sizeof(float));
    static const char *const mats[] = {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate",
                                       "mlp.up", "mlp.down"};
    for (int l = 0; l < c.n_layer; l++)
        for (int i = 0; i < 7; i++) {
            char nm[64];
            snprintf(nm, sizeof nm, "layers.%d.%s.weight", l, mats[i]);
            round_tensor(&m, nm);
        }
    if (!c.tied) round_tensor(&m, "lm_head.weight");
    rotary_decoder d;
    EXPECT(rotary_decoder_init(&d, &m, T) == 0, "decoder init: %s", rotary_last_error());
    for (int t = 0; t < T; t++) {
        const float *lg;
        EXPECT(rotary_decoder_step(&d, tok[t], &lg) == 0, "step %d", t);
        memcpy(ref + t * V, lg, V * sizeof(float));
    }
    memcpy(m.params, saved, np * sizeof(float)); /* the weights as they were */
    EXPECT(rotary_decoder_quantize(&d) == 0 && rotary_decoder_bf16(&d) == 0, "bf16: %s",
           rotary_last_error());
    EXPECT(d.bf16 != NULL && d.q8 == NULL, "bf16 after quantize: copies bf16 %p, q8 %p", d.bf16,
           d.q8);
    float *first = malloc(T * V * sizeof(float));
    decode_twice(&d, tok, T, first, "bf16");
    double worst = 0, scale = 0;
    for (size_t i = 0; i < T * V; i++) {
        worst = fmax(worst, fabs(first[i] - ref[i]));
        scale = fmax(scale, fabs(ref[i]));
    }
    EXPECT(worst <= 1e-5 * scale, "bf16 decoder vs float32 on rounded weights: max error %g "
           "(logits up to %g)", worst, scale);
    EXPECT(rotary_decoder_quantize(&d) == 0 && d.bf16 == NULL && d.q8 != NULL,
           "quantize after bf16: copies bf16 %p, q8 %p", d.bf16, d.q8);
    printf("decoder bf16 variant %d: vs float32 on rounded weights max %.2e (logits up to %.2f)\n",
           variant, worst, scale);
    rotary_decoder_free(&d);
    EXPECT(d.bf16 == NULL, "free leaves bf16");
    rotary_decoder empty;
    memset(&empty, 0, sizeof empty);
    EXPECT(rotary_decoder_bf16(&empty) != 0, "bf16 of an uninitialised decoder");
    free(saved), free(ref), free(first);
    rotary_model_free(&m);
}

int main(void) {
    test_half();
    test_matvec_f32();
    test_matvec_bf16();
    test_q8_roundtrip();
    test_matvec_q8();
    test_q8_kernel();
    test_threads();
    test_team_calls();
    test_decoder(0);
    test_decoder(1);
    test_decoder(2);
    test_decoder(3);
    for (int v = 0; v < 4; v++) test_decoder_bf16(v);
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("passed (0 failures)\n");
    return 0;
}
