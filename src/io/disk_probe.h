/* The disk probe: sequential and random-read bandwidth of the disk holding
 * a path, through the batched reader (io/reader.h) under each backend
 * (io_uring, pread) and mode (O_DIRECT, buffered), to choose how the SSD
 * expert store reads and to give the disk roofline its benchmarks are
 * judged against (issue 11). Used by `moekit bench-disk`; the engine may
 * run a short one at startup.
 *
 * The file read is either an existing regular file (read only, never
 * written) or a temporary file the probe creates in a directory: a fresh
 * name next to DIR/moekit-bench-disk (io/outfile.h: O_EXCL, so never a
 * user's file), filled with pseudo-random bytes (not zeros, which a thin
 * or compressing disk would not read from the medium), fsynced, and removed
 * by mk_disk_probe_close, also after an error.
 *
 * The page cache. Without root it cannot be dropped, so each pass first
 * asks the kernel to evict the file's pages (posix_fadvise DONTNEED, which
 * works on clean pages without privileges; the temporary file is fsynced
 * so its pages are clean); O_DIRECT passes bypass the cache anyway. A
 * virtual machine's host may still cache the disk: then even these
 * numbers are optimistic, which the probe cannot see.
 *
 * A sequential pass reads the file in 4 MiB requests in order; a random
 * pass reads a random quarter of its `block`-sized blocks, each once, in a
 * random order (a buffered pass never re-reads cached bytes, and as with
 * routed experts most neighbours of a block are not read, so readahead is
 * not credited for bytes nobody wanted); `qd` requests in flight, a pass
 * stops early after `seconds`. Memory: qd x max(block, 4 MiB)
 * bytes of destination buffers, 4 bytes per block of the random order, and
 * the reader's (reader.h). */
#ifndef MK_IO_DISK_PROBE_H
#define MK_IO_DISK_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/status.h"

typedef struct mk_disk_probe_opts {
    uint64_t size;  /* bytes to create (directory) / read (file); 0 = 1 GiB (a file: all of it, up to that) */
    int modes;      /* MK_PROBE_DIRECT | MK_PROBE_BUFFERED; 0 = both */
    unsigned qd;    /* requests in flight; 0 = 16 */
    size_t block;   /* random-read size, a multiple of 4096; 0 = 4 MiB */
    double seconds; /* per pass at most; 0 = 10 */
    int repeat;     /* passes per configuration, median reported; 0 = 3, at most MK_PROBE_MAX_REPEAT */
    uint64_t seed;  /* random offsets */
} mk_disk_probe_opts;

enum { MK_PROBE_DIRECT = 1, MK_PROBE_BUFFERED = 2 };

typedef struct mk_disk_probe_file {
    char *path;     /* the file read */
    bool temp;      /* created by the probe, removed by close */
    uint64_t size;  /* bytes of it the passes read */
    void *of;       /* the temporary file's writer (io/outfile.h) while open */
} mk_disk_probe_file;

#define MK_PROBE_MAX_RUNS 4
#define MK_PROBE_MAX_REPEAT 16

typedef struct mk_disk_probe_run {
    const char *backend; /* "io_uring" or "pread" */
    bool direct;         /* read with O_DIRECT */
    int repeats;
    double seq_gbps, rand_gbps; /* medians over the repeats, 1e9 bytes per second */
    double seq_lo, seq_hi, rand_lo, rand_hi; /* least and greatest repeat */
    double seq[MK_PROBE_MAX_REPEAT], rand[MK_PROBE_MAX_REPEAT]; /* each repeat */
    uint64_t seq_bytes, rand_bytes; /* read in all repeats */
} mk_disk_probe_run;

typedef struct mk_disk_probe_result {
    mk_disk_probe_run run[MK_PROBE_MAX_RUNS];
    int nrun;
    int best;              /* the recommended run (index) */
    bool within_noise;     /* another run's best repeat beat the recommended one's worst */
    char note[512];        /* what was not measured and why (io_uring refused, O_DIRECT refused) */
} mk_disk_probe_result;

/* Open what path names: an existing regular file (at least 64 MiB, read
 * only), or an existing directory, in which an empty temporary file is
 * created (not yet filled: mk_disk_probe_fill). MK_E_NOSPACE when the
 * directory's file system has less than size + 1 GiB free. */
mk_status mk_disk_probe_open(const char *path, const mk_disk_probe_opts *o, mk_disk_probe_file *f);
/* Fill the temporary file (no-op for an existing file), fsync it. */
mk_status mk_disk_probe_fill(mk_disk_probe_file *f);
/* The passes: each available backend x each mode asked for, `repeat`
 * times (all configurations in turn, then again). */
mk_status mk_disk_probe_measure(const mk_disk_probe_file *f, const mk_disk_probe_opts *o,
                                mk_disk_probe_result *res);
/* Remove the temporary file (if any) and free f. */
void mk_disk_probe_close(mk_disk_probe_file *f);

#endif
