/* half.h: 16-bit floats and GGUF's Q8_0 blocks (internal, not installed).
 *
 * float16 is IEEE-754 binary16 (1 sign, 5 exponent, 10 mantissa bits);
 * bfloat16 is the top half of a float32. Conversions to float32 are exact
 * (subnormals, infinities, NaN payloads); conversions from float32 round to
 * nearest, ties to even, overflow to infinity, and keep NaN a NaN.
 *
 * Q8_0 (ggml's numbering 8): blocks of 32 values, each stored as a float16
 * scale d followed by 32 int8 q (34 bytes, no padding); value = d * q. */
#ifndef ROTARY_HALF_H
#define ROTARY_HALF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ROTARY_Q8_0_BLOCK 32 /* values per block */
#define ROTARY_Q8_0_BYTES 34 /* bytes per block: f16 d + 32 x int8 */

static inline uint32_t rotary_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float rotary_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* binary16 -> float32, exact. */
static inline float rotary_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) /* infinity or NaN (payload kept) */
        return rotary_bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp != 0) /* normal: rebias 15 -> 127 */
        return rotary_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
    /* zero or subnormal: man * 2^-24, exact in float32 */
    float f = (float)man * 0x1p-24f;
    return sign ? -f : f;
}

/* float32 -> binary16, round to nearest even. */
static inline uint16_t rotary_f32_to_f16(float f) {
    uint32_t u = rotary_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) { /* infinity or NaN */
        if (a == 0x7f800000u) return (uint16_t)(sign | 0x7c00u);
        uint32_t m = (a >> 13) & 0x3ffu;
        return (uint16_t)(sign | 0x7c00u | (m ? m : 0x200u)); /* stay a NaN */
    }
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520: infinity */
    if (a >= 0x38800000u) { /* >= 2^-14: a normal half */
        uint32_t m = a - (112u << 23);                  /* rebias 127 -> 15 */
        m += 0x0fffu + ((m >> 13) & 1u);                /* ties to even; may carry */
        return (uint16_t)(sign | (m >> 13));
    }
    if (a <= 0x33000000u) return sign; /* <= 2^-25: rounds to zero (2^-25 is a tie) */
    /* subnormal half: round(|f| * 2^24) */
    uint32_t exp = a >> 23; /* 102..112 */
    uint32_t man = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - exp; /* 14..24 */
    uint32_t q = man >> shift, rem = man & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++; /* q == 0x400 is the smallest normal */
    return (uint16_t)(sign | q);
}

/* bfloat16 -> float32, exact. */
static inline float rotary_bf16_to_f32(uint16_t b) { return rotary_bits_f32((uint32_t)b << 16); }

/* float32 -> bfloat16, round to nearest even, NaN stays NaN. */
static inline uint16_t rotary_f32_to_bf16(float f) {
    uint32_t u = rotary_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Quantize n values (a multiple of 32) into n/32 Q8_0 blocks at out
 * (n/32 * 34 bytes): per block d = max|x| / 127 rounded to float16, then
 * q = round(x / d) (half away from zero, clamped to -127..127) with that
 * rounded d; all q = 0 when d is 0. Inputs should be finite (NaN gives 0).
 * Defined in io_gguf.c. */
void rotary_q8_0_quantize(void *out, const float *x, size_t n);
/* The inverse: n values (a multiple of 32) from n/32 blocks; exact. */
void rotary_q8_0_dequantize(float *out, const void *blocks, size_t n);

#endif
