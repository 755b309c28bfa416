/* Atomic output directories: a command builds DST.partial/ and renames it
 * to DST only when everything inside is complete and fsynced, so a crash
 * or an error never leaves a DST that looks finished.
 *
 * One writer per DST: the process that writes DST.partial/ holds an flock
 * on the directory itself (released by the kernel when the process dies,
 * so a kill -9 leaves nothing stale) and records its pid in the owner mark
 * DST.partial/.moekit-owner, which a second process names in its refusal.
 * The mark also tells a later run that the directory is moekit's to empty
 * or resume even when the run was killed before writing anything else; a
 * DST.partial/ holding other files is never touched. The lock is taken on
 * the directory that stays in place for the whole run: emptying it
 * (mk_outdir_clear) removes what is inside, never the directory, so the
 * lock keeps covering the path until the final rename. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/str.h"
#include "io/os.h"
#include "io/outdir.h"

bool mk_outdir_resumable(mk_status s) {
    return s == MK_E_IO || s == MK_E_NOSPACE || s == MK_E_NOMEM || s == MK_E_NOTFOUND || s == MK_E_INTERNAL ||
           s == MK_E_EXISTS;
}

/* Is the entry `name` of directory fd present? */
static bool has_entry(int dfd, const char *name) {
    struct stat st;
    return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* "pid N (moekit CMD)" of the holder, from its owner mark */
static void holder(int dfd, char *out, size_t n) {
    snprintf(out, n, "another moekit process");
    int fd = openat(dfd, MK_OUTDIR_OWNER, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    char b[256];
    ssize_t r = read(fd, b, sizeof b - 1);
    close(fd);
    if (r <= 0)
        return;
    b[r] = 0;
    int pid;
    char cmd[64];
    if (sscanf(b, "pid %d command %63s", &pid, cmd) == 2)
        snprintf(out, n, "another moekit process (pid %d, moekit %s)", pid, cmd);
    else if (sscanf(b, "pid %d", &pid) == 1)
        snprintf(out, n, "another moekit process (pid %d)", pid);
}

/* The mark appears whole or not at all (written under a temporary name,
 * then renamed), so a second process never reads it half-written. */
static mk_status write_owner(int dfd, const char *partial, const char *cmd) {
    char b[128];
    int n = snprintf(b, sizeof b, "pid %d command %s\n", (int)getpid(), cmd ? cmd : "?");
    int fd = openat(dfd, MK_OUTDIR_OWNER_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return mk_err(MK_E_IO, "%s/%s: cannot create: %s", partial, MK_OUTDIR_OWNER_TMP, strerror(errno));
    mk_status s = mk_os_pwrite_full(fd, b, (size_t)n, 0, MK_OUTDIR_OWNER);
    close(fd);
    if (s == MK_OK && renameat(dfd, MK_OUTDIR_OWNER_TMP, dfd, MK_OUTDIR_OWNER) != 0)
        s = mk_err(MK_E_IO, "%s/%s: cannot rename: %s", partial, MK_OUTDIR_OWNER, strerror(errno));
    return s;
}

/* Files a killed writer left half-written under the atomic writer's
 * temporary names (outfile.c: NAME.moekit-tmp-PID-N): we hold the lock, so
 * none is being written; a resumed run would otherwise carry them into DST. */
static void drop_stale_tmp(int dfd) {
    int d2 = dup(dfd);
    DIR *d = d2 >= 0 ? fdopendir(d2) : NULL;
    if (!d) {
        if (d2 >= 0)
            close(d2);
        return;
    }
    rewinddir(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".moekit-tmp-"))
            unlinkat(dfd, e->d_name, 0);
    closedir(d);
}

static void od_free(mk_outdir *o) {
    if (o->lock_fd >= 0)
        close(o->lock_fd);
    o->lock_fd = -1;
    free(o->dst);
    free(o->partial);
    o->dst = o->partial = NULL;
}

mk_status mk_outdir_open(mk_outdir *o, const char *dst, bool force, const char *cmd) {
    memset(o, 0, sizeof *o);
    o->lock_fd = -1;
    o->force = force;
    size_t n = strlen(dst);
    while (n > 1 && dst[n - 1] == '/')
        n--;
    o->dst = mk_strndup(dst, n);
    o->partial = mk_strfmt("%.*s.partial", (int)n, dst);
    char *parent = o->partial ? mk_path_dirname(o->partial) : NULL;
    mk_status s =
        o->dst && parent ? MK_OK : mk_err(MK_E_NOMEM, "%s: no memory for its .partial and parent paths", dst);
    if (s == MK_OK && !mk_os_is_dir(parent))
        s = mk_os_mkdirs(parent);
    free(parent);
    /* The lock is on an inode; the path may be renamed or removed between
     * open and flock (the holder committing): then retry on the new one. */
    for (int tries = 0; s == MK_OK && o->lock_fd < 0; tries++) {
        struct stat a, b;
        if (tries == 8) {
            s = mk_err(MK_E_IO, "%s: keeps changing under us: is another process writing it?", o->partial);
            break;
        }
        if (lstat(o->partial, &a) == 0) {
            if (S_ISLNK(a.st_mode) || !S_ISDIR(a.st_mode)) {
                s = mk_err(MK_E_EXISTS, "%s exists and is not a directory moekit made (%s): remove it yourself",
                           o->partial, S_ISLNK(a.st_mode) ? "a symbolic link" : "not a directory");
                break;
            }
        } else if (mkdir(o->partial, 0755) != 0 && errno != EEXIST) {
            s = mk_err(MK_E_IO, "%s: cannot create directory: %s", o->partial, strerror(errno));
            break;
        }
        int fd = mk_os()->open(o->partial, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        if (fd < 0) {
            if (errno == ENOENT)
                continue;
            s = mk_err(MK_E_IO, "%s: cannot open: %s", o->partial, strerror(errno));
            break;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int err = errno;
            char who[160];
            holder(fd, who, sizeof who);
            close(fd);
            if (err == EWOULDBLOCK)
                s = mk_err(MK_E_EXISTS, "%s is being written by %s (it holds the lock on %s): wait for it to finish "
                                        "or stop it, then rerun",
                           o->dst, who, o->partial);
            else
                s = mk_err(MK_E_IO, "%s: cannot lock: %s", o->partial, strerror(err));
            break;
        }
        if (fstat(fd, &a) != 0 || lstat(o->partial, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
            close(fd); /* renamed away while we waited: take the new one */
            continue;
        }
        if (!has_entry(fd, MK_OUTDIR_OWNER) && !has_entry(fd, MK_OUTDIR_OWNER_TMP) &&
            !has_entry(fd, MK_OUTDIR_JOURNAL) && !mk_os_dir_empty_fd(fd)) {
            close(fd);
            s = mk_err(MK_E_EXISTS, "%s exists and holds files moekit did not write (no %s): remove it yourself; "
                                    "nothing was changed",
                       o->partial, MK_OUTDIR_OWNER);
            break;
        }
        drop_stale_tmp(fd);
        s = write_owner(fd, o->partial, cmd);
        if (s == MK_OK)
            o->lock_fd = fd;
        else
            close(fd);
    }
    if (s != MK_OK)
        od_free(o);
    return s;
}

mk_status mk_outdir_clear(mk_outdir *o) {
    DIR *d = opendir(o->partial);
    if (!d)
        return mk_err(MK_E_IO, "%s: cannot open directory: %s", o->partial, strerror(errno));
    struct dirent *e;
    mk_status s = MK_OK;
    while (s == MK_OK && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, MK_OUTDIR_OWNER))
            continue;
        char *c = mk_path_join(o->partial, e->d_name);
        s = c ? mk_os_rmtree(c)
              : mk_err(MK_E_NOMEM, "%s: no memory for the path of %s", o->partial, e->d_name);
        free(c);
    }
    closedir(d);
    return s;
}

mk_status mk_outdir_commit(mk_outdir *o, const char *drop) {
    /* The owner mark goes before the rename (the flock still holds the
     * directory): removed after it, a kill in between would leave the mark
     * inside the finished DST. `drop` (the resume journal, which must stay
     * until the rename so that a kill before it resumes) is removed right
     * after the rename, before any fsync, so that window is as short as
     * it can be. */
    /* Every path is built first: once DST is renamed into place nothing
     * may fail for memory, or a finished DST would be reported as failed. */
    char *pmark = mk_path_join(o->partial, MK_OUTDIR_OWNER);
    char *dp = drop ? mk_path_join(o->dst, drop) : NULL;
    char *d = mk_path_dirname(o->dst);
    if (!pmark || (drop && !dp) || !d) {
        free(pmark);
        free(dp);
        free(d);
        return mk_err(MK_E_NOMEM, "%s: no memory for the paths of the final rename", o->dst);
    }
    mk_os()->unlink(pmark);
    free(pmark);
    mk_status fs = mk_os_fsync_dir(o->partial);
    if (fs != MK_OK) {
        free(dp);
        free(d);
        return fs;
    }
    struct stat st;
    mk_status s = MK_OK;
    if (lstat(o->dst, &st) == 0) {
        if (!o->force) {
            free(dp);
            free(d);
            return mk_err(MK_E_EXISTS, "%s already exists (use --force to replace it)", o->dst);
        }
        /* The old DST is locked too: once swapped it sits at the
         * DST.partial path until removed, and another writer opening that
         * path in between must find it held, not take it for its own. */
        int old_fd = S_ISDIR(st.st_mode) ? mk_os()->open(o->dst, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0) : -1;
        if (old_fd >= 0 && flock(old_fd, LOCK_EX | LOCK_NB) != 0) {
            close(old_fd);
            free(dp);
            free(d);
            return mk_err(MK_E_EXISTS, "%s is being replaced by another moekit process: not replaced", o->dst);
        }
        /* Swap atomically: readers see the old DST or the new one, never
         * none, and a kill here keeps the old one (in DST.partial/). */
        bool swapped = false;
        if (renameat2(AT_FDCWD, o->partial, AT_FDCWD, o->dst, RENAME_EXCHANGE) == 0) {
            swapped = true;
            s = mk_os_rmtree(o->partial);
            if (s != MK_OK)
                s = mk_err(s, "%s is complete, but its previous contents, moved to %s, could not be removed: %s",
                           o->dst, o->partial, mk_err_msg());
        } else if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
            s = mk_os_rmtree(o->dst); /* no exchange on this filesystem */
            if (s == MK_OK && (s = mk_os_rename(o->partial, o->dst)) == MK_OK)
                swapped = true;
        } else
            s = mk_err(MK_E_IO, "cannot swap %s into %s: %s", o->partial, o->dst, strerror(errno));
        if (old_fd >= 0)
            close(old_fd);
        if (!swapped) {
            free(dp);
            free(d);
            return s; /* DST.partial/ is still ours, held and complete */
        }
    } else if ((s = mk_os_rename(o->partial, o->dst)) != MK_OK) {
        free(dp);
        free(d);
        return s;
    }
    if (dp)
        mk_os()->unlink(dp);
    free(dp);
    mk_status s2 = mk_os_fsync_dir(o->dst);
    if (s2 == MK_OK)
        s2 = mk_os_fsync_dir(d);
    free(d);
    od_free(o);
    return s != MK_OK ? s : s2;
}

void mk_outdir_abort(mk_outdir *o) {
    if (o->lock_fd >= 0 && o->partial)
        (void)mk_os_rmtree(o->partial);
    od_free(o);
}

void mk_outdir_close(mk_outdir *o) { od_free(o); }

mk_status mk_outdir_copy_sidecars(const char *src_dir, const char *dst_dir) {
    static const char *const names[] = {"config.json", "generation_config.json", "tokenizer.json",
                                        "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                                        "added_tokens.json", "chat_template.jinja", "chat_template.json",
                                        "vocab.json", "merges.txt", "preprocessor_config.json",
                                        "video_preprocessor_config.json", NULL};
    for (int i = 0; names[i]; i++) {
        char *s = mk_path_join(src_dir, names[i]);
        char *d = mk_path_join(dst_dir, names[i]);
        mk_status st = MK_OK;
        if (!s || !d)
            st = mk_err(MK_E_NOMEM, "no memory for the paths of %s under %s and %s", names[i], src_dir,
                        dst_dir);
        else if (mk_os_exists(s)) {
            char *buf;
            size_t n;
            st = mk_os_read_file(s, 1u << 30, &buf, &n);
            if (st == MK_OK) {
                st = mk_os_write_file_atomic(d, buf, n);
                free(buf);
            }
        }
        free(s);
        free(d);
        MK_TRY(st);
    }
    return MK_OK;
}
