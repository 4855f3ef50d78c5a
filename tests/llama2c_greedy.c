/* llama2c_greedy: greedy decoding of a llama2.c checkpoint through our
 * loader and KV-cache decoder, for tests/torch/llama2c_ref.py.
 *
 * usage: llama2c_greedy MODEL.bin N [int8|bf16] [ID ...]
 * Starts from BOS (1) and the given ids, then prints N greedy ids, one line
 * (int8, bf16: through the 8-bit or the bfloat16 weight path). */
#include "rotary.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: llama2c_greedy MODEL.bin N [int8|bf16] [ID ...]\n");
        return 2;
    }
    rotary_model m;
    if (rotary_model_load_llama2c(&m, argv[1])) {
        fprintf(stderr, "llama2c_greedy: %s\n", rotary_last_error());
        return 1;
    }
    int n = atoi(argv[2]), a = 3, int8 = argc > 3 && !strcmp(argv[3], "int8");
    const int bf16 = argc > 3 && !strcmp(argv[3], "bf16");
    a += int8 || bf16;
    rotary_decoder d;
    /* Past the file's seq_len RoPE extends; the reference does the same. */
    if (rotary_decoder_init(&d, &m, n + 1 > m.cfg.ctx ? n + 1 : m.cfg.ctx) ||
        (int8 && rotary_decoder_quantize(&d)) || (bf16 && rotary_decoder_bf16(&d))) {
        fprintf(stderr, "llama2c_greedy: %s\n", rotary_last_error());
        return 1;
    }
    rotary_sampler greedy; /* temperature 0: the argmax */
    if (rotary_sampler_init(&greedy, m.cfg.vocab, 0.0f, 0, 1.0f, 1)) {
        fprintf(stderr, "llama2c_greedy: %s\n", rotary_last_error());
        return 1;
    }
    const float *logits = NULL;
    int tok = 1, rc = rotary_decoder_step(&d, tok, &logits);
    for (; a < argc && !rc; a++) rc = rotary_decoder_step(&d, atoi(argv[a]), &logits);
    for (int i = 0; i < n && !rc; i++) {
        int best = rotary_sample(&greedy, logits);
        printf("%s%d", i ? " " : "", best);
        if (i + 1 < n) rc = rotary_decoder_step(&d, best, &logits);
    }
    printf("\n");
    if (rc) fprintf(stderr, "llama2c_greedy: %s\n", rotary_last_error());
    rotary_sampler_free(&greedy);
    rotary_decoder_free(&d);
    rotary_model_free(&m);
    return rc ? 1 : 0;
}
