/* main.c: the `rotary` command: dispatch to one subcommand per file. */
#include "cli.h"

#include <stdio.h>
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
    {"demo", cmd_demo, "train a small RoPE model on built-in text and sample from it"},
    {"info", cmd_info, "print the config and tensors of a checkpoint"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: rotary <command> [options]   (rotary <command> --help)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "  %-8s %s\n", "version", "print the version");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("rotary %s\n", ROTARY_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "rotary: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
