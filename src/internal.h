/* internal.h: helpers shared by the library's source files (not installed). */
#ifndef ROTARY_INTERNAL_H
#define ROTARY_INTERNAL_H

#include "rotary.h"

#include <stddef.h>
#include <stdint.h>

/* Record a failure message (printf-style) and return code. */
int rotary_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* a*b without overflow of size_t; returns 0 and sets *out, or -1. */
static inline int rotary_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

/* 64-byte aligned, zeroed float array of n elements; NULL on failure
 * (with the message set). Free with free(). */
float *rotary_alloc_floats(size_t n, const char *what);

#endif
