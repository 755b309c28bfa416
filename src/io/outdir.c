/* Atomic output directories: a command builds DST.partial/ and renames it
 * to DST only when everything inside is complete and fsynced, so a crash
 * or an error never leaves a DST that looks finished. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/os.h"
#include "io/outdir.h"

mk_status mk_outdir_begin(const char *dst, bool force, bool keep_partial, char **partial) {
    *partial = NULL;
    if (mk_os_exists(dst) && !force)
        return mk_err(MK_E_EXISTS, "%s already exists (use --force to overwrite)", dst);
    size_t n = strlen(dst);
    while (n > 1 && dst[n - 1] == '/')
        n--;
    char *p = malloc(n + 16);
    if (!p)
        return mk_err(MK_E_NOMEM, "out of memory");
    memcpy(p, dst, n);
    strcpy(p + n, ".partial");
    if (!keep_partial && mk_os_exists(p)) {
        mk_status s = mk_os_rmtree(p);
        if (s != MK_OK) {
            free(p);
            return s;
        }
    }
    mk_status s = mk_os_mkdirs(p);
    if (s != MK_OK) {
        free(p);
        return s;
    }
    *partial = p;
    return MK_OK;
}

mk_status mk_outdir_commit(const char *partial, const char *dst, bool force) {
    MK_TRY(mk_os_fsync_dir(partial));
    if (mk_os_exists(dst)) {
        if (!force)
            return mk_err(MK_E_EXISTS, "%s already exists (use --force to overwrite)", dst);
        MK_TRY(mk_os_rmtree(dst));
    }
    MK_TRY(mk_os_rename(partial, dst));
    char *d = mk_path_dirname(dst);
    if (!d)
        return mk_err(MK_E_NOMEM, "out of memory");
    mk_status s = mk_os_fsync_dir(d);
    free(d);
    return s;
}

void mk_outdir_abort(const char *partial) {
    if (partial)
        (void)mk_os_rmtree(partial);
}

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
            st = mk_err(MK_E_NOMEM, "out of memory");
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
