/* cli.h: shared pieces of the `rotary` command. */
#ifndef ROTARY_CLI_H
#define ROTARY_CLI_H

#include "rotary.h"

/* Print "rotary: <what>: <why>" to stderr; returns 1 (the exit status). */
int cli_fail(const char *what, const char *why);

#include <stddef.h>

/* Read a whole regular, non-empty file (NUL-terminated copy); 0 or 1 after
 * printing the error. */
int cli_read_file(const char *path, unsigned char **buf, size_t *n);
/* "bytes" or a tokenizer file. */
int cli_load_tokenizer(const char *spec, rotary_tokenizer **t);
/* A model and its tokenizer from a run directory or a checkpoint file. */
int cli_load_model(const char *run, const char *ckpt, const char *tok_spec, rotary_model *m,
                   rotary_tokenizer **tok);
/* Path of a corpus (english, chinese), extracted on first use. */
int cli_corpus_path(const char *name, char *path, size_t cap);

int cmd_demo(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_corpus(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);

#endif
