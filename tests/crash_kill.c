/* crash_kill.c: SIGKILL a training run again and again, resume it each time,
 * and check that nothing is lost (docs/reliability.md):
 *   (a) after every kill the run directory's checkpoint, if any, loads, and
 *       its step never goes back;
 *   (b) the resumed run ends with parameters and AdamW state bit-identical
 *       to a run that never stopped (same seed, same threads);
 *   (c) metrics.csv has the uninterrupted run's rows (step, train_loss,
 *       val_loss, lr), each once, none torn.
 * Kills come at random moments, when a checkpoint's temporary file appears
 * (inotify, so the kill lands inside the write), and before the first
 * checkpoint (after which --resume must start from the beginning).
 *
 * usage: crash_kill ROTARY WORKDIR [KILLS] [SEED]
 * The seed of the kill schedule is printed, so a failure can be replayed. */
#define _DEFAULT_SOURCE
#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CKPT_TMP "checkpoint.safetensors.tmp."

static const char *rotary_bin;
static char data[4200];

/* Start `rotary train` with the test's model on DATA; `how` is "--out" or
 * "--resume". Its output goes to DIR/log.txt (appended). */
static pid_t launch(const char *how, const char *dir) {
    char log[4200];
    snprintf(log, sizeof log, "%s.log", dir);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
        /* Two threads, as CI has, and the same in every launch: bits depend on it. */
        char *argv[] = {(char *)rotary_bin, "train", "--data", (char *)data, "--layers", "2",
                        "--heads", "4", "--dim", "64", "--ctx", "64", "--batch", "8",
                        "--steps", "120", "--eval-every", "10", "--ckpt-every", "5",
                        "--eval-batches", "2", "--warmup", "10", "--sample-tokens", "0",
                        "--threads", "2", "--seed", "11", (char *)how, (char *)dir, NULL};
        execv(rotary_bin, argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid) {
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int has_tmp_checkpoint(const char *dir) {
    DIR *d = opendir(dir);
    int found = 0;
    for (struct dirent *e; d && (e = readdir(d));) found |= !strncmp(e->d_name, CKPT_TMP, strlen(CKPT_TMP));
    if (d) closedir(d);
    return found;
}

/* Wait for an inotify event on a file whose name starts with prefix, or for
 * the child to exit, or for timeout_ms. 1: event, 0: timeout, -1: exited. */
static int wait_for_file(int ino, pid_t pid, const char *prefix, double timeout_ms) {
    double end = now_ms() + timeout_ms;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        siginfo_t si = {0}; /* exited? (left waitable: wait_exit reaps it) */
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
            return -1;
        double left = end - now_ms();
        if (left <= 0) return 0;
        struct pollfd p = {ino, POLLIN, 0};
        if (poll(&p, 1, left < 20 ? (int)left + 1 : 20) <= 0) continue;
        ssize_t n = read(ino, buf, sizeof buf);
        for (char *q = buf; n > 0 && q < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)q;
            if (e->len && !strncmp(e->name, prefix, strlen(prefix))) return 1;
            q += sizeof *e + e->len;
        }
    }
}

/* Some text to train on: 200 kB of numbered lines. */
static void write_text(const char *work) {
    snprintf(data, sizeof data, "%s/text.txt", work);
    FILE *f = fopen(data, "wb");
    if (!f) {
        perror(data);
        exit(1);
    }
    static const char *const words[] = {"the", "quick", "brown", "fox", "jumps", "over", "a",
                                        "lazy", "dog", "and", "runs", "home", "at", "night"};
    for (int i = 0; i < 4000; i++) {
        fprintf(f, "line %d:", i);
        for (int j = 0; j < 7; j++) fprintf(f, " %s", words[(i * 7 + j * j * 3 + i / 13) % 14]);
        fputc('\n', f);
    }
    fclose(f);
}

/* Forget inotify events from earlier launches. */
static void drain(int ino) {
    char buf[4096];
    while (read(ino, buf, sizeof buf) > 0) {}
}

/* The step a checkpoint holds, after loading all of it; -1 if it does not load. */
static long checkpoint_step(const char *path) {
    rotary_model m;
    rotary_adamw opt;
    if (rotary_checkpoint_load(path, &m)) return -1;
    long step = -1;
    if (rotary_adamw_init(&opt, m.n_params) == ROTARY_OK) {
        if (rotary_checkpoint_load_optim(path, &m, &opt) == ROTARY_OK) step = opt.step;
        rotary_adamw_free(&opt);
    }
    rotary_model_free(&m);
    return step;
}

/* Parameters and both AdamW moments, bit for bit. */
static int same_state(const char *a, const char *b) {
    rotary_model ma, mb;
    rotary_adamw oa, ob;
    must(rotary_checkpoint_load(a, &ma), a);
    must(rotary_checkpoint_load(b, &mb), b);
    must(rotary_adamw_init(&oa, ma.n_params), "adamw");
    must(rotary_adamw_init(&ob, mb.n_params), "adamw");
    must(rotary_checkpoint_load_optim(a, &ma, &oa), a);
    must(rotary_checkpoint_load_optim(b, &mb, &ob), b);
    size_t n = ma.n_params * sizeof(float);
    int same = ma.n_params == mb.n_params && oa.step == ob.step && !memcmp(ma.params, mb.params, n) &&
               !memcmp(oa.m, ob.m, n) && !memcmp(oa.v, ob.v, n);
    rotary_adamw_free(&oa);
    rotary_adamw_free(&ob);
    rotary_model_free(&ma);
    rotary_model_free(&mb);
    return same;
}

/* metrics.csv without its timing columns (the first four fields of each line). */
static char *metrics_rows(const char *dir, int *torn) {
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, len = 0;
    char *out = malloc(cap), line[1024];
    *torn = 0;
    while (out && fgets(line, sizeof line, f)) {
        size_t k = strlen(line);
        if (!k || line[k - 1] != '\n') *torn = 1;
        char *c = line;
        for (int commas = 0; *c && *c != '\n'; c++)
            if (*c == ',' && ++commas == 4) break;
        k = (size_t)(c - line);
        if (len + k + 2 > cap) break;
        memcpy(out + len, line, k);
        len += k;
        out[len++] = '\n';
    }
    fclose(f);
    if (out) out[len] = '\0';
    return out;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: crash_kill ROTARY WORKDIR [KILLS] [SEED]\n");
        return 2;
    }
    rotary_bin = argv[1];
    const char *work = argv[2];
    int kills = argc > 3 ? atoi(argv[3]) : 20;
    uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 10) : (uint64_t)time(NULL);
    write_text(work);
    printf("crash_kill: %d kills, schedule seed %llu\n", kills, (unsigned long long)seed);
    rotary_rng rng;
    rotary_rng_seed(&rng, seed);

    char ref[4096], run[4096], ckpt[4200];
    snprintf(ref, sizeof ref, "%s/ref", work);
    snprintf(run, sizeof run, "%s/run", work);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", run);

    /* The run that never stops, and how long it takes. */
    double t0 = now_ms();
    int rc = wait_exit(launch("--out", ref));
    double full_ms = now_ms() - t0;
    check(rc == 0, "uninterrupted run", "exit %d in %.0f ms", rc, full_ms);
    if (rc) return check_summary("crash_kill");

    mkdir(run, 0755);
    int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ino < 0 || inotify_add_watch(ino, run, IN_CREATE) < 0) {
        perror("inotify");
        return 1;
    }
    long last_step = 0;
    int mid_write = 0, early = 0, loads = 1, monotonic = 1, done = 0;
    for (int k = 0; k < kills && !done; k++) {
        drain(ino);
        pid_t pid = launch(k == 0 ? "--out" : "--resume", run);
        /* Kill 0: before the first checkpoint (as soon as metrics.csv exists).
         * Every third: as a checkpoint write begins. Else: a random moment. */
        int mode = k == 0 ? 0 : k % 3 == 1 ? 1 : 2;
        int got = 1;
        if (mode == 0) got = wait_for_file(ino, pid, "metrics.csv", 10 * full_ms + 5000);
        else if (mode == 1) got = wait_for_file(ino, pid, CKPT_TMP, 10 * full_ms + 5000);
        else usleep((useconds_t)(1000 * rotary_rng_uniform(&rng) * full_ms / 4));
        if (got < 0) { /* finished before we struck */
            done = wait_exit(pid) == 0;
            break;
        }
        kill(pid, SIGKILL);
        int st = wait_exit(pid);
        if (st == 0) { done = 1; break; }
        if (mode == 0) early = access(ckpt, F_OK) != 0;
        if (mode == 1) mid_write += has_tmp_checkpoint(run);
        if (access(ckpt, F_OK) == 0) {
            long s = checkpoint_step(ckpt);
            loads &= s >= 0;
            monotonic &= s >= last_step;
            if (s > last_step) last_step = s;
        }
        printf("kill %2d (%s): checkpoint at step %ld\n", k + 1,
               mode == 0 ? "before the first checkpoint" : mode == 1 ? "during a checkpoint write"
                                                                     : "at a random moment",
               last_step);
        fflush(stdout);
    }
    check(early, "killed before the first checkpoint", "no checkpoint in the run directory");
    check(mid_write > 0, "killed during a checkpoint write", "%d kills left a temporary file", mid_write);
    check(loads, "checkpoint loads after every kill", "last at step %ld", last_step);
    check(monotonic, "checkpoint step never goes back", "over %d kills", kills);
    if (!done) {
        rc = wait_exit(launch("--resume", run));
        check(rc == 0, "resume to the end", "exit %d", rc);
    }
    check(!has_tmp_checkpoint(run), "no temporary files left", "after the last resume");

    char a[4200], b[4200];
    snprintf(a, sizeof a, "%s/checkpoint.safetensors", ref);
    snprintf(b, sizeof b, "%s/checkpoint.safetensors", run);
    check(same_state(a, b), "weights and AdamW state bit-identical", "to the run that never stopped");
    int torn_a, torn_b;
    char *ma = metrics_rows(ref, &torn_a), *mb = metrics_rows(run, &torn_b);
    check(ma && mb && !strcmp(ma, mb) && !torn_b, "metrics.csv rows identical",
          "step, train_loss, val_loss, lr: %zu bytes%s", mb ? strlen(mb) : 0,
          torn_b ? ", a torn line" : "");
    free(ma);
    free(mb);
    close(ino);
    return check_summary("crash_kill");
}
