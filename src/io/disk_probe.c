/* The disk probe (see disk_probe.h): a file to read, sequential and random
 * passes through the batched reader under each backend and mode, and the
 * recommendation. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "io/disk_probe.h"
#include "io/os.h"
#include "io/outfile.h"
#include "io/reader.h"

#define PROBE_MIN_FILE ((uint64_t)64 << 20)
#define PROBE_SEQ_REQ ((size_t)4 << 20)
#define PROBE_ALIGN 4096u

static void defaults(const mk_disk_probe_opts *in, mk_disk_probe_opts *o) {
    *o = in ? *in : (mk_disk_probe_opts){0};
    if (!o->size)
        o->size = (uint64_t)1 << 30;
    if (!o->modes)
        o->modes = MK_PROBE_DIRECT | MK_PROBE_BUFFERED;
    if (!o->qd)
        o->qd = 16;
    if (!o->block)
        o->block = (size_t)4 << 20;
    if (!(o->seconds > 0))
        o->seconds = 10;
    if (o->repeat <= 0)
        o->repeat = 3;
}

mk_status mk_disk_probe_open(const char *path, const mk_disk_probe_opts *oin, mk_disk_probe_file *f) {
    mk_disk_probe_opts o;
    defaults(oin, &o);
    memset(f, 0, sizeof *f);
    if (o.block % PROBE_ALIGN || o.block > ((size_t)1 << 30))
        return mk_err(MK_E_ARG, "bench-disk: block %zu is not a multiple of 4096 up to 1 GiB", o.block);
    struct stat st;
    if (stat(path, &st) != 0)
        return mk_err(errno == ENOENT ? MK_E_NOTFOUND : MK_E_IO, "%s: %s (give a directory on the disk "
                      "to measure, or a large existing file to read)", path, strerror(errno));
    if (S_ISREG(st.st_mode)) {
        if ((uint64_t)st.st_size < PROBE_MIN_FILE)
            return mk_err(MK_E_ARG, "%s: a %lld-byte file is too small to measure a disk (at least %llu "
                          "bytes; or give its directory and the probe writes a temporary file there)",
                          path, (long long)st.st_size, (unsigned long long)PROBE_MIN_FILE);
        f->path = mk_strdup(path);
        if (!f->path)
            return mk_err(MK_E_NOMEM, "%s: no memory for its path", path);
        f->size = (uint64_t)st.st_size < o.size ? (uint64_t)st.st_size : o.size;
        f->size -= f->size % PROBE_ALIGN;
        return MK_OK;
    }
    if (!S_ISDIR(st.st_mode))
        return mk_err(MK_E_ARG, "%s: neither a directory nor a regular file", path);
    if (o.size < PROBE_MIN_FILE || o.size < 2 * (uint64_t)o.block)
        return mk_err(MK_E_ARG, "bench-disk: --size %llu is too small (at least %llu bytes and two "
                      "blocks)", (unsigned long long)o.size, (unsigned long long)PROBE_MIN_FILE);
    struct statvfs vfs;
    if (statvfs(path, &vfs) == 0) {
        uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize, margin = (uint64_t)1 << 30;
        if (avail < o.size + margin)
            return mk_err(MK_E_NOSPACE, "%s: %llu bytes free, the probe's temporary file needs %llu plus "
                          "1 GiB to spare (use a smaller --size)", path, (unsigned long long)avail,
                          (unsigned long long)o.size);
    }
    mk_outfile *of = mk_calloc(1, sizeof *of);
    char *name = mk_path_join(path, "moekit-bench-disk");
    if (!of || !name) {
        free(of);
        free(name);
        return mk_err(MK_E_NOMEM, "%s: no memory for the temporary file's name", path);
    }
    mk_status s = mk_outfile_open(of, name, false);
    free(name);
    if (s != MK_OK) {
        free(of);
        return s;
    }
    f->path = mk_strdup(of->tmp);
    if (!f->path) {
        mk_outfile_abort(of);
        free(of);
        return mk_err(MK_E_NOMEM, "%s: no memory for the temporary file's path", path);
    }
    f->temp = true;
    f->of = of;
    f->size = o.size - o.size % PROBE_ALIGN;
    return MK_OK;
}

/* splitmix64 */
static uint64_t next_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

mk_status mk_disk_probe_fill(mk_disk_probe_file *f) {
    if (!f->temp)
        return MK_OK;
    mk_outfile *of = f->of;
    int fd = fileno(of->f);
    size_t chunk = (size_t)8 << 20;
    uint64_t *b = mk_malloc(chunk);
    if (!b)
        return mk_err(MK_E_NOMEM, "out of memory allocating an 8 MiB write buffer");
    uint64_t seed = 0x6d6f656b6974ull;
    mk_status s = MK_OK;
    for (uint64_t at = 0; at < f->size && s == MK_OK; at += chunk) {
        size_t n = f->size - at < chunk ? (size_t)(f->size - at) : chunk;
        for (size_t i = 0; i < n / 8; i++)
            b[i] = next_rand(&seed);
        s = mk_os_pwrite_full(fd, b, n, at, f->path);
    }
    free(b);
    if (s == MK_OK)
        s = mk_os_fsync(fd, f->path);
    return s;
}

void mk_disk_probe_close(mk_disk_probe_file *f) {
    if (f->of) {
        mk_outfile_abort(f->of); /* closes and removes the temporary file */
        free(f->of);
    }
    free(f->path);
    memset(f, 0, sizeof *f);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Evict the file's pages from the page cache (clean pages: no root needed). */
static void evict(const char *path) {
    int fd = mk_os()->open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return;
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

/* One pass in requests of `req` bytes, qd in flight, refilled as each
 * finishes: the whole file in order (sequential), or a random quarter of
 * its req-sized blocks in a random order (random): never the same bytes
 * twice, or a buffered pass would find them in the page cache, and most
 * neighbours of a block unread, as most experts are, so readahead past a
 * block is not credited as if its bytes were wanted. */
static mk_status pass(mk_reader *r, const mk_disk_probe_file *f, const mk_disk_probe_opts *o, bool random,
                      unsigned char *bufs, size_t req, uint64_t *bytes, double *secs) {
    uint64_t count = f->size / req, issued = 0, done_n = 0, seed = o->seed;
    uint32_t *perm = NULL;
    if (random) {
        if (count > UINT32_MAX)
            return mk_err(MK_E_ARG, "bench-disk: %llu blocks of %zu bytes: use a larger --block",
                          (unsigned long long)count, req);
        perm = mk_malloc((size_t)count * sizeof *perm);
        if (!perm)
            return mk_err(MK_E_NOMEM, "out of memory allocating the order of %llu random reads",
                          (unsigned long long)count);
        for (uint64_t i = 0; i < count; i++)
            perm[i] = (uint32_t)i;
        for (uint64_t i = count; i > 1; i--) { /* Fisher-Yates */
            uint64_t j = next_rand(&seed) % i;
            uint32_t t = perm[i - 1];
            perm[i - 1] = perm[j];
            perm[j] = t;
        }
        count = count / 4 > 2 ? count / 4 : (count < 2 ? count : 2);
    }
    evict(f->path);
    double t0 = now_s(), limit = t0 + o->seconds;
    mk_status first = MK_OK;
    bool stop = false;
    /* tag = the buffer slot */
    for (unsigned s = 0; s < o->qd && issued < count; s++, issued++) {
        mk_reader_req q = {0, (random ? perm[issued] : issued) * (uint64_t)req, req, bufs + (size_t)s * req, req, s};
        if ((first = mk_reader_submit(r, &q, 1)) != MK_OK) {
            stop = true;
            break;
        }
    }
    while (mk_reader_pending(r)) {
        uint64_t tag;
        bool done;
        mk_status s = mk_reader_next(r, true, &tag, &done);
        if (!done)
            break;
        if (s != MK_OK) {
            if (first == MK_OK)
                first = s;
            stop = true;
            continue;
        }
        done_n++;
        if (!stop && now_s() > limit)
            stop = true;
        if (!stop && issued < count) {
            mk_reader_req q = {0, (random ? perm[issued] : issued) * (uint64_t)req, req,
                               bufs + (size_t)tag * req, req, tag};
            issued++;
            if ((s = mk_reader_submit(r, &q, 1)) != MK_OK && first == MK_OK) {
                first = s;
                stop = true;
            }
        }
    }
    *secs = now_s() - t0;
    *bytes = done_n * req;
    free(perm);
    return first;
}

/* One configuration, one repeat: a sequential and a random pass. */
static mk_status measure_one(const mk_disk_probe_file *f, const mk_disk_probe_opts *o, mk_reader_backend be,
                             bool direct, unsigned char *bufs, mk_disk_probe_run *run, int rep, char *note,
                             size_t nn) {
    mk_reader_opts ro = {0};
    ro.backend = be;
    ro.direct = direct;
    ro.queue_depth = o->qd;
    ro.threads = o->qd;
    mk_reader *r;
    mk_status s = mk_reader_create(&ro, &r);
    if (s != MK_OK)
        return s;
    uint32_t idx;
    if ((s = mk_reader_add_file(r, f->path, &idx)) != MK_OK) {
        mk_reader_destroy(r);
        return s;
    }
    run->backend = mk_reader_backend_name(r);
    run->direct = mk_reader_file_direct(r, idx);
    if (direct && !run->direct) {
        size_t l = strlen(note);
        if (!strstr(note, "O_DIRECT refused"))
            snprintf(note + l, nn - l, "%sO_DIRECT refused by this file system: not measured", l ? "; " : "");
        mk_reader_destroy(r);
        return MK_E_UNSUPPORTED;
    }
    uint64_t sb = 0, rb = 0;
    double ss = 0, rs = 0;
    mk_disk_probe_opts oo = *o;
    oo.seed = o->seed + (uint64_t)rep; /* another random order each repeat */
    s = pass(r, f, &oo, false, bufs, PROBE_SEQ_REQ, &sb, &ss);
    if (s == MK_OK)
        s = pass(r, f, &oo, true, bufs, o->block, &rb, &rs);
    mk_reader_destroy(r);
    run->seq[rep] = ss > 0 ? (double)sb / ss / 1e9 : 0;
    run->rand[rep] = rs > 0 ? (double)rb / rs / 1e9 : 0;
    run->seq_bytes += sb;
    run->rand_bytes += rb;
    return s;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median, least and greatest of n samples. */
static void stats(const double *v, int n, double *med, double *lo, double *hi) {
    double t[MK_PROBE_MAX_REPEAT];
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmp_d);
    *med = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    *lo = t[0];
    *hi = t[n - 1];
}

mk_status mk_disk_probe_measure(const mk_disk_probe_file *f, const mk_disk_probe_opts *oin,
                                mk_disk_probe_result *res) {
    mk_disk_probe_opts o;
    defaults(oin, &o);
    memset(res, 0, sizeof *res);
    res->best = -1;
    if (o.repeat > MK_PROBE_MAX_REPEAT)
        return mk_err(MK_E_ARG, "bench-disk: %d repeats (at most %d)", o.repeat, MK_PROBE_MAX_REPEAT);
    if (f->size < 2 * (uint64_t)o.block || f->size < PROBE_SEQ_REQ)
        return mk_err(MK_E_ARG, "%s: %llu bytes to read is less than two %zu-byte blocks", f->path,
                      (unsigned long long)f->size, o.block);
    size_t slot = o.block > PROBE_SEQ_REQ ? o.block : PROBE_SEQ_REQ;
    unsigned char *bufs = mk_aligned_alloc(PROBE_ALIGN, (size_t)o.qd * slot);
    if (!bufs)
        return mk_err(MK_E_NOMEM, "out of memory allocating %u x %zu bytes of read buffers", o.qd, slot);
    /* io_uring available here? (AUTO would fall back silently) */
    bool uring = true;
    {
        mk_reader *r;
        mk_reader_opts ro = {0};
        ro.backend = MK_READER_URING;
        ro.queue_depth = o.qd;
        mk_status s = mk_reader_create(&ro, &r);
        if (s == MK_E_NOMEM) {
            free(bufs);
            return s;
        }
        if (s != MK_OK) {
            uring = false;
            snprintf(res->note, sizeof res->note, "%s: not measured", mk_err_msg());
        } else {
            mk_reader_destroy(r);
        }
    }
    /* the configurations, each measured once per repeat, repeats outermost
     * so a change of load on a shared machine hits every one alike */
    mk_reader_backend cbe[MK_PROBE_MAX_RUNS];
    bool cdir[MK_PROBE_MAX_RUNS], refused[MK_PROBE_MAX_RUNS] = {false};
    int nc = 0;
    for (int b = 0; b < 2; b++)
        for (int d = 0; d < 2; d++)
            if ((b || uring) && (o.modes & (d == 0 ? MK_PROBE_DIRECT : MK_PROBE_BUFFERED))) {
                cbe[nc] = b == 0 ? MK_READER_URING : MK_READER_PREAD;
                cdir[nc++] = d == 0;
            }
    mk_disk_probe_run runs[MK_PROBE_MAX_RUNS];
    memset(runs, 0, sizeof runs);
    mk_status s = MK_OK;
    for (int rep = 0; rep < o.repeat && s == MK_OK; rep++)
        for (int c = 0; c < nc && s == MK_OK; c++) {
            if (refused[c])
                continue;
            s = measure_one(f, &o, cbe[c], cdir[c], bufs, &runs[c], rep, res->note, sizeof res->note);
            if (s == MK_E_UNSUPPORTED) { /* O_DIRECT refused: said in the note */
                refused[c] = true;
                s = MK_OK;
            }
        }
    free(bufs);
    if (s != MK_OK)
        return s;
    for (int c = 0; c < nc; c++) {
        if (refused[c])
            continue;
        mk_disk_probe_run *run = &res->run[res->nrun++];
        *run = runs[c];
        run->repeats = o.repeat;
        stats(run->seq, o.repeat, &run->seq_gbps, &run->seq_lo, &run->seq_hi);
        stats(run->rand, o.repeat, &run->rand_gbps, &run->rand_lo, &run->rand_hi);
    }
    if (res->nrun == 0)
        return mk_err(MK_E_UNSUPPORTED, "%s: nothing could be measured (%s)", f->path, res->note);
    /* Expert reads are random: the best median random-read rate wins;
     * within 5% O_DIRECT (the expert cache is then the only copy, counted
     * in the memory budget; buffered reads also fill the page cache) and
     * then io_uring (no threads) are preferred. */
    for (int i = 0; i < res->nrun; i++) {
        if (res->best < 0) {
            res->best = i;
            continue;
        }
        const mk_disk_probe_run *a = &res->run[i], *b = &res->run[res->best];
        double ra = a->rand_gbps, rb = b->rand_gbps;
        int pa = (a->direct ? 2 : 0) + (!strcmp(a->backend, "io_uring") ? 1 : 0);
        int pb = (b->direct ? 2 : 0) + (!strcmp(b->backend, "io_uring") ? 1 : 0);
        if (ra > rb * 1.05 || (ra >= rb * 0.95 && pa > pb))
            res->best = i;
    }
    /* The choice is noise when another configuration's best repeat beats
     * the chosen one's worst. */
    for (int i = 0; i < res->nrun; i++)
        if (i != res->best && res->run[i].rand_hi > res->run[res->best].rand_lo)
            res->within_noise = true;
    return MK_OK;
}
