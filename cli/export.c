/* export.c: `rotary export`: a trained model as a GGUF file (architecture
 * llama, our tokenizer inside) that llama.cpp's tools and ours can run. */
#include "args.h"
#include "cli.h"

#include <stdio.h>

int cmd_export(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *tok_spec = NULL;
    if (argc > 1 && argv[1][0] != '-') model = argv[1], argv[1] = argv[0], argv++, argc--;
    arg_spec specs[] = {
        {"-o", ARG_STR, &out, 0, 0, "the GGUF file to write", 0},
        {"-z", ARG_STR, &tok_spec, 0, 0, "tokenizer (default: the run's)", 0},
    };
    int rc = args_parse(specs, 2, argc, argv,
                        "rotary export RUN_OR_CHECKPOINT -o MODEL.gguf [-z TOKENIZER]");
    if (rc) return rc < 0 ? 0 : rc;
    if (!out) return cli_fail("export", "give -o MODEL.gguf");
    rotary_model m;
    rotary_tokenizer *tok;
    if (cli_load_model(model, tok_spec, &m, &tok)) return 1;
    rc = rotary_model_export_gguf(&m, tok, out);
    if (rc) {
        rotary_tokenizer_free(tok);
        rotary_model_free(&m);
        return cli_fail("export", rotary_last_error());
    }
    fprintf(stderr, "rotary: wrote %s (llama, %d layers, d_model %d, vocab %d, %s pairing%s)\n",
            out, m.cfg.n_layer, m.cfg.d_model, m.cfg.vocab,
            m.cfg.rope_pairing == ROTARY_ROPE_HALF ? "half" : "interleaved",
            m.cfg.rope_pairing == ROTARY_ROPE_HALF ? ": q, k rows permuted to adjacent pairs" : "");
    rotary_tokenizer_free(tok);
    rotary_model_free(&m);
    return 0;
}
