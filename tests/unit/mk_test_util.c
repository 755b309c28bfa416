/* Shared helpers for the cmocka unit tests. */
#include "mk_test_util.h"

#include <errno.h>
#include <ftw.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdbool.h>

#include "io/os.h"

/* The shared fixtures root: $MK_FIXTURES (CMake passes -DMK_FIXTURES), else
 * the default checkout layout. */
static const char *fixtures_root(void) {
    const char *root = getenv("MK_FIXTURES");
    return root && *root ? root : "../shared/fixtures";
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *mk_test_fixture(const char *rel) {
    static char buf[4096];
    const char *root = fixtures_root(), *src = getenv("MK_SRC");
    if (is_dir(root)) {
        snprintf(buf, sizeof buf, "%s/%s", root, rel);
        return buf;
    }
    /* the trained demo model is embedded in the repository (same files) */
    if (src && !strncmp(rel, "tiny-qwen35moe", 14) && (rel[14] == '/' || !rel[14])) {
        snprintf(buf, sizeof buf, "%s/models/%s", src, rel);
        return buf;
    }
    print_message("skip: %s needs the shared fixtures, not found at '%s' (configure with "
                  "-DMK_FIXTURES=DIR)\n", rel, root);
    skip();
    return NULL; /* not reached: skip() leaves the test */
}

char *mk_test_tmpdir(const char *tag) {
    const char *t = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/mk-%s-XXXXXX", t ? t : "/tmp", tag);
    if (!mkdtemp(tmpl))
        return NULL;
    return strdup(tmpl);
}

/* Removes one entry of the walk; directories come after their contents
 * (FTW_DEPTH) and links are removed, never followed (FTW_PHYS). */
static int rmrf_entry(const char *p, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    if (remove(p) != 0 && type != FTW_NS)
        fprintf(stderr, "warning: could not remove %s\n", p);
    return 0;
}

/* In-process rather than system("rm -rf"): the allocation-failure sweeps
 * remove a temp dir after each of thousands of runs, and forking a shell
 * from a sanitizer process (gigabytes of shadow mappings) costs far more
 * than the run itself. */
void mk_test_rmrf(const char *path) {
    if (!path || !*path || strcmp(path, "/") == 0)
        return;
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (nftw(path, rmrf_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "warning: could not remove %s\n", path);
}

void *mk_test_slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc(sz > 0 ? (size_t)sz : 1);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b && n)
        *n = (size_t)sz;
    return b;
}

int mk_test_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

/* ---- read faults (mk_test_fault_arm) ---------------------------------------- */

static int g_fault_at = -1;
static bool g_fault_every, g_fault_short;
static atomic_int g_fault_reads;

static bool fault_now(void) {
    if (g_fault_at < 0)
        return false;
    int i = atomic_fetch_add(&g_fault_reads, 1);
    return g_fault_every ? i >= g_fault_at : i == g_fault_at;
}

static ssize_t fault_pread(int fd, void *buf, size_t n, off_t off) {
    if (fault_now()) {
        if (g_fault_short)
            return 0; /* end of file here: a short read */
        errno = EIO;
        return -1;
    }
    return pread(fd, buf, n, off);
}

static int fault_uring_result(int fd, void *buf, size_t n, off_t off, int res) {
    (void)fd, (void)buf, (void)n, (void)off;
    if (fault_now())
        return g_fault_short ? 0 : -EIO;
    return res;
}

void mk_test_fault_arm(int at, bool every, bool short_read) {
    static const mk_os_vtbl v = {.pread = fault_pread, .uring_result = fault_uring_result};
    atomic_store(&g_fault_reads, 0);
    g_fault_every = every;
    g_fault_short = short_read;
    g_fault_at = at;
    mk_os_override(&v);
}

int mk_test_fault_disarm(void) {
    mk_os_override(NULL);
    g_fault_at = -1;
    return atomic_load(&g_fault_reads);
}
