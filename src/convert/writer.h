/* The output-file writer interface of a conversion: what exec.c needs from
 * a file format to stream a planned shard, and what planning and the config
 * step need to know about the format's files.
 *
 * A conversion is cut into shards (plan.c); each shard is one file written
 * by its own writer, start to end, in one pass:
 *   begin    declare the shard's tensors (plan order, which is the format's
 *            `order`) and lay out the file's header;
 *   write / copy   the tensors' bytes, in that order, any number of calls
 *            per tensor (copy: from a source file descriptor, so a byte
 *            copy never passes through memory);
 *   finish   every byte supplied: the file is made durable under its final
 *            name (a crash before leaves no file under that name);
 *   free     always, after either outcome (an unfinished file is removed).
 * Besides the shards: the format's tensor order (the plan is sorted with it
 * before shards are cut, so every shard streams in order), shard file names
 * and the side file that lists the shards (written with config.json).
 *
 * Implemented by safetensors (st_writer.c, over src/format/st_write.c); a
 * GGUF writer implements the same table. A convert target (target.h) names
 * its writer. */
#ifndef MK_CONVERT_WRITER_H
#define MK_CONVERT_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "convert/conv_impl.h"

typedef struct cv_writer cv_writer; /* one shard file being written: the format's own state */

typedef struct cv_writer_ops {
    const char *name; /* "safetensors" */
    /* qsort comparator of two cv_out: the order in which the format lays
     * tensors out in a file (a total order: ties broken by name). */
    int (*order)(const void *a, const void *b);
    /* File name of shard k (0-based) of n; malloc'd, NULL when out of memory. */
    char *(*shard_file)(int k, int n);
    /* Begin shard k of plan p in directory dir: the outputs
     * p->outs[p->shard_first[k] .. p->shard_first[k+1]) in that order.
     * A packed plan (p->packed) is in its own order, not `order`'s, and
     * its data buffer must start at a multiple of CV_PACK_ALIGN bytes in
     * the file.
     * `format_tag` is the target's word for the file's flavour (safetensors:
     * metadata "format"). *out is NULL after a failure. */
    mk_status (*begin)(const char *dir, const cv_plan *p, int k, const char *format_tag, cv_writer **out);
    /* Descriptor of the file being written, for I/O hints only (early
     * writeback); -1 when there is none. Owned by the writer. */
    int (*fd)(const cv_writer *w);
    /* Append n bytes of the current tensor. */
    mk_status (*write)(cv_writer *w, const void *data, size_t n);
    /* Append n bytes read from fd at off. */
    mk_status (*copy)(cv_writer *w, int fd, uint64_t off, uint64_t n);
    /* Check every byte was supplied, make the file durable, rename it into place. */
    mk_status (*finish)(cv_writer *w);
    /* Release; an unfinished file is removed. NULL ok. */
    void (*free)(cv_writer *w);
    /* Write the side file listing the shards into dir (nothing when none is needed). */
    mk_status (*index)(const cv_plan *p, const char *dir);
} cv_writer_ops;

/* st_writer.c */
extern const cv_writer_ops cv_writer_safetensors;
/* gguf_writer.c */
extern const cv_writer_ops cv_writer_gguf;

#endif
