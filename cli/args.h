/* args.h: the table-driven option parser shared by the subcommands. */
#ifndef ROTARY_ARGS_H
#define ROTARY_ARGS_H

typedef enum { ARG_INT, ARG_LONG, ARG_FLOAT, ARG_STR, ARG_FLAG } arg_type;

typedef struct {
    const char *name;  /* "--dim" */
    arg_type type;
    void *p;           /* int*, long*, float*, const char**, int* (flag) */
    double lo, hi;     /* accepted range for numbers */
    const char *help;
    int seen;          /* set by args_parse */
} arg_spec;

/* Parse argv[1..argc-1]. Returns 0, -1 after printing usage for --help, or
 * 1 after printing a "rotary: ..." error. */
int args_parse(arg_spec *specs, int n, int argc, char **argv, const char *usage_line);
void args_usage(const arg_spec *specs, int n, const char *usage_line);
/* The spec named name, or NULL. */
arg_spec *args_find(arg_spec *specs, int n, const char *name);
/* The value of a spec as text (for config.json and messages). */
void args_value(const arg_spec *s, char *buf, int cap);

#endif
