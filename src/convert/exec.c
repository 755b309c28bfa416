/* mk_conv_run: driving a planned conversion to a finished DST.
 *
 * Map of this file: options -> source + plan (all validation, nothing
 * written yet) -> memory budget (chunk size from --max-memory minus what the
 * process already holds) -> DST.partial/ and its journal (resume or start
 * over) -> per shard: one writer of the target's file format (writer.h;
 * safetensors today, st_writer.c) fed through the ordered worker
 * pipeline, COPY pieces by copy_file_range on the consumer thread, computed
 * pieces by the workers, writeback started as the shard grows (a thread)
 * -> hash each finished shard into the journal (on a
 * thread, overlapping the next shard) -> config, side files, index ->
 * optional verify -> rename DST.partial -> DST.
 *
 * Crash safety: a shard is written to a temporary name and renamed into
 * DST.partial/ only after fsync (the writer's finish); the journal records it
 * afterwards, so any kill leaves either a shard that is complete and
 * recorded, complete and unrecorded (rewritten on rerun) or a temporary
 * (rewritten). The output bytes depend only on the plan, so a resumed run
 * is byte-identical to an uninterrupted one. MK_CONVERT_CRASH=point:N (test
 * hook) kills the process at named points to prove it. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "convert/conv_impl.h"
#include "convert/gguf.h"
#include "convert/target.h"
#include "convert/writer.h"
#include "moekit/ggml_quant.h"
#include "io/os.h"
#include "io/outdir.h"
#include "io/outpath.h"

#define CV_MAX_CHUNK (4u << 20) /* elements: larger chunks buy nothing */
#define CV_FIXED_OVERHEAD (12u << 20) /* writer buffer 8 MiB + copy/hash buffers + stacks */
#define CV_WRITEBACK_STEP (32u << 20) /* bytes between early-writeback kicks */

void mk_conv_opts_init(mk_conv_opts *o) {
    memset(o, 0, sizeof *o);
    o->to = MK_CONV_HF;
    o->experts = MK_CONV_PER_EXPERT;
    o->dtype = MK_DT_INVALID;
    o->gguf_type = -1;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ------------------------------------------------------ crash test hook */

/* Test builds only (MK_TEST_HOOKS): the CLI maps MK_CONVERT_CRASH=point:N to
 * mk_conv_test_crash_at; the library reads no environment. Each run counts
 * passages from zero. */
static struct {
    char point[32];
    long n;
    long count;
} g_crash;

#ifdef MK_TEST_HOOKS
void mk_conv_test_crash_at(const char *spec) {
    g_crash.point[0] = 0;
    if (spec && sscanf(spec, "%31[a-z_]:%ld", g_crash.point, &g_crash.n) < 1)
        g_crash.point[0] = 0;
}
#endif

static void crash_init(void) { g_crash.count = 0; }

/* Kill the process (as kill -9 would) at the n-th passage of `point`. */
static void crash_point(const char *point) {
    if (g_crash.point[0] && strcmp(point, g_crash.point) == 0 && ++g_crash.count >= g_crash.n)
        raise(SIGKILL);
}

/* ------------------------------------------------------ shard execution */

typedef struct item {
    const cv_piece *pc;
    int64_t a, n; /* units of the piece (rows or elements; COPY: whole piece) */
    bool spill;   /* QUANT part waiting in the spill file: copied like COPY */
} item;

/* Early writeback. Left alone, the kernel keeps a shard's pages dirty until
 * the fsync of the writer's finish (below the dirty_background threshold
 * nothing is written), so the whole shard goes to disk only after its last byte is
 * copied: copying and writing add up. Instead, a thread follows the writer
 * and, every CV_WRITEBACK_STEP bytes, starts writeback of what was added
 * (SYNC_FILE_RANGE_WRITE: initiate, never wait for completion), so the disk
 * works while the copy goes on and the fsync finds little left. The
 * submission work is the thread's, not the consumer's. Durability is
 * unchanged: the shard is still fsynced before it is renamed and journaled.
 *
 * The writer lends the temporary's descriptor (its `fd`); a dup of
 * it keeps this thread independent of the writer's lifetime. When that or
 * the thread fails, this is simply not done. Offsets are data offsets,
 * at most the file offsets (the header comes first), and each range runs
 * to the end of the file, so every kick covers all that was added. */
typedef struct wback {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    bool on, stop;
    int fd;
    uint64_t from, to; /* data bytes [from, to) are written and not yet kicked */
} wback;

static void *wb_main(void *arg) {
    wback *b = arg;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->stop && b->to - b->from < CV_WRITEBACK_STEP)
            pthread_cond_wait(&b->cv, &b->mu);
        if (b->stop)
            break;
        uint64_t from = b->from;
        b->from = b->to;
        pthread_mutex_unlock(&b->mu);
        (void)sync_file_range(b->fd, (off_t)from, 0, SYNC_FILE_RANGE_WRITE); /* a hint: errors are harmless */
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static void wb_start(wback *b, int fd) {
    memset(b, 0, sizeof *b);
    b->fd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (b->fd < 0)
        return;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->on = pthread_create(&b->th, NULL, wb_main, b) == 0;
    if (!b->on) {
        pthread_cond_destroy(&b->cv);
        pthread_mutex_destroy(&b->mu);
        close(b->fd);
        b->fd = -1;
    }
}

/* The writer holds `at` data bytes of the shard. */
static void wb_note(wback *b, uint64_t at) {
    if (!b->on)
        return;
    pthread_mutex_lock(&b->mu);
    b->to = at;
    if (at - b->from >= CV_WRITEBACK_STEP)
        pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static void wb_stop(wback *b) {
    if (!b->on)
        return;
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->th, NULL);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    close(b->fd);
    b->on = false;
}

typedef struct shard_run {
    const cv_src *s;
    const cv_writer_ops *wr;
    cv_writer *w;
    item *items;
    size_t nitems, cap;
    uint64_t copied, computed;
    const bool *written; /* shards written by this process so far (quantize spill) */
    wback wb;
} shard_run;

static bool run_parallel(void *ctx, size_t i) {
    const shard_run *r = ctx;
    return r->items[i].pc->op != CV_OP_COPY && !r->items[i].spill;
}

static mk_status run_produce(void *ctx, size_t i, void *scratch, void *out, size_t *len) {
    const shard_run *r = ctx;
    const item *it = &r->items[i];
    MK_TRY(cv_op_run(r->s->ck, it->pc, it->pc->dt, it->a, it->n, scratch, out));
    *len = (size_t)cv_op_out_bytes(it->pc, it->pc->dt, it->n);
    return MK_OK;
}

static mk_status consume_item(shard_run *r, const item *it, const void *out, size_t len) {
    if (it->pc->op == CV_OP_COPY) {
        uint64_t off, n;
        cv_op_copy_range(it->pc, &off, &n);
        int fd = mk_ckpt_shard_fd(r->s->ck, (size_t)it->pc->mod->t[it->pc->part]->shard);
        r->copied += n;
        return r->wr->copy(r->w, fd, off, n);
    }
    if (it->spill) {
        int fd;
        uint64_t off, n;
        cv_qop_spill_range(it->pc, &fd, &off, &n);
        r->computed += n;
        return r->wr->copy(r->w, fd, off, n);
    }
    r->computed += len;
    return r->wr->write(r->w, out, len);
}

static mk_status run_consume(void *ctx, size_t i, const void *out, size_t len) {
    shard_run *r = ctx;
    crash_point("item");
    MK_TRY(consume_item(r, &r->items[i], out, len));
    wb_note(&r->wb, r->copied + r->computed);
    return MK_OK;
}

static mk_status push_item(shard_run *r, const cv_piece *pc, int64_t a, int64_t n) {
    if (r->nitems == r->cap) {
        size_t nc = r->cap ? 2 * r->cap : 1024;
        item *ni = mk_realloc(r->items, nc * sizeof *ni);
        if (!ni)
            return mk_err(MK_E_NOMEM, "convert: no memory for a work list of %zu items", nc);
        r->items = ni;
        r->cap = nc;
    }
    r->items[r->nitems++] = (item){pc, a, n, false};
    return MK_OK;
}

/* Units per chunk of a piece under a budget of `chunk` elements. */
static int64_t units_per_chunk(const cv_piece *pc, uint64_t chunk) {
    if (!cv_op_by_rows(pc->op))
        return (int64_t)chunk;
    int64_t cols = pc->mod->cols > pc->ocols ? pc->mod->cols : pc->ocols;
    int64_t r = (int64_t)chunk / (cols > 0 ? cols : 1);
    return r > 0 ? r : 1;
}

/* Items of shard k, and the slot / scratch sizes they need. */
static mk_status shard_items(const cv_plan *p, int k, uint64_t chunk, shard_run *r, size_t *slot, size_t *scratch) {
    *slot = *scratch = 0;
    for (size_t i = p->shard_first[k]; i < p->shard_first[k + 1]; i++) {
        const cv_out *o = &p->outs[i];
        for (int j = 0; j < o->npc; j++) {
            const cv_piece *pc = &o->pc[j];
            if (pc->op == CV_OP_COPY) {
                MK_TRY(push_item(r, pc, 0, pc->nrows));
                continue;
            }
            if (pc->op == CV_OP_QUANT && cv_qop_from_spill(pc, r->written)) {
                MK_TRY(push_item(r, pc, 0, pc->nrows));
                r->items[r->nitems - 1].spill = true;
                continue;
            }
            int64_t units = cv_op_units(pc), per = units_per_chunk(pc, chunk);
            for (int64_t a = 0; a < units; a += per) {
                int64_t n = units - a < per ? units - a : per;
                MK_TRY(push_item(r, pc, a, n));
                size_t ob = (size_t)cv_op_out_bytes(pc, pc->dt, n), sb = cv_op_scratch(pc, n);
                *slot = ob > *slot ? ob : *slot;
                *scratch = sb > *scratch ? sb : *scratch;
            }
        }
    }
    return MK_OK;
}

typedef struct conv_env {
    const cv_src *s;
    const cv_plan *p;
    const mk_conv_opts *o;
    const char *partial;
    int threads;
    uint64_t chunk;
    mk_conv_stats *st;
    bool *written; /* shards written by this process (NULL: no quantization) */
} conv_env;

static mk_status write_shard(const conv_env *e, int k) {
    const cv_plan *p = e->p;
    shard_run r = {.s = e->s, .wr = p->tgt->writer, .written = e->written};
    size_t slot = 0, scratch = 0;
    mk_status s = r.wr->begin(e->partial, p, k, p->tgt->format_tag, &r.w);
    if (s == MK_OK)
        wb_start(&r.wb, r.wr->fd(r.w));
    if (s == MK_OK)
        s = shard_items(p, k, e->chunk, &r, &slot, &scratch);
    if (s == MK_OK) {
        cv_pipe_ops ops = {run_parallel, run_produce, run_consume};
        s = cv_pipe_run(e->threads, (size_t)e->threads + 2, slot, scratch, r.nitems, &ops, &r);
    }
    free(r.items);
    r.items = NULL;
    wb_stop(&r.wb);
    if (s == MK_OK)
        s = r.wr->finish(r.w);
    r.wr->free(r.w);
    e->st->bytes_copied += r.copied;
    e->st->bytes_computed += r.computed;
    return s;
}

/* --------------------------------------------------------- the run */

static mk_status check_opts(const cv_src *s, const mk_conv_opts *o) {
    if (o->dtype != MK_DT_INVALID && o->dtype != MK_DT_F32 && o->dtype != MK_DT_F16 && o->dtype != MK_DT_BF16)
        return mk_err(MK_E_ARG, "--dtype %s: expected bf16, f16 or f32", mk_dtype_name(o->dtype));
    if (o->dtype == MK_DT_F16 && mk_config_has_recurrent_state(&s->cfg) && !o->force_f16)
        return mk_err(MK_E_ARG,
                      "--dtype f16 refused for %s: its Gated DeltaNet recurrent state overflows float16 and the "
                      "model produces garbage; use bf16 or f32 (or --force-f16 if you know better)",
                      mk_arch_name(s->cfg.arch));
    if (!cv_target_of(o->to))
        return mk_err(MK_E_ARG, "--to: expected hf, mlx or gguf");
    if (o->gguf_type >= 0 && o->to != MK_CONV_GGUF)
        return mk_err(MK_E_ARG, "--gguf-type applies to --to gguf only");
    if (o->to == MK_CONV_GGUF && o->gguf_type >= 0 && !cv_gguf_type_ok(o->gguf_type))
        return mk_err(MK_E_ARG, "--gguf-type %d: expected f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m or q5_k_m",
                      o->gguf_type);
    if (o->to == MK_CONV_GGUF && o->quant)
        return mk_err(MK_E_ARG, "quantize writes MLX; use convert --to gguf --gguf-type q8_0|q4_0");
    return MK_OK;
}

/* Elements per chunk that fit the memory bound, or an error saying how
 * much memory the plan itself already takes. */
static mk_status size_chunks(const cv_plan *p, const mk_conv_opts *o, uint64_t plan_bytes, int threads,
                             uint64_t *chunk) {
    uint64_t budget = o->max_memory ? o->max_memory : (1ull << 30);
    /* what the caller already holds (it says; the library reads no /proc
     * file), what opening and planning allocated, and fixed buffers */
    uint64_t held = o->held_bytes + plan_bytes + CV_FIXED_OVERHEAD;
    /* per element of a chunk: a slot of up to 4 output bytes for each of
     * threads+2 slots, and per worker up to 4 input + 4 float32 bytes */
    uint64_t per = 4 * ((uint64_t)threads + 2) + (p->scratch_per_elem ? p->scratch_per_elem : 8) * (uint64_t)threads;
    int64_t widest = 1;
    for (size_t i = 0; i < p->nouts; i++)
        for (int j = 0; j < p->outs[i].npc; j++)
            if (cv_op_by_rows(p->outs[i].pc[j].op) && p->outs[i].pc[j].mod->cols > widest)
                widest = p->outs[i].pc[j].mod->cols;
    uint64_t c = budget > held ? (budget - held) / per : 0;
    uint64_t need = (uint64_t)(widest > 4096 ? widest : 4096);
    if (c < need)
        return mk_err(MK_E_ARG,
                      "--max-memory %llu MiB is too small: this process already holds %llu MiB (binary, plan, "
                      "write buffers) and %d threads need %llu MiB more for rows of %lld values; allow at least "
                      "%llu MiB",
                      (unsigned long long)(budget >> 20), (unsigned long long)(held >> 20), threads,
                      (unsigned long long)((need * per + (1u << 20) - 1) >> 20), (long long)widest,
                      (unsigned long long)((held + need * per + (1u << 20) - 1) >> 20));
    *chunk = c > CV_MAX_CHUNK ? CV_MAX_CHUNK : c;
    return MK_OK;
}

/* Resume DST.partial/ when its journal was written under this plan; empty
 * it and start over otherwise (mk_outdir_open has made sure it is ours:
 * empty, or holding moekit's owner mark or journal). */
static mk_status open_partial(const char *partial, mk_outdir *od, const cv_plan *p, cv_journal *j, bool *resumed) {
    *resumed = false;
    mk_status s = cv_journal_load(partial, p->nshards, j);
    if (s == MK_OK && j->fingerprint == p->fingerprint) {
        *resumed = true;
        return MK_OK;
    }
    cv_journal_free(j);
    MK_TRY(mk_outdir_clear(od));
    MK_TRY(cv_journal_init(j, p->nshards, p->fingerprint));
    mk_status st = cv_journal_save(partial, j, p);
    if (st != MK_OK) /* the caller only frees a journal it got */
        cv_journal_free(j);
    return st;
}

/* DST present: an error without force, unless it is this very conversion,
 * finished by a run killed between the final rename and the journal's
 * removal (then only the journal is left to delete). */
static mk_status check_dst(const char *src, const char *dst, const cv_plan *p, const mk_conv_opts *o,
                           bool single, bool *done) {
    *done = false;
    (void)src; /* SRC and DST were checked against each other (mk_paths_check_dir) */
    if (!mk_os_exists(dst))
        return MK_OK;
    if (single) {
        /* a run killed between moving the file to DST and removing
         * DST.partial/ left its complete journal there: finish it */
        char *pp = cv_printf("%s.partial", dst);
        if (!pp)
            return mk_err(MK_E_NOMEM, "%s: no memory for the .partial path", dst);
        cv_journal j;
        bool fin = cv_journal_load(pp, p->nshards, &j) == MK_OK && j.complete && j.fingerprint == p->fingerprint;
        cv_journal_free(&j);
        mk_status st = fin ? mk_os_rmtree(pp) : MK_OK;
        free(pp);
        *done = fin && st == MK_OK;
        if (fin || o->force)
            return st;
        return mk_err(MK_E_EXISTS, "%s already exists (use --force to overwrite)", dst);
    }
    cv_journal j;
    if (cv_journal_load(dst, p->nshards, &j) == MK_OK && j.complete && j.fingerprint == p->fingerprint) {
        cv_journal_free(&j);
        char *jp = mk_path_join(dst, CV_JOURNAL_NAME), *op = mk_path_join(dst, MK_OUTDIR_OWNER);
        if (jp && op) {
            mk_os()->unlink(op); /* left by a kill right after the rename */
            mk_os()->unlink(jp);
        }
        free(jp);
        free(op);
        if (!jp || !op)
            return mk_err(MK_E_NOMEM, "%s: no memory for the journal paths", dst);
        *done = true;
        return mk_os_fsync_dir(dst);
    }
    cv_journal_free(&j);
    if (!o->force)
        return mk_err(MK_E_EXISTS, "%s already exists (use --force to overwrite)", dst);
    return MK_OK;
}

static void progress(const mk_conv_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void progress(const mk_conv_opts *o, const char *fmt, ...) {
    if (o->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, o->quant ? "quantize: " : "convert: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Hashing a finished shard for the journal is a read of the whole shard:
 * it runs on its own thread while the next shard is being written, and the
 * shard enters the journal when its hash is known (a crash before that only
 * means the shard is written again). The last shard is not hashed at all:
 * the commit follows at once. */
typedef struct hjob {
    pthread_t th;
    bool active, threaded;
    int k;
    char *path;
    uint64_t size;
    char hex[33];
    mk_err_slot err; /* the hash thread's failure */
    double t_write;
} hjob;

static void *hash_main(void *arg) {
    hjob *h = arg;
    h->err.st = MK_OK;
    mk_err_slot_set(&h->err, cv_file_hash(h->path, &h->size, h->hex));
    return NULL;
}

/* Wait for the hash of the previous shard and record it in the journal. */
static mk_status hash_collect(const conv_env *e, cv_journal *j, hjob *h) {
    if (!h->active)
        return MK_OK;
    if (h->threaded)
        pthread_join(h->th, NULL);
    h->active = false;
    free(h->path);
    h->path = NULL;
    MK_TRY(mk_err_slot_raise(&h->err));
    const cv_plan *p = e->p;
    j->done[h->k] = true;
    j->size[h->k] = h->size;
    memcpy(j->hash[h->k], h->hex, 33);
    MK_TRY(cv_journal_save(e->partial, j, p));
    crash_point("journal");
    progress(e->o, "shard %d/%d %s: %.1f MB in %.2f s (%.0f MB/s)", h->k + 1, p->nshards, p->shard_files[h->k],
             (double)p->shard_bytes[h->k] / 1e6, h->t_write,
             h->t_write > 0 ? (double)p->shard_bytes[h->k] / 1e6 / h->t_write : 0.0);
    return MK_OK;
}

static mk_status run_shards(const conv_env *e, cv_journal *j) {
    const cv_plan *p = e->p;
    hjob h;
    memset(&h, 0, sizeof h);
    mk_status s = MK_OK;
    for (int k = 0; s == MK_OK && k < p->nshards; k++) {
        char *path = mk_path_join(e->partial, p->shard_files[k]);
        if (!path) {
            s = mk_err(MK_E_NOMEM, "%s: no memory for the path of shard %s", e->partial, p->shard_files[k]);
            break;
        }
        uint64_t size = 0;
        char hex[33];
        if (j->done[k] && cv_file_hash(path, &size, hex) == MK_OK && size == j->size[k] &&
            strcmp(hex, j->hash[k]) == 0) {
            e->st->shards_resumed++;
            progress(e->o, "shard %d/%d %s: already complete (size and xxh3 checked)", k + 1, p->nshards,
                     p->shard_files[k]);
            free(path);
            continue;
        }
        j->done[k] = false;
        if (e->written)
            e->written[k] = true;
        double t0 = now_s();
        s = write_shard(e, k);
        double t1 = now_s();
        if (s == MK_OK) {
            crash_point("shard");
            s = hash_collect(e, j, &h);
        }
        if (s != MK_OK) {
            free(path);
            break;
        }
        if (k == p->nshards - 1) {
            /* The last shard is committed right after this, so a journal
             * entry could only spare rewriting it after a crash in the next
             * moments: not worth reading it back. */
            progress(e->o, "shard %d/%d %s: %.1f MB in %.2f s (%.0f MB/s)", k + 1, p->nshards, p->shard_files[k],
                     (double)p->shard_bytes[k] / 1e6, t1 - t0,
                     t1 > t0 ? (double)p->shard_bytes[k] / 1e6 / (t1 - t0) : 0.0);
            free(path);
            break;
        }
        h.k = k;
        h.path = path;
        h.t_write = t1 - t0;
        h.active = true;
        h.threaded = pthread_create(&h.th, NULL, hash_main, &h) == 0;
        if (!h.threaded)
            hash_main(&h); /* no thread to be had: hash here */
    }
    mk_status s2 = hash_collect(e, j, &h); /* always joins the hasher, even after an error */
    free(h.path);
    return s != MK_OK ? s : s2;
}

/* A one-file target (GGUF): DST.partial/<the file> becomes DST (an existing
 * DST was refused unless --force, checked by mk_paths_check_file), then
 * DST.partial/ (owner mark and journal) goes. A kill between the two
 * leaves the complete DST and a DST.partial/ that the next run of the
 * same command with --force clears. */
static mk_status commit_file(const cv_plan *p, const char *dst, mk_outdir *od) {
    char *f = mk_path_join(od->partial, p->shard_files[0]), *dir = mk_path_dirname(dst);
    mk_status rc = f && dir ? MK_OK : mk_err(MK_E_NOMEM, "no memory for the paths of %s", dst);
    crash_point("commit");
    if (rc == MK_OK)
        rc = mk_os_rename(f, dst);
    if (rc == MK_OK)
        rc = mk_os_fsync_dir(dir);
    free(f);
    free(dir);
    if (rc == MK_OK) {
        crash_point("committed");
        mk_outdir_abort(od); /* held by us: removes DST.partial/ and releases it */
    }
    return rc;
}

static mk_status run_all(const cv_src *s, const cv_plan *p, const mk_conv_opts *o, const char *src,
                         const char *dst, mk_outdir *od, int threads, uint64_t chunk, mk_conv_stats *st,
                         bool single) {
    cv_journal j;
    bool resumed;
    const char *partial = od->partial;
    MK_TRY(open_partial(partial, od, p, &j, &resumed));
    progress(o, "%s (%s%s%s) -> %s: %zu tensors, %.1f MB in %d shard%s, %d threads, chunks of %llu values%s", src,
             mk_arch_name(s->cfg.arch), s->is_mlx ? ", MLX" : "", s->vl ? ", vision-language" : "", dst, p->nouts,
             (double)p->total_bytes / 1e6, p->nshards, p->nshards == 1 ? "" : "s", threads,
             (unsigned long long)chunk, resumed ? " (resuming)" : "");
    if (p->packed)
        progress(o, "packed experts: %llu, each one contiguous block; %llu start 4 KiB-aligned",
                 (unsigned long long)p->xpacked, (unsigned long long)p->xaligned);
    conv_env e = {s, p, o, partial, threads, chunk, st, NULL};
    mk_status rc = MK_OK;
    if (p->qs) { /* quantizing: parts computed ahead wait in a spill file */
        e.written = mk_calloc((size_t)p->nshards, sizeof *e.written);
        rc = e.written
                 ? cv_qstate_open(p->qs, partial)
                 : mk_err(MK_E_NOMEM, "convert: no memory for the spill state of %d shards", p->nshards);
    }
    if (rc == MK_OK)
        rc = run_shards(&e, &j);
    free(e.written);
    if (p->qs)
        cv_qstate_close(p->qs, rc == MK_OK ? partial : NULL);
    if (rc == MK_OK && p->tgt->config_edit)
        rc = cv_config_write(s, p, partial);
    if (rc == MK_OK && o->verify)
        rc = cv_verify(s, p, partial, threads, chunk / 2 > 0 ? chunk / 2 : 1, st, o->quiet); /* verify holds 2 chunks */
    if (rc == MK_OK) {
        j.complete = true;
        rc = cv_journal_save(partial, &j, p);
    }
    cv_journal_free(&j);
    MK_TRY(rc);
    if (single)
        return commit_file(p, dst, od);
    /* allocated before the commit: nothing after it may fail for memory,
     * or a finished DST would be reported as a failure */
    char *jp = mk_path_join(dst, CV_JOURNAL_NAME);
    if (!jp)
        return mk_err(MK_E_NOMEM, "no memory for the journal path under %s", dst);
    crash_point("commit");
    rc = mk_outdir_commit(od, NULL);
    if (rc != MK_OK) {
        free(jp);
        return rc;
    }
    crash_point("committed");
    /* the journal stays until DST is in place: a kill before this unlink
     * leaves a complete DST with it, which a rerun recognises and finishes */
    mk_os()->unlink(jp);
    free(jp);
    return mk_os_fsync_dir(dst);
}

bool mk_conv_dst_is_file(const char *src, const char *dst, mk_conv_target to, bool quantize) {
    const cv_target *tg = cv_target_of(to);
    bool bare = quantize && !mk_os_is_dir(src) && mk_os_exists(src);
    return (tg && tg->single_file) || (bare && cv_ends_with(dst, ".safetensors"));
}

mk_status mk_conv_run(const char *src, const char *dst, const mk_conv_opts *oin, mk_conv_stats *stats) {
    mk_conv_stats dummy;
    mk_conv_stats *st = stats ? stats : &dummy;
    memset(st, 0, sizeof *st);
    mk_conv_opts o = *oin;
    double t0 = now_s();
    crash_init();
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = o.threads > 0 ? o.threads : (ncpu > 0 ? (int)ncpu : 1);
    cv_src s;
    cv_plan p;
    memset(&p, 0, sizeof p);
    mk_outdir od = {.lock_fd = -1};
    uint64_t chunk = 0;
    bool done = false;
    /* every path check before the first byte read or written */
    uint64_t bytes0 = mk_alloc_bytes(); /* the plan's memory counts against the budget */
    mk_paths paths;
    mk_paths_init(&paths);
    mk_status rc = mk_paths_add_input(&paths, src, "SRC");
    /* one file out (mk_conv_dst_is_file): built in DST.partial/, then moved */
    bool bare = o.quant && !mk_os_is_dir(src) && mk_os_exists(src);
    bool single = mk_conv_dst_is_file(src, dst, o.to, o.quant != NULL);
    if (single)
        o.shard_size = UINT64_MAX;
    /* a one-file DST may be the finished output of this very command killed
     * before it removed DST.partial/ (check_dst decides, with the plan) */
    bool fforce = o.force;
    if (rc == MK_OK && single && !fforce && mk_os_exists(dst)) {
        char *pp = cv_printf("%s.partial", dst);
        cv_journal j;
        fforce = pp && cv_journal_load(pp, 1, &j) == MK_OK && j.complete;
        if (pp)
            cv_journal_free(&j);
        free(pp);
    }
    if (rc == MK_OK && single) {
        rc = mk_paths_check_file(&paths, dst, "DST", fforce);
        if (rc == MK_OK)
            rc = mk_paths_check_workdir(&paths, dst); /* DST.partial/ is built, then removed */
    } else if (rc == MK_OK) {
        rc = mk_paths_check_dir(&paths, dst, o.force);
    }
    mk_paths_free(&paths);
    memset(&s, 0, sizeof s);
    bool have_src = false;
    /* a lone .safetensors file is a source only for quantization */
    if (rc == MK_OK) {
        rc = bare ? cv_src_open_bare(src, &s)
                  : cv_src_open_ex(src, 0, &s);
        have_src = true;
    }
    if (rc == MK_OK)
        rc = check_opts(&s, &o);
    if (rc == MK_OK)
        rc = cv_plan_build(&s, &o, &p);
    if (rc == MK_OK)
        rc = check_dst(src, dst, &p, &o, single, &done);
    if (rc == MK_OK && !done)
        rc = size_chunks(&p, &o, mk_alloc_bytes() - bytes0, threads, &chunk);
    if (rc == MK_OK && !done) {
        rc = mk_outdir_open(&od, dst, o.force, o.quant ? "quantize" : "convert");
        if (rc == MK_OK)
            crash_point("locked"); /* DST.partial/ holds only the owner mark */
    }
    if (rc == MK_OK && !done)
        rc = run_all(&s, &p, &o, src, dst, &od, threads, chunk, st, single);
    if (rc != MK_OK && od.lock_fd >= 0) {
        /* This process holds DST.partial/: keep it for a rerun only when a
         * rerun can get further (disk full, I/O, memory); bad input fails
         * the same way again, so its partial output goes. */
        char msg[1800];
        snprintf(msg, sizeof msg, "%s", mk_err_msg());
        bool bad = p.qs && cv_qstate_bad_data(p.qs);
        if (!bad && mk_outdir_resumable(rc) && rc != MK_E_EXISTS)
            mk_err(rc, "%s (partial output kept in %s: rerun the same command to resume)", msg, od.partial);
        else if (!bad && rc == MK_E_EXISTS)
            mk_err(rc, "%s", msg);
        else
            mk_err(rc, "%s (partial output %s removed: rerunning cannot fix this)", msg, od.partial);
        if (!bad && mk_outdir_resumable(rc))
            mk_outdir_close(&od);
        else
            mk_outdir_abort(&od);
    }
    mk_outdir_close(&od);
    st->tensors_out = p.nouts;
    st->bytes_out = p.total_bytes;
    st->shards = p.nshards;
    st->experts_packed = p.xpacked;
    st->experts_aligned = p.xaligned;
    snprintf(st->pack_note, sizeof st->pack_note, "%s", p.pack_note);
    st->threads = threads;
    st->chunk_elems = chunk;
    st->seconds = now_s() - t0;
    if (rc == MK_OK && p.qs)
        rc = cv_qstate_export(&p, o.quant);
    cv_plan_free(&p);
    if (have_src)
        cv_src_close(&s);
    return rc;
}
