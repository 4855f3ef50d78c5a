/* common.c: error reporting, allocation, reading, mapping and writing files,
 * and the random number generator. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <cblas.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static _Thread_local char last_error[512];

const char *rotary_last_error(void) { return last_error; }

int rotary_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

double rotary_mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    if (f) fclose(f);
    double avail = kb * 1024.0;
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        /* The limit counts the address space already mapped (libraries,
         * thread stacks, earlier buffers). */
        double used = 0, pages;
        FILE *s = fopen("/proc/self/statm", "r");
        if (s && fscanf(s, "%lf", &pages) == 1) used = pages * (double)sysconf(_SC_PAGESIZE);
        if (s) fclose(s);
        double left = (double)rl.rlim_cur > used ? (double)rl.rlim_cur - used : 1;
        if (avail == 0 || left < avail) avail = left;
    }
    return avail;
}

float *rotary_alloc_floats(size_t n, const char *what) {
    size_t bytes;
    if (rotary_mul_size(n ? n : 1, sizeof(float), &bytes) != 0 || bytes > SIZE_MAX - 64) {
        rotary_fail(ROTARY_ENOMEM, "%s: size overflow (%zu floats)", what, n);
        return NULL;
    }
    bytes = (bytes + 63) & ~(size_t)63;
    /* The memset below commits the pages: past what is available, Linux
     * would kill us there instead of failing the allocation. */
    double avail = bytes >= ((size_t)64 << 20) ? rotary_mem_available() : 0;
    if (avail > 0 && (double)bytes > avail) {
        rotary_fail(ROTARY_ENOMEM, "%s: needs %zu bytes (%.2f GiB), but only %.2f GiB of memory "
                    "is available", what, bytes, bytes / 1073741824.0, avail / 1073741824.0);
        return NULL;
    }
    float *p = aligned_alloc(64, bytes);
    if (!p) {
        rotary_fail(ROTARY_ENOMEM, "%s: cannot allocate %zu bytes", what, bytes);
        return NULL;
    }
    memset(p, 0, bytes);
    return p;
}

/* Open path read-only and check that it is a regular file; *fd and *size
 * (bytes) on success, the message set and nothing left open on failure. */
static int open_regular(const char *path, int *fd, size_t *size) {
    *fd = open(path, O_RDONLY);
    if (*fd < 0) return rotary_fail(ROTARY_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = ROTARY_OK;
    if (fstat(*fd, &st) != 0)
        rc = rotary_fail(ROTARY_EIO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = rotary_fail(ROTARY_EIO, "%s: not a regular file", path);
    else if ((uint64_t)st.st_size > SIZE_MAX)
        rc = rotary_fail(ROTARY_ENOMEM, "%s: file too large to map", path);
    if (rc != ROTARY_OK) {
        close(*fd);
        *fd = -1;
        return rc;
    }
    *size = (size_t)st.st_size;
    return ROTARY_OK;
}

static const unsigned char no_bytes[1]; /* what an empty file maps to */

int rotary_map_file(const char *path, const void **data, size_t *size) {
    *data = NULL;
    *size = 0;
    int fd;
    size_t n;
    int rc = open_regular(path, &fd, &n);
    if (rc != ROTARY_OK) return rc;
    if (n == 0) { /* mmap refuses a length of 0 */
        close(fd);
        *data = no_bytes;
        return ROTARY_OK;
    }
    void *map = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return rotary_fail(ROTARY_EIO, "%s: cannot map: %s", path, strerror(map_errno));
    *data = map;
    *size = n;
    return ROTARY_OK;
}

void rotary_unmap_file(const void *data, size_t size) {
    if (data && size) munmap((void *)data, size);
}

int rotary_read_file(const char *path, size_t max, const char *what, char **data, size_t *size) {
    *data = NULL;
    *size = 0;
    int fd;
    size_t n;
    int rc = open_regular(path, &fd, &n);
    if (rc != ROTARY_OK) return rc;
    if (n > max) {
        close(fd);
        return rotary_fail(ROTARY_EFORMAT, "%s: %zu bytes is too large for a %s (at most %zu)",
                           path, n, what, max);
    }
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", path);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != n) {
        free(buf);
        return rotary_fail(ROTARY_EIO, "%s: read failed", path);
    }
    buf[n] = '\0';
    *data = buf;
    *size = n;
    return ROTARY_OK;
}

/* Write all of buf to fd; 0 or -1 with errno set. */
static int write_all(int fd, const void *buf, size_t n) {
    const unsigned char *p = buf;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync the directory holding path so the rename is durable. */
static int fsync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) {
        dir = strdup(".");
    } else if (slash == path) {
        dir = strdup("/");
    } else {
        dir = malloc((size_t)(slash - path) + 1);
        if (dir) {
            memcpy(dir, path, (size_t)(slash - path));
            dir[slash - path] = '\0';
        }
    }
    if (!dir) return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", path);
    int fd = open(dir, O_RDONLY);
    if (fd < 0) {
        int rc = rotary_fail(ROTARY_EIO, "%s: cannot open directory '%s' to sync it: %s", path,
                             dir, strerror(errno));
        free(dir);
        return rc;
    }
    int rc = ROTARY_OK;
    /* Some file systems do not support fsync on directories (EINVAL). */
    if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP && errno != EROFS)
        rc = rotary_fail(ROTARY_EIO, "%s: cannot sync directory '%s': %s", path, dir,
                         strerror(errno));
    close(fd);
    free(dir);
    return rc;
}

/* Remove the temporary file after a failure (fd already closed when < 0). */
static int tmpfile_abandon(rotary_tmpfile *f, int rc) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    unlink(f->tmp);
    free(f->tmp);
    f->tmp = NULL;
    return rc;
}

int rotary_tmpfile_open(rotary_tmpfile *f, const char *path) {
    f->path = path;
    f->fd = -1;
    size_t plen = strlen(path);
    f->tmp = malloc(plen + sizeof ".tmp.XXXXXX");
    if (!f->tmp) return rotary_fail(ROTARY_ENOMEM, "%s: out of memory", path);
    memcpy(f->tmp, path, plen);
    memcpy(f->tmp + plen, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
    f->fd = mkstemp(f->tmp);
    if (f->fd < 0) {
        int rc = rotary_fail(ROTARY_EIO, "%s: cannot create a temporary file: %s", path,
                             strerror(errno));
        free(f->tmp);
        f->tmp = NULL;
        return rc;
    }
    /* mkstemp makes the file 0600; what we write are ordinary data files. */
    (void)fchmod(f->fd, 0644);
    return ROTARY_OK;
}

int rotary_tmpfile_write(rotary_tmpfile *f, const void *buf, size_t n) {
    if (write_all(f->fd, buf, n) == 0) return ROTARY_OK;
    return tmpfile_abandon(f, rotary_fail(ROTARY_EIO, "%s: write to '%s' failed: %s", f->path,
                                          f->tmp, strerror(errno)));
}

int rotary_tmpfile_commit(rotary_tmpfile *f) {
    if (fsync(f->fd) != 0)
        return tmpfile_abandon(f, rotary_fail(ROTARY_EIO, "%s: cannot sync '%s': %s", f->path,
                                              f->tmp, strerror(errno)));
    int closed = close(f->fd);
    f->fd = -1;
    if (closed != 0)
        return tmpfile_abandon(f, rotary_fail(ROTARY_EIO, "%s: cannot close '%s': %s", f->path,
                                              f->tmp, strerror(errno)));
    if (rename(f->tmp, f->path) != 0)
        return tmpfile_abandon(f, rotary_fail(ROTARY_EIO, "%s: cannot rename '%s' into place: %s",
                                              f->path, f->tmp, strerror(errno)));
    free(f->tmp);
    f->tmp = NULL;
    return fsync_parent_dir(f->path);
}

int rotary_write_file(const char *path, const void *data, size_t n) {
    rotary_tmpfile f;
    int rc = rotary_tmpfile_open(&f, path);
    if (rc == ROTARY_OK) rc = rotary_tmpfile_write(&f, data, n);
    if (rc == ROTARY_OK) rc = rotary_tmpfile_commit(&f);
    return rc;
}

static int span_cmp(const void *a, const void *b) {
    const rotary_span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

int rotary_spans_overlap(rotary_span *s, int n, const rotary_span **a, const rotary_span **b) {
    qsort(s, (size_t)n, sizeof *s, span_cmp);
    const rotary_span *prev = NULL;
    for (int k = 0; k < n; k++) {
        if (s[k].end <= s[k].begin) continue;
        if (prev && s[k].begin < prev->end) {
            *a = prev, *b = &s[k];
            return 1;
        }
        prev = &s[k];
    }
    return 0;
}

/* splitmix64 for seeding, xorshift64* for the stream. */
void rotary_rng_seed(rotary_rng *r, uint64_t seed) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    r->s = z ? z : 0x2545F4914F6CDD1Dull;
}

uint64_t rotary_rng_next(rotary_rng *r) {
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float rotary_rng_uniform(rotary_rng *r) {
    return (float)(rotary_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

float rotary_rng_normal(rotary_rng *r) {
    /* Box-Muller in double; u1 in (0, 1] so log() is finite. */
    double u1 = ((double)(rotary_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(rotary_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

const char *rotary_blas_coretype_hint(void) {
    if (getenv("OPENBLAS_CORETYPE")) return NULL; /* the user chose */
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq"))
        return NULL;
    const char *core = openblas_get_corename();
    if (!core || (strcmp(core, "Haswell") != 0 && strcmp(core, "Zen") != 0)) return NULL;
    return "SkylakeX";
}
