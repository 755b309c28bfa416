/* System-call wrappers with full-count semantics and a test override table.
 * See os.h for the contract. */
#include "core/alloc.h"
#include "io/os.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef MK_HAVE_URING
#include <liburing.h>
#endif

static int real_rename(const char *a, const char *b) { return rename(a, b); }
static int real_open(const char *p, int flags, mode_t mode) { return open(p, flags, mode); }
static ssize_t real_cfr(int fi, off_t *oi, int fo, off_t *oo, size_t n, unsigned fl) {
    return copy_file_range(fi, oi, fo, oo, n, fl);
}

#ifdef MK_HAVE_URING
static int real_uring_init(unsigned entries, void *ring, unsigned flags) {
    return io_uring_queue_init(entries, ring, flags);
}
static int real_uring_submit(void *ring) { return io_uring_submit(ring); }
#else
static int real_uring_init(unsigned entries, void *ring, unsigned flags) {
    (void)entries, (void)ring, (void)flags;
    return -ENOSYS;
}
static int real_uring_submit(void *ring) {
    (void)ring;
    return -ENOSYS;
}
#endif
static int real_uring_result(int fd, void *buf, size_t n, off_t off, int res) {
    (void)fd, (void)buf, (void)n, (void)off;
    return res;
}

#define MK_OS_REAL                                                                         \
    {pread, pwrite, fsync, real_rename, real_open, mmap, ftruncate, real_cfr, unlink,       \
     real_uring_init, real_uring_submit, real_uring_result}
static const mk_os_vtbl g_real = MK_OS_REAL;
static mk_os_vtbl g_cur = MK_OS_REAL;
static const mk_os_vtbl *g_os = &g_cur;

/* Overrides are installed by tests between runs, never while a run is in
 * flight: the table is copied, NULL slots from the real one. */
void mk_os_override(const mk_os_vtbl *v) {
    g_cur = g_real;
    if (!v)
        return;
#define MK_OS_TAKE(f) if (v->f) g_cur.f = v->f
    MK_OS_TAKE(pread);
    MK_OS_TAKE(pwrite);
    MK_OS_TAKE(fsync);
    MK_OS_TAKE(rename);
    MK_OS_TAKE(open);
    MK_OS_TAKE(mmap);
    MK_OS_TAKE(ftruncate);
    MK_OS_TAKE(copy_file_range);
    MK_OS_TAKE(unlink);
    MK_OS_TAKE(uring_init);
    MK_OS_TAKE(uring_submit);
    MK_OS_TAKE(uring_result);
#undef MK_OS_TAKE
}

const mk_os_vtbl *mk_os(void) { return g_os; }

mk_status mk_os_pread_full(int fd, void *buf, size_t n, uint64_t off, const char *what) {
    unsigned char *p = buf;
    while (n > 0) {
        size_t want = n > (1u << 30) ? (1u << 30) : n;
        ssize_t r = g_os->pread(fd, p, want, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return mk_err(MK_E_IO, "%s: read of %zu bytes at offset %llu failed: %s", what, want,
                          (unsigned long long)off, strerror(errno));
        }
        if (r == 0)
            return mk_err(MK_E_FORMAT, "%s: unexpected end of file at offset %llu (%zu bytes missing)",
                          what, (unsigned long long)off, n);
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return MK_OK;
}

mk_status mk_os_pwrite_full(int fd, const void *buf, size_t n, uint64_t off, const char *what) {
    const unsigned char *p = buf;
    while (n > 0) {
        size_t want = n > (1u << 30) ? (1u << 30) : n;
        ssize_t r = g_os->pwrite(fd, p, want, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            mk_status s = (errno == ENOSPC || errno == EFBIG || errno == EDQUOT) ? MK_E_NOSPACE : MK_E_IO;
            return mk_err(s, "%s: write of %zu bytes at offset %llu failed: %s", what, want,
                          (unsigned long long)off, strerror(errno));
        }
        if (r == 0)
            return mk_err(MK_E_NOSPACE, "%s: write made no progress at offset %llu", what,
                          (unsigned long long)off);
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return MK_OK;
}

mk_status mk_os_fsync(int fd, const char *what) {
    if (g_os->fsync(fd) != 0) {
        mk_status s = (errno == ENOSPC || errno == EDQUOT) ? MK_E_NOSPACE : MK_E_IO;
        return mk_err(s, "%s: fsync failed: %s", what, strerror(errno));
    }
    return MK_OK;
}

mk_status mk_os_rename(const char *from, const char *to) {
    if (g_os->rename(from, to) != 0)
        return mk_err(MK_E_IO, "rename %s -> %s failed: %s", from, to, strerror(errno));
    return MK_OK;
}

mk_status mk_os_fsync_dir(const char *dir) {
    int fd = g_os->open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return mk_err(MK_E_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    mk_status s = mk_os_fsync(fd, dir);
    close(fd);
    return s;
}

mk_status mk_os_read_file(const char *path, size_t max, char **out, size_t *n) {
    *out = NULL;
    int fd = g_os->open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0); /* a FIFO must not block */
    if (fd < 0)
        return mk_err(errno == ENOENT ? MK_E_NOTFOUND : MK_E_IO, "%s: cannot open: %s", path,
                      strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mk_err(MK_E_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return mk_err(MK_E_FORMAT, "%s: file is %lld bytes, larger than the %zu allowed", path,
                      (long long)st.st_size, max);
    }
    char *b = mk_malloc((size_t)st.st_size + 1);
    if (!b) {
        close(fd);
        return mk_err(MK_E_NOMEM, "%s: out of memory reading %lld bytes", path, (long long)st.st_size);
    }
    mk_status s = mk_os_pread_full(fd, b, (size_t)st.st_size, 0, path);
    close(fd);
    if (s != MK_OK) {
        free(b);
        return s;
    }
    b[st.st_size] = 0;
    *out = b;
    if (n)
        *n = (size_t)st.st_size;
    return MK_OK;
}

/* mk_os_write_file_atomic lives in outfile.c (one atomic writer for all). */

mk_status mk_os_mkdirs(const char *path) {
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return mk_err(MK_E_ARG, "bad directory path '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return mk_err(MK_E_IO, "%s: cannot create directory: %s", buf, strerror(errno));
            buf[i] = c;
        }
    }
    if (!mk_os_is_dir(path))
        return mk_err(MK_E_IO, "%s: exists and is not a directory", path);
    return MK_OK;
}

mk_status mk_os_rmtree(const char *path) {
    if (!path || !*path || strcmp(path, "/") == 0)
        return mk_err(MK_E_ARG, "refusing to remove '%s'", path ? path : "");
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? MK_OK : mk_err(MK_E_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d)
            return mk_err(MK_E_IO, "%s: cannot open directory: %s", path, strerror(errno));
        struct dirent *e;
        mk_status s = MK_OK;
        while (s == MK_OK && (e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char *c = mk_path_join(path, e->d_name);
            s = c ? mk_os_rmtree(c) : mk_err(MK_E_NOMEM, "%s: no memory for the path of %s", path, e->d_name);
            free(c);
        }
        closedir(d);
        if (s != MK_OK)
            return s;
        if (rmdir(path) != 0)
            return mk_err(MK_E_IO, "%s: cannot remove: %s", path, strerror(errno));
        return MK_OK;
    }
    if (g_os->unlink(path) != 0)
        return mk_err(MK_E_IO, "%s: cannot remove: %s", path, strerror(errno));
    return MK_OK;
}

int mk_os_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

int mk_os_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *mk_path_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *r = mk_malloc(la + lb + 2);
    if (!r)
        return NULL;
    memcpy(r, a, la);
    size_t k = la;
    if (la && a[la - 1] != '/')
        r[k++] = '/';
    memcpy(r + k, b, lb + 1);
    return r;
}

char *mk_path_dirname(const char *p) {
    const char *s = strrchr(p, '/');
    if (!s)
        return mk_strdup(".");
    if (s == p)
        return mk_strdup("/");
    return mk_strndup(p, (size_t)(s - p));
}

bool mk_os_dir_empty_fd(int dfd) {
    int d2 = dup(dfd); /* closedir closes the descriptor it was given */
    if (d2 < 0)
        return false;
    DIR *d = fdopendir(d2);
    if (!d) {
        close(d2);
        return false;
    }
    rewinddir(d);
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(d)) != NULL)
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

bool mk_os_dir_empty(const char *path) {
    int fd = g_os->open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool empty = mk_os_dir_empty_fd(fd);
    close(fd);
    return empty;
}
