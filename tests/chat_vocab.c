/* chat_vocab: write a tiny random llama-architecture model to GGUF whose
 * vocabulary is the 256 bytes of GPT-2's byte-level BPE (ids 0-255), the
 * special tokens of the Llama 3 and ChatML chat templates (ids 256-262,
 * control tokens, BOS 256, EOS 262) and "\n\n" (263, the one merge), so
 * that tests can check the ids `rotary chat` makes of a turn
 * (tests/cli_generate.sh).
 * usage: chat_vocab OUT.gguf */
#define _POSIX_C_SOURCE 200809L
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const SPECIAL[] = {"<|begin_of_text|>", "<|start_header_id|>",
                                      "<|end_header_id|>", "<|eot_id|>", "<|im_start|>",
                                      "<|im_end|>", "<|end_of_text|>"};
enum { N_SPECIAL = sizeof SPECIAL / sizeof *SPECIAL, V = 256 + N_SPECIAL + 1 };

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: chat_vocab OUT.gguf\n");
        return 2;
    }
    char *tok[V];
    size_t len[V];
    int types[V];
    for (int i = 0; i < V; i++) {
        types[i] = i < 256 ? TT_NORMAL : TT_CONTROL;
        if (i < 256) {
            const unsigned char b = (unsigned char)i;
            tok[i] = malloc(3);
            len[i] = tok_gpt2_spell((unsigned char *)tok[i], &b, 1);
        } else if (i < V - 1) {
            tok[i] = strdup(SPECIAL[i - 256]);
            len[i] = strlen(tok[i]);
        } else {
            types[i] = TT_NORMAL;
            tok[i] = strdup("\xC4\x8A\xC4\x8A"); /* "\n\n" spelled: two U+010A */
            len[i] = 4;
        }
    }
    const char *merges[] = {"\xC4\x8A \xC4\x8A"};
    const size_t merge_len[] = {5};
    tok_gpt2_spec sp = {.n = V, .tokens = (const char *const *)tok, .len = len, .types = types,
                        .merges = merges, .merge_len = merge_len, .n_merges = 1, .bos = 256,
                        .eos = 262, .unk = -1, .add_bos = 1, .pre = "llama-bpe"};
    rotary_tokenizer *t;
    rotary_config c;
    rotary_model m;
    rotary_config_default(&c);
    c.n_layer = 1, c.n_head = 2, c.n_kv_head = 2, c.d_model = 16, c.d_ff = 32, c.ctx = 64;
    c.vocab = V;
    if (tok_build_gpt2(&t, &sp, "chat_vocab") || rotary_model_build(&m, &c)) {
        fprintf(stderr, "chat_vocab: %s\n", rotary_last_error());
        return 1;
    }
    rotary_model_init(&m, 5);
    int rc = rotary_model_export_gguf(&m, t, argv[1]);
    if (rc) fprintf(stderr, "chat_vocab: %s\n", rotary_last_error());
    for (int i = 0; i < V; i++) free(tok[i]);
    rotary_tokenizer_free(t);
    rotary_model_free(&m);
    return rc ? 1 : 0;
}
