/* Atomic output directories (DST.partial/ -> DST), one writer at a time. */
#ifndef MK_IO_OUTDIR_H
#define MK_IO_OUTDIR_H

#include <stdbool.h>

#include "moekit/status.h"

/* Marks a DST.partial/ as moekit's (and names the process writing it). */
#define MK_OUTDIR_OWNER ".moekit-owner"
#define MK_OUTDIR_OWNER_TMP ".moekit-owner.new" /* the mark while it is written */
/* The resume journal of convert/quantize (src/convert/journal.c). */
#define MK_OUTDIR_JOURNAL ".moekit-convert-journal"

typedef struct mk_outdir {
    char *dst;     /* DST as given, trailing slashes removed */
    char *partial; /* DST.partial */
    int lock_fd;   /* DST.partial opened and flock'ed; -1 when not held */
    bool force;    /* replace an existing DST at commit */
} mk_outdir;

/* Take DST.partial/ for this process: create it (and DST's missing
 * parents), lock it with flock (a second moekit writing the same DST gets
 * MK_E_EXISTS naming the pid that holds it), refuse one that holds files
 * moekit did not write (no owner mark, no journal), and write the owner
 * mark. What a previous run left inside is kept (resume); mk_outdir_clear
 * empties it. cmd names the command in the mark. The caller has checked
 * DST itself (mk_paths_check_dir). */
mk_status mk_outdir_open(mk_outdir *o, const char *dst, bool force, const char *cmd);
/* Remove everything inside DST.partial/ except the owner mark. */
mk_status mk_outdir_clear(mk_outdir *o);
/* Drop the owner mark, fsync DST.partial/, swap it in as DST (an existing
 * DST, only with force, is exchanged atomically where the filesystem
 * allows, then removed), remove DST/`drop` (NULL: nothing) at once, fsync
 * DST and its parent, release the lock. */
mk_status mk_outdir_commit(mk_outdir *o, const char *drop);
/* After an error no rerun can fix: remove DST.partial/ (only while this
 * process holds its lock), release. */
void mk_outdir_abort(mk_outdir *o);
/* Release the lock and free; DST.partial/ stays for a rerun to resume. */
void mk_outdir_close(mk_outdir *o);
/* Is status s one a rerun may get past (disk full, I/O, memory, a file
 * missing), so that DST.partial/ is worth keeping? Input errors (format,
 * unsupported, bad argument, mismatch) are not: the same input fails again. */
bool mk_outdir_resumable(mk_status s);
/* Copy config/tokenizer side files that exist in src_dir into dst_dir. */
mk_status mk_outdir_copy_sidecars(const char *src_dir, const char *dst_dir);

#endif
