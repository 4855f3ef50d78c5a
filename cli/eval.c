/* eval.c: `rotary eval`: loss and bits per byte of a checkpoint on a text, at
 * any context length (beyond the training context for encodings that allow
 * it: the extrapolation question). */
#define _POSIX_C_SOURCE 200809L
#include "args.h"
#include "cli.h"
#include "cuda/cuda_model.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The data and validation fraction a run was trained with. */
static int run_data(const char *run, char *data, size_t cap, float *frac) {
    char *d = cli_run_option(run, "data"), *f = cli_run_option(run, "val-fraction");
    int ok = d && f;
    if (ok) {
        snprintf(data, cap, "%s", d);
        *frac = (float)atof(f);
    }
    free(d);
    free(f);
    return ok ? 0 : cli_fail(run, "config.json: no data options (not a rotary run directory?)");
}

int cmd_eval(int argc, char **argv) {
    const char *run = NULL, *ckpt = NULL, *tok_spec = NULL, *data = NULL, *split = "val";
    const char *device = "cpu";
    int ctx = 0, batch = 8, threads = 0, max_windows = 0;
    float frac = 0.1f;
    cli_rope_args ra;
    cli_rope_args_default(&ra);
    arg_spec specs[11 + CLI_ROPE_N_SPECS] = {
        {"--run", ARG_STR, &run, 0, 0, "run directory (checkpoint, tokenizer and data)", 0},
        {"--checkpoint", ARG_STR, &ckpt, 0, 0, "checkpoint file", 0},
        {"--tokenizer", ARG_STR, &tok_spec, 0, 0, "bytes or a tokenizer file (default: the run's)", 0},
        {"--data", ARG_STR, &data, 0, 0, "text file or corpus name (default: the run's)", 0},
        {"--split", ARG_STR, &split, 0, 0, "val (the held-out end of the text) or all", 0},
        {"--val-fraction", ARG_FLOAT, &frac, 0.001, 1, "size of the held-out end (default: the run's)", 0},
        {"--ctx", ARG_INT, &ctx, 0, 1 << 20, "tokens per window (0 = the model's ctx)", 0},
        {"--batch", ARG_INT, &batch, 1, 1 << 16, "windows per forward pass", 0},
        {"--max-windows", ARG_INT, &max_windows, 0, 1 << 30, "evaluate at most this many windows (0 = all)", 0},
        {"--threads", ARG_INT, &threads, 0, 1024, "threads (0 = all cores)", 0},
        {"--device", ARG_STR, &device, 0, 0, "cpu, or cuda (an NVIDIA GPU)", 0},
    };
    int n_specs = 11 + cli_rope_specs(specs + 11, &ra);
    int rc = args_parse(specs, n_specs, argc, argv,
                        "rotary eval (--run DIR | --checkpoint FILE) [--data FILE] [--ctx N] [options]");
    if (rc) return rc < 0 ? 0 : rc;
    if (threads) omp_set_num_threads(threads);
    char run_data_buf[4096];
    if (run && (!data || !args_find(specs, n_specs, "--val-fraction")->seen)) {
        float f = frac;
        if (run_data(run, run_data_buf, sizeof run_data_buf, &f)) return 1;
        if (!data) data = run_data_buf;
        if (!args_find(specs, n_specs, "--val-fraction")->seen) frac = f;
    }
    if (!data) return cli_fail("eval", "give --data FILE (or --run DIR)");
    if (strcmp(split, "val") && strcmp(split, "all")) return cli_fail("--split", "val or all");
    const int on_gpu = strcmp(device, "cuda") == 0;
    if (!on_gpu && strcmp(device, "cpu")) return cli_fail("--device", "cpu or cuda");
    if (on_gpu && cuda_device_check()) return cli_fail("eval", rotary_last_error());

    rotary_model m;
    rotary_tokenizer *tok;
    if (run && ckpt) return cli_fail("eval", "give --run or --checkpoint, not both");
    if (cli_load_model(run ? run : ckpt, tok_spec, &m, &tok)) return 1;
    /* From here every way out goes through `done`, which frees what was made. */
    int *ids = NULL, *tgt = NULL, *inp = NULL;
    cuda_model *g = NULL;
    if (cli_apply_rope_scaling(&m, &ra, specs, n_specs)) {
        rc = 1;
        goto done;
    }
    int T = ctx ? ctx : m.cfg.ctx;
    if (rotary_model_extend(&m, T)) {
        rc = cli_fail("--ctx", rotary_last_error());
        goto done;
    }

    /* The run's own validation part (the same split as training), or all. */
    const int all = strcmp(split, "val") != 0;
    int *head;
    size_t n_head, n_ids;
    if (cli_load_split(data, tok, all ? 0.0f : frac, &head, &n_head, &ids, &n_ids)) {
        rc = 1;
        goto done;
    }
    if (all) {
        free(ids);
        ids = head, n_ids = n_head;
    } else {
        free(head);
    }
    size_t windows = n_ids > (size_t)T ? (n_ids - 1) / (size_t)T : 0;
    if (max_windows && windows > (size_t)max_windows) windows = (size_t)max_windows;
    if (windows == 0) {
        char why[160];
        snprintf(why, sizeof why, "%zu tokens is fewer than one window of %d + 1", n_ids, T);
        rc = cli_fail(data, why);
        goto done;
    }
    if (batch > (int)windows) batch = (int)windows;
    if (on_gpu ? cuda_model_new(&g, &m) || cuda_model_reserve(g, batch, T)
               : rotary_model_reserve(&m, batch, T) != 0) {
        rc = cli_fail("eval", rotary_last_error());
        goto done;
    }
    tgt = malloc((size_t)batch * T * sizeof(int)), inp = malloc((size_t)batch * T * sizeof(int));
    if (!tgt || !inp) {
        rc = cli_fail("eval", "out of memory");
        goto done;
    }
    double nats = 0, bytes = 0;
    size_t done = 0;
    /* Non-overlapping windows: window w predicts tokens wT+1 .. wT+T. */
    while (done < windows) {
        int b = (int)(windows - done < (size_t)batch ? windows - done : (size_t)batch);
        for (int i = 0; i < b; i++) {
            memcpy(inp + (size_t)i * T, ids + (done + (size_t)i) * T, (size_t)T * sizeof(int));
            memcpy(tgt + (size_t)i * T, ids + (done + (size_t)i) * T + 1, (size_t)T * sizeof(int));
        }
        float loss;
        if (g ? cuda_model_forward(g, inp, tgt, b, T, 0, &loss)
              : rotary_model_forward(&m, inp, tgt, b, T, &loss)) {
            rc = cli_fail("eval", rotary_last_error());
            goto done;
        }
        nats += (double)loss * b * T;
        for (int i = 0; i < b * T; i++) {
            int len;
            rotary_tokenizer_piece(tok, tgt[i], &len);
            bytes += len;
        }
        done += (size_t)b;
        fprintf(stderr, "\r%zu/%zu windows", done, windows);
    }
    fprintf(stderr, "\r");
    double tokens = (double)windows * T;
    printf("loss %.4f nats/token  %.4f bits/byte  ctx %d (trained at %d)  %zu windows, %.0f tokens, %.0f bytes\n",
           nats / tokens, nats / bytes / log(2.0), T, m.cfg.ctx, windows, tokens, bytes);
done:
    cuda_model_free(g);
    free(ids);
    free(inp);
    free(tgt);
    rotary_tokenizer_free(tok);
    rotary_model_free(&m);
    return rc;
}
