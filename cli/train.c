/* train.c: `rotary train`: tokenize a text, train a model on it, write a run
 * directory (config.json, metrics.csv, checkpoint.safetensors, tokenizer.json,
 * samples.txt), resume it, stop cleanly on Ctrl-C. */
#define _POSIX_C_SOURCE 200809L
#include "args.h"
#include "cli.h"
#include "cuda/cuda_model.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *data, *tokenizer, *out, *resume, *pos, *norm, *mlp, *pairing, *attn, *device;
    int t5_buckets, t5_max_distance;
    int layers, heads, kv_heads, dim, ff, ctx, batch, threads, eval_batches, rotary_dim;
    int tied, bias, force, sample_tokens, zero1, dist_bucket, grad_accum;
    long steps, warmup, eval_every, ckpt_every, seed;
    float lr, min_lr_frac, weight_decay, clip, beta1, beta2, rope_base, val_fraction, init_std;
    cli_rope_args rope;
} train_args;

#define N_SPECS (43 + CLI_ROPE_N_SPECS)
static int make_specs(arg_spec *s, train_args *a) {
    int n = 0;
#define SPEC(name, type, ptr, lo, hi, help) s[n++] = (arg_spec){name, type, ptr, lo, hi, help, 0}
    SPEC("--data", ARG_STR, &a->data, 0, 0, "text file, token file, or a corpus name: english, chinese");
    SPEC("--tokenizer", ARG_STR, &a->tokenizer, 0, 0, "bytes, or a BPE vocabulary file (rotary tokenizer train)");
    SPEC("--out", ARG_STR, &a->out, 0, 0, "run directory");
    SPEC("--resume", ARG_STR, &a->resume, 0, 0, "continue the run in this directory");
    SPEC("--force", ARG_FLAG, &a->force, 0, 1, "overwrite a run already in --out");
    SPEC("--pos", ARG_STR, &a->pos, 0, 0, "position encoding: rope, learned, sinusoidal, alibi, none, t5");
    SPEC("--attn", ARG_STR, &a->attn, 0, 0, "softmax, or linear (elu+1 features; RoPE in the numerator; not with alibi, t5)");
    SPEC("--t5-buckets", ARG_INT, &a->t5_buckets, 2, 4096, "T5 bias: distance buckets (--pos t5)");
    SPEC("--t5-max-distance", ARG_INT, &a->t5_max_distance, 2, 1 << 20, "T5 bias: distance where the last bucket starts (--pos t5)");
    SPEC("--layers", ARG_INT, &a->layers, 1, 4096, "transformer blocks");
    SPEC("--heads", ARG_INT, &a->heads, 1, 4096, "attention heads");
    SPEC("--kv-heads", ARG_INT, &a->kv_heads, 0, 4096, "key/value heads (grouped-query attention; 0 = heads)");
    SPEC("--dim", ARG_INT, &a->dim, 1, 1 << 20, "model width d_model");
    SPEC("--ff", ARG_INT, &a->ff, 0, 1 << 22, "MLP width (0 = 8/3 dim for swiglu, 4 dim for gelu, rounded up to 32)");
    SPEC("--ctx", ARG_INT, &a->ctx, 1, 1 << 20, "context length (tokens per sequence)");
    SPEC("--norm", ARG_STR, &a->norm, 0, 0, "rmsnorm or layernorm");
    SPEC("--mlp", ARG_STR, &a->mlp, 0, 0, "swiglu or gelu");
    SPEC("--rope-pairing", ARG_STR, &a->pairing, 0, 0, "interleaved (RoFormer, GPT-J) or half (GPT-NeoX)");
    SPEC("--rope-base", ARG_FLOAT, &a->rope_base, 1.0001, 1e12, "RoPE base");
    SPEC("--rotary-dim", ARG_INT, &a->rotary_dim, 0, 1 << 20, "rotated dims per head (0 = all)");
    n += cli_rope_specs(s + n, &a->rope);
    SPEC("--tied", ARG_INT, &a->tied, 0, 1, "output head shares the token embedding");
    SPEC("--bias", ARG_INT, &a->bias, 0, 1, "biases in linear layers and LayerNorm");
    SPEC("--init-std", ARG_FLOAT, &a->init_std, 1e-6, 1, "weight init standard deviation");
    SPEC("--batch", ARG_INT, &a->batch, 1, 1 << 20, "sequences per step");
    SPEC("--grad-accum", ARG_INT, &a->grad_accum, 1, 1 << 20, "split each step's batch into this many micro-batches: the same training with a fraction of the activation memory");
    SPEC("--steps", ARG_LONG, &a->steps, 1, 1e12, "optimizer steps");
    SPEC("--lr", ARG_FLOAT, &a->lr, 1e-9, 10, "peak learning rate (AdamW)");
    SPEC("--min-lr-frac", ARG_FLOAT, &a->min_lr_frac, 0, 1, "cosine decay floor, as a fraction of --lr");
    SPEC("--warmup", ARG_LONG, &a->warmup, 0, 1e12, "linear warmup steps");
    SPEC("--weight-decay", ARG_FLOAT, &a->weight_decay, 0, 10, "decoupled weight decay on matrices and embeddings");
    SPEC("--beta1", ARG_FLOAT, &a->beta1, 0, 0.999999, "AdamW beta1");
    SPEC("--beta2", ARG_FLOAT, &a->beta2, 0, 0.999999, "AdamW beta2");
    SPEC("--clip", ARG_FLOAT, &a->clip, 0, 1e6, "gradient-norm clipping (0 = off)");
    SPEC("--val-fraction", ARG_FLOAT, &a->val_fraction, 0.001, 0.9, "the last part of the text held out for validation");
    SPEC("--eval-every", ARG_LONG, &a->eval_every, 0, 1e12, "steps between validation runs (0 = only at the end)");
    SPEC("--eval-batches", ARG_INT, &a->eval_batches, 1, 1 << 20, "batches in each validation run");
    SPEC("--ckpt-every", ARG_LONG, &a->ckpt_every, 0, 1e12, "steps between checkpoints (0 = at each validation)");
    SPEC("--seed", ARG_LONG, &a->seed, 0, 9e15, "random seed (weights and batches)");
    SPEC("--threads", ARG_INT, &a->threads, 0, 1024, "threads (0 = all cores)");
    SPEC("--device", ARG_STR, &a->device, 0, 0, "cpu, or cuda (an NVIDIA GPU; docs/performance.md)");
    SPEC("--sample-tokens", ARG_INT, &a->sample_tokens, 0, 1 << 20, "tokens sampled into samples.txt at the end");
    SPEC("--zero1", ARG_FLAG, &a->zero1, 0, 1, "under mpirun: each rank keeps the AdamW state of 1/N of the weights (ZeRO-1)");
    SPEC("--dist-bucket", ARG_INT, &a->dist_bucket, 0, 1 << 30, "under mpirun: floats per all-reduce call (0 = 1M); buckets start during the backward pass");
#undef SPEC
    return n;
}

static void defaults(train_args *a) {
    memset(a, 0, sizeof *a);
    a->data = "english";
    a->tokenizer = "bytes";
    a->out = "runs/default";
    a->pos = "rope";
    a->norm = "rmsnorm";
    a->mlp = "swiglu";
    a->pairing = "interleaved";
    a->attn = "softmax";
    a->device = "cpu";
    a->t5_buckets = 32, a->t5_max_distance = 128;
    cli_rope_args_default(&a->rope);
    a->layers = 4, a->heads = 4, a->dim = 128, a->ctx = 128, a->batch = 32, a->grad_accum = 1;
    a->tied = 1, a->rope_base = 10000, a->init_std = 0.02f;
    a->steps = 600, a->warmup = 100, a->eval_every = 100, a->eval_batches = 20, a->seed = 1;
    a->lr = 1e-3f, a->min_lr_frac = 0.1f, a->weight_decay = 0.1f, a->clip = 1.0f;
    a->beta1 = 0.9f, a->beta2 = 0.99f, a->val_fraction = 0.1f, a->sample_tokens = 300;
}

/* Flags that a resumed run may change: the rest define the run. */
static int may_change_on_resume(const char *name) {
    return !strcmp(name, "--resume") || !strcmp(name, "--threads") || !strcmp(name, "--force") ||
           !strcmp(name, "--dist-bucket") ||
           !strcmp(name, "--sample-tokens") || !strcmp(name, "--out") || !strcmp(name, "--zero1") ||
           !strcmp(name, "--device") || !strcmp(name, "--grad-accum");
}

/* Of those, the ones a resumed run takes from the run unless given again:
 * how it ran, not what it is. */
static int carried_on_resume(const char *name) {
    return !strcmp(name, "--device") || !strcmp(name, "--grad-accum");
}

/* Options added after the first release: a run's config.json without them
 * was trained with their defaults. */
static int newer_option(const char *name) {
    return !strcmp(name, "--rope-scaling") || !strcmp(name, "--rope-factor") ||
           !strcmp(name, "--rope-original-ctx") || !strncmp(name, "--yarn-", 7) ||
           !strcmp(name, "--attn") || !strncmp(name, "--t5-", 5);
}

static int to_config(const train_args *a, arg_spec *specs, int n, rotary_config *c) {
    rotary_config_default(c);
    c->n_layer = a->layers, c->n_head = a->heads, c->n_kv_head = a->kv_heads ? a->kv_heads : a->heads;
    c->d_model = a->dim, c->ctx = a->ctx, c->rotary_dim = a->rotary_dim;
    c->tied = a->tied, c->bias = a->bias, c->rope_base = a->rope_base, c->init_std = a->init_std;
    c->pos = rotary_pos_parse(a->pos);
    if (c->pos < 0) return cli_fail("--pos", "unknown encoding (rope, learned, sinusoidal, alibi, none, t5)");
    if (strcmp(a->attn, "softmax") && strcmp(a->attn, "linear")) return cli_fail("--attn", "softmax or linear");
    c->attn = strcmp(a->attn, "linear") ? ROTARY_ATTN_SOFTMAX : ROTARY_ATTN_LINEAR;
    c->t5_buckets = a->t5_buckets, c->t5_max_distance = a->t5_max_distance;
    if (strcmp(a->norm, "rmsnorm") && strcmp(a->norm, "layernorm")) return cli_fail("--norm", "rmsnorm or layernorm");
    if (strcmp(a->mlp, "swiglu") && strcmp(a->mlp, "gelu")) return cli_fail("--mlp", "swiglu or gelu");
    if (strcmp(a->pairing, "interleaved") && strcmp(a->pairing, "half"))
        return cli_fail("--rope-pairing", "interleaved or half");
    c->norm = strcmp(a->norm, "rmsnorm") ? ROTARY_NORM_LAYER : ROTARY_NORM_RMS;
    c->mlp = strcmp(a->mlp, "swiglu") ? ROTARY_MLP_GELU : ROTARY_MLP_SWIGLU;
    c->rope_pairing = strcmp(a->pairing, "half") ? ROTARY_ROPE_INTERLEAVED : ROTARY_ROPE_HALF;
    if (cli_rope_scaling(&a->rope, specs, n, a->ctx, &c->rope_scaling)) return 1;
    c->d_ff = a->ff;
    if (!c->d_ff) {
        long ff = c->mlp == ROTARY_MLP_SWIGLU ? (8L * a->dim + 2) / 3 : 4L * a->dim;
        c->d_ff = (int)((ff + 31) / 32 * 32);
    }
    return 0;
}

/* --------------------------------------------------------- run directory */

static int write_config_json(const char *dir, arg_spec *specs, int n, const rotary_config *c,
                             int argc, char **argv) {
    cJSON *root = cJSON_CreateObject(), *args = cJSON_CreateArray(), *opts = cJSON_CreateObject();
    for (int i = 1; i < argc; i++) cJSON_AddItemToArray(args, cJSON_CreateString(argv[i]));
    cJSON_AddItemToObject(root, "argv", args);
    for (int i = 0; i < n; i++) {
        char v[4096];
        args_value(&specs[i], v, sizeof v);
        cJSON_AddStringToObject(opts, specs[i].name + 2, v);
    }
    cJSON_AddItemToObject(root, "options", opts);
    cJSON_AddNumberToObject(root, "d_ff", c->d_ff);
    cJSON_AddStringToObject(root, "version", ROTARY_VERSION);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return cli_fail("config.json", "out of memory");
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t len = strlen(text);
    text[len] = '\n'; /* cJSON_Print's NUL: the file ends with a newline instead */
    int rc = rotary_write_file(path, text, len + 1);
    free(text);
    return rc ? cli_fail("config.json", rotary_last_error()) : 0;
}

/* Load the options a run was started with, so `--resume DIR` alone continues
 * it; flags given now must agree with them. */
static int load_run_options(const char *dir, arg_spec *specs, int n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    unsigned char *buf;
    size_t len;
    if (cli_read_file(path, &buf, &len)) return 1;
    cJSON *root = cJSON_Parse((const char *)buf);
    free(buf);
    cJSON *opts = root ? cJSON_GetObjectItemCaseSensitive(root, "options") : NULL;
    if (!cJSON_IsObject(opts)) {
        cJSON_Delete(root);
        return cli_fail(path, "not a rotary run configuration");
    }
    static char store[N_SPECS][1024]; /* string options outlive the JSON */
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const int carried = carried_on_resume(specs[i].name);
        if (may_change_on_resume(specs[i].name) && !carried) continue;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(opts, specs[i].name + 2);
        if (!v && (newer_option(specs[i].name) || carried)) continue;
        if (!cJSON_IsString(v)) {
            rc = cli_fail(path, "missing an option; was it written by another version?");
            break;
        }
        snprintf(store[i], sizeof store[i], "%s", v->valuestring);
        char *fake[3] = {"train", (char *)specs[i].name, store[i]};
        int seen = specs[i].seen;
        if (specs[i].type == ARG_FLAG) *(int *)specs[i].p = atoi(store[i]);
        else rc = args_parse(specs, n, 3, fake, "rotary train") != 0;
        specs[i].seen = seen;
    }
    cJSON_Delete(root);
    return rc;
}

/* Temporary files of writes a kill interrupted ("NAME.tmp.XXXXXX" from
 * rotary_write_file): never read, so removing them only frees the space. */
static void remove_stale_tmp(const char *dir) {
    static const char *const names[] = {"checkpoint.safetensors", "metrics.csv", "config.json",
                                        "tokenizer.json"};
    DIR *d = opendir(dir);
    if (!d) return;
    int removed = 0;
    for (struct dirent *e; (e = readdir(d));) {
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
            size_t k = strlen(names[i]);
            if (strncmp(e->d_name, names[i], k) || strncmp(e->d_name + k, ".tmp.", 5) ||
                strlen(e->d_name + k + 5) != 6)
                continue;
            char p[4200];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            removed += unlink(p) == 0;
        }
    }
    closedir(d);
    if (removed)
        fprintf(stderr, "rotary: removed %d unfinished temporary file%s in %s\n", removed,
                removed > 1 ? "s" : "", dir);
}

static int file_exists(const char *dir, const char *name) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static int dir_has_run(const char *dir) {
    char p[4200];
    const char *files[] = {"config.json", "checkpoint.safetensors", "metrics.csv"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (access(p, F_OK) == 0) return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ data */

typedef struct {
    int *train, *val;
    size_t n_train, n_val;
} token_split;

/* -------------------------------------------------------------- progress */

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct {
    int tty;
    long every;
    double tok_s;
    int quiet; /* ranks other than 0 under mpirun */
} progress;

static int on_step(void *ctx, const rotary_train_status *s) {
    progress *p = ctx;
    p->tok_s = p->tok_s > 0 ? 0.9 * p->tok_s + 0.1 * s->tokens_per_s : s->tokens_per_s;
    int show = !p->quiet && (p->tty || s->evaluated || s->step % p->every == 0 || s->step == s->steps);
    if (show) {
        double eta = s->step > 0 ? s->elapsed_s / (double)s->step * (double)(s->steps - s->step) : 0;
        char val[32] = "     -";
        if (!isnan(s->val_loss)) snprintf(val, sizeof val, "%.4f", s->val_loss);
        fprintf(stderr, "%sstep %ld/%ld  loss %.4f  val %s  lr %.2e  %.1fk tok/s  ETA %ldm%02lds%s",
                p->tty ? "\r" : "", s->step, s->steps, s->train_loss, val, s->lr, p->tok_s / 1000,
                (long)eta / 60, (long)eta % 60, p->tty && !s->evaluated ? "   " : "\n");
        fflush(stderr);
    }
    return interrupted != 0;
}

/* Sample from the trained model into samples.txt and stdout. */
static int write_sample(rotary_model *m, const rotary_tokenizer *tok, const token_split *d,
                        const char *dir, int n_tokens, uint64_t seed, long step) {
    if (n_tokens <= 0) return 0;
    rotary_decoder dec;
    rotary_sampler smp;
    if (rotary_decoder_init(&dec, m, m->cfg.ctx) ||
        rotary_sampler_init(&smp, m->cfg.vocab, 0.8f, 0, 0.95f, seed))
        return cli_fail("sample", rotary_last_error());
    char path[4200];
    snprintf(path, sizeof path, "%s/samples.txt", dir);
    FILE *f = fopen(path, "ab");
    if (!f) return cli_fail(path, strerror(errno));
    /* Prompt: the first 8 tokens of the validation text. */
    int n_prompt = d->n_val < 8 ? (int)d->n_val : 8;
    int *ids = malloc(((size_t)n_prompt + (size_t)n_tokens) * sizeof(int));
    if (!ids) return cli_fail("sample", "out of memory");
    memcpy(ids, d->val, (size_t)n_prompt * sizeof(int));
    const float *logits = NULL;
    int n = 0, rc = 0;
    for (; n < n_prompt && !rc; n++) rc = rotary_decoder_step(&dec, ids[n], &logits);
    fprintf(f, "--- step %ld, temperature 0.8, top-p 0.95, seed %llu ---\n", step,
            (unsigned long long)seed);
    printf("\nsample:\n");
    for (int i = 0; i < n_prompt; i++) {
        int len;
        const unsigned char *pc = rotary_tokenizer_piece(tok, ids[i], &len);
        fwrite(pc, 1, (size_t)len, f);
        fwrite(pc, 1, (size_t)len, stdout);
    }
    while (!rc && n < n_prompt + n_tokens) {
        if (dec.n == dec.max_T) { /* slide: keep the last half of the window */
            rotary_decoder_reset(&dec);
            for (int j = n - dec.max_T / 2; j < n && !rc; j++) rc = rotary_decoder_step(&dec, ids[j], &logits);
        }
        ids[n] = rotary_sample(&smp, logits);
        int len;
        const unsigned char *pc = rotary_tokenizer_piece(tok, ids[n], &len);
        fwrite(pc, 1, (size_t)len, f);
        fwrite(pc, 1, (size_t)len, stdout);
        rc = rotary_decoder_step(&dec, ids[n++], &logits);
    }
    fputs("\n\n", f);
    printf("\n");
    fclose(f);
    free(ids);
    rotary_sampler_free(&smp);
    rotary_decoder_free(&dec);
    return rc ? cli_fail("sample", rotary_last_error()) : 0;
}

/* ------------------------------------------------------------------ main */

static int config_mismatch(const rotary_config *a, const rotary_config *b, char *why, size_t cap) {
#define CMP(f, name)                                                                      \
    if (a->f != b->f) {                                                                   \
        snprintf(why, cap, "the checkpoint has %s %g but the options give %g", name,      \
                 (double)a->f, (double)b->f);                                             \
        return 1;                                                                         \
    }
    CMP(n_layer, "layers") CMP(n_head, "heads") CMP(n_kv_head, "kv-heads") CMP(d_model, "dim")
    CMP(d_ff, "ff") CMP(ctx, "ctx") CMP(vocab, "vocab") CMP(norm, "norm") CMP(mlp, "mlp")
    CMP(pos, "pos") CMP(tied, "tied") CMP(bias, "bias") CMP(attn, "attn (0 softmax, 1 linear)")
    if (a->pos == ROTARY_POS_T5) { CMP(t5_buckets, "t5-buckets") CMP(t5_max_distance, "t5-max-distance") }
    if (a->pos == ROTARY_POS_ROPE) { CMP(rope_pairing, "rope-pairing") CMP(rope_base, "rope-base") CMP(rotary_dim, "rotary-dim") }
#undef CMP
    if (memcmp(&a->rope_scaling, &b->rope_scaling, sizeof a->rope_scaling)) {
        snprintf(why, cap, "the checkpoint's rope scaling (%s) differs from the options' (%s)",
                 rotary_rope_scaling_name(a->rope_scaling.type),
                 rotary_rope_scaling_name(b->rope_scaling.type));
        return 1;
    }
    return 0;
}

/* Under mpirun: which process this is (rank 0 alone writes the run
 * directory and talks); rank 0 of 1 otherwise. */
static rotary_dist dist;

static int train(int argc, char **argv) {
    train_args a;
    defaults(&a);
    arg_spec specs[N_SPECS];
    int n = make_specs(specs, &a);
    int rc = args_parse(specs, n, argc, argv,
                        "rotary train [--data FILE|english|chinese] [--pos rope|...] [--out DIR] [options]");
    if (rc) return rc < 0 ? 0 : rc;
    if (a.resume && !file_exists(a.resume, "config.json")) {
        /* Killed before it wrote its configuration: nothing to continue, so
         * the flags given now start it from the beginning. */
        struct stat sb;
        if (stat(a.resume, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return cli_fail(a.resume, "no such run directory");
        if (file_exists(a.resume, "checkpoint.safetensors"))
            return cli_fail(a.resume, "has a checkpoint but no config.json; was it written by "
                            "another program?");
        fprintf(stderr, "rotary: %s holds no run yet; starting it from the beginning\n", a.resume);
        a.out = a.resume;
        a.resume = NULL;
    }
    const char *dir = a.out;
    if (a.resume) {
        dir = a.resume;
        if (dist.rank == 0) remove_stale_tmp(dir); /* the writer cleans up */
        /* Reload the run's options; the flags given now must agree. */
        train_args saved;
        defaults(&saved);
        arg_spec ss[N_SPECS];
        make_specs(ss, &saved);
        if (load_run_options(dir, ss, n)) return 1;
        for (int i = 0; i < n; i++) {
            if (may_change_on_resume(specs[i].name)) continue;
            char now[1024], then[1024];
            args_value(&specs[i], now, sizeof now);
            args_value(&ss[i], then, sizeof then);
            if (specs[i].seen && strcmp(now, then)) {
                char why[2200];
                snprintf(why, sizeof why, "%s %s disagrees with the run in %s (%s); start a new run "
                         "to change it", specs[i].name, now, dir, then);
                return cli_fail("resume", why);
            }
        }
        saved.resume = a.resume, saved.threads = a.threads, saved.sample_tokens = a.sample_tokens;
        saved.zero1 = a.zero1, saved.dist_bucket = a.dist_bucket;
        for (int i = 0; i < n; i++) /* the run's device and micro-batches, unless given now */
            if (specs[i].seen && carried_on_resume(specs[i].name)) {
                if (!strcmp(specs[i].name, "--device")) saved.device = a.device;
                else saved.grad_accum = a.grad_accum;
            }
        a = saved;
    } else if (dist.rank == 0) {
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            char why[256];
            snprintf(why, sizeof why, "cannot create the run directory: %s", strerror(errno));
            return cli_fail(dir, why);
        }
        if (dir_has_run(dir) && !a.force)
            return cli_fail(dir, "already holds a run; use --resume DIR to continue it or --force "
                            "to start over");
        if (a.force) {
            const char *files[] = {"checkpoint.safetensors", "metrics.csv", "samples.txt", "config.json"};
            char p[4200];
            for (int i = 0; i < 4; i++) snprintf(p, sizeof p, "%s/%s", dir, files[i]), remove(p);
        }
    }
    if (a.threads) omp_set_num_threads(a.threads);

    rotary_config cfg;
    if (to_config(&a, specs, n, &cfg)) return 1;
    const int on_gpu = strcmp(a.device, "cuda") == 0;
    if (!on_gpu && strcmp(a.device, "cpu")) return cli_fail("--device", "cpu or cuda");
    /* Before anything is written: a run directory refused now stays free. */
    if (a.batch % (dist.size * a.grad_accum)) {
        char why[160], micro[64] = "";
        if (a.grad_accum > 1)
            snprintf(micro, sizeof micro, " x %d micro-batches (--grad-accum)", a.grad_accum);
        snprintf(why, sizeof why, "%d sequences do not split equally into %d rank%s%s", a.batch,
                 dist.size, dist.size > 1 ? "s" : "", micro);
        return cli_fail("--batch", why);
    }
    rotary_tokenizer *tok = NULL;
    char tok_path[4200];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", dir);
    if (cli_load_tokenizer(a.resume ? tok_path : a.tokenizer, 0, &tok)) return 1;
    /* From here every way out goes through `done`, which frees what was made. */
    token_split d = {0};
    rotary_model m;
    memset(&m, 0, sizeof m);
    cfg.vocab = rotary_tokenizer_vocab_size(tok);
    const char *bad = rotary_config_validate(&cfg)                                     ? "model"
                      : on_gpu && (cuda_device_check() || cuda_config_check(&cfg)) ? "train"
                                                                                     : NULL;
    if (bad) {
        rc = cli_fail(bad, rotary_last_error());
        goto done;
    }

    if (dist.rank == 0) fprintf(stderr, "rotary: reading %s\n", a.data);
    if (cli_load_split(a.data, tok, a.val_fraction, &d.train, &d.n_train, &d.val, &d.n_val)) {
        rc = 1;
        goto done;
    }

    if (d.n_train < (size_t)cfg.ctx + 1 || d.n_val < (size_t)cfg.ctx + 1) {
        char why[200];
        snprintf(why, sizeof why, "%zu training and %zu validation tokens; each needs more than "
                 "one context window (%d + 1)", d.n_train, d.n_val, cfg.ctx);
        rc = cli_fail(a.data, why);
        goto done;
    }
    char ckpt[4200];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", dir);
    int have_ckpt = a.resume && access(ckpt, F_OK) == 0;
    if (have_ckpt) {
        char why[256];
        if (rotary_checkpoint_load(ckpt, &m)) {
            rc = cli_fail("resume", rotary_last_error());
            goto done;
        }
        if (config_mismatch(&m.cfg, &cfg, why, sizeof why)) {
            rc = cli_fail(ckpt, why);
            goto done;
        }
    } else {
        if (rotary_model_build(&m, &cfg)) {
            rc = cli_fail("model", rotary_last_error());
            goto done;
        }
        rotary_model_init(&m, (uint64_t)a.seed);
        if (!a.resume && dist.rank == 0) {
            /* config.json last: its presence marks a run that --resume continues. */
            if (rotary_tokenizer_save(tok, tok_path)) {
                rc = cli_fail(tok_path, rotary_last_error());
                goto done;
            }
            if (write_config_json(dir, specs, n, &cfg, argc, argv)) {
                rc = 1;
                goto done;
            }
        }
    }
    if (dist.rank == 0)
        fprintf(stderr, "rotary: %zu parameters, pos=%s, %zu training and %zu validation tokens, "
                "%d threads%s%s\n", m.n_params, a.pos, d.n_train, d.n_val, omp_get_max_threads(),
                on_gpu ? ", on the GPU" : "", have_ckpt ? ", resuming" : "");

    progress pr = {isatty(2), a.steps / 20 > 0 ? a.steps / 20 : 1, 0, dist.rank != 0};
    rotary_train_opts o = {
        .run_dir = dir, .train_ids = d.train, .val_ids = d.val, .n_train = d.n_train,
        .n_val = d.n_val, .batch = a.batch, .accum = a.grad_accum, .steps = a.steps,
        .warmup = a.warmup, .lr = a.lr,
        .min_lr = a.lr * a.min_lr_frac, .weight_decay = a.weight_decay, .clip = a.clip,
        .beta1 = a.beta1, .beta2 = a.beta2, .eps = 1e-8f, .eval_every = a.eval_every,
        .ckpt_every = a.ckpt_every ? a.ckpt_every : a.eval_every, .eval_batches = a.eval_batches,
        .seed = (uint64_t)a.seed, .resume = a.resume != NULL, .on_step = on_step, .ctx = &pr,
        .dist = &dist, .zero1 = a.zero1};
    dist.bucket = (size_t)a.dist_bucket;
    if (dist.size > 1 && dist.rank == 0) {
        rotary_dist one = {.size = 1, .local_size = 1};
        rotary_train_opts alone = o;
        alone.dist = &one;
        fprintf(stderr, "rotary: %d ranks, batch %d (%d per rank), AdamW state %.2f MB per rank "
                "(%s)\n", dist.size, a.batch, a.batch / dist.size,
                rotary_train_optim_bytes(&m, &o) / 1e6,
                on_gpu && a.zero1 ? "ZeRO-1, on each rank's GPU, which its rank on the machine picks"
                : on_gpu          ? "on each rank's GPU, which its rank on the machine picks"
                : a.zero1         ? "ZeRO-1"
                                  : "not sharded: --zero1 divides it by the ranks");
        if (a.zero1)
            fprintf(stderr, "rotary: without ZeRO-1: %.2f MB per rank\n",
                    rotary_train_optim_bytes(&m, &alone) / 1e6);
    }
    if (a.grad_accum > 1 && dist.rank == 0 && a.batch / dist.size % a.grad_accum == 0)
        fprintf(stderr, "rotary: each step in %d micro-batches of %d sequences%s\n", a.grad_accum,
                a.batch / dist.size / a.grad_accum, dist.size > 1 ? " a rank" : "");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rc = on_gpu ? cuda_train(&m, &o) : rotary_train(&m, &o);
    if (rc == ROTARY_EINTR) {
        if (dist.rank == 0)
            fprintf(stderr, "\nrotary: train: interrupted; %s; continue with: rotary train --resume %s\n",
                    rotary_last_error(), dir);
        rc = 130;
    } else if (rc) {
        if (pr.tty) fputc('\n', stderr);
        const char *e = rotary_last_error();
        rc = cli_fail("train", strncmp(e, "train: ", 7) ? e : e + 7); /* said once */
    } else if (dist.rank == 0) {
        rc = write_sample(&m, tok, &d, dir, a.sample_tokens, (uint64_t)a.seed, a.steps);
        fprintf(stderr, "rotary: run written to %s (metrics.csv, checkpoint.safetensors, samples.txt)\n", dir);
    }
done:
    free(d.train);
    free(d.val);
    rotary_tokenizer_free(tok);
    rotary_model_free(&m);
    return rc;
}

/* `mpirun -np N rotary train ...` runs this in N processes (docs/distributed.md).
 * A rank that fails on its own ends the whole job (MPI_Abort) rather than
 * leave the others waiting for it; failures inside rotary_train are agreed
 * on by all ranks, and an interrupted run leaves normally. */
int cmd_train(int argc, char **argv) {
    if (rotary_dist_init(&dist, &argc, &argv)) return cli_fail("mpi", rotary_last_error());
    int rc = train(argc, argv);
    if (rc != 0 && rc != 130 && dist.size > 1) {
        fflush(stderr);
        rotary_dist_abort(&dist, rc);
    }
    rotary_dist_finalize(&dist);
    return rc;
}
