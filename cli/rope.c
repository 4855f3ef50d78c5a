/* rope.c: `rotary rope`: tools about the rotary embedding itself.
 * `rotary rope decay`: the long-term decay bound of RoFormer (section 3.4.3,
 * Figure 2) as a table, CSV, or a gnuplot plot. */
#define _POSIX_C_SOURCE 200809L
#include "args.h"
#include "cli.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* RoFormer's relative upper bound at distance r = m - n:
 *   (1/(d/2)) * sum_{j=1}^{d/2} |S_j|,  S_j = sum_{k<j} exp(i r theta_k).
 * It is (d/2 + 1)/2 at r = 0, where every term is in phase. */
static double decay_bound(const double *theta, int half, double r) {
    double re = 0, im = 0, sum = 0;
    for (int k = 0; k < half; k++) {
        re += cos(r * theta[k]);
        im += sin(r * theta[k]);
        sum += hypot(re, im);
    }
    return sum / half;
}

/* 1 if an executable named prog is on PATH. */
static int on_path(const char *prog) {
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/bin:/bin";
    char dir[4096], file[4200];
    while (*path) {
        size_t n = strcspn(path, ":");
        snprintf(dir, sizeof dir, "%.*s", (int)(n < sizeof dir - 1 ? n : sizeof dir - 1), path);
        snprintf(file, sizeof file, "%s/%s", n ? dir : ".", prog);
        if (access(file, X_OK) == 0) return 1;
        path += n + (path[n] == ':');
    }
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Write the curve through gnuplot: PNG (pngcairo) or SVG by extension. The
 * data goes inline as a datablock, so no temporary files. */
static int plot(const char *file, const double *bound, int max_dist, int dim, double base,
                const char *scaling) {
    const char *term = ends_with(file, ".png") ? "pngcairo size 900,600"
                       : ends_with(file, ".svg") ? "svg size 900,600 dynamic" : NULL;
    if (!term) return cli_fail("--plot", "the file name must end in .png or .svg");
    if (strpbrk(file, "\n\r")) return cli_fail("--plot", "the file name has a line break");
    if (!on_path("gnuplot"))
        return cli_fail("--plot", "gnuplot is not installed (Debian: apt-get install gnuplot-nox)");
    FILE *g = popen("gnuplot", "w");
    if (!g) return cli_fail("--plot", "cannot start gnuplot");
    void (*old)(int) = signal(SIGPIPE, SIG_IGN); /* a gnuplot that dies must not kill us */
    fprintf(g, "set terminal %s\nset output '", term);
    for (const char *p = file; *p; p++) /* gnuplot's quoting: '' is one ' */
        if (*p == '\'') fputs("''", g);
        else fputc(*p, g);
    fprintf(g, "'\nset title \"RoPE long-term decay (RoFormer sec. 3.4.3): d = %d, base = %g%s%s\"\n",
            dim, base, scaling ? ", " : "", scaling ? scaling : "");
    fprintf(g, "set xlabel \"relative distance m - n\"\n"
               "set ylabel \"relative upper bound (1/(d/2)) sum_j |S_j|\"\n"
               "set key top right\nset grid\nset xrange [0:%d]\n$bound << EOD\n",
            max_dist > 0 ? max_dist : 1);
    for (int r = 0; r <= max_dist; r++) fprintf(g, "%d %.12g\n", r, bound[r]);
    fprintf(g, "EOD\nplot $bound using 1:2 with lines linewidth 2 title \"d = %d, base = %g\"\n",
            dim, base);
    int status = pclose(g);
    signal(SIGPIPE, old);
    struct stat st;
    if (status != 0) return cli_fail("--plot", "gnuplot failed (its message is above)");
    if (stat(file, &st) != 0 || st.st_size == 0) return cli_fail(file, "gnuplot wrote nothing");
    return 0;
}

static int rope_decay(int argc, char **argv) {
    int dim = 128, max_dist = 256, csv = 0, normalize = 0;
    float base = 10000.0f;
    const char *plot_file = NULL;
    cli_rope_args ra;
    cli_rope_args_default(&ra);
    arg_spec specs[6 + CLI_ROPE_N_SPECS] = { /* the last one is --plot, below */
        {"--dim", ARG_INT, &dim, 2, 1 << 16, "rotated dimensions d (even)", 0},
        {"--base", ARG_FLOAT, &base, 1.0001, 1e12, "RoPE base: theta_k = base^(-2k/d)", 0},
        {"--max-dist", ARG_INT, &max_dist, 0, 1 << 24, "largest relative distance m - n", 0},
        {"--csv", ARG_FLAG, &csv, 0, 1, "print 'distance,bound' lines", 0},
        {"--normalize", ARG_FLAG, &normalize, 0, 1, "divide by the value at distance 0", 0},
    };
    int n = 5 + cli_rope_specs(specs + 5, &ra);
    specs[n++] = (arg_spec){"--plot", ARG_STR, &plot_file, 0, 0, "also plot into FILE.png or FILE.svg (gnuplot)", 0};
    int rc = args_parse(specs, n, argc, argv,
                        "rotary rope decay [--dim 128] [--base 10000] [--max-dist 256] [--csv] "
                        "[--plot FILE.png|.svg]");
    if (rc) return rc < 0 ? 0 : rc;
    if (dim % 2) return cli_fail("--dim", "must be even");
    rotary_rope_scaling sc; /* no checkpoint here: --rope-original-ctx is needed */
    if (cli_rope_scaling(&ra, specs, n, 0, &sc)) return 1;
    const int half = dim / 2;
    double *theta = malloc((size_t)half * sizeof *theta);
    double *bound = malloc(((size_t)max_dist + 1) * sizeof *bound);
    if (!theta || !bound) return cli_fail("rope decay", "out of memory");
    /* Dynamic NTK takes the whole range as its sequence length. */
    if (rotary_rope_inv_freq(theta, dim, base, &sc, max_dist + 1))
        return cli_fail("rope decay", rotary_last_error());
#pragma omp parallel for schedule(static)
    for (int r = 0; r <= max_dist; r++) bound[r] = decay_bound(theta, half, r);
    const double b0 = bound[0];
    if (normalize)
        for (int r = 0; r <= max_dist; r++) bound[r] /= b0;
    char label[160] = "";
    if (sc.type != ROTARY_ROPE_SCALING_NONE)
        snprintf(label, sizeof label, "%s x%g from %d", rotary_rope_scaling_name(sc.type),
                 sc.factor, sc.original_ctx);
    if (csv) printf("distance,bound\n");
    else printf("# RoFormer long-term decay bound, d = %d, base = %g%s%s%s\n%8s  %s\n", dim,
                (double)base, *label ? ", " : "", label, normalize ? ", normalized" : "",
                "distance", "bound");
    for (int r = 0; r <= max_dist; r++)
        printf(csv ? "%d,%.12g\n" : "%8d  %.9f\n", r, bound[r]);
    rc = plot_file ? plot(plot_file, bound, max_dist, dim, base, *label ? label : NULL) : 0;
    free(theta);
    free(bound);
    return rc;
}

int cmd_rope(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "decay")) return rope_decay(argc - 1, argv + 1);
    int help = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    FILE *f = help ? stdout : stderr;
    if (argc >= 2 && !help) fprintf(stderr, "rotary: rope: unknown subcommand '%s'\n", argv[1]);
    fprintf(f, "usage: rotary rope <subcommand> [options]\n\nsubcommands:\n"
               "  decay   RoFormer's long-term decay bound of RoPE by relative distance\n");
    return f == stderr ? 2 : 0;
}
