/* args.c: option parsing with ranges and one-line errors. */
#include "args.h"

#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

arg_spec *args_find(arg_spec *specs, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(specs[i].name, name)) return &specs[i];
    return NULL;
}

void args_value(const arg_spec *s, char *buf, int cap) {
    switch (s->type) {
    case ARG_INT: snprintf(buf, (size_t)cap, "%d", *(int *)s->p); break;
    case ARG_LONG: snprintf(buf, (size_t)cap, "%ld", *(long *)s->p); break;
    case ARG_FLOAT: snprintf(buf, (size_t)cap, "%.9g", (double)*(float *)s->p); break;
    case ARG_STR: snprintf(buf, (size_t)cap, "%s", *(const char **)s->p ? *(const char **)s->p : ""); break;
    case ARG_FLAG: snprintf(buf, (size_t)cap, "%d", *(int *)s->p); break;
    }
}

void args_usage(const arg_spec *specs, int n, const char *usage_line) {
    printf("usage: %s\n\noptions:\n", usage_line);
    for (int i = 0; i < n; i++) {
        char def[64];
        args_value(&specs[i], def, sizeof def);
        const char *meta = specs[i].type == ARG_FLAG ? "" : specs[i].type == ARG_STR ? " S" : " N";
        char left[64];
        snprintf(left, sizeof left, "%s%s", specs[i].name, meta);
        if (specs[i].type == ARG_FLAG || !def[0])
            printf("  %-22s %s\n", left, specs[i].help);
        else
            printf("  %-22s %s (default %s)\n", left, specs[i].help, def);
    }
}

int args_parse(arg_spec *specs, int n, int argc, char **argv, const char *usage_line) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            args_usage(specs, n, usage_line);
            return -1;
        }
        arg_spec *s = args_find(specs, n, a);
        if (!s) {
            char why[128];
            snprintf(why, sizeof why, "unknown option (see %s --help)", argv[0]);
            return cli_fail(a, why);
        }
        s->seen = 1;
        if (s->type == ARG_FLAG) {
            *(int *)s->p = 1;
            continue;
        }
        if (i + 1 >= argc) return cli_fail(a, "missing value");
        const char *v = argv[++i];
        if (s->type == ARG_STR) {
            *(const char **)s->p = v;
            continue;
        }
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(x)) return cli_fail(a, "not a number");
        if ((s->type == ARG_INT || s->type == ARG_LONG) && x != floor(x))
            return cli_fail(a, "not an integer");
        if (x < s->lo || x > s->hi) {
            char why[128];
            snprintf(why, sizeof why, "%s is outside [%g, %g]", v, s->lo, s->hi);
            return cli_fail(a, why);
        }
        if (s->type == ARG_INT) *(int *)s->p = (int)x;
        else if (s->type == ARG_LONG) *(long *)s->p = (long)x;
        else *(float *)s->p = (float)x;
    }
    return 0;
}
