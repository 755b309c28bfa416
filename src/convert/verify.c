/* --verify: re-read the written output and prove it against the source.
 *
 * Every piece of every output tensor is checked on its own, in parallel,
 * with the same bounded chunks as the conversion:
 *   COPY pieces    xxh3-128 of the source bytes == xxh3-128 of the output
 *                  bytes they became (byte identity, hashed in 1 MiB reads);
 *   computed ones  the source dequantized to float32 by the plan's
 *                  operation (norm shift included) against the output
 *                  decoded to float32: max |a - b| and ||a - b|| / ||a||,
 *                  accepted within the rounding of the output dtype
 *                  (bf16 5e-3, f16 1e-3, f32 1e-6 relative L2) and with
 *                  NaN and infinities exactly where the source has them
 *                  (mk_diff, the accumulator of every verification).
 * The output is opened as a checkpoint from scratch (the strict reader
 * re-validates every header) and tensor dtypes and shapes must equal the
 * plan's.
 *
 * A GGUF output (one file): its header must equal, byte for byte, the one
 * the writer writes for the plan (names, ggml types, dimensions, offsets,
 * every key); COPY pieces are hashed against the source as above; every
 * other piece (float re-encodes, the ggml quantizers, gathers) is computed
 * again from the source and its bytes compared with the file's: the file
 * holds exactly what this source and these options give. That the
 * quantizers are llama.cpp's is proven elsewhere (tests/cli/gguf_llama_*.sh);
 * this proves the file intact and made from this source. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "convert/conv_impl.h"
#include "convert/gguf.h"
#include "io/os.h"
#include "moekit/escape.h"

typedef struct vitem {
    size_t out;
    const cv_piece *pc;
    int64_t a, n;
} vitem;

typedef struct vres {
    int hash_equal; /* -1: numeric item */
    mk_diff d;      /* output against the source's values */
} vres;

typedef struct vacc {
    mk_diff d;
    uint64_t hash_bad;
    bool numeric;
} vacc;

typedef struct vctx {
    const cv_src *s;
    const cv_plan *p;
    mk_ckpt *out;
    const mk_tensor_info **ot; /* output tensor of each plan output */
    vitem *items;
    size_t nitems, cap;
    vacc *acc;
    int gfd;        /* GGUF output: the file, else -1 */
    uint64_t *goff; /* GGUF: each output's data offset in the file */
} vctx;

static bool v_parallel(void *ctx, size_t i) {
    (void)ctx;
    (void)i;
    return true;
}

static mk_status hash_range(int fd, uint64_t off, uint64_t len, unsigned char *buf, size_t bs, XXH128_hash_t *h) {
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return mk_err(MK_E_NOMEM, "verify: no memory for a hash state");
    XXH3_128bits_reset(st);
    mk_status s = MK_OK;
    for (uint64_t d = 0; s == MK_OK && d < len; d += bs) {
        size_t n = (size_t)(len - d < bs ? len - d : bs);
        s = mk_os_pread_full(fd, buf, n, off + d, "verify");
        if (s == MK_OK)
            XXH3_128bits_update(st, buf, n);
    }
    *h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    return s;
}

#define V_HASH_BUF (1u << 20)

static mk_status v_produce(void *ctx, size_t i, void *scratch, void *out, size_t *len) {
    const vctx *v = ctx;
    const vitem *it = &v->items[i];
    const cv_piece *pc = it->pc;
    const mk_tensor_info *ot = v->ot ? v->ot[it->out] : NULL; /* NULL for a GGUF output */
    vres *r = out;
    memset(r, 0, sizeof *r);
    *len = sizeof *r;
    if (v->gfd >= 0) { /* GGUF: source bytes hashed, or the piece computed again */
        uint64_t at = v->goff[it->out] + pc->out_off;
        if (pc->op == CV_OP_COPY) {
            uint64_t off, n;
            cv_op_copy_range(pc, &off, &n);
            XXH128_hash_t a, b;
            MK_TRY(hash_range(mk_ckpt_shard_fd(v->s->ck, (size_t)pc->mod->t[pc->part]->shard), off, n, scratch,
                              V_HASH_BUF, &a));
            MK_TRY(hash_range(v->gfd, at, n, scratch, V_HASH_BUF, &b));
            r->hash_equal = XXH128_isEqual(a, b);
            return MK_OK;
        }
        uint64_t nb = cv_op_out_bytes(pc, pc->dt, it->n), before = cv_op_out_bytes(pc, pc->dt, it->a);
        unsigned char *want_b = scratch, *got_b = want_b + ((nb + 63) & ~(uint64_t)63);
        unsigned char *oscr = got_b + ((nb + 63) & ~(uint64_t)63);
        MK_TRY(cv_op_run(v->s->ck, pc, pc->dt, it->a, it->n, oscr, want_b));
        MK_TRY(mk_os_pread_full(v->gfd, got_b, (size_t)nb, at + before, "the GGUF output"));
        r->hash_equal = memcmp(want_b, got_b, (size_t)nb) == 0;
        return MK_OK;
    }
    if (pc->op == CV_OP_COPY) {
        uint64_t off, n;
        cv_op_copy_range(pc, &off, &n);
        XXH128_hash_t a, b;
        MK_TRY(hash_range(mk_ckpt_shard_fd(v->s->ck, (size_t)pc->mod->t[pc->part]->shard), off, n, scratch,
                          V_HASH_BUF, &a));
        MK_TRY(hash_range(mk_ckpt_shard_fd(v->out, (size_t)ot->shard), ot->file_offset + pc->out_off, n, scratch,
                          V_HASH_BUF, &b));
        r->hash_equal = XXH128_isEqual(a, b);
        return MK_OK;
    }
    r->hash_equal = -1;
    uint64_t nb = cv_op_out_bytes(pc, pc->dt, it->n), before = cv_op_out_bytes(pc, pc->dt, it->a);
    if (pc->op == CV_OP_GATHER) { /* moved bytes: equal bytes, like a copy */
        unsigned char *want_b = scratch, *got_b = want_b + ((nb + 63) & ~(uint64_t)63);
        unsigned char *gscr = got_b + ((nb + 63) & ~(uint64_t)63);
        MK_TRY(cv_op_run(v->s->ck, pc, pc->dt, it->a, it->n, gscr, want_b));
        MK_TRY(mk_ckpt_read(v->out, ot, pc->out_off + before, got_b, (size_t)nb));
        r->hash_equal = memcmp(want_b, got_b, (size_t)nb) == 0;
        return MK_OK;
    }
    size_t nv = (size_t)(nb / cv_esize(pc->dt));
    float *want = scratch, *got = want + nv;
    unsigned char *raw = (unsigned char *)(got + nv), *opscr = raw + ((nb + 63) & ~(uint64_t)63);
    MK_TRY(cv_op_run(v->s->ck, pc, MK_DT_F32, it->a, it->n, opscr, want));
    MK_TRY(mk_ckpt_read(v->out, ot, pc->out_off + before, raw, (size_t)nb));
    if (!mk_dtype_to_f32(pc->dt, raw, got, nv))
        return mk_err(MK_E_INTERNAL, "verify: cannot decode %s", mk_dtype_name(pc->dt));
    mk_diff_add(&r->d, want, got, nv);
    return MK_OK;
}

static mk_status v_consume(void *ctx, size_t i, const void *out, size_t len) {
    vctx *v = ctx;
    const vres *r = out;
    (void)len;
    vacc *a = &v->acc[v->items[i].out];
    if (r->hash_equal >= 0) {
        a->hash_bad += r->hash_equal == 0;
        return MK_OK;
    }
    a->numeric = true;
    mk_diff_merge(&a->d, &r->d);
    return MK_OK;
}

static mk_status v_push(vctx *v, size_t out, const cv_piece *pc, int64_t a, int64_t n) {
    if (v->nitems == v->cap) {
        size_t nc = v->cap ? 2 * v->cap : 1024;
        vitem *ni = mk_realloc(v->items, nc * sizeof *ni);
        if (!ni)
            return mk_err(MK_E_NOMEM, "verify: no memory for a work list of %zu items", nc);
        v->items = ni;
        v->cap = nc;
    }
    v->items[v->nitems++] = (vitem){out, pc, a, n};
    return MK_OK;
}

/* Items for every piece; returns the scratch a worker needs. */
static mk_status v_items(vctx *v, uint64_t chunk, size_t *scratch) {
    *scratch = V_HASH_BUF;
    for (size_t i = 0; i < v->p->nouts; i++) {
        const cv_out *o = &v->p->outs[i];
        for (int j = 0; j < o->npc; j++) {
            const cv_piece *pc = &o->pc[j];
            if (pc->op == CV_OP_COPY) {
                MK_TRY(v_push(v, i, pc, 0, pc->nrows));
                continue;
            }
            int64_t units = cv_op_units(pc), per = (int64_t)chunk;
            if (cv_op_by_rows(pc->op)) {
                int64_t cols = pc->mod->cols > pc->ocols ? pc->mod->cols : pc->ocols;
                per = (int64_t)chunk / (cols > 0 ? cols : 1);
                per = per > 0 ? per : 1;
            }
            for (int64_t a = 0; a < units; a += per) {
                int64_t n = units - a < per ? units - a : per;
                MK_TRY(v_push(v, i, pc, a, n));
                uint64_t nb = cv_op_out_bytes(pc, pc->dt, n), nv = nb / cv_esize(pc->dt);
                size_t need = (size_t)(nv * 8 + ((nb + 63) & ~(uint64_t)63)) + cv_op_scratch(pc, n) + 64;
                *scratch = need > *scratch ? need : *scratch;
            }
        }
    }
    return MK_OK;
}

static double tol_of(mk_dtype t) {
    switch (t) {
    case MK_DT_BF16: return 5e-3;
    case MK_DT_F16: return 1e-3;
    default: return 1e-6;
    }
}

/* The GGUF file: its header against the writer's for the plan, and each
 * output's data offset. */
static mk_status v_open_gguf(vctx *v, const char *outdir) {
    char *path = mk_path_join(outdir, CV_GGUF_FILE);
    if (!path)
        return mk_err(MK_E_NOMEM, "verify %s: no memory for the path", outdir);
    v->gfd = mk_os()->open(path, O_RDONLY | O_CLOEXEC, 0);
    mk_status st = v->gfd < 0 ? mk_err(MK_E_IO, "verify: cannot open %s: %s", path, strerror(errno)) : MK_OK;
    v->goff = st == MK_OK ? mk_calloc(v->p->nouts ? v->p->nouts : 1, sizeof *v->goff) : NULL;
    v->acc = st == MK_OK ? mk_calloc(v->p->nouts ? v->p->nouts : 1, sizeof *v->acc) : NULL;
    if (st == MK_OK && (!v->goff || !v->acc))
        st = mk_err(MK_E_NOMEM, "verify %s: no memory for the tables of %zu tensors", path, v->p->nouts);
    int mfd = st == MK_OK ? memfd_create("gguf-header", MFD_CLOEXEC) : -1;
    if (st == MK_OK && mfd < 0)
        st = mk_err(MK_E_IO, "verify %s: cannot create a memory file for the planned header: %s", path,
                    strerror(errno));
    uint64_t hl = 0;
    if (st == MK_OK)
        st = cv_gguf_header_to(v->p, mfd, "the planned GGUF header", &hl);
    unsigned char *buf = st == MK_OK ? mk_malloc(V_HASH_BUF) : NULL;
    if (st == MK_OK && !buf)
        st = mk_err(MK_E_NOMEM, "verify %s: no memory for a 1 MiB read buffer", path);
    if (st == MK_OK) {
        XXH128_hash_t a, b;
        struct stat sb;
        st = fstat(v->gfd, &sb) == 0 && (uint64_t)sb.st_size >= hl
                 ? MK_OK
                 : mk_err(MK_E_MISMATCH, "verify: %s is shorter than its planned header (%llu bytes)", path,
                          (unsigned long long)hl);
        if (st == MK_OK)
            st = hash_range(mfd, 0, hl, buf, V_HASH_BUF, &a);
        if (st == MK_OK)
            st = hash_range(v->gfd, 0, hl, buf, V_HASH_BUF, &b);
        if (st == MK_OK && !XXH128_isEqual(a, b))
            st = mk_err(MK_E_MISMATCH, "verify: %s: the header (%llu bytes: names, types, shapes, offsets, keys) "
                        "differs from the plan's", path, (unsigned long long)hl);
    }
    uint64_t at = hl;
    for (size_t i = 0; st == MK_OK && i < v->p->nouts; i++) {
        v->goff[i] = at;
        at = cv_gguf_align(at + v->p->outs[i].nbytes);
    }
    free(buf);
    if (mfd >= 0)
        close(mfd);
    free(path);
    return st;
}

static mk_status v_open(vctx *v, const char *outdir) {
    if (v->p->gguf_kv)
        return v_open_gguf(v, outdir);
    MK_TRY(mk_ckpt_open(outdir, MK_CKPT_NO_MMAP, &v->out));
    v->ot = mk_calloc(v->p->nouts ? v->p->nouts : 1, sizeof *v->ot);
    v->acc = mk_calloc(v->p->nouts ? v->p->nouts : 1, sizeof *v->acc);
    if (!v->ot || !v->acc)
        return mk_err(MK_E_NOMEM, "verify %s: no memory for the tables of %zu tensors", outdir, v->p->nouts);
    if (mk_ckpt_count(v->out) != v->p->nouts)
        return mk_err(MK_E_MISMATCH, "verify: %s holds %zu tensors, the plan %zu", outdir, mk_ckpt_count(v->out),
                      v->p->nouts);
    for (size_t i = 0; i < v->p->nouts; i++) {
        const cv_out *o = &v->p->outs[i];
        const mk_tensor_info *t = mk_ckpt_find(v->out, o->name);
        char b1[96], b2[96];
        if (!t || t->dtype != o->dt || t->ndim != o->ndim ||
            memcmp(t->shape, o->shape, (size_t)o->ndim * sizeof *o->shape) != 0)
            return mk_err(MK_E_MISMATCH, "verify: output tensor '%s' is %s %s, planned %s %s", o->name,
                          t ? mk_dtype_name(t->dtype) : "absent", t ? cv_shape_str(b1, sizeof b1, t->ndim, t->shape) : "",
                          mk_dtype_name(o->dt), cv_shape_str(b2, sizeof b2, o->ndim, o->shape));
        v->ot[i] = t;
    }
    return MK_OK;
}

/* Judge every tensor; the first failure becomes the error. */
static mk_status v_judge(vctx *v, mk_conv_stats *st) {
    mk_status rc = MK_OK;
    for (size_t i = 0; i < v->p->nouts; i++) {
        const vacc *a = &v->acc[i];
        const cv_out *o = &v->p->outs[i];
        double rel = mk_diff_rel(&a->d);
        bool bad = a->hash_bad || a->d.bad || (a->numeric && rel > tol_of(o->dt));
        if (a->numeric) {
            st->verified_numeric++;
            if (rel >= st->worst_rel_l2) {
                st->worst_rel_l2 = rel;
                snprintf(st->worst_tensor, sizeof st->worst_tensor, "%s", o->name);
            }
            if (a->d.max_abs > st->worst_max_abs)
                st->worst_max_abs = a->d.max_abs;
        } else if (!a->hash_bad)
            st->verified_hash++;
        if (bad) {
            st->verify_failures++;
            if (rc == MK_OK && v->gfd >= 0)
                rc = mk_err(MK_E_MISMATCH, "verify: '%s': %llu piece(s) differ from what the source gives (copied "
                            "bytes by xxh3-128, computed ones recomputed)", o->name, (unsigned long long)a->hash_bad);
            if (rc == MK_OK)
                rc = a->hash_bad ? mk_err(MK_E_MISMATCH, "verify: '%s': %llu copied piece(s) differ from the source "
                                          "bytes (xxh3-128)", o->name, (unsigned long long)a->hash_bad)
                                 : mk_err(MK_E_MISMATCH,
                                          "verify: '%s' (%s) differs from the source: rel L2 %.3g (allowed %.1g), "
                                          "max abs %.3g, %llu NaN/Inf mismatches",
                                          o->name, mk_dtype_name(o->dt), rel, tol_of(o->dt), a->d.max_abs,
                                          (unsigned long long)a->d.bad);
        }
    }
    return rc;
}

mk_status cv_verify(const cv_src *s, const cv_plan *p, const char *outdir, int threads, uint64_t chunk,
                    mk_conv_stats *st, bool quiet) {
    vctx v = {s, p, NULL, NULL, NULL, 0, 0, NULL, -1, NULL};
    size_t scratch = 0;
    mk_status rc = v_open(&v, outdir);
    if (rc == MK_OK)
        rc = v_items(&v, chunk, &scratch);
    if (rc == MK_OK) {
        cv_pipe_ops ops = {v_parallel, v_produce, v_consume};
        rc = cv_pipe_run(threads, (size_t)threads + 2, sizeof(vres), scratch, v.nitems, &ops, &v);
    }
    if (rc == MK_OK)
        rc = v_judge(&v, st);
    char worst[4 * sizeof st->worst_tensor + 1]; /* a name from the file: escaped */
    mk_escape(worst, sizeof worst, st->worst_tensor[0] ? st->worst_tensor : "-", 0);
    if (!quiet && (rc == MK_OK || rc == MK_E_MISMATCH) && v.gfd >= 0)
        fprintf(stderr,
                "convert: verify: GGUF header as planned; %llu tensors equal to what the source gives (copied bytes "
                "by xxh3-128, the rest computed again), %llu failed\n",
                (unsigned long long)st->verified_hash, (unsigned long long)st->verify_failures);
    else if (!quiet && (rc == MK_OK || rc == MK_E_MISMATCH))
        fprintf(stderr,
                "convert: verify: %llu tensors byte-identical to the source (xxh3-128), %llu compared numerically "
                "(worst rel L2 %.3g in %s, worst max abs %.3g), %llu failed\n",
                (unsigned long long)st->verified_hash, (unsigned long long)st->verified_numeric, st->worst_rel_l2,
                worst, st->worst_max_abs,
                (unsigned long long)st->verify_failures);
    free(v.items);
    free(v.ot);
    free(v.acc);
    free(v.goff);
    if (v.gfd >= 0)
        close(v.gfd);
    mk_ckpt_close(v.out);
    return rc;
}
