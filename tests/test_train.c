/* test_train: the KV-cache decoder against the full forward pass, resumed
 * training against uninterrupted training (bit for bit), a NaN loss,
 * gradient accumulation against one pass, the
 * sampler, token files and batches, and the ZeRO-1 arithmetic (shards of
 * the AdamW state) in one process. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];

static void tiny(rotary_config *c, int pos) {
    rotary_config_default(c);
    c->n_layer = 2, c->n_head = 4, c->n_kv_head = 2, c->d_model = 32, c->d_ff = 64;
    c->ctx = 16, c->vocab = 29, c->pos = pos, c->init_std = 0.2f;
}

/* Decoder logits at every position equal the full forward's. */
static void test_decoder(void) {
    for (int attn = ROTARY_ATTN_SOFTMAX; attn <= ROTARY_ATTN_LINEAR; attn++)
    for (int pos = ROTARY_POS_ROPE; pos <= ROTARY_POS_T5; pos++) {
        if (attn == ROTARY_ATTN_LINEAR && (pos == ROTARY_POS_ALIBI || pos == ROTARY_POS_T5)) continue;
        for (int variant = 0; variant < 2; variant++) {
            rotary_config c;
            tiny(&c, pos);
            c.attn = attn;
            c.t5_buckets = 8, c.t5_max_distance = 12; /* 16 positions saturate them */
            if (variant) c.norm = ROTARY_NORM_LAYER, c.mlp = ROTARY_MLP_GELU, c.bias = 1, c.tied = 0,
                         c.rope_pairing = ROTARY_ROPE_HALF, c.rotary_dim = 4, c.n_kv_head = 1;
            rotary_model m;
            EXPECT(rotary_model_build(&m, &c) == 0, "build");
            rotary_model_init(&m, 11);
            const rotary_tensor *rb = rotary_model_tensor(&m, "rel_bias.weight");
            for (size_t j = 0; rb && j < rb->numel; j++) /* starts at zero: give it values */
                m.params[rb->offset + j] = (float)((j * 37 % 11) - 5) * 0.3f;
            int tok[16];
            for (int t = 0; t < 16; t++) tok[t] = (t * 7 + 3) % c.vocab;
            EXPECT(rotary_model_forward(&m, tok, NULL, 1, 16, NULL) == 0, "forward");
            float *full = malloc(sizeof(float) * 16 * c.vocab);
            memcpy(full, rotary_model_logits(&m), sizeof(float) * 16 * c.vocab);
            rotary_decoder d;
            EXPECT(rotary_decoder_init(&d, &m, 16) == 0, "decoder init: %s", rotary_last_error());
            double worst = 0, scale = 0;
            for (int t = 0; t < 16; t++) {
                const float *lg;
                EXPECT(rotary_decoder_step(&d, tok[t], &lg) == 0, "step");
                for (int i = 0; i < c.vocab; i++) {
                    double e = fabs(lg[i] - full[t * c.vocab + i]);
                    worst = e > worst ? e : worst;
                    scale = fabs(full[t * c.vocab + i]) > scale ? fabs(full[t * c.vocab + i]) : scale;
                }
            }
            const float *lg;
            EXPECT(rotary_decoder_step(&d, 0, &lg) != 0, "a full cache is an error");
            /* After a reset the first step sees nothing of the old sequence
             * (linear attention must clear its running sums). */
            rotary_decoder_reset(&d);
            EXPECT(rotary_decoder_step(&d, tok[0], &lg) == 0 &&
                       fabs(lg[0] - full[0]) <= 1e-5 * (fabs(full[0]) + 1),
                   "reset: first step differs");
            const char *kind = attn ? "linear" : "softmax";
            EXPECT(worst <= 1e-5 * scale, "%s %s: decoder vs forward max error %g (scale %g)", kind,
                   rotary_pos_name(pos), worst, scale);
            printf("decoder %-7s %-10s %s: max |decoder - forward| = %.2e (logits up to %.2f)\n",
                   kind, rotary_pos_name(pos), variant ? "variant" : "default", worst, scale);
            rotary_decoder_free(&d);
            /* Beyond the training context: allowed except for learned, and
             * the full forward then agrees with the decoder there too. */
            int rc = rotary_decoder_init(&d, &m, 64);
            EXPECT((rc == 0) == (pos != ROTARY_POS_LEARNED), "extend to 64 for %s", rotary_pos_name(pos));
            if (rc == 0) {
                int tok64[64];
                for (int t = 0; t < 64; t++) tok64[t] = (t * 5 + 1) % c.vocab;
                EXPECT(rotary_model_forward(&m, tok64, NULL, 1, 64, NULL) == 0, "forward T = 64: %s",
                       rotary_last_error());
                const float *full64 = rotary_model_logits(&m);
                double w64 = 0, s64 = 0;
                for (int t = 0; t < 64 && rc == 0; t++) {
                    rc = rotary_decoder_step(&d, tok64[t], &lg);
                    for (int i = 0; rc == 0 && i < c.vocab; i++) {
                        double e = fabs(lg[i] - full64[t * c.vocab + i]);
                        w64 = e > w64 ? e : w64;
                        s64 = fabs(full64[t * c.vocab + i]) > s64 ? fabs(full64[t * c.vocab + i]) : s64;
                    }
                }
                EXPECT(rc == 0 && isfinite(lg[0]), "decode 64 positions");
                EXPECT(w64 <= 1e-5 * s64, "%s %s: 64 positions, decoder vs forward max error %g",
                       kind, rotary_pos_name(pos), w64);
                rotary_decoder_free(&d);
            }
            free(full);
            rotary_model_free(&m);
        }
    }
}

/* --------------------------------------------------------------- training */

typedef struct {
    int stop_at;     /* stop (as Ctrl-C would) after this step; 0 = never */
    int poison_at;   /* write a NaN into the weights after this step */
    rotary_model *m;
} hook;

static int on_step(void *ctx, const rotary_train_status *s) {
    hook *h = ctx;
    if (h->poison_at && s->step == h->poison_at) h->m->params[0] = NAN;
    return h->stop_at && s->step == h->stop_at;
}

static int *corpus(size_t n, int vocab) {
    int *ids = malloc(n * sizeof(int));
    rotary_rng r;
    rotary_rng_seed(&r, 5);
    for (size_t i = 0; i < n; i++) /* a learnable pattern with noise */
        ids[i] = (int)((i % 7 == 0 ? rotary_rng_next(&r) : i * 3) % (uint64_t)vocab);
    return ids;
}

static rotary_train_opts opts(const char *dir, const int *ids, size_t n, hook *h) {
    rotary_train_opts o = {.run_dir = dir, .train_ids = ids, .val_ids = ids + n * 9 / 10,
                           .n_train = n * 9 / 10, .n_val = n - n * 9 / 10, .batch = 4,
                           .steps = 20, .warmup = 5, .lr = 3e-3f, .min_lr = 3e-4f,
                           .weight_decay = 0.1f, .clip = 1.0f, .beta1 = 0.9f, .beta2 = 0.99f,
                           .eps = 1e-8f, .eval_every = 5, .ckpt_every = 5, .eval_batches = 3,
                           .seed = 9, .on_step = on_step, .ctx = h};
    return o;
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = calloc((size_t)n + 1, 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = 0;
    fclose(f);
    return s;
}

/* metrics.csv without the timing columns (tokens_per_s, elapsed_s). */
static void strip_timing(char *s) {
    char *out = s;
    for (char *line = s; *line;) {
        char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        int commas = 0;
        for (size_t i = 0; i < len; i++) {
            if (line[i] == ',' && ++commas == 4) break;
            *out++ = line[i];
        }
        *out++ = '\n';
        line += len + (end ? 1 : 0);
    }
    *out = 0;
}

static void test_resume(void) {
    rotary_config c;
    tiny(&c, ROTARY_POS_ROPE);
    const size_t n = 3000;
    int *ids = corpus(n, c.vocab);
    char a[128], b[128], path[256];
    snprintf(a, sizeof a, "%s/straight", tmpdir);
    snprintf(b, sizeof b, "%s/stopped", tmpdir);
    mkdir(a, 0755), mkdir(b, 0755);

    rotary_model m1, m2, m3;
    hook h1 = {0, 0, &m1}, h2 = {7, 0, &m2}, h3 = {0, 0, &m3};
    rotary_model_build(&m1, &c), rotary_model_init(&m1, 9);
    rotary_train_opts o1 = opts(a, ids, n, &h1);
    EXPECT(rotary_train(&m1, &o1) == 0, "uninterrupted run: %s", rotary_last_error());

    rotary_model_build(&m2, &c), rotary_model_init(&m2, 9);
    rotary_train_opts o2 = opts(b, ids, n, &h2);
    EXPECT(rotary_train(&m2, &o2) == ROTARY_EINTR, "stopped run returns ROTARY_EINTR");
    /* A kill after the stop would leave extra metric rows: resume trims them. */
    snprintf(path, sizeof path, "%s/metrics.csv", b);
    FILE *f = fopen(path, "ab");
    fputs("8,1.0,,1.0,1.0,1.0\n9,1.0,", f); /* a row past the checkpoint and a torn one */
    fclose(f);
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", b);
    EXPECT(rotary_checkpoint_load(path, &m3) == 0, "load the stopped run: %s", rotary_last_error());
    rotary_train_opts o3 = opts(b, ids, n, &h3);
    o3.resume = 1;
    EXPECT(rotary_train(&m3, &o3) == 0, "resumed run: %s", rotary_last_error());
    EXPECT(memcmp(m1.params, m3.params, m1.n_params * sizeof(float)) == 0,
           "resumed weights equal the uninterrupted run's, bit for bit");

    snprintf(path, sizeof path, "%s/metrics.csv", a);
    char *ma = read_all(path);
    snprintf(path, sizeof path, "%s/metrics.csv", b);
    char *mb = read_all(path);
    EXPECT(ma && mb, "metrics written");
    if (ma && mb) {
        strip_timing(ma), strip_timing(mb);
        EXPECT(strcmp(ma, mb) == 0, "metrics (step, losses, lr) equal:\n%s---\n%s", ma, mb);
        int lines = 0;
        for (char *p = ma; *p; p++) lines += *p == '\n';
        EXPECT(lines == 21, "header + 20 rows, got %d lines", lines);
    }
    printf("resume: stopped at step 7, resumed to 20: weights and metrics identical\n");
    free(ma), free(mb);

    /* A NaN stops the run and keeps the last good checkpoint. */
    rotary_model m4, m5;
    hook h4 = {0, 12, &m4};
    snprintf(a, sizeof a, "%s/nan", tmpdir);
    mkdir(a, 0755);
    rotary_model_build(&m4, &c), rotary_model_init(&m4, 9);
    rotary_train_opts o4 = opts(a, ids, n, &h4);
    int rc = rotary_train(&m4, &o4);
    EXPECT(rc != 0 && strstr(rotary_last_error(), "nan") && strstr(rotary_last_error(), "step 10"),
           "NaN loss: rc %d, %s", rc, rotary_last_error());
    printf("nan: %s\n", rotary_last_error());
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", a);
    EXPECT(rotary_checkpoint_load(path, &m5) == 0, "the last good checkpoint loads");
    for (size_t i = 0; m5.params && i < m5.n_params; i++)
        if (!isfinite(m5.params[i])) {
            EXPECT(0, "checkpoint holds a non-finite weight");
            break;
        }
    rotary_model_free(&m5);

    /* Too little data for one window. */
    rotary_train_opts o5 = opts(a, ids, 30, &h1);
    EXPECT(rotary_train(&m1, &o5) != 0 && strstr(rotary_last_error(), "context window"),
           "short data: %s", rotary_last_error());
    rotary_model_free(&m1), rotary_model_free(&m2), rotary_model_free(&m3), rotary_model_free(&m4);
    free(ids);
}

/* ---------------------------------------------------- gradient accumulation */

/* metrics.csv's train and val losses, in order (NaN for no val loss). */
static int read_losses(const char *dir, double *out, int max) {
    char path[256];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    char *text = read_all(path);
    int n = 0;
    for (char *line = text ? strchr(text, '\n') : NULL; line && line[1] && n + 2 <= max;
         line = strchr(line + 1, '\n')) {
        char *p = strchr(line + 1, ',');
        char *end;
        out[n++] = strtod(p + 1, &end);
        out[n++] = end[1] == ',' ? NAN : strtod(end + 1, NULL);
    }
    free(text);
    return n;
}

/* A step's batch in k micro-batches is the same training: weights and
 * losses within 1e-5 of one pass (the sums of the gradients are added in
 * another order; tests/mpi_equivalence.sh says why that is far below a
 * mistake), for k = 2 and 4 (one sequence a pass). Half the batch in one
 * pass, what dropping a micro-batch would give, is far from it. */
static void test_accum(void) {
    rotary_config c;
    tiny(&c, ROTARY_POS_ROPE);
    const size_t n = 3000;
    int *ids = corpus(n, c.vocab);
    const int ks[] = {1, 2, 4, 1}, batches[] = {4, 4, 4, 2};
    rotary_model m[4];
    rotary_adamw opt[4];
    double loss[4][64];
    int rows[4];
    for (int i = 0; i < 4; i++) {
        char dir[128];
        snprintf(dir, sizeof dir, "%s/accum%d_%d", tmpdir, ks[i], batches[i]);
        mkdir(dir, 0755);
        hook h = {0, 0, &m[i]};
        rotary_model_build(&m[i], &c), rotary_model_init(&m[i], 9);
        rotary_train_opts o = opts(dir, ids, n, &h);
        o.accum = ks[i], o.batch = batches[i];
        o.clip = 0; /* clipping these gradients (always) would hide their scale */
        EXPECT(rotary_train(&m[i], &o) == 0, "accum %d: %s", ks[i], rotary_last_error());
        rows[i] = read_losses(dir, loss[i], 64);
        char path[256];
        snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
        rotary_adamw_init(&opt[i], m[i].n_params);
        EXPECT(rotary_checkpoint_load_optim(path, &m[i], &opt[i]) == 0, "AdamW state: %s",
               rotary_last_error());
    }
    /* The first moment is the gradients' running mean: where AdamW's
     * update hardly sees the gradients' scale, it shows a sum of the
     * micro-batches' means left undivided. */
    double m_max = 0;
    for (size_t j = 0; j < m[0].n_params; j++) m_max = fmax(m_max, fabs(opt[0].m[j]));
    for (int i = 1; i < 4; i++) {
        double dw = 0, dl = 0, dm = 0;
        for (size_t j = 0; j < m[0].n_params; j++) {
            dw = fmax(dw, fabs(m[i].params[j] - m[0].params[j]));
            dm = fmax(dm, fabs(opt[i].m[j] - opt[0].m[j]) / m_max);
        }
        for (int r = 0; r < rows[0] && r < rows[i]; r++)
            if (!isnan(loss[0][r])) dl = fmax(dl, fabs(loss[i][r] - loss[0][r]));
        EXPECT(rows[i] == rows[0] && rows[0] == 40, "metrics rows %d and %d", rows[i], rows[0]);
        if (i < 3)
            EXPECT(dw <= 1e-5 && dl <= 1e-5 && dm <= 1e-5,
                   "batch 4 in %d micro-batches: |dw| %.3g, |dloss| %.3g, |dm| %.3g", ks[i], dw, dl,
                   dm);
        else
            EXPECT(dw > 1e-3 && dl > 1e-3, "batch 2 should differ: |dw| %.3g, |dloss| %.3g", dw, dl);
        printf("accum: batch %d in %d: max |dw| %.3g, |dloss| %.3g, |dm|/max|m| %.3g against "
               "batch 4 in 1\n", batches[i], ks[i], dw, dl, dm);
    }
    /* A batch the micro-batches cannot share equally is refused. */
    char dir[128];
    snprintf(dir, sizeof dir, "%s/accum3", tmpdir);
    mkdir(dir, 0755);
    hook h = {0, 0, &m[0]};
    rotary_train_opts o = opts(dir, ids, n, &h);
    o.accum = 3;
    EXPECT(rotary_train(&m[0], &o) != 0 && strstr(rotary_last_error(), "--grad-accum 3"),
           "batch 4 in 3 micro-batches: %s", rotary_last_error());
    for (int i = 0; i < 4; i++) rotary_model_free(&m[i]), rotary_adamw_free(&opt[i]);
    free(ids);
}

/* --------------------------------------------------------------- sampler */

static void test_sampler(void) {
    enum { V = 6, DRAWS = 60000 };
    const float logits[V] = {1.0f, 2.0f, 0.5f, -1.0f, 2.0f, 0.0f};
    rotary_sampler s;
    EXPECT(rotary_sampler_init(&s, V, 0.0f, 0, 1.0f, 1) == 0, "init");
    EXPECT(rotary_sample(&s, logits) == 1, "greedy picks the first maximum");
    rotary_sampler_free(&s);
    /* Temperature 0.7: frequencies match softmax(logits / 0.7). */
    double p[V], z = 0;
    for (int i = 0; i < V; i++) z += p[i] = exp(logits[i] / 0.7);
    rotary_sampler_init(&s, V, 0.7f, 0, 1.0f, 3);
    int count[V] = {0};
    for (int k = 0; k < DRAWS; k++) count[rotary_sample(&s, logits)]++;
    double worst = 0;
    for (int i = 0; i < V; i++) {
        double expect = DRAWS * p[i] / z, sd = sqrt(expect);
        double dev = fabs(count[i] - expect) / (sd > 1 ? sd : 1);
        worst = dev > worst ? dev : worst;
    }
    EXPECT(worst < 5, "sampled frequencies within 5 sigma (worst %.2f)", worst);
    rotary_sampler_free(&s);
    /* top-k 2 keeps ids 1 and 4 only; top-p 0.5 at T=1 keeps the best two too. */
    rotary_sampler_init(&s, V, 1.0f, 2, 1.0f, 4);
    int ok = 1;
    for (int k = 0; k < 2000; k++) {
        int id = rotary_sample(&s, logits);
        ok &= id == 1 || id == 4;
    }
    EXPECT(ok, "top-k 2 samples only the two best");
    rotary_sampler_free(&s);
    rotary_sampler_init(&s, V, 1.0f, 0, 0.5f, 4);
    ok = 1;
    for (int k = 0; k < 2000; k++) {
        int id = rotary_sample(&s, logits);
        ok &= id == 1 || id == 4;
    }
    EXPECT(ok, "top-p 0.5 samples only the smallest set holding half the mass");
    rotary_sampler_free(&s);
    EXPECT(rotary_sampler_init(&s, V, -1.0f, 0, 1.0f, 1) != 0, "negative temperature refused");
    EXPECT(rotary_sampler_init(&s, V, 1.0f, 0, 0.0f, 1) != 0, "top-p 0 refused");
    printf("sampler: greedy, temperature (worst deviation %.2f sigma), top-k, top-p\n", worst);
}

/* ----------------------------------------------------------- token files */

static void test_tokens(void) {
    char path[256];
    snprintf(path, sizeof path, "%s/t.tok", tmpdir);
    int ids[5] = {0, 5, 70000, 3, 69999};
    EXPECT(rotary_tokens_save(path, ids, 5, 70001) == 0, "save 4-byte ids");
    int *got, vocab;
    size_t n;
    EXPECT(rotary_tokens_load(path, &got, &n, &vocab) == 0 && n == 5 && vocab == 70001 &&
               memcmp(got, ids, sizeof ids) == 0, "round trip");
    free(got);
    EXPECT(rotary_tokens_is_file(path) == 1, "magic recognised");
    ids[2] = 70001;
    EXPECT(rotary_tokens_save(path, ids, 5, 70001) != 0, "id outside vocab refused");
    int small[3] = {1, 2, 3};
    rotary_tokens_save(path, small, 3, 256);
    FILE *f = fopen(path, "r+b");
    fseek(f, 8, SEEK_SET);
    const unsigned char two[4] = {2, 0, 0, 0}; /* vocab 2: ids 2 and 3 now out of range */
    fwrite(two, 1, 4, f);
    fclose(f);
    EXPECT(rotary_tokens_load(path, &got, &n, &vocab) != 0, "out-of-range id in file: %s", rotary_last_error());
    rotary_tokens_save(path, small, 3, 256);
    EXPECT(truncate(path, 35) == 0, "truncate");
    EXPECT(rotary_tokens_load(path, &got, &n, &vocab) != 0 && strstr(rotary_last_error(), "tokens"),
           "truncated file: %s", rotary_last_error());
    f = fopen(path, "wb");
    fputs("hello, I am text", f);
    fclose(f);
    EXPECT(rotary_tokens_is_file(path) == 0 && rotary_tokens_load(path, &got, &n, &vocab) != 0,
           "text is not a token file");
    /* Batches depend on (seed, step) only. */
    int all[100], t1[12], g1[12], t2[12], g2[12];
    for (int i = 0; i < 100; i++) all[i] = i;
    rotary_batch(all, 100, 3, 4, 7, 5, t1, g1);
    rotary_batch(all, 100, 3, 4, 7, 5, t2, g2);
    EXPECT(!memcmp(t1, t2, sizeof t1) && !memcmp(g1, g2, sizeof g1), "batch is reproducible");
    int shifted = 1;
    for (int i = 0; i < 12; i++) shifted &= g1[i] == t1[i] + 1;
    EXPECT(shifted, "targets are the next tokens");
    rotary_batch(all, 100, 3, 4, 7, 6, t2, g2);
    EXPECT(memcmp(t1, t2, sizeof t1) != 0, "another step gives another batch");
    /* Slices (the ranks of a data-parallel job) put together are the batch. */
    rotary_batch_slice(all, 100, 3, 4, 7, 5, 0, 1, t2, g2);
    rotary_batch_slice(all, 100, 3, 4, 7, 5, 1, 3, t2 + 4, g2 + 4);
    EXPECT(!memcmp(t1, t2, sizeof t1) && !memcmp(g1, g2, sizeof g1), "slices make the batch");
    printf("token files and batches: ok\n");
}

/* ----------------------------------------------------- ZeRO-1 in one process */

/* AdamW on shards of the buffer (what each rank does under ZeRO-1) equals
 * AdamW on the whole, bit for bit, and the norm from block sums equals
 * rotary_clip_grad_norm's. */
static void test_shards(void) {
    rotary_config c;
    tiny(&c, ROTARY_POS_ROPE);
    c.n_layer = 3, c.d_model = 64, c.d_ff = 192, c.vocab = 300; /* > 3 norm blocks */
    rotary_model a, b;
    must(rotary_model_build(&a, &c), "build");
    must(rotary_model_build(&b, &c), "build");
    rotary_model_init(&a, 3), rotary_model_init(&b, 3);
    const size_t n = a.n_params;
    rotary_rng r;
    rotary_rng_seed(&r, 8);
    rotary_adamw whole, part[3];
    must(rotary_adamw_init(&whole, n), "adamw");
    const size_t cut[4] = {0, ROTARY_NORM_BLOCK, 3 * ROTARY_NORM_BLOCK, n};
    for (int k = 0; k < 3; k++) {
        must(rotary_adamw_init(&part[k], cut[k + 1] - cut[k]), "adamw");
        part[k].offset = cut[k];
    }
    rotary_adamw_config ac = {1e-2f, 0.9f, 0.99f, 1e-8f, 0.1f};
    const size_t nb = (n + ROTARY_NORM_BLOCK - 1) / ROTARY_NORM_BLOCK;
    double *blocks = calloc(nb, sizeof(double));
    int norms_equal = 1;
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < n; i++) a.grads[i] = b.grads[i] = rotary_rng_normal(&r) * 0.01f;
        float whole_norm = rotary_clip_grad_norm(a.grads, n, 0.5f);
        for (int k = 0; k < 3; k++)
            rotary_grad_sq_blocks(b.grads + cut[k], cut[k + 1] - cut[k], blocks + cut[k] / ROTARY_NORM_BLOCK);
        float norm = rotary_grad_norm_of_blocks(blocks, nb), s = rotary_clip_factor(norm, 0.5f);
        norms_equal &= norm == whole_norm && s < 1.0f;
        for (size_t i = 0; i < n; i++) b.grads[i] *= s;
        rotary_adamw_step(&whole, &a, &ac);
        for (int k = 0; k < 3; k++) rotary_adamw_step(&part[k], &b, &ac);
    }
    EXPECT(n > 3 * ROTARY_NORM_BLOCK, "the model spans 4 blocks (%zu parameters)", n);
    EXPECT(norms_equal, "the norm from block sums equals rotary_clip_grad_norm's, and clips");
    EXPECT(!memcmp(a.params, b.params, n * sizeof(float)), "AdamW on 3 shards = AdamW on the whole");
    int moments = 1;
    for (int k = 0; k < 3; k++)
        moments &= !memcmp(part[k].m, whole.m + cut[k], part[k].n * sizeof(float)) &&
                   !memcmp(part[k].v, whole.v + cut[k], part[k].n * sizeof(float));
    EXPECT(moments, "the shards' moments are slices of the whole's");
    /* A shard's moments load from a checkpoint of the whole state. */
    char path[256];
    snprintf(path, sizeof path, "%s/state.safetensors", tmpdir);
    must(rotary_checkpoint_save_state(path, &a, &whole, NULL, 0), "save");
    rotary_adamw back;
    must(rotary_adamw_init(&back, part[1].n), "adamw");
    back.offset = part[1].offset;
    must(rotary_checkpoint_load_optim(path, &a, &back), "load a shard");
    EXPECT(back.step == 3 && !memcmp(back.m, part[1].m, back.n * sizeof(float)) &&
               !memcmp(back.v, part[1].v, back.n * sizeof(float)), "shard loaded from the whole state");
    EXPECT(rotary_checkpoint_save_state(path, &a, &part[1], NULL, 0) != 0, "a shard alone is not saved");
    printf("zero-1 in one process: 3 shards, %zu parameters, bit for bit\n", n);
    rotary_adamw_free(&back), rotary_adamw_free(&whole);
    for (int k = 0; k < 3; k++) rotary_adamw_free(&part[k]);
    free(blocks);
    rotary_model_free(&a), rotary_model_free(&b);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/rotary_train_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    test_decoder();
    test_resume();
    test_accum();
    test_sampler();
    test_tokens();
    test_shards();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return check_summary("test_train");
}
