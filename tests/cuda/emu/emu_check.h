/* emu_check.h: what the emulated kernel tests share (tests/cuda/emu). */
#ifndef ROTARY_EMU_CHECK_H
#define ROTARY_EMU_CHECK_H

#include "cuda/kernels.h" /* gpu_bf16 */
#include "half.h"         /* the bf16 conversions librotary uses */

#include <cmath>
#include <vector>

/* max |got - ref| / max |ref| over the array; a NaN gives infinity. */
static inline double rel_err(const std::vector<float> &got, const std::vector<double> &ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        const double d = fabs((double)got[i] - ref[i]);
        if (d != d) return INFINITY;
        num = d > num ? d : num;
        den = fabs(ref[i]) > den ? fabs(ref[i]) : den;
    }
    return num / (den > 0 ? den : 1e-30);
}

/* x rounded to bf16 (nearest even), and bf16 values widened (exact). */
static inline std::vector<gpu_bf16> narrow(const std::vector<float> &x) {
    std::vector<gpu_bf16> y(x.size());
    for (size_t i = 0; i < x.size(); i++) y[i] = rotary_f32_to_bf16(x[i]);
    return y;
}
static inline std::vector<float> widen(const std::vector<gpu_bf16> &x) {
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); i++) y[i] = rotary_bf16_to_f32(x[i]);
    return y;
}

#endif
