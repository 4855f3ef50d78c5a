/* chat.c: `rotary chat MODEL`: a conversation with a chat model. Each line
 * of standard input is one user turn; the reply streams to standard output
 * and ends at the template's end-of-turn token. The KV cache holds the whole
 * conversation, so a turn costs only its own new tokens. The template
 * (Llama 3, ChatML, Llama 2's [INST]) is picked from the special tokens of
 * the vocabulary unless --template names one (docs/inference.md). */
#define _POSIX_C_SOURCE 200809L
#include "args.h"
#include "cli.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const char *name;
    const char *system; /* printf format of the system text (%s) */
    const char *user;   /* of a user turn, with the assistant's header */
    const char *stop;   /* the end-of-turn token's text; NULL: EOS */
    const char *after;  /* text that follows the end-of-turn token */
    int inst;           /* Llama 2: BOS before every [INST], the system text inside the first */
} chat_template;

static const chat_template TEMPLATES[] = {
    {"llama3", "<|start_header_id|>system<|end_header_id|>\n\n%s<|eot_id|>",
     "<|start_header_id|>user<|end_header_id|>\n\n%s<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\n",
     "<|eot_id|>", "", 0},
    {"chatml", "<|im_start|>system\n%s<|im_end|>\n",
     "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>", "\n", 0},
    {"llama2", "<<SYS>>\n%s\n<</SYS>>\n\n", "[INST] %s [/INST]", NULL, "", 1},
};
enum { N_TEMPLATES = sizeof TEMPLATES / sizeof *TEMPLATES };

/* Why the last encoding step failed. */
static char err[200];

static int fail(const char *why) {
    snprintf(err, sizeof err, "%s", why);
    return -1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The first template whose special tokens the vocabulary has; Llama 2's
 * needs only BOS and EOS. NULL if none fits. */
static const chat_template *pick(const rotary_tokenizer *tok) {
    if (rotary_tokenizer_special(tok, "<|eot_id|>") >= 0 &&
        rotary_tokenizer_special(tok, "<|start_header_id|>") >= 0)
        return &TEMPLATES[0];
    if (rotary_tokenizer_special(tok, "<|im_start|>") >= 0 &&
        rotary_tokenizer_special(tok, "<|im_end|>") >= 0)
        return &TEMPLATES[1];
    if (rotary_tokenizer_bos(tok) >= 0 && rotary_tokenizer_eos(tok) >= 0) return &TEMPLATES[2];
    return NULL;
}

typedef struct {
    int *v;
    size_t n, cap;
} id_list;

static int push(id_list *a, int id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 256;
        int *v = realloc(a->v, cap * sizeof *v);
        if (!v) return fail("out of memory");
        a->v = v, a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

static int push_text(id_list *a, const rotary_tokenizer *tok, const char *s, size_t n) {
    if (!n) return 0;
    int *ids;
    size_t k;
    if (rotary_tokenizer_encode(tok, (const unsigned char *)s, n, &ids, &k))
        return fail(rotary_last_error());
    int rc = 0;
    for (size_t i = 0; i < k && !rc; i++) rc = push(a, ids[i]);
    free(ids);
    return rc;
}

/* Text waiting to be encoded: the stretches between special tokens are
 * encoded whole, template text and the user's words together, as the
 * model saw them in training (a SentencePiece space prefix, BPE merges
 * across the seam). */
typedef struct {
    char *s;
    size_t n, cap;
} text_buf;

static int add_text(text_buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = 2 * (b->n + n + 1);
        char *p = realloc(b->s, cap);
        if (!p) return fail("out of memory");
        b->s = p, b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    return 0;
}

static int flush_text(id_list *a, const rotary_tokenizer *tok, text_buf *b) {
    int rc = push_text(a, tok, b->s, b->n);
    b->n = 0;
    return rc;
}

/* Template text: each "<|...|>" becomes the special token of that name. */
static int add_template(id_list *a, const rotary_tokenizer *tok, text_buf *b, const char *s,
                        size_t n) {
    const char *end = s + n;
    while (s < end) {
        const char *open = strstr(s, "<|"), *close = open ? strstr(open, "|>") : NULL;
        if (!open || !close || close + 2 > end) return add_text(b, s, (size_t)(end - s));
        const size_t len = (size_t)(close + 2 - open);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)len, open);
        const int id = len < sizeof name ? rotary_tokenizer_special(tok, name) : -1;
        if (id < 0) {
            snprintf(err, sizeof err, "the chat template needs the token %.40s, which this "
                     "vocabulary does not have", name);
            return -1;
        }
        if (add_text(b, s, (size_t)(open - s)) || flush_text(a, tok, b) || push(a, id)) return -1;
        s = close + 2;
    }
    return 0;
}

/* The ids of fmt with msg in place of its %s. The user's words are only
 * text: "<|eot_id|>" typed by the user is not the token. */
static int encode_turn(id_list *a, const rotary_tokenizer *tok, const char *fmt, const char *msg) {
    const char *hole = strstr(fmt, "%s");
    text_buf b = {0};
    int rc = hole ? add_template(a, tok, &b, fmt, (size_t)(hole - fmt)) ||
                        add_text(&b, msg, strlen(msg)) ||
                        add_template(a, tok, &b, hole + 2, strlen(hole + 2))
                  : add_template(a, tok, &b, fmt, strlen(fmt));
    if (!rc) rc = flush_text(a, tok, &b);
    free(b.s);
    return rc ? -1 : 0;
}

typedef struct {
    rotary_model m;
    rotary_tokenizer *tok;
    cli_decoder dec;
    rotary_sampler smp;
    const chat_template *tpl;
    const char *system;
    int stop, eos, bos, turns, show_ids, show_turns;
    double t_prefill, t_decode;
    long n_prefill, n_decode;
} chat;

static int feed(chat *c, const id_list *ids, const float **logits) {
    const double t0 = now_s();
    for (size_t i = 0; i < ids->n; i++)
        if (cli_decoder_step(&c->dec, ids->v[i], logits)) return -1;
    c->t_prefill += now_s() - t0;
    c->n_prefill += (long)ids->n;
    return 0;
}

/* The ids of the next user turn, starting the conversation (BOS, system
 * text) when the cache is empty. */
static int turn_ids(chat *c, const char *msg, id_list *a) {
    const chat_template *t = c->tpl;
    const int first = c->dec.n == 0;
    if ((first || t->inst) && c->bos >= 0 && push(a, c->bos)) return -1;
    if (first && c->system && !t->inst && encode_turn(a, c->tok, t->system, c->system)) return -1;
    if (first && c->system && t->inst) { /* [INST] <<SYS>>...<</SYS>>\n\nmsg [/INST] */
        size_t n = strlen(t->system) + strlen(c->system) + strlen(msg) + 1;
        char *both = malloc(n);
        if (!both) return fail("out of memory");
        snprintf(both, n, t->system, c->system);
        strcat(both, msg);
        int rc = encode_turn(a, c->tok, t->user, both);
        free(both);
        return rc;
    }
    return encode_turn(a, c->tok, t->user, msg);
}

/* One user turn and the reply; 0, or 1 after printing the error. */
static int reply(chat *c, const char *msg, int n_new) {
    id_list in = {0};
    if (turn_ids(c, msg, &in)) return cli_fail("chat", err);
    const int T = c->dec.max_T;
    if (c->dec.n + (int)in.n + 2 > T && c->dec.n > 0) {
        fprintf(stderr, "rotary chat: the conversation fills the context (%d positions); "
                        "it starts over\n", T);
        cli_decoder_reset(&c->dec);
        in.n = 0;
        if (turn_ids(c, msg, &in)) return cli_fail("chat", err);
    }
    if ((int)in.n + 2 > T) {
        free(in.v);
        char why[128];
        snprintf(why, sizeof why, "%zu tokens with the template, but the context is %d (--ctx)",
                 in.n, T);
        return cli_fail("message", why);
    }
    if (c->show_turns) { /* the ids the template made of the turn */
        fputs("rotary chat: turn:", stderr);
        for (size_t i = 0; i < in.n; i++) fprintf(stderr, " %d", in.v[i]);
        fputc('\n', stderr);
    }
    const float *logits;
    if (feed(c, &in, &logits)) return cli_fail("chat", rotary_last_error());
    in.n = 0;
    const double t0 = now_s();
    int made = 0, stopped = 0;
    while (made < n_new && c->dec.n + 2 < T) { /* room for the stop token */
        const int id = rotary_sample(&c->smp, logits);
        if (id == c->stop || id == c->eos) {
            stopped = 1;
            break;
        }
        cli_emit_token(c->tok, id, made == 0 && rotary_tokenizer_space_prefix(c->tok),
                       c->show_ids);
        made++;
        if (cli_decoder_step(&c->dec, id, &logits)) return cli_fail("chat", rotary_last_error());
    }
    c->t_decode += now_s() - t0;
    c->n_decode += made;
    printf("\n");
    fflush(stdout);
    if (!stopped && made == n_new) fprintf(stderr, "rotary chat: the reply reached -n %d\n", n_new);
    /* Close the turn in the cache as the template would have it. */
    const int end = c->stop >= 0 ? c->stop : c->eos;
    if (push(&in, end) || push_text(&in, c->tok, c->tpl->after, strlen(c->tpl->after))) {
        free(in.v);
        return cli_fail("chat", err);
    }
    if (feed(c, &in, &logits)) {
        free(in.v);
        return cli_fail("chat", rotary_last_error());
    }
    free(in.v);
    c->turns++;
    return 0;
}

int cmd_chat(int argc, char **argv) {
    const char *model = NULL, *tok_spec = NULL, *template = "auto", *system = NULL;
    int n_new = 512, show_turns = 0;
    cli_decode_args da = {.temperature = 0.7f, .top_p = 0.9f, .seed = 1};
    if (argc > 1 && argv[1][0] != '-') model = argv[1], argv[1] = argv[0], argv++, argc--;
    enum { N_SPECS = 5 };
    arg_spec specs[N_SPECS + CLI_DECODE_N_SPECS] = {
        {"-z", ARG_STR, &tok_spec, 0, 0, "tokenizer (default: the model's own)", 0},
        {"--template", ARG_STR, &template, 0, 0, "auto, llama3, chatml or llama2", 0},
        {"--system", ARG_STR, &system, 0, 0, "system prompt", 0},
        {"-n", ARG_INT, &n_new, 1, 1 << 24, "most tokens in one reply", 0},
        {"--show-turns", ARG_FLAG, &show_turns, 0, 0, "print each turn's ids on stderr", 0},
    };
    const int n_specs = N_SPECS + cli_decode_specs(specs + N_SPECS, &da);
    int rc = args_parse(specs, n_specs, argc, argv,
                        "rotary chat MODEL [-z TOKENIZER] [--system TEXT] [--template T] [options]\n"
                        "Each line of standard input is a user turn; the replies go to standard "
                        "output.");
    if (rc) return rc < 0 ? 0 : rc;
    if (!model) return cli_fail("chat", "give a model (a GGUF, llama2.c .bin, run or checkpoint)");
    if (da.threads) omp_set_num_threads(da.threads);
    if (cli_decode_check(&da)) return 1;
    chat c = {.system = system && *system ? system : NULL, .show_ids = da.show_ids,
              .show_turns = show_turns};
    if (cli_load_model(model, tok_spec, &c.m, &c.tok)) return 1;
    /* From here every way out goes through `done`, which frees what was made. */
    if (!strcmp(template, "auto")) {
        if (!(c.tpl = pick(c.tok))) {
            rc = cli_fail("chat", "this vocabulary has none of the chat templates' tokens "
                          "(no <|eot_id|>, <|im_start|>, or BOS and EOS); choose one with "
                          "--template llama3|chatml|llama2");
            goto done;
        }
    } else {
        for (int i = 0; i < N_TEMPLATES; i++)
            if (!strcmp(template, TEMPLATES[i].name)) c.tpl = &TEMPLATES[i];
        if (!c.tpl) {
            rc = cli_fail("--template", "auto, llama3, chatml or llama2");
            goto done;
        }
    }
    c.bos = rotary_tokenizer_add_bos(c.tok) || c.tpl->inst ? rotary_tokenizer_bos(c.tok) : -1;
    c.eos = rotary_tokenizer_eos(c.tok);
    c.stop = c.tpl->stop ? rotary_tokenizer_special(c.tok, c.tpl->stop) : -1;
    if (c.tpl->stop && c.stop < 0) {
        char why[160];
        snprintf(why, sizeof why, "template %s needs the token %s, which this vocabulary does "
                 "not have", c.tpl->name, c.tpl->stop);
        rc = cli_fail("chat", why);
        goto done;
    }
    if (c.stop < 0 && c.eos < 0) {
        rc = cli_fail("chat", "the vocabulary has no end-of-text token");
        goto done;
    }
    if (c.tpl->inst && c.bos < 0) {
        rc = cli_fail("chat", "template llama2 needs a BOS token");
        goto done;
    }
    const int T = da.ctx ? da.ctx : c.m.cfg.ctx;
    if (cli_decoder_open(&c.dec, &c.m, T, &da, "chat")) {
        rc = 1;
        goto done;
    }
    if (rotary_sampler_init(&c.smp, c.m.cfg.vocab, da.temperature, da.top_k, da.top_p,
                            (uint64_t)da.seed)) {
        rc = cli_fail("chat", rotary_last_error());
        goto done;
    }
    id_list probe = {0}; /* every token the template names, before any input */
    rc = turn_ids(&c, "", &probe);
    free(probe.v);
    if (rc) {
        rc = cli_fail("chat", err);
        goto done;
    }
    fprintf(stderr, "rotary chat: template %s, %d positions; one line is one turn, end with "
                    "Ctrl-D\n", c.tpl->name, T);
    const int tty = isatty(0);
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        if (tty) fputs("> ", stderr);
        ssize_t len = getline(&line, &cap, stdin);
        if (len < 0) break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len && (rc = reply(&c, line, n_new))) break;
    }
    free(line);
    char how[64];
    const char *why;
    cli_decoder_how(&c.dec, how, sizeof how, &why);
    fprintf(stderr, "rotary chat: %d turns; prefill %ld tokens at %.1f tok/s, decode %ld tokens "
                    "at %.1f tok/s%s\n", c.turns, c.n_prefill,
            c.n_prefill / (c.t_prefill + 1e-12), c.n_decode, c.n_decode / (c.t_decode + 1e-12),
            how);
    if (*why) fprintf(stderr, "rotary: note: %s\n", why);
done:
    rotary_sampler_free(&c.smp);
    cli_decoder_close(&c.dec);
    rotary_tokenizer_free(c.tok);
    rotary_model_free(&c.m);
    return rc;
}
