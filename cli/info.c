/* info.c: `rotary info CHECKPOINT`: what a checkpoint holds. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

int cmd_info(int argc, char **argv) {
    if (argc != 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        printf("usage: rotary info CHECKPOINT.safetensors\n");
        return argc == 2 ? 0 : 2;
    }
    rotary_model m;
    if (rotary_checkpoint_load(argv[1], &m)) return cli_fail("info", rotary_last_error());
    const rotary_config *c = &m.cfg;
    printf("%s: %zu parameters\n", argv[1], m.n_params);
    printf("  layers %d  heads %d  kv_heads %d  dim %d  ff %d  ctx %d  vocab %d\n", c->n_layer,
           c->n_head, c->n_kv_head, c->d_model, c->d_ff, c->ctx, c->vocab);
    printf("  norm %s  mlp %s  pos %s", c->norm == ROTARY_NORM_RMS ? "rmsnorm" : "layernorm",
           c->mlp == ROTARY_MLP_SWIGLU ? "swiglu" : "gelu", rotary_pos_name(c->pos));
    if (c->pos == ROTARY_POS_ROPE)
        printf(" (%s, base %g, rotary_dim %d)", c->rope_pairing == ROTARY_ROPE_HALF ? "half" : "interleaved",
               c->rope_base, c->rotary_dim ? c->rotary_dim : c->d_model / c->n_head);
    printf("  tied %d  bias %d\n", c->tied, c->bias);
    const rotary_rope_scaling *s = &c->rope_scaling;
    if (s->type == ROTARY_ROPE_SCALING_FACTORS) {
        float lo = s->freq_factors[0], hi = lo;
        for (int i = 1; i < s->n_factors; i++) {
            lo = s->freq_factors[i] < lo ? s->freq_factors[i] : lo;
            hi = s->freq_factors[i] > hi ? s->freq_factors[i] : hi;
        }
        printf("  rope scaling factors  %d per-pair divisors from %g to %g\n", s->n_factors,
               (double)lo, (double)hi);
    } else if (s->type != ROTARY_ROPE_SCALING_NONE)
        printf("  rope scaling %s  factor %g  original ctx %d  attention factor %g\n",
               rotary_rope_scaling_name(s->type), s->factor, s->original_ctx,
               rotary_rope_scaling_mscale(s));
    for (int i = 0; i < m.n_tensors; i++) {
        const rotary_tensor *t = &m.tensors[i];
        if (t->ndim == 2) printf("  %-28s (%d, %d)\n", t->name, t->shape[0], t->shape[1]);
        else printf("  %-28s (%d)\n", t->name, t->shape[0]);
    }
    rotary_model_free(&m);
    return 0;
}
