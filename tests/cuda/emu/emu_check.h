/* emu_check.h: what the emulated kernel tests share (tests/cuda/emu). */
#ifndef ROTARY_EMU_CHECK_H
#define ROTARY_EMU_CHECK_H

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

#endif
