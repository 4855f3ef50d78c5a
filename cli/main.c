/* main.c: the `rotary` command: dispatch to one subcommand per file. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <cblas.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

int cli_fail(const char *what, const char *why) {
    fprintf(stderr, "rotary: %s: %s\n", what, why && *why ? why : "failed");
    return 1;
}

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *help;
} commands[] = {
    {"train", cmd_train, "train a model on a text and write a run directory"},
    {"eval", cmd_eval, "validation loss and bits per byte of a model on a text"},
    {"generate", cmd_generate, "generate text from any model we read (run, safetensors, llama2.c, GGUF)"},
    {"sample", cmd_generate, "the same as generate"},
    {"chat", cmd_chat, "talk with a chat model (Llama 3, ChatML, Llama 2 formats), one line a turn"},
    {"export", cmd_export, "write a trained model as GGUF (llama architecture) for llama.cpp"},
    {"compare", cmd_compare, "train with each position encoding and seed; table and plots"},
    {"corpus", cmd_corpus, "extract a built-in corpus (english, chinese) from Debian packages"},
    {"prepare", cmd_prepare, "tokenize a text into a token file"},
    {"demo", cmd_demo, "train a tiny RoPE model on built-in text in seconds and sample from it"},
    {"info", cmd_info, "print the config and tensors of a checkpoint"},
    {"rope", cmd_rope, "RoPE tools: rope decay, the long-term decay bound (RoFormer 3.4.3)"},
    {"tokenizer", cmd_tokenizer, "train a BPE vocabulary or encode a file with one"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: rotary <command> [options]   (rotary <command> --help)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "  %-10s %s\n", "version", "print the version");
}

int main(int argc, char **argv) {
    /* Pick OpenBLAS's AVX-512 kernels where its CPU detection misses them
     * (see rotary_blas_coretype_hint); ROTARY_NO_REEXEC=1 turns this off. */
    const char *core = getenv("ROTARY_NO_REEXEC") ? NULL : rotary_blas_coretype_hint();
    if (core && setenv("OPENBLAS_CORETYPE", core, 1) == 0) execv("/proc/self/exe", argv);
    /* A file-size limit (ulimit -f) must fail the write with EFBIG, which we
     * report, instead of killing the process. */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("rotary %s (OpenBLAS %s kernels, %d threads)\n", ROTARY_VERSION,
               openblas_get_corename(), omp_get_max_threads());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "rotary: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
