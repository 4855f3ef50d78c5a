/* cli.h: shared pieces of the `rotary` command. */
#ifndef ROTARY_CLI_H
#define ROTARY_CLI_H

#include "rotary.h"

/* Print "rotary: <what>: <why>" to stderr; returns 1 (the exit status). */
int cli_fail(const char *what, const char *why);

int cmd_demo(int argc, char **argv);
int cmd_info(int argc, char **argv);

#endif
