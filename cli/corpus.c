/* corpus.c: `rotary corpus NAME`: the corpora a new user has without
 * downloading anything by hand, taken from Debian packages. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FORTUNES_ZH "/usr/share/games/fortunes/chinese"

static int mkdirs(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
        *s = '/';
    }
    return mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* English: the King James Bible as `bible` (bible-kjv) prints it. Chinese:
 * the fortunes-zh file without its "%" separator lines. */
static int extract(const char *name, FILE *out) {
    if (!strcmp(name, "english")) {
        if (access("/usr/bin/bible", X_OK) != 0)
            return cli_fail("corpus english", "needs Debian's bible-kjv (apt-get install bible-kjv)");
        FILE *p = popen("/usr/bin/bible Gen1:1-Rev22:21", "r");
        if (!p) return cli_fail("corpus english", "cannot run bible");
        char buf[65536];
        size_t k, total = 0;
        while ((k = fread(buf, 1, sizeof buf, p)) > 0) total += fwrite(buf, 1, k, out);
        if (pclose(p) != 0 || total < 1000000) return cli_fail("corpus english", "bible failed");
        return 0;
    }
    if (!strcmp(name, "chinese")) {
        FILE *f = fopen(FORTUNES_ZH, "rb");
        if (!f) return cli_fail("corpus chinese", "needs Debian's fortunes-zh (apt-get install fortunes-zh)");
        char line[8192];
        while (fgets(line, sizeof line, f))
            if (strcmp(line, "%\n") != 0) fputs(line, out);
        fclose(f);
        return 0;
    }
    char why[128];
    snprintf(why, sizeof why, "unknown corpus '%s' (english, chinese)", name);
    return cli_fail("corpus", why);
}

int cli_corpus_path(const char *name, char *path, size_t cap) {
    const char *cache = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char dir[4096];
    if (cache && *cache) snprintf(dir, sizeof dir, "%s/rotary", cache);
    else snprintf(dir, sizeof dir, "%s/.cache/rotary", home && *home ? home : "/tmp");
    if ((size_t)snprintf(path, cap, "%s/%s.txt", dir, name) >= cap) return cli_fail("corpus", "path too long");
    if (access(path, R_OK) == 0) return 0;
    if (strcmp(name, "english") && strcmp(name, "chinese")) return extract(name, NULL);
    if (mkdirs(dir) != 0) return cli_fail(dir, strerror(errno));
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "wb");
    if (!out) return cli_fail(tmp, strerror(errno));
    fprintf(stderr, "rotary: extracting the %s corpus to %s\n", name, path);
    int rc = extract(name, out);
    if (fclose(out) != 0 && !rc) rc = cli_fail(tmp, "write failed");
    if (rc || rename(tmp, path) != 0) {
        remove(tmp);
        return rc ? rc : cli_fail(path, strerror(errno));
    }
    return 0;
}

int cmd_corpus(int argc, char **argv) {
    if (argc != 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        printf("usage: rotary corpus english|chinese\n\n"
               "Extracts a corpus from a Debian package into ~/.cache/rotary/NAME.txt and prints\n"
               "its path: english = the King James Bible (bible-kjv, ~4.3 MB), chinese = the\n"
               "Chinese fortunes (fortunes-zh, ~2.1 MB UTF-8). `--data english` does the same.\n");
        return argc == 2 ? 0 : 2;
    }
    char path[4096];
    if (cli_corpus_path(argv[1], path, sizeof path)) return 1;
    printf("%s\n", path);
    return 0;
}
