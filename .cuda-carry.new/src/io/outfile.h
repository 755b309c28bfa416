/* Single output files written atomically: a temporary name of its own,
 * fsync, then rename (or link, when an existing file must not be replaced). */
#ifndef MK_IO_OUTFILE_H
#define MK_IO_OUTFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "moekit/status.h"

typedef struct mk_outfile {
    char *path; /* the final name */
    char *tmp;  /* PATH.moekit-tmp-PID-N, created exclusively next to it */
    FILE *f;    /* write here between open and commit */
    bool replace;
} mk_outfile;

/* Create the temporary file next to path (never an existing name: O_EXCL).
 * replace: commit may replace an existing path (the caller checked --force);
 * otherwise commit fails with MK_E_EXISTS if path appeared meanwhile. */
mk_status mk_outfile_open(mk_outfile *o, const char *path, bool replace);
/* Flush, fsync, close, publish under the final name, fsync the directory.
 * On failure the temporary file is removed and path is as it was. */
mk_status mk_outfile_commit(mk_outfile *o);
/* Remove the temporary file; path is untouched. */
void mk_outfile_abort(mk_outfile *o);
/* open + fwrite + commit of one buffer. */
mk_status mk_outfile_write(const char *path, const void *data, size_t n, bool replace);

#endif
