/* check.h: how the C tests check and count (tests/test_*.c).
 *
 * Each test is one executable, so the counters live here as statics.
 *   EXPECT(cond, fmt, ...)     one check; when cond is false it prints
 *                              "FAIL file:line: message"
 *   check(ok, name, fmt, ...)  one named check; prints "ok   name  detail" or
 *                              "FAIL name  detail". A name that starts with '.'
 *                              is printed only when it fails (keeps logs short).
 *   must(rc, what)             a step the rest depends on: unless rc is
 *                              ROTARY_OK, print "FAIL what: why" and exit(1)
 *   check_summary(test)        print "test: passed|FAILED (N checks, F failures)"
 *                              and return the exit status for main
 * Define CHECK_NAME_WIDTH before including this to widen check()'s name column. */
#ifndef ROTARY_TESTS_CHECK_H
#define ROTARY_TESTS_CHECK_H

#include "rotary.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef CHECK_NAME_WIDTH
#define CHECK_NAME_WIDTH 44
#endif

static int checks, failures;

#define EXPECT(cond, ...)                                                                  \
    do {                                                                                   \
        checks++;                                                                          \
        if (!(cond)) {                                                                     \
            failures++;                                                                    \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                    \
            printf(__VA_ARGS__);                                                           \
            printf("\n");                                                                  \
        }                                                                                  \
    } while (0)

static inline void check(int ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void check(int ok, const char *name, const char *fmt, ...) {
    checks++;
    if (!ok) failures++;
    if (ok && name[0] == '.') return;
    printf("%-4s %-*s ", ok ? "ok" : "FAIL", CHECK_NAME_WIDTH, name[0] == '.' ? name + 1 : name);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static inline void must(int rc, const char *what) {
    if (rc != ROTARY_OK) {
        printf("FAIL %s: %s\n", what, rotary_last_error());
        exit(1);
    }
}

static inline int check_summary(const char *test) {
    printf("%s: %s (%d checks, %d failures)\n", test, failures ? "FAILED" : "passed", checks,
           failures);
    return failures ? 1 : 0;
}

#endif
