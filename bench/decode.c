/* decode: how close one-token decoding gets to the memory-bandwidth bound.
 *
 * Decoding one token reads every weight once, so tokens/s cannot exceed
 * (read bandwidth) / (bytes of weights read per token). This program
 *   1. measures the read bandwidth of the OpenMP threads it runs with (sum a
 *      512 MiB float buffer, far larger than the caches, split evenly
 *      between the threads; the best of all passes, 10 at the start and one
 *      before each pair of decoding passes),
 *   2. (--matvec) times y = W x at the decoder's matrix shapes with
 *      OpenBLAS cblas_sgemv, cblas_sgemm with M = 1, and our float32, Q8_0
 *      and bfloat16 kernels, each streaming a pool of copies larger than
 *      the caches,
 *   3. decodes greedily with random-weight models of the llama2.c
 *      stories15M and stories110M shapes (and an optional llama2.c .bin), in
 *      float32, with rotary_decoder_quantize and with rotary_decoder_bf16,
 *      passes of the three taking turns, and prints tokens/s (best and
 *      median pass) against the bound.
 * stdout: key=value lines, the last one
 *   decode_110M tok_s_f32=<x> tok_s_int8=<y> tok_s_bf16=<w> bound_f32=<z>
 * stderr: progress. See bench/README.md. */
#define _POSIX_C_SOURCE 200809L
#include "matvec.h"
#include "rotary.h"

#include <cblas.h>
#include <omp.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double now(void) { return omp_get_wtime(); }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of n > 0 values (the upper one for even n); x is left as is. */
static double median(const double *x, int n) {
    double *c = malloc((size_t)n * sizeof(double));
    memcpy(c, x, (size_t)n * sizeof(double));
    qsort(c, (size_t)n, sizeof(double), cmp_double);
    double m = c[n / 2];
    free(c);
    return m;
}

static void *xalloc(size_t n) {
    void *p = aligned_alloc(64, (n + 63) & ~(size_t)63);
    if (!p) {
        fprintf(stderr, "decode: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* ------------------------------------------------------------ bandwidth */

/* Sum of n floats (n a multiple of 64, buf 64-byte aligned) as fast as the
 * core can load them: four independent vector sums, so the adds never wait
 * for each other and the loop is limited by memory alone. */
static float sum_floats(const float *buf, size_t n) {
#if defined(__AVX512F__)
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 64) {
        a = _mm512_add_ps(a, _mm512_load_ps(buf + i));
        b = _mm512_add_ps(b, _mm512_load_ps(buf + i + 16));
        c = _mm512_add_ps(c, _mm512_load_ps(buf + i + 32));
        d = _mm512_add_ps(d, _mm512_load_ps(buf + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
#else
    float s[64] = {0};
    for (size_t i = 0; i < n; i += 64)
        for (int j = 0; j < 64; j++) s[j] += buf[i + j];
    float t = 0;
    for (int j = 0; j < 64; j++) t += s[j];
    return t;
#endif
}

/* Read bandwidth in GB/s (1e9 bytes/s): each thread sums its contiguous
 * share of a 512 MiB buffer (first written by the same threads with the
 * same split, so its pages sit near them): five times the 96 MiB L3 this
 * VM's CPU has, so nearly all of it comes from memory. The bound uses the
 * best pass over the whole run (10 passes at the start and one before
 * every pair of decoding passes): the rate the machine can deliver, since
 * other processes only ever lower a pass. */
typedef struct {
    float *buf;
    size_t n;
    double best;
    double *all; /* every pass, for the median */
    int n_all, cap;
    double sink;
} bandwidth;

static void bw_init(bandwidth *b, size_t bytes) {
    memset(b, 0, sizeof *b);
    b->n = bytes / sizeof(float) / 128 * 128;
    b->buf = xalloc(b->n * sizeof(float));
    b->cap = 1024;
    b->all = malloc((size_t)b->cap * sizeof(double));
    const size_t n = b->n;
    float *buf = b->buf;
#pragma omp parallel
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const size_t lo = n / 64 * t / nt * 64, hi = n / 64 * (t + 1) / nt * 64;
        for (size_t i = lo; i < hi; i++) buf[i] = (float)(i & 255) * 1e-3f;
    }
}

static double bw_pass(bandwidth *b) {
    const size_t n = b->n;
    const float *buf = b->buf;
    double total = 0, t0 = now();
#pragma omp parallel reduction(+ : total)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const size_t lo = n / 64 * t / nt * 64, hi = n / 64 * (t + 1) / nt * 64;
        total += sum_floats(buf + lo, hi - lo);
    }
    const double gbs = (double)(n * sizeof(float)) / (now() - t0) / 1e9;
    b->sink += total;
    if (b->n_all < b->cap) b->all[b->n_all++] = gbs;
    b->best = gbs > b->best ? gbs : b->best;
    return gbs;
}

/* ------------------------------------------------------------- matvec */

typedef struct {
    const char *name;
    int OC, C;
} mv_shape;

enum { M_SGEMM, M_SGEMV, M_F32, M_Q8, M_BF16, M_N };
static const char *method_name[M_N] = {"sgemm_m1", "sgemv", "ours_f32", "ours_q8", "ours_bf16"};

/* One pass of a method over a pool of copies of the matrix: each call reads
 * a new copy, so the weights come from memory as in decoding. GB/s. */
static double matvec_pass(int method, const char *pool, int copies, size_t stride, int OC, int C,
                          const float *x, float *y, void *scratch) {
    double t0 = now();
    for (int i = 0; i < copies; i++) {
        const void *w = pool + (size_t)i * stride;
        switch (method) {
        case M_SGEMM: /* what linear_forward does with one row */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, OC, C, 1.0f, x, C, w, C,
                        0.0f, y, OC);
            break;
        case M_SGEMV:
            cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, C, 1.0f, w, C, x, 1, 0.0f, y, 1);
            break;
        case M_F32:
            matvec_f32(y, w, x, NULL, C, OC, 0);
            break;
        case M_BF16:
            matvec_bf16(y, w, x, NULL, C, OC, 0);
            break;
        default:
            matvec_q8(y, w, x, NULL, C, OC, 0, scratch);
        }
    }
    const size_t bytes = method == M_Q8     ? q8_matrix_bytes(OC, C)
                         : method == M_BF16 ? bf16_matrix_bytes(OC, C)
                                            : (size_t)OC * C * sizeof(float);
    return (double)bytes * copies / (now() - t0) / 1e9;
}

/* The decoder's matrix shapes; each method streams a 512 MiB pool of copies
 * (float32, or Q8_0 for ours_q8, bfloat16 for ours_bf16). The methods take
 * turns, pass after pass, so a change in background load hits all of them;
 * best of reps passes. */
static void bench_matvec(int reps, double bw) {
    const mv_shape shapes[] = {
        {"110M.wqkv", 2304, 768}, {"110M.wo", 768, 768},     {"110M.wup", 4096, 768},
        {"110M.wdown", 768, 2048}, {"110M.head", 32000, 768}, {"15M.wup", 1536, 288},
    };
    const size_t pool_bytes = (size_t)512 << 20;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int OC = shapes[s].OC, C = shapes[s].C;
        const size_t f32_bytes = (size_t)OC * C * sizeof(float);
        const size_t q8_stride = (q8_matrix_bytes(OC, C) + 63) & ~(size_t)63;
        float *x = xalloc((size_t)C * sizeof(float)), *y = xalloc((size_t)OC * sizeof(float));
        float *w = xalloc(f32_bytes);
        void *scratch = xalloc(q8_act_bytes(C)), *q8 = xalloc(q8_stride);
        const size_t h_bytes = bf16_matrix_bytes(OC, C); /* a multiple of 64 */
        uint16_t *h = xalloc(h_bytes);
        rotary_rng rng;
        rotary_rng_seed(&rng, 7);
        for (int i = 0; i < C; i++) x[i] = rotary_rng_normal(&rng);
        for (size_t i = 0; i < (size_t)OC * C; i++) w[i] = 0.02f * rotary_rng_normal(&rng);
        q8_quantize_matrix(q8, w, OC, C);
        bf16_pack_matrix(h, w, OC, C);
        const int nf = (int)(pool_bytes / f32_bytes), nq = (int)(pool_bytes / q8_stride);
        const int nh = (int)(pool_bytes / h_bytes);
        char *pf = xalloc((size_t)nf * f32_bytes), *pq = xalloc((size_t)nq * q8_stride);
        char *ph = xalloc((size_t)nh * h_bytes);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < nf; i++) memcpy(pf + (size_t)i * f32_bytes, w, f32_bytes);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < nq; i++) memcpy(pq + (size_t)i * q8_stride, q8, q8_stride);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < nh; i++) memcpy(ph + (size_t)i * h_bytes, h, h_bytes);
        double best[M_N] = {0};
        for (int r = 0; r < reps; r++)
            for (int m = 0; m < M_N; m++) {
                double g = m == M_Q8     ? matvec_pass(m, pq, nq, q8_stride, OC, C, x, y, scratch)
                           : m == M_BF16 ? matvec_pass(m, ph, nh, h_bytes, OC, C, x, y, scratch)
                                         : matvec_pass(m, pf, nf, f32_bytes, OC, C, x, y, scratch);
                best[m] = g > best[m] ? g : best[m];
            }
        printf("matvec shape=%s OC=%d C=%d", shapes[s].name, OC, C);
        for (int m = 0; m < M_N; m++) {
            printf(" %s_gbs=%.1f %s_of_bw=%.2f", method_name[m], best[m], method_name[m],
                   best[m] / bw);
            fprintf(stderr, "  matvec %-10s %-8s %5.1f GB/s (%3.0f%% of read bandwidth)\n",
                    shapes[s].name, method_name[m], best[m], 100 * best[m] / bw);
        }
        printf("\n");
        fflush(stdout);
        free(pf), free(pq), free(ph), free(w), free(q8), free(h), free(x), free(y), free(scratch);
    }
}

/* ------------------------------------------------------------- decode */

/* The decoder's weights: float32, Q8_0 (rotary_decoder_quantize) and
 * bfloat16 (rotary_decoder_bf16). */
enum { D_F32, D_INT8, D_BF16, D_N };
static const char *const dtype_name[D_N] = {"f32", "int8", "bf16"};

/* Bytes of weights one decoding step reads: every matrix (q|k|v, output,
 * MLP, classifier: 4 bytes per weight in float32, 34 per 32 in Q8_0 and 64
 * per 32 in bfloat16, with rows padded to whole blocks), the norm weights
 * (float32), one row of the token embedding (float32; tied or not, the
 * classifier is counted as its own matrix). Biases are counted if present.
 * Not counted: the KV cache (reported separately), activations, which stay
 * in cache. */
static double weight_bytes(const rotary_config *c, int dtype) {
    const double C = c->d_model, hd = C / c->n_head, F = c->d_ff;
    const double QKV = (c->n_head + 2.0 * c->n_kv_head) * hd, A = c->n_head * hd;
    const double U = c->mlp == ROTARY_MLP_SWIGLU ? 2 * F : F;
#define MAT(rows, cols)                                                            \
    (dtype == D_INT8   ? (rows) * (double)q8_blocks((int)(cols)) * (Q8_BLOCK + 2) \
     : dtype == D_BF16 ? (rows) * (double)bf16_row((int)(cols)) * 2.0            \
                       : (rows) * (cols) * 4.0)
    double per_layer = MAT(QKV, C) + MAT(C, A) + MAT(U, C) + MAT(C, F);
    double norms =
        (2.0 * c->n_layer + 1) * C * 4 * (c->norm == ROTARY_NORM_LAYER && c->bias ? 2 : 1);
    double bias = c->bias ? 4.0 * c->n_layer * (QKV + C + U + C) : 0;
    return c->n_layer * per_layer + MAT((double)c->vocab, C) + norms + bias + 4 * C;
#undef MAT
}

typedef struct {
    rotary_decoder d;
    rotary_sampler s;
    double best, *rates;
    int n_rates;
    int tokens[1024]; /* the greedy continuation of the last pass */
} decode_run;

/* One pass of greedy decoding: a prompt of `prompt` fixed tokens (not
 * timed), then ntok timed steps, each feeding back the argmax
 * (rotary_sample at temperature 0, so the sampler's time is included). */
static int decode_pass(decode_run *r, int prompt, int ntok) {
    const int V = r->d.m->cfg.vocab;
    rotary_decoder_reset(&r->d);
    const float *logits = NULL;
    for (int i = 0; i < prompt; i++)
        if (rotary_decoder_step(&r->d, (i * 7919 + 1) % V, &logits)) return -1;
    int tok = rotary_sample(&r->s, logits);
    double t0 = now();
    for (int i = 0; i < ntok; i++) {
        if (i < 1024) r->tokens[i] = tok;
        if (rotary_decoder_step(&r->d, tok, &logits)) return -1;
        tok = rotary_sample(&r->s, logits);
    }
    const double rate = ntok / (now() - t0);
    r->rates[r->n_rates++] = rate;
    r->best = rate > r->best ? rate : r->best;
    return 0;
}

/* Decode with m in float32, int8 and bfloat16 (three decoders), passes
 * taking turns with a bandwidth pass before each round, so that a busy
 * spell of the machine falls on all alike; best of reps each. Prints one
 * line per dtype and one comparing them; returns the best rates (tok_s,
 * by dtype) and the float32 bound. */
static int bench_model(const char *name, rotary_model *m, bandwidth *bw, int prompt, int ntok,
                       int reps, double tok_s[D_N], double *bound_f32) {
    const rotary_config *c = &m->cfg;
    if (prompt + ntok > c->ctx) ntok = c->ctx - prompt;
    static decode_run run[D_N];
    for (int q = 0; q < D_N; q++) {
        memset(&run[q], 0, sizeof run[q]);
        if (rotary_decoder_init(&run[q].d, m, c->ctx) ||
            rotary_sampler_init(&run[q].s, c->vocab, 0.0f, 0, 1.0f, 1234))
            return -1;
        if (q == D_INT8 && rotary_decoder_quantize(&run[q].d)) return -1;
        if (q == D_BF16 && rotary_decoder_bf16(&run[q].d)) return -1;
        run[q].rates = malloc((size_t)reps * sizeof(double));
    }
    fprintf(stderr, "decode %s: %d passes of %d tokens, float32, int8 and bf16...\n", name, reps,
            ntok);
    for (int r = 0; r < reps; r++) {
        bw_pass(bw);
        for (int q = 0; q < D_N; q++)
            if (decode_pass(&run[q], prompt, ntok)) return -1;
    }
    /* positions prompt .. prompt+ntok-1 read 1..pos+1 cached k and v rows */
    const double kvd = (double)c->n_kv_head * (c->d_model / c->n_head);
    const double kv_bytes = c->attn == ROTARY_ATTN_SOFTMAX
                                ? 2.0 * c->n_layer * kvd * 4 * (prompt + (ntok + 1) / 2.0)
                                : 0;
    double med[D_N];
    for (int q = 0; q < D_N; q++) {
        med[q] = median(run[q].rates, run[q].n_rates);
        const double wb = weight_bytes(c, q), bound = bw->best * 1e9 / wb;
        const double bound_kv = bw->best * 1e9 / (wb + kv_bytes);
        printf("decode model=%s dtype=%s layers=%d dim=%d hidden=%d heads=%d vocab=%d "
               "prompt=%d tokens=%d passes=%d weight_mb_per_token=%.2f kv_mb_per_token=%.2f "
               "read_bw_gbs=%.2f tok_s=%.2f tok_s_median=%.2f bound_tok_s=%.2f of_bound=%.3f "
               "of_bound_with_kv=%.3f\n",
               name, dtype_name[q], c->n_layer, c->d_model, c->d_ff, c->n_head, c->vocab, prompt,
               ntok, reps, wb / 1e6, kv_bytes / 1e6, bw->best, run[q].best, med[q], bound,
               run[q].best / bound, run[q].best / bound_kv);
        fprintf(stderr, "  %s %-4s: %.1f tok/s (median %.1f), %.0f%% of the bound %.1f tok/s\n",
                name, dtype_name[q], run[q].best, med[q], 100 * run[q].best / bound, bound);
        tok_s[q] = run[q].best;
        if (q == D_F32) *bound_f32 = bound;
    }
    const int n = ntok < 1024 ? ntok : 1024;
    int same[D_N] = {0};
    for (int q = 1; q < D_N; q++)
        for (int i = 0; i < n; i++) same[q] += run[0].tokens[i] == run[q].tokens[i];
    printf("decode model=%s int8_speedup=%.2f int8_speedup_median=%.2f greedy_tokens_equal=%d/%d "
           "bf16_speedup=%.2f bf16_speedup_median=%.2f bf16_greedy_tokens_equal=%d/%d\n",
           name, tok_s[D_INT8] / tok_s[D_F32], med[D_INT8] / med[D_F32], same[D_INT8], n,
           tok_s[D_BF16] / tok_s[D_F32], med[D_BF16] / med[D_F32], same[D_BF16], n);
    fflush(stdout);
    for (int q = 0; q < D_N; q++) {
        rotary_decoder_free(&run[q].d);
        rotary_sampler_free(&run[q].s);
        free(run[q].rates);
    }
    return 0;
}

static int random_model(rotary_model *m, int layers, int dim, int hidden, int heads, int vocab,
                        int ctx) {
    rotary_config c;
    rotary_config_default(&c);
    c.n_layer = layers, c.n_head = heads, c.n_kv_head = heads, c.d_model = dim, c.d_ff = hidden;
    c.ctx = ctx, c.vocab = vocab;
    c.norm = ROTARY_NORM_RMS, c.mlp = ROTARY_MLP_SWIGLU, c.pos = ROTARY_POS_ROPE;
    c.rope_pairing = ROTARY_ROPE_INTERLEAVED, c.rope_base = 10000.0, c.rotary_dim = 0;
    c.attn = ROTARY_ATTN_SOFTMAX, c.tied = 1, c.bias = 0, c.norm_eps = 1e-5f;
    if (rotary_model_build(m, &c)) return -1;
    rotary_model_init(m, 42);
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: decode [--matvec] [--reps N] [--tokens N] [--prompt N]\n"
                    "              [--only 15M|110M|file] [llama2c.bin]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int do_matvec = 0, reps = 5, ntok = 128, prompt = 8;
    const char *only = NULL, *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--matvec")) do_matvec = 1;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) ntok = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) prompt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (argv[i][0] == '-') usage();
        else path = argv[i];
    }
    if (reps < 1 || ntok < 1 || prompt < 1) usage();

    const int threads = omp_get_max_threads();
    fprintf(stderr, "decode: measuring read bandwidth (%d threads)...\n", threads);
    bandwidth bw;
    bw_init(&bw, (size_t)512 << 20);
    for (int i = 0; i < 10; i++) bw_pass(&bw);
    fprintf(stderr, "  %.1f GB/s (best of 10), median %.1f\n", bw.best, median(bw.all, bw.n_all));

    if (do_matvec) bench_matvec(8, bw.best);

    double tok_s[D_N] = {0}, bound = 0;
    if (path) {
        rotary_model m;
        if (rotary_model_load_llama2c(&m, path)) {
            fprintf(stderr, "decode: %s: %s (skipped)\n", path, rotary_last_error());
        } else {
            if (bench_model(path, &m, &bw, prompt, ntok, reps, tok_s, &bound))
                fprintf(stderr, "decode: %s: %s\n", path, rotary_last_error());
            rotary_model_free(&m);
        }
    }
    if (!only || !strcmp(only, "15M")) {
        rotary_model m;
        if (random_model(&m, 6, 288, 768, 6, 32000, 256) ||
            bench_model("15M", &m, &bw, prompt, ntok, reps, tok_s, &bound)) {
            fprintf(stderr, "decode: 15M: %s\n", rotary_last_error());
            return 1;
        }
        rotary_model_free(&m);
    }
    memset(tok_s, 0, sizeof tok_s);
    bound = 0;
    if (!only || !strcmp(only, "110M")) {
        rotary_model m;
        fprintf(stderr, "decode: building the 110M model...\n");
        if (random_model(&m, 12, 768, 2048, 12, 32000, 1024) ||
            bench_model("110M", &m, &bw, prompt, ntok, reps, tok_s, &bound)) {
            fprintf(stderr, "decode: 110M: %s\n", rotary_last_error());
            return 1;
        }
        rotary_model_free(&m);
    }
    /* the bandwidth over the whole run: the bounds above used this best */
    printf("read_bw_gbs=%.2f read_bw_median_gbs=%.2f read_bw_passes=%d threads=%d buffer_mib=512\n",
           bw.best, median(bw.all, bw.n_all), bw.n_all, threads);
    if (bw.sink == 42.0) fprintf(stderr, "(sink)\n"); /* keeps the sums alive */
    printf("decode_110M tok_s_f32=%.2f tok_s_int8=%.2f tok_s_bf16=%.2f bound_f32=%.2f\n",
           tok_s[D_F32], tok_s[D_INT8], tok_s[D_BF16], bound);
    return 0;
}
