/* Atomic single-file outputs (see outfile.h).
 *
 * The temporary name is unique per process and call and created with
 * O_EXCL, so it can never be a file the user already has (a fixed
 * "PATH.tmp" would be truncated and then renamed away). Publishing without
 * replace uses link(), which fails with EEXIST instead of replacing a file
 * that appeared while the command ran; filesystems without hard links fall
 * back to a check and a rename. */
#include "core/alloc.h"
#include "io/outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/str.h"
#include "io/os.h"

static void of_free(mk_outfile *o) {
    free(o->path);
    free(o->tmp);
    o->path = o->tmp = NULL;
    o->f = NULL;
}

mk_status mk_outfile_open(mk_outfile *o, const char *path, bool replace) {
    static unsigned counter;
    memset(o, 0, sizeof *o);
    o->replace = replace;
    o->path = mk_strdup(path);
    if (!o->path)
        return mk_err(MK_E_NOMEM, "%s: no memory for its path", path);
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        free(o->tmp);
        o->tmp = mk_strfmt("%s.moekit-tmp-%d-%u", path, (int)getpid(),
                           __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
        if (!o->tmp) {
            of_free(o);
            return mk_err(MK_E_NOMEM, "%s: no memory for a temporary name", path);
        }
        fd = mk_os()->open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST) {
            mk_status s = mk_err(MK_E_IO, "%s: cannot create a file next to it: %s", path, strerror(errno));
            of_free(o);
            return s;
        }
    }
    if (fd < 0) {
        of_free(o);
        return mk_err(MK_E_IO, "%s: no free temporary name next to it", path);
    }
    o->f = fdopen(fd, "wb");
    if (!o->f) {
        close(fd);
        mk_os()->unlink(o->tmp);
        of_free(o);
        return mk_err(MK_E_NOMEM, "%s: no memory for a stream on its temporary file", path);
    }
    return MK_OK;
}

void mk_outfile_abort(mk_outfile *o) {
    if (o->f)
        fclose(o->f);
    if (o->tmp)
        mk_os()->unlink(o->tmp);
    of_free(o);
}

static mk_status publish(const mk_outfile *o) {
    if (o->replace)
        return mk_os_rename(o->tmp, o->path);
    if (link(o->tmp, o->path) == 0) {
        mk_os()->unlink(o->tmp);
        return MK_OK;
    }
    if (errno == EEXIST)
        return mk_err(MK_E_EXISTS, "%s already exists (use --force to overwrite it)", o->path);
    if (mk_os_exists(o->path)) /* no hard links here (EPERM, ENOTSUP, ...) */
        return mk_err(MK_E_EXISTS, "%s already exists (use --force to overwrite it)", o->path);
    return mk_os_rename(o->tmp, o->path);
}

mk_status mk_outfile_commit(mk_outfile *o) {
    mk_status s = MK_OK;
    if (fflush(o->f) != 0 || ferror(o->f)) {
        s = mk_err(errno == ENOSPC || errno == EFBIG || errno == EDQUOT ? MK_E_NOSPACE : MK_E_IO,
                   "%s: write failed: %s", o->path, strerror(errno));
    }
    if (s == MK_OK)
        s = mk_os_fsync(fileno(o->f), o->tmp);
    if (fclose(o->f) != 0 && s == MK_OK)
        s = mk_err(MK_E_IO, "%s: close failed: %s", o->path, strerror(errno));
    o->f = NULL;
    if (s == MK_OK)
        s = publish(o);
    if (s != MK_OK) {
        mk_os()->unlink(o->tmp);
        of_free(o);
        return s;
    }
    char *d = mk_path_dirname(o->path);
    s = d ? mk_os_fsync_dir(d) : mk_err(MK_E_NOMEM, "%s: no memory for its directory's name", o->path);
    free(d);
    of_free(o);
    return s;
}

mk_status mk_outfile_write(const char *path, const void *data, size_t n, bool replace) {
    mk_outfile o;
    MK_TRY(mk_outfile_open(&o, path, replace));
    int fd = fileno(o.f);
    /* through the os table, so tests can inject ENOSPC; nothing buffered */
    mk_status s = mk_os_pwrite_full(fd, data, n, 0, path);
    if (s != MK_OK) {
        mk_outfile_abort(&o);
        return s;
    }
    return mk_outfile_commit(&o);
}

mk_status mk_os_write_file_atomic(const char *path, const void *data, size_t n) {
    return mk_outfile_write(path, data, n, true);
}
