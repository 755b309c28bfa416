/* Output-path safety checks (see outpath.h for the rules).
 *
 * Paths are compared in two ways because each alone misses cases: device +
 * inode catches hard links, bind mounts and symlinked files (an HF cache's
 * snapshot entries point into blobs/), the canonical path catches outputs
 * that do not exist yet and ancestor relations ("DST contains SRC"). A
 * canonical path is realpath() when the path exists, else the canonical
 * form of its parent joined with the last component. */
#include "core/alloc.h"
#include "io/outpath.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/str.h"
#include "io/os.h"
#include "io/outdir.h"

void mk_paths_init(mk_paths *p) { memset(p, 0, sizeof *p); }

void mk_paths_free(mk_paths *p) {
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].canon);
        free(p->v[i].role);
    }
    free(p->v);
    memset(p, 0, sizeof *p);
}

/* path without trailing slashes ("/" stays "/"), malloc'd */
static char *strip_slashes(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    return mk_strndup(path, n);
}

char *mk_path_canon(const char *path) {
    if (!*path)
        return NULL;
    char *r = realpath(path, NULL);
    if (r)
        return r;
    char *s = strip_slashes(path);
    if (!s)
        return NULL;
    char *slash = strrchr(s, '/');
    const char *base = slash ? slash + 1 : s;
    char *parent;
    if (!slash)
        parent = mk_path_canon(".");
    else if (slash == s)
        parent = mk_strdup("/");
    else {
        *slash = 0;
        parent = mk_path_canon(s);
    }
    char *out = NULL;
    if (parent) {
        if (!strcmp(base, ".") || !*base)
            out = mk_strdup(parent);
        else if (!strcmp(base, "..")) {
            char *d = mk_path_dirname(parent);
            out = d;
        } else
            out = mk_strfmt("%s%s%s", parent, strcmp(parent, "/") ? "/" : "", base);
    }
    free(parent);
    free(s);
    return out;
}

/* is a a strict ancestor of b (both canonical)? */
static bool is_ancestor(const char *a, const char *b) {
    size_t n = strlen(a);
    if (!strcmp(a, "/"))
        return strcmp(b, "/") != 0;
    return strncmp(a, b, n) == 0 && b[n] == '/';
}

static mk_status push(mk_paths *p, const char *path, char *canon, const char *role, bool output) {
    if (!canon)
        return mk_err(MK_E_NOMEM, "%s: no memory for its canonical path", role);
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 16;
        mk_path_ent *v = mk_realloc(p->v, cap * sizeof *v);
        if (!v) {
            free(canon);
            return mk_err(MK_E_NOMEM, "%s: no memory for a table of %zu paths", role, cap);
        }
        p->v = v;
        p->cap = cap;
    }
    mk_path_ent *e = &p->v[p->n];
    memset(e, 0, sizeof *e);
    e->canon = canon;
    e->role = mk_strdup(role);
    e->output = output;
    struct stat st;
    if (path && stat(path, &st) == 0) {
        e->dev = st.st_dev;
        e->ino = st.st_ino;
        e->have_id = true;
        e->is_dir = S_ISDIR(st.st_mode);
    }
    if (!e->role) {
        free(canon);
        return mk_err(MK_E_NOMEM, "%s: no memory for its description", role);
    }
    p->n++;
    return MK_OK;
}

mk_status mk_paths_add_input(mk_paths *p, const char *path, const char *role) {
    if (!*path)
        return MK_OK; /* the command refuses an empty input path itself */
    MK_TRY(push(p, path, mk_path_canon(path), role, false));
    if (!p->v[p->n - 1].is_dir)
        return MK_OK;
    DIR *d = opendir(path);
    if (!d)
        return MK_OK; /* unreadable: the command's own open reports it */
    struct dirent *e;
    mk_status s = MK_OK;
    while (s == MK_OK && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *c = mk_path_join(path, e->d_name);
        char *r = mk_strfmt("%s of %s", e->d_name, role);
        s = c && r ? push(p, c, mk_path_canon(c), r, false)
                   : mk_err(MK_E_NOMEM, "%s: no memory for the path of %s", path, e->d_name);
        free(c);
        free(r);
    }
    closedir(d);
    return s;
}

/* the entry path is (dev/ino or canonical) equal to, or NULL */
static const mk_path_ent *same_as(const mk_paths *p, const char *path, const char *canon) {
    struct stat st;
    bool have = stat(path, &st) == 0;
    for (size_t i = 0; i < p->n; i++) {
        const mk_path_ent *e = &p->v[i];
        if ((have && e->have_id && e->dev == st.st_dev && e->ino == st.st_ino) || !strcmp(e->canon, canon))
            return e;
    }
    return NULL;
}

static mk_status refuse_same(const char *what, const char *path, const mk_path_ent *e) {
    if (e->output)
        return mk_err(MK_E_ARG, "%s %s is also %s: two outputs cannot share a path", what, path, e->role);
    return mk_err(MK_E_ARG, "%s %s is %s, an input of this command: moekit never writes over its inputs", what,
                  path, e->role);
}

/* The nearest existing ancestor of canon must be a directory we can write
 * into (files: the parent itself must exist). */
static mk_status check_parent(const char *what, const char *path, const char *canon, bool must_exist) {
    char *d = mk_path_dirname(canon);
    if (!d)
        return mk_err(MK_E_NOMEM, "%s %s: no memory for its parent directory's name", what, path);
    mk_status s = MK_OK;
    struct stat st;
    while (stat(d, &st) != 0 && !must_exist && strcmp(d, "/") != 0) {
        char *up = mk_path_dirname(d);
        free(d);
        if (!(d = up))
            return mk_err(MK_E_NOMEM, "%s %s: no memory for an ancestor directory's name", what, path);
    }
    if (stat(d, &st) != 0)
        s = mk_err(MK_E_ARG, "%s %s: directory %s does not exist", what, path, d);
    else if (!S_ISDIR(st.st_mode))
        s = mk_err(MK_E_ARG, "%s %s: %s is not a directory", what, path, d);
    else if (access(d, W_OK | X_OK) != 0)
        s = mk_err(MK_E_ARG, "%s %s: cannot write into %s: %s", what, path, d, strerror(errno));
    free(d);
    return s;
}

mk_status mk_paths_check_file(mk_paths *p, const char *path, const char *flag, bool force) {
    if (!*path)
        return mk_err(MK_E_ARG, "%s: empty path", flag);
    size_t n = strlen(path);
    if (path[n - 1] == '/')
        return mk_err(MK_E_ARG, "%s %s: names a directory, expected a file", flag, path);
    char *canon = mk_path_canon(path);
    if (!canon)
        return mk_err(MK_E_NOMEM, "%s %s: no memory for its canonical path", flag, path);
    mk_status s = MK_OK;
    const mk_path_ent *e = same_as(p, path, canon);
    struct stat st, lst;
    bool exists = lstat(path, &lst) == 0;
    if (e)
        s = refuse_same(flag, path, e);
    for (size_t i = 0; s == MK_OK && i < p->n; i++) {
        /* inside a DST.partial that will be emptied or renamed */
        const mk_path_ent *o = &p->v[i];
        if (o->output && mk_str_ends_with(o->role, ".partial") && is_ancestor(o->canon, canon))
            s = mk_err(MK_E_ARG, "%s %s is inside %s, which moekit builds and renames", flag, path, o->canon);
    }
    if (s == MK_OK && exists) {
        if (stat(path, &st) != 0)
            st = lst; /* a dangling symlink: replacing the link loses nothing */
        if (S_ISDIR(st.st_mode))
            s = mk_err(MK_E_ARG, "%s %s is a directory, expected a file", flag, path);
        else if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
            s = mk_err(MK_E_ARG, "%s %s exists and is not a regular file (a device, FIFO or socket): not replaced",
                       flag, path);
        else if (!force)
            s = mk_err(MK_E_EXISTS, "%s %s already exists (use --force to overwrite it)", flag, path);
    }
    /* a file written into the DST of this command (quantize --report
     * OUT/report.json) is written after DST is complete: its directory
     * need not exist yet */
    bool in_dst = false;
    char *parent = mk_path_dirname(canon);
    for (size_t i = 0; parent && i < p->n; i++)
        in_dst |= p->v[i].output && !strcmp(p->v[i].role, "DST") && !strcmp(p->v[i].canon, parent);
    free(parent);
    if (s == MK_OK && !in_dst)
        s = check_parent(flag, path, canon, true);
    if (s == MK_OK)
        return push(p, path, canon, flag, true);
    free(canon);
    return s;
}

bool mk_paths_looks_like_checkpoint(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return false;
    struct dirent *e;
    bool weights = false, config = false, subdir = false;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        weights |= mk_str_ends_with(e->d_name, ".safetensors") ||
                   mk_str_ends_with(e->d_name, ".safetensors.index.json") || !strcmp(e->d_name, MK_OUTDIR_JOURNAL) ||
                   !strcmp(e->d_name, MK_OUTDIR_OWNER);
        config |= !strcmp(e->d_name, "config.json");
        struct stat st;
        char *c = mk_path_join(dir, e->d_name);
        subdir |= c && lstat(c, &st) == 0 && S_ISDIR(st.st_mode);
        free(c);
    }
    closedir(d);
    /* config.json alone is common outside checkpoints (any project has
     * one): it counts only in a flat directory, as a checkpoint is */
    return weights || (config && !subdir);
}

/* A DST that is, or contains, one of these is never replaced. */
static mk_status check_special(const char *dst, const char *canon) {
    if (!strcmp(canon, "/"))
        return mk_err(MK_E_ARG, "DST %s is the root directory: refused", dst);
    const char *homes[2] = {getenv("HOME"), NULL};
    struct passwd *pw = getpwuid(getuid());
    homes[1] = pw ? pw->pw_dir : NULL;
    for (int i = 0; i < 2; i++) {
        char *h = homes[i] && *homes[i] ? realpath(homes[i], NULL) : NULL;
        bool bad = h && (!strcmp(h, canon) || is_ancestor(canon, h));
        free(h);
        if (bad)
            return mk_err(MK_E_ARG, "DST %s is (or contains) the home directory %s: refused", dst, homes[i]);
    }
    char *cwd = realpath(".", NULL);
    bool bad = cwd && (!strcmp(cwd, canon) || is_ancestor(canon, cwd));
    free(cwd);
    if (bad)
        return mk_err(MK_E_ARG, "DST %s is (or contains) the current directory: refused", dst);
    return MK_OK;
}

/* DST (or DST.partial, what) against every recorded path. */
static mk_status check_relations(const mk_paths *p, const char *dst, const char *what, const char *path,
                                 const char *canon) {
    const mk_path_ent *e = same_as(p, path, canon);
    if (e)
        return e->output ? mk_err(MK_E_ARG, "%s %s is also %s: two outputs cannot share a path", what, dst, e->role)
                         : mk_err(MK_E_ARG, "%s %s is %s, an input of this command: refused", what, dst, e->role);
    for (size_t i = 0; i < p->n; i++) {
        e = &p->v[i];
        if (!e->output && is_ancestor(canon, e->canon))
            return mk_err(MK_E_ARG, "%s %s contains %s (%s), an input of this command: refused", what, dst, e->role,
                          e->canon);
        if (e->is_dir && !e->output && is_ancestor(e->canon, canon))
            return mk_err(MK_E_ARG, "%s %s is inside %s (%s): moekit does not write into its inputs", what, dst,
                          e->role, e->canon);
    }
    return MK_OK;
}

mk_status mk_paths_check_workdir(mk_paths *p, const char *dst) {
    char *canon = mk_path_canon(dst);
    char *part = canon ? mk_strfmt("%s.partial", canon) : NULL;
    free(canon);
    if (!part)
        return mk_err(MK_E_NOMEM, "DST '%s': no memory for its .partial path", dst);
    mk_status st = check_relations(p, dst, "DST.partial of", part, part);
    if (st == MK_OK)
        return push(p, NULL, part, "DST.partial", true);
    free(part);
    return st;
}

mk_status mk_paths_check_dir(mk_paths *p, const char *dst, bool force) {
    char *s = strip_slashes(dst);
    if (!s)
        return mk_err(MK_E_NOMEM, "DST '%s': no memory to check it", dst);
    const char *base = strrchr(s, '/') ? strrchr(s, '/') + 1 : s;
    bool named = *s && strcmp(s, "/") && strcmp(base, ".") && strcmp(base, "..");
    free(s);
    if (!named)
        return mk_err(MK_E_ARG, "DST '%s' must name a directory to create or replace (not '', '/', '.' or '..')", dst);
    char *canon = mk_path_canon(dst);
    char *part = mk_strfmt("%s.partial", canon ? canon : "");
    mk_status st = canon && part
                       ? MK_OK
                       : mk_err(MK_E_NOMEM, "DST '%s': no memory for its canonical and .partial paths", dst);
    if (st == MK_OK)
        st = check_relations(p, dst, "DST", dst, canon);
    if (st == MK_OK)
        st = check_relations(p, dst, "DST.partial of", part, part);
    if (st == MK_OK)
        st = check_special(dst, canon);
    struct stat lst, sst;
    if (st == MK_OK && lstat(dst, &lst) == 0) {
        bool isdir = stat(dst, &sst) == 0 && S_ISDIR(sst.st_mode);
        char *j = mk_path_join(dst, MK_OUTDIR_JOURNAL);
        bool journal = j && mk_os_exists(j);
        free(j);
        if (!isdir)
            st = mk_err(MK_E_ARG, "DST %s exists and is not a directory: moekit replaces only a checkpoint directory",
                        dst);
        else if (!force && !journal)
            st = mk_err(MK_E_EXISTS, "%s already exists (use --force to replace it)", dst);
        else if (force && !mk_os_dir_empty(dst) && !mk_paths_looks_like_checkpoint(dst))
            st = mk_err(MK_E_ARG,
                        "DST %s is not a checkpoint or moekit output (no *.safetensors, no moekit journal, no "
                        "config.json in a flat directory): --force replaces only those; nothing was changed",
                        dst);
    }
    if (st == MK_OK)
        st = check_parent("DST", dst, canon, false);
    if (st == MK_OK) {
        st = push(p, dst, canon, "DST", true);
        canon = NULL;
    }
    if (st == MK_OK) {
        st = push(p, NULL, part, "DST.partial", true);
        part = NULL;
    }
    free(canon);
    free(part);
    return st;
}
