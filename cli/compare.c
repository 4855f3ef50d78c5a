/* compare.c: `rotary compare`: train the same model on the same data with
 * each position encoding (and several seeds), then tabulate and plot how fast
 * each one learns. Every run is an ordinary run directory under --out, made
 * by `rotary train`, so an interrupted comparison resumes where it stopped. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum { MAX_LIST = 16, MAX_EVALS = 4096, MAX_ARGS = 256 };

typedef struct {
    int n;
    long step[MAX_EVALS];
    double val[MAX_EVALS];
} curve;

typedef struct {
    const char *pos[MAX_LIST];
    int n_pos;
    long seeds[MAX_LIST];
    int n_seeds;
    int lengths[MAX_LIST];
    int n_lengths;
    const char *out, *name;    /* directory; prefix of the report files */
    double target;           /* NAN: each seed's learned run's final loss */
    const char *fwd[MAX_ARGS]; /* options passed to every `rotary train` */
    int n_fwd;
    curve runs[MAX_LIST][MAX_LIST];
    const char *device;        /* --device, also given to `rotary eval`; NULL: cpu */
    int ctx;
} compare;

static int split_list(char *s, const char **items, int max) {
    int n = 0;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (n == max) return -1;
        items[n++] = tok;
    }
    return n;
}

static int run_dir(char *buf, size_t cap, const compare *c, int p, int s) {
    return snprintf(buf, cap, "%s/%s-seed%ld", c->out, c->pos[p], c->seeds[s]) >= (int)cap;
}

/* Run argv (a `rotary` subcommand) as a child with stdout to `capture`
 * (stderr to /dev/null when quiet); its exit status, or -1. */
static int spawn(char **argv, const char *capture, int quiet) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (capture) {
            FILE *f = freopen(capture, "w", stdout);
            if (!f) _exit(127);
        }
        if (quiet && !freopen("/dev/null", "w", stderr)) _exit(127);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Read a run's validation curve; *last is its last logged step. */
static int read_curve(const char *dir, curve *cv, long *last) {
    char path[4200], line[512];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    cv->n = 0;
    *last = 0;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    if (!fgets(line, sizeof line, f)) {
        fclose(f);
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        char *end, *p = line;
        long step = strtol(p, &end, 10);
        if (end == p || *end != ',') break;
        *last = step;
        p = strchr(end + 1, ','); /* skip train_loss */
        if (!p || p[1] == ',' || cv->n == MAX_EVALS) continue;
        cv->step[cv->n] = step;
        cv->val[cv->n++] = strtod(p + 1, NULL);
    }
    fclose(f);
    return 0;
}

static int train_all(compare *c) {
    int total = c->n_pos * c->n_seeds, k = 0;
    for (int s = 0; s < c->n_seeds; s++) {
        for (int p = 0; p < c->n_pos; p++) {
            char dir[4096], seed[32], cfg[4200];
            k++;
            if (run_dir(dir, sizeof dir, c, p, s)) return cli_fail("--out", "path too long");
            snprintf(seed, sizeof seed, "%ld", c->seeds[s]);
            snprintf(cfg, sizeof cfg, "%s/config.json", dir);
            /* A run is reused only if it was made with the same options. */
            char args[8192] = "", apath[4200], prev[8192] = "";
            for (int i = 0; i < c->n_fwd; i++) {
                size_t len = strlen(args);
                snprintf(args + len, sizeof args - len, "%s%s", i ? " " : "", c->fwd[i]);
            }
            snprintf(apath, sizeof apath, "%s/compare-args", dir);
            FILE *af = fopen(apath, "r");
            if (af) {
                if (!fgets(prev, sizeof prev, af)) prev[0] = 0;
                prev[strcspn(prev, "\n")] = 0;
                fclose(af);
                if (strcmp(prev, args) != 0) {
                    char why[8600];
                    snprintf(why, sizeof why, "was trained with other options (%s); use another --out",
                             prev);
                    return cli_fail(dir, why);
                }
            } else {
                mkdir(dir, 0755);
                af = fopen(apath, "w");
                if (!af || fprintf(af, "%s\n", args) < 0 || fclose(af) != 0)
                    return cli_fail(apath, "cannot write");
            }
            curve cv;
            long last;
            char *want = access(cfg, F_OK) == 0 ? cli_run_option(dir, "steps") : NULL;
            if (want && read_curve(dir, &cv, &last) == 0 && last == atol(want)) {
                fprintf(stderr, "rotary: compare: run %d/%d (%s, seed %s) is complete\n", k, total,
                        c->pos[p], seed);
                free(want);
                continue;
            }
            free(want);
            char *argv[MAX_ARGS + 16];
            int n = 0;
            argv[n++] = "rotary";
            argv[n++] = "train";
            if (access(cfg, F_OK) == 0) {
                argv[n++] = "--resume";
                argv[n++] = dir;
            } else {
                for (int i = 0; i < c->n_fwd; i++) argv[n++] = (char *)c->fwd[i];
                argv[n++] = "--pos";
                argv[n++] = (char *)c->pos[p];
                argv[n++] = "--seed";
                argv[n++] = seed;
                argv[n++] = "--out";
                argv[n++] = dir;
            }
            argv[n] = NULL;
            fprintf(stderr, "rotary: compare: run %d/%d: %s, seed %s%s\n", k, total, c->pos[p], seed,
                    access(cfg, F_OK) == 0 ? " (resuming)" : "");
            int st = spawn(argv, "/dev/null", 0);
            if (st == 130) return 130; /* interrupted: the run saved itself */
            if (st != 0) {
                char why[4400];
                snprintf(why, sizeof why, "the run in %s failed (status %d); see the message above",
                         dir, st);
                return cli_fail("compare", why);
            }
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- analysis */

static void mean_sd(const double *x, int n, double *mean, double *sd) {
    double m = 0, v = 0;
    for (int i = 0; i < n; i++) m += x[i];
    m /= n;
    for (int i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m);
    *mean = m;
    *sd = n > 1 ? sqrt(v / (n - 1)) : 0;
}

/* First step at which the curve reaches target, interpolated linearly
 * between evaluations; NAN if never. */
static double steps_to(const curve *cv, double target) {
    for (int i = 0; i < cv->n; i++) {
        if (cv->val[i] > target) continue;
        if (i == 0) return (double)cv->step[0];
        double a = cv->val[i - 1], b = cv->val[i];
        return (double)cv->step[i - 1] + (a - target) / (a - b) * (double)(cv->step[i] - cv->step[i - 1]);
    }
    return NAN;
}

static double value_at(const curve *cv, long step) {
    for (int i = 0; i < cv->n; i++)
        if (cv->step[i] == step) return cv->val[i];
    return NAN;
}

static void fmt_ms(char *buf, size_t cap, const double *x, int n, const char *fmt) {
    double m, sd;
    mean_sd(x, n, &m, &sd);
    if (isnan(m)) snprintf(buf, cap, "-");
    else if (n > 1) {
        char f2[32];
        snprintf(f2, sizeof f2, "%s ± %s", fmt, fmt);
        snprintf(buf, cap, f2, m, sd);
    } else snprintf(buf, cap, fmt, m);
}

/* Evaluate a run at k times its context; NAN when it cannot (learned). */
static double eval_at(const compare *c, const char *dir, int k, const char *extra) {
    char ctx[32], cap[4200];
    snprintf(ctx, sizeof ctx, "%d", k * c->ctx);
    snprintf(cap, sizeof cap, "%s/eval.tmp", dir);
    char *argv[20] = {"rotary", "eval", "--run", (char *)dir, "--ctx", ctx, "--max-windows", "256"};
    int n = 8;
    char factor[32];
    snprintf(factor, sizeof factor, "%d", k);
    if (extra && k > 1) {
        argv[n++] = "--rope-scaling";
        argv[n++] = (char *)extra;
        argv[n++] = "--rope-factor";
        argv[n++] = factor;
    }
    if (c->device) argv[n++] = "--device", argv[n++] = (char *)c->device;
    argv[n] = NULL;
    int st = spawn(argv, cap, 1);
    double loss = NAN;
    FILE *f = fopen(cap, "r");
    if (f && st == 0 && fscanf(f, "loss %lf", &loss) != 1) loss = NAN;
    if (f) fclose(f);
    remove(cap);
    return loss;
}

static int report(compare *c) {
    char dir[4096];
    /* Curves and the common evaluation steps. */
    for (int p = 0; p < c->n_pos; p++)
        for (int s = 0; s < c->n_seeds; s++) {
            long last;
            run_dir(dir, sizeof dir, c, p, s);
            if (read_curve(dir, &c->runs[p][s], &last) != 0 || c->runs[p][s].n == 0)
                return cli_fail(dir, "no metrics.csv with validation losses");
        }
    const curve *ref = &c->runs[0][0];
    int learned = -1;
    for (int p = 0; p < c->n_pos; p++)
        if (!strcmp(c->pos[p], "learned")) learned = p;
    /* Per seed: the target loss (by default learned's final loss) and the
     * first step at which learned positions reach it. That is the last step
     * unless learned was lower earlier (it overfits): measured the same way
     * as every other encoding, learned saves 0% by construction. */
    double target[MAX_LIST], base[MAX_LIST];
    for (int s = 0; s < c->n_seeds; s++) {
        const curve *l = &c->runs[learned >= 0 ? learned : 0][s];
        target[s] = isnan(c->target) ? l->val[l->n - 1] : c->target;
        base[s] = steps_to(l, target[s]);
    }

    /* compare.csv: step, then mean and sd of the validation loss per encoding. */
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.csv", c->out, c->name);
    FILE *f = fopen(path, "w");
    if (!f) return cli_fail(path, strerror(errno));
    fprintf(f, "step");
    for (int p = 0; p < c->n_pos; p++) fprintf(f, ",%s,%s_sd", c->pos[p], c->pos[p]);
    fprintf(f, "\n");
    for (int i = 0; i < ref->n; i++) {
        fprintf(f, "%ld", ref->step[i]);
        for (int p = 0; p < c->n_pos; p++) {
            double x[MAX_LIST], m, sd;
            for (int s = 0; s < c->n_seeds; s++) x[s] = value_at(&c->runs[p][s], ref->step[i]);
            mean_sd(x, c->n_seeds, &m, &sd);
            fprintf(f, ",%.6f,%.6f", m, sd);
        }
        fprintf(f, "\n");
    }
    fclose(f);

    /* The table, also saved as Markdown for docs. */
    snprintf(path, sizeof path, "%s/%s.md", c->out, c->name);
    FILE *md = fopen(path, "w");
    if (!md) return cli_fail(path, strerror(errno));
    /* Columns at a quarter, half and all of the run. */
    long marks[3];
    const double frac[3] = {0.25, 0.5, 1.0};
    for (int k = 0; k < 3; k++) {
        int i = (int)ceil(ref->n * frac[k]) - 1;
        marks[k] = ref->step[i < 0 ? 0 : i];
    }
    char head[512], goal[64];
    if (isnan(c->target)) snprintf(goal, sizeof goal, "learned's final loss");
    else snprintf(goal, sizeof goal, "%.4f", c->target);
    snprintf(head, sizeof head, "| encoding | val loss @%ld | val loss @%ld | val loss @%ld | steps to %s | steps saved vs learned |",
             marks[0], marks[1], marks[2], goal);
    fprintf(md, "%s\n|---|---|---|---|---|---|\n", head);
    printf("\n%s\n", head);
    for (int p = 0; p < c->n_pos; p++) {
        char cells[5][64];
        for (int k = 0; k < 3; k++) {
            double x[MAX_LIST];
            for (int s = 0; s < c->n_seeds; s++) x[s] = value_at(&c->runs[p][s], marks[k]);
            fmt_ms(cells[k], sizeof cells[k], x, c->n_seeds, "%.4f");
        }
        double st[MAX_LIST], saved[MAX_LIST];
        int reached = 1;
        for (int s = 0; s < c->n_seeds; s++) {
            st[s] = steps_to(&c->runs[p][s], target[s]);
            reached &= !isnan(st[s]);
            saved[s] = 100.0 * (1.0 - st[s] / base[s]);
        }
        if (reached) fmt_ms(cells[3], sizeof cells[3], st, c->n_seeds, "%.0f");
        else snprintf(cells[3], sizeof cells[3], "not reached");
        if (reached && learned >= 0) fmt_ms(cells[4], sizeof cells[4], saved, c->n_seeds, "%.1f%%");
        else snprintf(cells[4], sizeof cells[4], "-");
        char row[512];
        snprintf(row, sizeof row, "| %s | %s | %s | %s | %s | %s |", c->pos[p], cells[0], cells[1],
                 cells[2], cells[3], cells[4]);
        printf("%s\n", row);
        fprintf(md, "%s\n", row);
    }
    fprintf(md, "\n%d seed(s) per encoding (mean ± sample standard deviation over seeds). Steps to "
                "the target are interpolated between evaluations; %s.\n", c->n_seeds,
            isnan(c->target) ? "the target of seed s is the final validation loss of learned "
                               "positions with seed s, and steps saved compare with the first "
                               "step at which learned reaches it"
                             : "the target is --target-loss");

    /* Extrapolation: evaluate each run at k times its training context. */
    if (c->n_lengths > 0) {
        const char *variants[] = {NULL, "linear", "ntk", "yarn"};
        const char *vnames[] = {"", " + PI", " + NTK", " + YaRN"};
        char eh[512] = "| encoding |";
        for (int k = 0; k < c->n_lengths; k++) {
            size_t len = strlen(eh);
            snprintf(eh + len, sizeof eh - len, " %dx ctx |", c->lengths[k]);
        }
        printf("\nvalidation loss at longer contexts (trained at %d)\n%s\n", c->ctx, eh);
        fprintf(md, "\nValidation loss (nats/token) at multiples of the training context (%d):\n\n%s\n|---|",
                c->ctx, eh);
        for (int k = 0; k < c->n_lengths; k++) fprintf(md, "---|");
        fprintf(md, "\n");
        for (int p = 0; p < c->n_pos; p++) {
            int nv = strcmp(c->pos[p], "rope") ? 1 : 4;
            for (int v = 0; v < nv; v++) {
                char row[1024];
                snprintf(row, sizeof row, "| %s%s |", c->pos[p], vnames[v]);
                for (int k = 0; k < c->n_lengths; k++) {
                    double x[MAX_LIST];
                    for (int s = 0; s < c->n_seeds; s++) {
                        run_dir(dir, sizeof dir, c, p, s);
                        x[s] = eval_at(c, dir, c->lengths[k], variants[v]);
                    }
                    char cell[64];
                    fmt_ms(cell, sizeof cell, x, c->n_seeds, "%.3f");
                    size_t len = strlen(row);
                    snprintf(row + len, sizeof row - len, " %s |", cell);
                }
                printf("%s\n", row);
                fprintf(md, "%s\n", row);
            }
        }
    }
    fclose(md);
    return 0;
}

/* Plot compare.csv with gnuplot as PNG and SVG. */
static int plot(const compare *c) {
    char gp[4200];
    snprintf(gp, sizeof gp, "%s/%s.gp", c->out, c->name);
    FILE *f = fopen(gp, "w");
    if (!f) return cli_fail(gp, strerror(errno));
    fprintf(f, "set datafile separator ','\nset key top right\nset grid\n"
               "set xlabel 'training step'\nset ylabel 'validation loss (nats/token)'\n"
               "set title 'Validation loss by position encoding (%d seed%s, mean)'\n",
            c->n_seeds, c->n_seeds > 1 ? "s" : "");
    const char *terms[2][2] = {{"pngcairo size 900,600", "png"}, {"svg size 900,600", "svg"}};
    for (int t = 0; t < 2; t++) {
        fprintf(f, "set terminal %s\nset output '%s.%s'\nplot ", terms[t][0], c->name, terms[t][1]);
        for (int p = 0; p < c->n_pos; p++)
            fprintf(f, "%s'%s.csv' using 1:%d with linespoints lw 2 title '%s'", p ? ", " : "",
                    c->name, 2 + 2 * p, c->pos[p]);
        fprintf(f, "\n");
    }
    fclose(f);
    if (access("/usr/bin/gnuplot", X_OK) != 0)
        return cli_fail("plot", "gnuplot not found (apt-get install gnuplot-nox); the .csv, .md "
                        "and .gp files are written");
    char cmd[8500];
    snprintf(cmd, sizeof cmd, "cd '%s' && /usr/bin/gnuplot '%s.gp'", c->out, c->name);
    if (system(cmd) != 0) return cli_fail("plot", "gnuplot failed");
    fflush(stdout);
    fprintf(stderr, "rotary: compare: wrote %s/%s.{csv,md,png,svg}\n", c->out, c->name);
    return 0;
}

static int usage(void) {
    printf("usage: rotary compare [--pos rope,learned,sinusoidal,alibi,none] [--seeds 1,2,3]\n"
           "                      [--out DIR] [--name NAME] [--target-loss X] [--eval-lengths 1,2,4,8]\n"
           "                      [any `rotary train` option, e.g. --data FILE --steps N --attn linear]\n\n"
           "Trains one run per encoding and seed (DIR/ENCODING-seedS, resumable), then prints\n"
           "and writes DIR/NAME.csv, NAME.md and the plots NAME.png, NAME.svg (NAME: compare):\n"
           "validation loss at fixed steps, steps to reach the target loss (default: the learned\n"
           "runs' final loss) and the steps saved against learned absolute positions.\n"
           "--eval-lengths adds the loss at multiples of the training context (RoPE also with\n"
           "position interpolation, NTK and YaRN scaling). Comparisons sharing an --out reuse\n"
           "each other's finished runs (same encoding and seed).\n");
    return 0;
}

int cmd_compare(int argc, char **argv) {
    static compare c;
    memset(&c, 0, sizeof c);
    c.out = "runs/compare";
    c.name = "compare";
    c.target = NAN;
    char pos_default[] = "rope,learned,sinusoidal,alibi,none", seeds_default[] = "1";
    char *pos_list = pos_default, *seed_list = seeds_default, *len_list = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage();
        int has_value = i + 1 < argc;
        if (!strcmp(a, "--pos") && has_value) pos_list = argv[++i];
        else if (!strcmp(a, "--seeds") && has_value) seed_list = argv[++i];
        else if (!strcmp(a, "--seed") && has_value) seed_list = argv[++i];
        else if (!strcmp(a, "--out") && has_value) c.out = argv[++i];
        else if (!strcmp(a, "--name") && has_value) c.name = argv[++i];
        else if (!strcmp(a, "--eval-lengths") && has_value) len_list = argv[++i];
        else if (!strcmp(a, "--target-loss") && has_value) {
            char *end;
            c.target = strtod(argv[++i], &end);
            if (*end || !(c.target > 0)) return cli_fail("--target-loss", "not a positive number");
        } else if (!strcmp(a, "--resume") || !strcmp(a, "--force")) {
            return cli_fail(a, "compare resumes by itself; rerun the same command");
        } else {
            if (c.n_fwd + 2 > MAX_ARGS) return cli_fail("compare", "too many options");
            c.fwd[c.n_fwd++] = a;
            if (!strcmp(a, "--device") && has_value) c.device = argv[i + 1];
            if (a[0] == '-' && has_value && strncmp(argv[i + 1], "--", 2) != 0) c.fwd[c.n_fwd++] = argv[++i];
        }
    }
    const char *items[MAX_LIST];
    c.n_pos = split_list(pos_list, c.pos, MAX_LIST);
    if (c.n_pos <= 0) return cli_fail("--pos", "give 1 to 16 encodings, comma-separated");
    for (int p = 0; p < c.n_pos; p++)
        if (rotary_pos_parse(c.pos[p]) < 0) return cli_fail("--pos", "unknown encoding in the list");
    int n = split_list(seed_list, items, MAX_LIST);
    if (n <= 0) return cli_fail("--seeds", "give 1 to 16 seeds, comma-separated");
    for (int s = 0; s < n; s++) {
        char *end;
        c.seeds[s] = strtol(items[s], &end, 10);
        if (*end || c.seeds[s] < 0) return cli_fail("--seeds", "not a list of non-negative integers");
    }
    c.n_seeds = n;
    if (len_list) {
        n = split_list(len_list, items, MAX_LIST);
        if (n <= 0) return cli_fail("--eval-lengths", "give multiples such as 1,2,4,8");
        for (int k = 0; k < n; k++) {
            c.lengths[k] = atoi(items[k]);
            if (c.lengths[k] < 1 || c.lengths[k] > 64) return cli_fail("--eval-lengths", "multiples 1..64");
        }
        c.n_lengths = n;
    }
    if (mkdir(c.out, 0755) != 0 && errno != EEXIST) return cli_fail(c.out, strerror(errno));
    int rc = train_all(&c);
    if (rc == 130) {
        fprintf(stderr, "rotary: compare: interrupted; run the same command again to resume\n");
        return 130;
    }
    if (rc) return rc;
    char dir[4096];
    run_dir(dir, sizeof dir, &c, 0, 0);
    char *ctx = cli_run_option(dir, "ctx");
    c.ctx = ctx ? atoi(ctx) : 0;
    free(ctx);
    if (c.ctx <= 0) return cli_fail(dir, "cannot read the run's ctx");
    if ((rc = report(&c))) return rc;
    return plot(&c);
}
