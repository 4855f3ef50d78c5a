/* rope_dump.c: write RoPE inputs and outputs for tests/torch/rope_parity.py.
 *
 * usage: rope_dump OUT.safetensors
 * For each case k: "casek.x" (B,T,H,D) input, "casek.pos" (T) I32 positions,
 * "casek.fwd" = forward(x), "casek.g" (B,T,H,D) upstream gradient and
 * "casek.bwd" = backward(g). Metadata "casek" holds the parameters as
 * "pairing=half head_dim=64 rotary_dim=32 base=10000", "n_cases" the count. */
#include "rotary.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 2, T = 17, H = 3, MAX_POS = 65536, N_CASES = 8 };

typedef struct {
    int pairing, head_dim, rotary_dim;
    double base;
    int pos0; /* first position; -1: random large positions */
} rope_case;

static const rope_case cases[N_CASES] = {
    {ROTARY_ROPE_HALF, 64, 64, 10000.0, 0},
    {ROTARY_ROPE_INTERLEAVED, 64, 64, 10000.0, 1000},
    {ROTARY_ROPE_HALF, 64, 32, 10000.0, 1000}, /* GPT-NeoX rotary_pct = 0.5 */
    {ROTARY_ROPE_INTERLEAVED, 64, 32, 10000.0, 0},
    {ROTARY_ROPE_HALF, 128, 128, 500000.0, 1000},
    {ROTARY_ROPE_INTERLEAVED, 128, 128, 500000.0, 0},
    {ROTARY_ROPE_HALF, 64, 64, 10000.0, -1},
    {ROTARY_ROPE_INTERLEAVED, 128, 128, 500000.0, -1},
};

static int fail(const char *what) {
    fprintf(stderr, "rope_dump: %s: %s\n", what, rotary_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: rope_dump OUT.safetensors\n");
        return 2;
    }
    rotary_rng rng;
    rotary_rng_seed(&rng, 42);
    rotary_st_tensor t[N_CASES * 5];
    char names[N_CASES * 5][32], meta_val[N_CASES][128], meta_key[N_CASES][16];
    const char *meta[2 * (N_CASES + 1)];
    float *bufs[N_CASES * 4];
    int pos[N_CASES][T];
    int nt = 0, nb = 0, rc = 0;

    for (int k = 0; k < N_CASES; k++) {
        const rope_case *c = &cases[k];
        const size_t n = (size_t)B * T * H * c->head_dim;
        float *x = malloc(n * sizeof(float)), *fwd = malloc(n * sizeof(float));
        float *g = malloc(n * sizeof(float)), *bwd = malloc(n * sizeof(float));
        bufs[nb++] = x, bufs[nb++] = fwd, bufs[nb++] = g, bufs[nb++] = bwd;
        if (!x || !fwd || !g || !bwd) {
            fprintf(stderr, "rope_dump: out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < n; i++) x[i] = rotary_rng_normal(&rng);
        for (size_t i = 0; i < n; i++) g[i] = rotary_rng_normal(&rng);
        for (int s = 0; s < T; s++)
            pos[k][s] = c->pos0 >= 0 ? c->pos0 + s
                                     : 59000 + (int)(rotary_rng_next(&rng) % 6536); /* < MAX_POS */
        if (c->pos0 < 0) pos[k][T - 1] = MAX_POS - 1;

        rotary_rope r;
        if (rotary_rope_init(&r, c->head_dim, c->rotary_dim, c->base, c->pairing, MAX_POS, NULL))
            return fail("init");
        memcpy(fwd, x, n * sizeof(float));
        memcpy(bwd, g, n * sizeof(float));
        if (rotary_rope_forward(&r, fwd, B, T, H, H * c->head_dim, pos[k])) return fail("forward");
        if (rotary_rope_backward(&r, bwd, B, T, H, H * c->head_dim, pos[k]))
            return fail("backward");
        rotary_rope_free(&r);

        const char *suffix[5] = {"x", "pos", "fwd", "g", "bwd"};
        const void *data[5] = {x, pos[k], fwd, g, bwd};
        for (int j = 0; j < 5; j++) {
            snprintf(names[nt], sizeof names[nt], "case%d.%s", k, suffix[j]);
            rotary_st_tensor *d = &t[nt];
            d->name = names[nt];
            d->data = data[j];
            if (j == 1) {
                d->dtype = ROTARY_I32, d->ndim = 1, d->shape[0] = T;
            } else {
                d->dtype = ROTARY_F32, d->ndim = 4;
                d->shape[0] = B, d->shape[1] = T, d->shape[2] = H, d->shape[3] = c->head_dim;
            }
            nt++;
        }
        snprintf(meta_key[k], sizeof meta_key[k], "case%d", k);
        snprintf(meta_val[k], sizeof meta_val[k], "pairing=%s head_dim=%d rotary_dim=%d base=%.17g",
                 c->pairing == ROTARY_ROPE_HALF ? "half" : "interleaved", c->head_dim,
                 c->rotary_dim, c->base);
        meta[2 * k] = meta_key[k];
        meta[2 * k + 1] = meta_val[k];
    }
    char ncases[16];
    snprintf(ncases, sizeof ncases, "%d", N_CASES);
    meta[2 * N_CASES] = "n_cases";
    meta[2 * N_CASES + 1] = ncases;
    if (rotary_st_write(argv[1], t, nt, meta, N_CASES + 1)) rc = fail("write");
    for (int i = 0; i < nb; i++) free(bufs[i]);
    return rc;
}
