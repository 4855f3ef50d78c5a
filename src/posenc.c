/* posenc.c: the position encodings other than RoPE. */
#include "internal.h"

#include <math.h>
#include <string.h>

void rotary_sinusoidal_table(float *out, int T, int C, float amplitude) {
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < C / 2; i++) {
            double w = pow(10000.0, -2.0 * i / C);
            out[(size_t)t * C + 2 * i] = (float)(amplitude * sin(t * w));
            out[(size_t)t * C + 2 * i + 1] = (float)(amplitude * cos(t * w));
        }
    }
}

/* Slopes 2^(-8(h+1)/n) for n a power of two. Otherwise take the n' = largest
 * power of two below n, and fill the rest with every other slope of 2n'. */
void rotary_alibi_slopes(float *slopes, int n_head) {
    int p = 1;
    while (p * 2 <= n_head) p *= 2;
    for (int h = 0; h < p; h++) slopes[h] = (float)pow(2.0, -8.0 * (h + 1) / p);
    for (int h = p; h < n_head; h++) {
        int j = 2 * (h - p); /* 0, 2, 4, ... of the 2p sequence */
        slopes[h] = (float)pow(2.0, -8.0 * (j + 1) / (2 * p));
    }
}

/* T5's causal ("unidirectional") bucketing (Raffel et al., 2020; their
 * _relative_position_bucket with bidirectional=False). The logarithm is
 * taken in double; every caller (forward, backward, decoder, the PyTorch
 * reference) uses this one definition, so they agree at bucket edges. */
int rotary_t5_bucket(int n, int n_buckets, int max_distance) {
    const int exact = n_buckets / 2;
    if (n < exact) return n < 0 ? 0 : n;
    int b = exact + (int)floor(log((double)n / exact) / log((double)max_distance / exact) *
                               (n_buckets - exact));
    return b < n_buckets - 1 ? b : n_buckets - 1;
}

static const char *const pos_names[] = {"rope", "learned", "sinusoidal", "alibi", "none", "t5"};

const char *rotary_pos_name(int pos) {
    if (pos < 0 || pos >= (int)(sizeof pos_names / sizeof *pos_names)) return "?";
    return pos_names[pos];
}

int rotary_pos_parse(const char *s) {
    for (int i = 0; i < (int)(sizeof pos_names / sizeof *pos_names); i++)
        if (strcmp(s, pos_names[i]) == 0) return i;
    return -1;
}
