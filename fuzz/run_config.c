/* run_config.c: a run directory's config.json, as `rotary train --resume`
 * and the other subcommands read it, on any bytes.
 *
 * The reader is static in cli/train.c (load_run_options: the cJSON parse,
 * then every option back through the option parser with its range checks),
 * so this harness includes that file; cli/args.c, cli/common.c and
 * cli/corpus.c are linked beside it (cli_run_option, the one the other
 * subcommands call, is in cli/common.c). After a successful load the
 * options go through to_config and rotary_config_validate, as cmd_train
 * does. cli_fail lives in cli/main.c with main(), so it is defined here. */
#include "fuzz_common.h"

#include "../cli/train.c"

int cli_fail(const char *what, const char *why) {
    fprintf(stderr, "rotary: %s: %s\n", what, why && *why ? why : "failed");
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_input_in_dir("run_config", "config.json", data, size);
    static const char *const names[] = {"tokenizer", "data", "pos", "ctx", "rope-scaling"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *v = cli_run_option(dir, names[i]);
        if (v) fuzz_touch(v, strlen(v) + 1);
        free(v);
    }
    train_args saved;
    defaults(&saved);
    arg_spec ss[N_SPECS];
    int n = make_specs(ss, &saved);
    if (load_run_options(dir, ss, n) != 0) return 0;
    char buf[1100];
    for (int i = 0; i < n; i++) args_value(&ss[i], buf, sizeof buf);
    rotary_config cfg;
    if (to_config(&saved, ss, n, &cfg) == 0) {
        cfg.vocab = 256;
        (void)rotary_config_validate(&cfg);
    }
    return 0;
}
