/* common.c: error reporting, allocation and the random number generator. */
#include "internal.h"

#include <cblas.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_error[512];

const char *rotary_last_error(void) { return last_error; }

int rotary_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

float *rotary_alloc_floats(size_t n, const char *what) {
    size_t bytes;
    if (rotary_mul_size(n ? n : 1, sizeof(float), &bytes) != 0 || bytes > SIZE_MAX - 64) {
        rotary_fail(ROTARY_ENOMEM, "%s: size overflow (%zu floats)", what, n);
        return NULL;
    }
    bytes = (bytes + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (!p) {
        rotary_fail(ROTARY_ENOMEM, "%s: cannot allocate %zu bytes", what, bytes);
        return NULL;
    }
    memset(p, 0, bytes);
    return p;
}

/* splitmix64 for seeding, xorshift64* for the stream. */
void rotary_rng_seed(rotary_rng *r, uint64_t seed) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    r->s = z ? z : 0x2545F4914F6CDD1Dull;
}

uint64_t rotary_rng_next(rotary_rng *r) {
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float rotary_rng_uniform(rotary_rng *r) {
    return (float)(rotary_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

float rotary_rng_normal(rotary_rng *r) {
    /* Box-Muller in double; u1 in (0, 1] so log() is finite. */
    double u1 = ((double)(rotary_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(rotary_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

const char *rotary_blas_coretype_hint(void) {
    if (getenv("OPENBLAS_CORETYPE")) return NULL; /* the user chose */
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq"))
        return NULL;
    const char *core = openblas_get_corename();
    if (!core || (strcmp(core, "Haswell") != 0 && strcmp(core, "Zen") != 0)) return NULL;
    return "SkylakeX";
}
