/* prepare.c: `rotary prepare`: tokenize a text once into a token file, for
 * corpora too large to tokenize at every start. */
#include "args.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_prepare(int argc, char **argv) {
    const char *data = NULL, *tok_spec = "bytes", *out = NULL;
    arg_spec specs[] = {
        {"--data", ARG_STR, &data, 0, 0, "text file or corpus name (english, chinese)", 0},
        {"--tokenizer", ARG_STR, &tok_spec, 0, 0, "bytes or a tokenizer file", 0},
        {"-o", ARG_STR, &out, 0, 0, "output token file", 0},
    };
    int rc = args_parse(specs, 3, argc, argv, "rotary prepare --data FILE [--tokenizer T] -o FILE.tok");
    if (rc) return rc < 0 ? 0 : rc;
    if (!data || !out) return cli_fail("prepare", "give --data and -o");
    char cpath[4096];
    if (!(data = cli_data_path(data, cpath, sizeof cpath))) return 1;
    rotary_tokenizer *tok;
    if (cli_load_tokenizer(tok_spec, 0, &tok)) return 1;
    unsigned char *text;
    size_t n;
    if (cli_read_file(data, &text, &n)) return 1;
    int *ids;
    size_t n_ids;
    if (rotary_tokenizer_encode(tok, text, n, &ids, &n_ids) ||
        rotary_tokens_save(out, ids, n_ids, rotary_tokenizer_vocab_size(tok)))
        return cli_fail("prepare", rotary_last_error());
    printf("%s: %zu tokens from %zu bytes (%.2f bytes/token), vocab %d\n", out, n_ids, n,
           (double)n / (double)n_ids, rotary_tokenizer_vocab_size(tok));
    free(text);
    free(ids);
    rotary_tokenizer_free(tok);
    return 0;
}
