/* test_tokenizer.c: byte tokenizer and BPE: exact round trips (valid UTF-8,
 * random bytes, empty), compression, save/load, and the refusals (bad UTF-8
 * for training, bad files, bad ids). Optional corpora: tinyshakespeare from
 * argv[1] or $ROTARY_DATA_DIR (default ../../shared/data from the build dir),
 * and the Chinese fortunes if installed. Exit 0 when every check passes. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Written for this test: a paragraph in English and one in Chinese. */
static const char english[] =
    "A tokenizer cuts text into pieces that a model can count. The simplest one "
    "gives every byte its own number, so nothing is ever lost, but the sequences "
    "are long. Byte pair encoding starts from the bytes and, again and again, "
    "joins the two neighbours that are seen together most often into a new piece. "
    "After a few hundred joins the common words of the training text are single "
    "pieces, and rare words are spelled from smaller ones. The pieces never reach "
    "across a space or a comma, because the text is first cut into words, numbers "
    "like 1024 or 65536, and runs of punctuation.\n\n";
static const char chinese[] =
    "旋转位置编码把查询和键的每一对分量看作平面上的一个点，并按照词元的位置把它旋转一个角度。"
    "两个词元相距越远，转过的角度相差越大，而旋转后的查询与键的内积只与它们位置的差有关。"
    "因此模型学到的是相对距离，而每个词元只携带自己的绝对位置。中文没有空格，所以分词器把"
    "连续的汉字当作一段，让合并可以组成多字的词语，例如“位置”“旋转”“模型”。\n";

/* Encode then decode; 1 if the bytes come back exactly. *n_ids receives the
 * token count. */
static int round_trip(const rotary_tokenizer *t, const unsigned char *s, size_t n, size_t *n_ids) {
    int *ids;
    unsigned char *back;
    size_t m, nb;
    must(rotary_tokenizer_encode(t, s, n, &ids, &m), "encode");
    must(rotary_tokenizer_decode(t, ids, m, &back, &nb), "decode");
    int ok = nb == n && (n == 0 || !memcmp(back, s, n));
    /* Streaming decode through pieces agrees too. */
    size_t o = 0;
    for (size_t i = 0; i < m && ok; i++) {
        int len;
        const unsigned char *p = rotary_tokenizer_piece(t, ids[i], &len);
        ok = p && o + (size_t)len <= n && !memcmp(p, s + o, (size_t)len);
        o += (size_t)len;
    }
    if (n_ids) *n_ids = m;
    free(ids);
    free(back);
    return ok && o == n;
}

static int same_encoding(const rotary_tokenizer *a, const rotary_tokenizer *b,
                         const unsigned char *s, size_t n) {
    int *x, *y;
    size_t nx, ny;
    must(rotary_tokenizer_encode(a, s, n, &x, &nx), "encode");
    must(rotary_tokenizer_encode(b, s, n, &y, &ny), "encode");
    int ok = nx == ny && !memcmp(x, y, nx * sizeof(int));
    free(x);
    free(y);
    return ok;
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (p && fread(p, 1, (size_t)len, f) != (size_t)len) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *n = p ? (size_t)len : 0;
    return p;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f || fputs(text, f) < 0 || fclose(f)) {
        printf("FAIL cannot write %s\n", path);
        exit(1);
    }
}

static void fill_random(unsigned char *p, size_t n, rotary_rng *r) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(rotary_rng_next(r) >> 56);
}

static int progress_calls, progress_last, progress_total;
static void progress(void *ctx, int done, int total) {
    (void)ctx;
    progress_calls++;
    progress_last = done;
    progress_total = total;
}

/* Train on a corpus file, check an exact round trip, print the numbers. */
static void corpus(const char *name, const char *path, int vocab, double min_ratio) {
    size_t n;
    unsigned char *text = read_all(path, &n);
    if (!text) {
        printf("skip %-44s %s not found\n", name, path);
        return;
    }
    rotary_tokenizer *t;
    double t0 = now();
    must(rotary_tokenizer_train(&t, text, n, vocab, NULL, NULL), path);
    double train_s = now() - t0;
    size_t m;
    t0 = now();
    int ok = round_trip(t, text, n, &m);
    double enc_s = now() - t0;
    double ratio = (double)n / (double)m;
    check(ok && ratio > min_ratio, name,
          "%zu bytes, vocab %d: %.3f bytes/token (> %.1f), round trip %s; train %.2fs, "
          "encode+decode %.2fs", n, rotary_tokenizer_vocab_size(t), ratio, min_ratio,
          ok ? "exact" : "DIFFERS", train_s, enc_s);
    rotary_tokenizer_free(t);
    free(text);
}

/* The trainer must refuse bad UTF-8 and name the offset of the bad byte. */
static void bad_utf8(const char *name, const char *s, size_t n, size_t offset) {
    rotary_tokenizer *t = NULL;
    int rc = rotary_tokenizer_train(&t, (const unsigned char *)s, n, 300, NULL, NULL);
    char want[64];
    snprintf(want, sizeof want, "at byte %zu", offset);
    check(rc == ROTARY_EINVAL && !t && strstr(rotary_last_error(), want), name, "%s",
          rotary_last_error());
}

/* load must fail on this file content with a message containing `want`. */
static void bad_file(const char *name, const char *path, const char *content, const char *want) {
    if (content) write_file(path, content);
    rotary_tokenizer *t = NULL;
    int rc = rotary_tokenizer_load(&t, path);
    check(rc < 0 && !t && strstr(rotary_last_error(), want), name, "%s", rotary_last_error());
    if (content) remove(path);
}

int main(int argc, char **argv) {
    rotary_rng rng;
    rotary_rng_seed(&rng, 7);
    enum { NR = 20000 };
    unsigned char *rnd = malloc(NR);
    fill_random(rnd, NR, &rng);

    /* byte tokenizer */
    rotary_tokenizer *bytes;
    must(rotary_tokenizer_bytes(&bytes), "bytes");
    size_t m;
    int ok = round_trip(bytes, rnd, NR, &m);
    check(ok && m == NR && rotary_tokenizer_vocab_size(bytes) == 256 &&
              rotary_tokenizer_is_bytes(bytes),
          "bytes: random bytes round trip", "%d bytes -> %zu ids, vocab %d", NR, m,
          rotary_tokenizer_vocab_size(bytes));

    /* BPE on the two paragraphs */
    size_t ne = strlen(english), nz = strlen(chinese), n = ne + nz;
    unsigned char *text = malloc(n);
    memcpy(text, english, ne);
    memcpy(text + ne, chinese, nz);
    rotary_tokenizer *bpe;
    must(rotary_tokenizer_train(&bpe, text, n, 400, progress, NULL), "train");
    int vocab = rotary_tokenizer_vocab_size(bpe);
    check(vocab > 256 + 60 && vocab <= 400 && !rotary_tokenizer_is_bytes(bpe) &&
              progress_calls == vocab - 256 && progress_last == vocab - 256 &&
              progress_total == 144,
          "bpe: trains on English + Chinese", "%zu bytes, vocab %d (asked 400), %d progress calls",
          n, vocab, progress_calls);
    size_t m_text, m_en, m_zh;
    ok = round_trip(bpe, text, n, &m_text);
    check(ok && m_text < n, "bpe: training text round trip", "%zu bytes -> %zu tokens (%.2f b/t)",
          n, m_text, (double)n / m_text);
    round_trip(bpe, text, ne, &m_en);
    round_trip(bpe, text + ne, nz, &m_zh);
    check(m_en < ne * 6 / 10 && m_zh < nz * 6 / 10, "bpe: merges shorten both languages",
          "English %zu bytes -> %zu tokens, Chinese %zu bytes -> %zu tokens", ne, m_en, nz, m_zh);
    ok = round_trip(bpe, rnd, NR, &m);
    check(ok, "bpe: random bytes round trip", "%d bytes -> %zu tokens", NR, m);
    /* Valid text with invalid bytes spliced in, and long runs past the chunk cap. */
    {
        unsigned char mix[4000];
        size_t k = 0;
        while (k + 64 < sizeof mix) {
            size_t a = rotary_rng_next(&rng) % n, len = 1 + rotary_rng_next(&rng) % 40;
            if (a + len > n) len = n - a;
            memcpy(mix + k, text + a, len);
            k += len;
            mix[k++] = (unsigned char)(0x80 + rotary_rng_next(&rng) % 128);
        }
        ok = round_trip(bpe, mix, k, &m);
        unsigned char runs[3 * 300 + 1000];
        size_t r = 0;
        for (int i = 0; i < 1000; i++) runs[r++] = 'e';
        for (int i = 0; i < 300; i++) memcpy(runs + r, "\xe4\xbd\x8d", 3), r += 3;
        int ok2 = round_trip(bpe, runs, r, NULL);
        check(ok && ok2, "bpe: invalid UTF-8 spliced in, long runs", "%zu + %zu bytes exact", k, r);
    }
    ok = round_trip(bpe, (const unsigned char *)"", 0, &m);
    check(ok && m == 0, "bpe: empty input", "%zu tokens", m);

    /* determinism and save/load */
    rotary_tokenizer *again;
    must(rotary_tokenizer_train(&again, text, n, 400, NULL, NULL), "train again");
    check(same_encoding(bpe, again, text, n) && same_encoding(bpe, again, rnd, NR),
          "bpe: training is deterministic", "same merges, same ids");
    rotary_tokenizer_free(again);
    const char *path = "test_tokenizer_tmp.json";
    must(rotary_tokenizer_save(bpe, path), "save");
    rotary_tokenizer *loaded;
    must(rotary_tokenizer_load(&loaded, path), "load");
    check(rotary_tokenizer_vocab_size(loaded) == vocab && same_encoding(bpe, loaded, text, n) &&
              same_encoding(bpe, loaded, rnd, NR),
          "bpe: save/load gives identical encodings", "vocab %d", rotary_tokenizer_vocab_size(loaded));
    rotary_tokenizer_free(loaded);
    must(rotary_tokenizer_save(bytes, path), "save bytes");
    must(rotary_tokenizer_load(&loaded, path), "load bytes");
    check(rotary_tokenizer_is_bytes(loaded) && same_encoding(bytes, loaded, rnd, NR),
          "bytes: save/load", "vocab %d", rotary_tokenizer_vocab_size(loaded));
    rotary_tokenizer_free(loaded);
    remove(path);

    /* decode and piece refuse ids out of range */
    {
        int ids[3] = {65, vocab, 66};
        unsigned char *out = NULL;
        size_t no;
        int rc = rotary_tokenizer_decode(bpe, ids, 3, &out, &no);
        check(rc == ROTARY_EINVAL && !out && strstr(rotary_last_error(), "position 1"),
              "decode rejects an out-of-range id", "%s", rotary_last_error());
        int len;
        check(!rotary_tokenizer_piece(bpe, vocab, &len) && !rotary_tokenizer_piece(bpe, -1, &len),
              "piece rejects an out-of-range id", "NULL for %d and -1", vocab);
    }

    /* training refuses bad UTF-8, bad sizes, empty text */
    bad_utf8("train rejects an overlong encoding", "abc\xc0\xaf", 5, 3);
    bad_utf8("train rejects an overlong 3-byte form", "ab\xe0\x80\xaf", 5, 2);
    bad_utf8("train rejects a lone continuation byte", "hello \x80 world", 13, 6);
    bad_utf8("train rejects a truncated sequence", "x\xe4\xbd", 3, 1);
    bad_utf8("train rejects a cut-short sequence", "x\xe4\xbdy", 4, 1);
    bad_utf8("train rejects a surrogate", "ok \xed\xa0\x80", 6, 3);
    bad_utf8("train rejects a code point > U+10FFFF", "\xf4\x90\x80\x80", 4, 0);
    bad_utf8("train rejects byte 0xFF", "ab\xff", 3, 2);
    {
        rotary_tokenizer *t = NULL;
        int r1 = rotary_tokenizer_train(&t, text, n, 255, NULL, NULL);
        int r2 = rotary_tokenizer_train(&t, text, n, 65537, NULL, NULL);
        int r3 = rotary_tokenizer_train(&t, text, 0, 300, NULL, NULL);
        check(r1 == ROTARY_EINVAL && r2 == ROTARY_EINVAL && r3 == ROTARY_EINVAL && !t,
              "train rejects vocab 255, 65537, empty text", "%s", rotary_last_error());
        must(rotary_tokenizer_train(&t, text, n, 256, NULL, NULL), "train 256");
        check(rotary_tokenizer_vocab_size(t) == 256 && round_trip(t, text, n, NULL),
              "train with vocab 256 (no merges)", "vocab %d", rotary_tokenizer_vocab_size(t));
        rotary_tokenizer_free(t);
    }

    /* load refuses bad files */
    const char *bad = "test_tokenizer_bad.json";
    bad_file("load rejects a missing file", "test_tokenizer_no_such_file.json", NULL, "cannot open");
    bad_file("load rejects text that is not JSON", bad, "merges: 1 2\n", "not JSON");
    bad_file("load rejects a wrong format string", bad,
             "{\"format\": \"sentencepiece\", \"version\": 1, \"type\": \"bpe\", \"vocab_size\": 256,"
             " \"pretokenizer\": \"rotary-v1\", \"merges\": []}", "format");
    bad_file("load rejects an unknown version", bad,
             "{\"format\": \"rotary-tokenizer\", \"version\": 2, \"type\": \"bpe\", \"vocab_size\": 256,"
             " \"pretokenizer\": \"rotary-v1\", \"merges\": []}", "version");
    bad_file("load rejects a merge of a later id", bad,
             "{\"format\": \"rotary-tokenizer\", \"version\": 1, \"type\": \"bpe\", \"vocab_size\": 258,"
             " \"pretokenizer\": \"rotary-v1\", \"merges\": [[97, 98], [256, 257]]}", "merge 1");
    bad_file("load rejects a vocab_size mismatch", bad,
             "{\"format\": \"rotary-tokenizer\", \"version\": 1, \"type\": \"bpe\", \"vocab_size\": 300,"
             " \"pretokenizer\": \"rotary-v1\", \"merges\": [[97, 98]]}", "vocab_size");
    bad_file("load rejects a repeated merge", bad,
             "{\"format\": \"rotary-tokenizer\", \"version\": 1, \"type\": \"bpe\", \"vocab_size\": 258,"
             " \"pretokenizer\": \"rotary-v1\", \"merges\": [[97, 98], [97, 98]]}", "repeats");
    bad_file("load rejects another pretokenizer", bad,
             "{\"format\": \"rotary-tokenizer\", \"version\": 1, \"type\": \"bpe\", \"vocab_size\": 257,"
             " \"pretokenizer\": \"gpt2\", \"merges\": [[97, 98]]}", "pretokenizer");
    bad_file("load rejects a non-integer id", bad,
             "{\"format\": \"rotary-tokenizer\", \"version\": 1, \"type\": \"bpe\", \"vocab_size\": 257,"
             " \"pretokenizer\": \"rotary-v1\", \"merges\": [[97.5, 98]]}", "merge 0");

    /* corpora, when present */
    char shakespeare[1024];
    const char *dir = getenv("ROTARY_DATA_DIR");
    if (argc > 1) snprintf(shakespeare, sizeof shakespeare, "%s", argv[1]);
    else snprintf(shakespeare, sizeof shakespeare, "%s/tinyshakespeare.txt",
                  dir && *dir ? dir : "../../shared/data");
    corpus("bpe: tinyshakespeare, vocab 1024", shakespeare, 1024, 2.0);
    corpus("bpe: Chinese fortunes, vocab 4096", "/usr/share/games/fortunes/chinese", 4096, 2.5);
    /* The English corpus as `rotary corpus english` makes it (bible-kjv). */
    FILE *bible = popen("/usr/bin/bible Gen1:1-Rev22:21 2>/dev/null", "r"), *kjv = NULL;
    if (bible && (kjv = fopen("test_tokenizer_kjv.txt", "wb"))) {
        char buf[65536];
        size_t k;
        while ((k = fread(buf, 1, sizeof buf, bible)) > 0) fwrite(buf, 1, k, kjv);
        fclose(kjv);
    }
    if (bible) pclose(bible);
    corpus("bpe: King James Bible, vocab 4096", kjv ? "test_tokenizer_kjv.txt" : "/usr/bin/bible",
           4096, 3.0);
    remove("test_tokenizer_kjv.txt");

    rotary_tokenizer_free(bpe);
    rotary_tokenizer_free(bytes);
    free(text);
    free(rnd);
    return check_summary("test_tokenizer");
}
