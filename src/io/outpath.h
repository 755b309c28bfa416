/* Output-path safety: is this output path one a command may write?
 *
 * Every command that writes (a checkpoint directory DST or a single file
 * such as --out, --report, --alloc-out) records the paths it reads in an
 * mk_paths set and checks each output against it before the first byte of
 * work. The rules, the same for every command:
 *
 *  - an output is never one of the inputs (compared by device + inode and
 *    by canonical path, so symlinks, "..", trailing slashes and relative vs
 *    absolute spellings all resolve to the same answer), never inside an
 *    input directory's tree when it is a directory, never a directory that
 *    contains an input, and never the same path as another output;
 *  - an existing output is refused without force; with force a single file
 *    must be a regular file and a directory must look like a checkpoint or
 *    a moekit output (*.safetensors, a moekit journal or owner mark, or
 *    config.json in a directory without subdirectories) or be empty:
 *    --force replaces what moekit wrote, nothing else;
 *  - "", "/", ".", "..", the home directory and the current directory (or
 *    any directory containing them) are never a DST;
 *  - the directory an output goes into must exist (files) or be creatable
 *    (DST: its nearest existing ancestor is a directory), so a doomed run
 *    is refused up front instead of failing at the end. */
#ifndef MK_IO_OUTPATH_H
#define MK_IO_OUTPATH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "moekit/status.h"

typedef struct mk_path_ent {
    char *canon;      /* canonical absolute path (realpath, or its parent's + name) */
    char *role;       /* how messages name it: "SRC", "--text", "config.json of MODEL", "--out" */
    dev_t dev;
    ino_t ino;
    bool have_id;     /* dev/ino valid (the path existed) */
    bool is_dir;
    bool output;      /* an output recorded by a check (not an input) */
} mk_path_ent;

typedef struct mk_paths {
    mk_path_ent *v;
    size_t n, cap;
} mk_paths;

void mk_paths_init(mk_paths *p);
void mk_paths_free(mk_paths *p);

/* Record an input. A directory is recorded with every entry at its top
 * level (a checkpoint's shards, config, tokenizer), each named "NAME of
 * ROLE". A path that does not exist is recorded by name (the command
 * reports it missing itself). */
mk_status mk_paths_add_input(mk_paths *p, const char *path, const char *role);

/* Check a single-file output named by flag (e.g. "--out"); on success it is
 * recorded as an output. MK_E_EXISTS when it exists and !force; MK_E_ARG
 * for every path that may never be written. */
mk_status mk_paths_check_file(mk_paths *p, const char *path, const char *flag, bool force);

/* The work directory DST.partial/ of a single-file output DST (checked
 * itself with mk_paths_check_file) that a command builds in a directory
 * and then moves out (quantize a.safetensors b.safetensors): it must not be
 * or hold an input. Recorded as an output. */
mk_status mk_paths_check_workdir(mk_paths *p, const char *dst);

/* Check an output directory DST (and its DST.partial); recorded as an
 * output on success. A DST that holds a moekit convert journal is left to
 * the command when !force (it may be this very run, finished). */
mk_status mk_paths_check_dir(mk_paths *p, const char *dst, bool force);

/* Does the existing directory look like a checkpoint or a moekit output:
 * *.safetensors (or its index), a moekit journal or owner mark, or a
 * config.json with no subdirectory beside it? */
bool mk_paths_looks_like_checkpoint(const char *dir);

/* Canonical absolute form of path (which need not exist), malloc'd. */
char *mk_path_canon(const char *path);

#endif
