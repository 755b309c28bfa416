/* Planning quantization: which outputs of an MLX conversion become
 * quantized modules, their weight/scales/biases outputs, the leader of each
 * module and the spill file, the config blocks and the results.
 *
 * Map of this file: bare-file sources -> candidates (what mlx-lm would call
 * quantizable: the .weight of a Linear/Embedding, 2-D, or of a SwitchLinear,
 * 3-D switch_mlp; a bare file's every float tensor of 2+ dims) -> routed
 * expert layers that must be split into per-expert modules (their experts
 * resolve to different widths, or the layout is packed) -> module outputs (each float piece of the
 * convert plan becomes one CV_OP_QUANT piece per part, reading the same
 * source rows through the same operation) -> after sorting: leaders and
 * spill offsets -> config and results.
 *
 * The quantizer's input is exactly the float tensor `convert --to mlx`
 * would write (same dtype, same bytes), so `quantize` = quantize(convert). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "convert/quant_impl.h"
#include "convert/target.h"
#include "core/alloc.h"
#include "core/json_err.h"
#include "io/os.h"

/* ------------------------------------------------------- bare sources */

mk_status cv_src_open_bare(const char *path, cv_src *s) {
    memset(s, 0, sizeof *s);
    s->bare = true;
    s->dir = cv_strdup(path);
    if (!s->dir)
        return mk_err(MK_E_NOMEM, "%s: no memory for the source path", path);
    MK_TRY(mk_ckpt_open(path, MK_CKPT_NO_MMAP, &s->ck));
    MK_TRY(cv_check_empty(s));
    size_t n = mk_ckpt_count(s->ck);
    s->mods = mk_calloc(n ? n : 1, sizeof *s->mods);
    s->lts = mk_calloc(n ? n : 1, sizeof *s->lts);
    if (!s->mods || !s->lts)
        return mk_err(MK_E_NOMEM, "%s: no memory for the module tables of %zu tensors", path, n);
    for (size_t i = 0; i < n; i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(s->ck, i);
        cv_mod *m = &s->mods[s->nmods++];
        m->name = cv_strdup(t->name);
        m->cname = cv_strdup(t->name);
        m->cls = MK_PART_LM;
        m->kind = cv_is_float_dtype(t->dtype) ? CV_FLOAT : CV_RAW;
        m->t[CV_T_MAIN] = t;
        m->vdt = t->dtype;
        m->ndim = t->ndim;
        memcpy(m->shape, t->shape, sizeof m->shape);
        m->cols = t->ndim ? t->shape[t->ndim - 1] : 1;
        m->rows = 1;
        for (int d = 0; d + 1 < t->ndim; d++)
            m->rows *= t->shape[d];
        if (t->numel == 0)
            m->rows = 1; /* an empty tensor: one row of no bytes */
        m->mrows = m->rows;
        cv_lt *lt = &s->lts[s->nlts++];
        lt->cname = cv_strdup(t->name);
        lt->cls = MK_PART_LM;
        lt->mod = m;
        lt->nrows = m->rows;
        lt->ndim = t->ndim;
        memcpy(lt->shape, t->shape, sizeof lt->shape);
        if (!m->name || !m->cname || !lt->cname)
            return mk_err(MK_E_NOMEM, "%s: no memory for the names of tensor '%s'", path, t->name);
    }
    if (n == 0)
        return mk_err(MK_E_FORMAT, "%s: the file holds no tensors", path);
    return MK_OK;
}

/* ----------------------------------------------------------- builder */

typedef struct qb {
    const cv_src *s;
    const mk_conv_opts *o;
    cv_plan *p;
    cv_qstate *qs;
    const mk_qjob *job;
    cv_qctx x;
    cv_out *outs; /* the new plan outputs */
    size_t n, cap;
    cv_map *split; /* mlp prefix -> non-NULL when its experts are written one by one */
    char **keys;
    size_t nkeys;
    size_t seq;
} qb;

enum { Q_NONE = 0, Q_PLAIN, Q_STACK };

static bool is_quant_input(mk_dtype t) { return t == MK_DT_F32 || t == MK_DT_F16 || t == MK_DT_BF16; }

static bool float_op(cv_op op) {
    return op == CV_OP_COPY || op == CV_OP_FLOAT || op == CV_OP_FP8 || op == CV_OP_AFFINE || op == CV_OP_CT ||
           op == CV_OP_FPDQ;
}

static int candidate(const qb *b, const cv_out *o) {
    if (!is_quant_input(o->dt) || o->npc < 1 || o->ndim < 2)
        return Q_NONE;
    /* gpt_oss's float expert stacks (mlx-lm: SwitchLinear under
     * mlp.experts, no switch_mlp): one module each; an HF source's pieces
     * gather the rows (de-interleaved gate/up, transposed), which the
     * quantize op reads as they are (quant_ops.c) */
    if (!b->s->bare && b->s->cfg.arch == MK_ARCH_GPT_OSS && o->ndim == 3 && strstr(o->name, ".mlp.experts.") &&
        cv_ends_with(o->name, "_proj.weight")) {
        for (int j = 0; j < o->npc; j++)
            if (!float_op(o->pc[j].op) && o->pc[j].op != CV_OP_GATHER)
                return Q_NONE;
        return Q_PLAIN;
    }
    for (int j = 0; j < o->npc; j++)
        if (!float_op(o->pc[j].op) || (o->pc[j].op == CV_OP_COPY && o->pc[j].part != CV_T_MAIN) ||
            o->pc[j].mod->cols != o->shape[o->ndim - 1] || o->pc[j].mod->cls == MK_PART_VISION)
            return Q_NONE;
    if (b->s->bare)
        return Q_PLAIN;
    if (!cv_ends_with(o->name, ".weight"))
        return Q_NONE;
    if (o->ndim == 3 && strstr(o->name, ".switch_mlp.") && o->npc == o->shape[0]) {
        for (int j = 0; j < o->npc; j++)
            if (o->pc[j].nrows != o->shape[1])
                return Q_NONE;
        return Q_STACK;
    }
    return o->ndim == 2 ? Q_PLAIN : Q_NONE;
}

static mk_status push_out(qb *b, const cv_out *o) {
    if (b->n == b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 256;
        cv_out *no = mk_realloc(b->outs, nc * sizeof *no);
        if (!no)
            return mk_err(MK_E_NOMEM, "quantization plan: no memory for %zu outputs", nc);
        b->outs = no;
        b->cap = nc;
    }
    b->outs[b->n++] = *o;
    return MK_OK;
}

static void drop_out(cv_out *o);

/* push_out that consumes o either way (dropped when it cannot be kept). */
static mk_status push_or_drop(qb *b, cv_out *o) {
    mk_status st = push_out(b, o);
    if (st != MK_OK)
        drop_out(o);
    return st;
}

/* Module path of output name: without ".weight" (bare files: when present). */
static char *path_of(const char *name) {
    size_t n = strlen(name);
    if (cv_ends_with(name, ".weight"))
        n -= 7;
    return cv_printf("%.*s", (int)n, name);
}

/* "<mlp>.switch_mlp.<proj>" (no .weight) -> "<mlp>.experts.<e>.<proj>". */
static char *expert_path(const char *stack, int e) {
    const char *k = strstr(stack, ".switch_mlp.");
    return cv_printf("%.*s.experts.%d.%s", (int)(k - stack), stack, e, k + strlen(".switch_mlp."));
}

static mk_status add_float(qb *b, const char *path, const cv_out *o, const cv_qchoice *c) {
    cv_qstate *qs = b->qs;
    if (qs->nfl == qs->capf) {
        size_t nc = qs->capf ? 2 * qs->capf : 64;
        cv_qfloat *nf = mk_realloc(qs->fl, nc * sizeof *nf);
        if (!nf)
            return mk_err(MK_E_NOMEM, "quantization plan: no memory for %zu float modules (at '%s')", nc,
                          path);
        qs->fl = nf;
        qs->capf = nc;
    }
    cv_qfloat *f = &qs->fl[qs->nfl];
    memset(f, 0, sizeof *f);
    f->path = cv_strdup(path);
    if (!f->path)
        return mk_err(MK_E_NOMEM, "module '%s': no memory for its path", path);
    qs->nfl++;
    f->source = o->pc[0].mod->name;
    f->cols = o->shape[o->ndim - 1];
    f->rows = 1;
    for (int d = 0; d + 1 < o->ndim; d++)
        f->rows *= o->shape[d];
    f->bytes = o->nbytes;
    f->note = c->quant || c->group <= 0 || f->cols % c->group == 0
                  ? cv_strdup(c->note)
                  : cv_printf("float: input dim %lld is not a multiple of the group size %d", (long long)f->cols,
                              c->group);
    if (!f->note)
        return mk_err(MK_E_NOMEM, "module '%s': no memory for its note", path);
    f->seq = b->seq++;
    return MK_OK;
}

/* The weight/scales(/biases) outputs of one quantized module made of the
 * float pieces pcs[0..npc) (each a region of whole rows). `base` is the
 * float output's name. Takes no ownership. */
/* The statistics of each expert (3-D stack) or of the module in the job's
 * statistics file, checked against the module's input width. */
static mk_status find_stats(cv_qstate *qs, cv_qmod *q, int ndim, const int64_t *shape) {
    const mk_qjob *j = qs->job;
    q->nh = ndim == 3 ? (int)shape[0] : 1;
    q->hrows = shape[ndim - 2];
    for (int d = 0; d + 2 < ndim && ndim != 3; d++)
        q->hrows *= shape[d];
    q->hin = mk_calloc((size_t)q->nh, sizeof *q->hin);
    q->hs = mk_calloc((size_t)q->nh, sizeof *q->hs);
    q->hdone = mk_calloc((size_t)q->nh, sizeof *q->hdone);
    if (!q->hin || !q->hs || !q->hdone)
        return mk_err(MK_E_NOMEM, "module '%s': no memory for %d sets of input statistics", q->path, q->nh);
    for (int e = 0; e < q->nh; e++) {
        char *name = ndim == 3 ? expert_path(q->path, e) : cv_strdup(q->path);
        if (!name)
            return mk_err(MK_E_NOMEM, "module '%s': no memory for its statistics' name", q->path);
        const mk_tensor_info *t = j->stats ? mk_ckpt_find(j->stats, name) : NULL;
        if (t && (t->dtype != MK_DT_F32 || t->ndim != 2 || t->shape[0] != q->cols || t->shape[1] != q->cols)) {
            mk_status st = mk_err(MK_E_FORMAT,
                                  "--hessian %s: tensor '%s' is %s [%lld, %lld]; module '%s' needs F32 [%lld, %lld]",
                                  j->stats_path, name, mk_dtype_name(t->dtype), (long long)t->shape[0],
                                  (long long)(t->ndim > 1 ? t->shape[1] : 0), q->path, (long long)q->cols,
                                  (long long)q->cols);
            free(name);
            return st;
        }
        free(name);
        q->hin[e] = t;
        *(t ? &qs->n_cal : &qs->n_uncal) += 1;
    }
    return MK_OK;
}

static mk_status emit_module(qb *b, const char *path, const char *base, int ndim, const int64_t *shape,
                             const cv_piece *pcs, int npc, mk_dtype in_dt, const cv_qchoice *c) {
    cv_qmod *q = mk_calloc(1, sizeof *q);
    if (!q)
        return mk_err(MK_E_NOMEM, "module '%s': no memory for its quantization record", path);
    cv_qstate *qs = b->qs;
    if (qs->nmods == qs->capm) {
        size_t nc = qs->capm ? 2 * qs->capm : 256;
        cv_qmod **nm = mk_realloc(qs->mods, nc * sizeof *nm);
        if (!nm) {
            free(q);
            return mk_err(MK_E_NOMEM, "quantization plan: no memory for %zu quantized modules (at '%s')", nc,
                          path);
        }
        qs->mods = nm;
        qs->capm = nc;
    }
    qs->mods[qs->nmods++] = q;
    pthread_mutex_init(&q->mu, NULL);
    q->path = cv_strdup(path);
    if (!q->path)
        return mk_err(MK_E_NOMEM, "module '%s': no memory for its path", path);
    q->source = pcs[0].mod->name;
    q->ch = *c;
    q->st = qs;
    q->seq = b->seq++;
    q->in_dt = in_dt;
    q->cols = shape[ndim - 1];
    q->rows = 1;
    for (int d = 0; d + 1 < ndim; d++)
        q->rows *= shape[d];
    mk_quant_layout l;
    MK_TRY(mk_quant_params(c->mode, c->bits, c->group, 0.0f, &q->qp));
    if (mk_quant_layout_of(&q->qp, in_dt, q->cols, &l) != MK_OK)
        return mk_err_wrap(MK_E_ARG, "module '%s' (tensor '%s')", path, q->source);
    q->sdt = l.scale_dt;
    q->nparts = l.bias_row_bytes ? 3 : 2;
    if (qs->job->method != MK_QALGO_RTN && q->qp.mode == MK_QMODE_AFFINE)
        MK_TRY(find_stats(qs, q, ndim, shape));
    q->rb[CV_T_MAIN] = l.wq_row_bytes;
    q->rb[CV_T_SCALE] = l.scale_row_bytes;
    q->rb[CV_T_BIAS] = l.bias_row_bytes;
    /* names: X.weight -> X.weight/.scales/.biases; bare N -> N, N.scales, N.biases */
    size_t bl = strlen(base) - (cv_ends_with(base, ".weight") ? 7 : 0);
    bool wsuf = cv_ends_with(base, ".weight");
    static const char *const suffix[3] = {".weight", ".scales", ".biases"};
    mk_dtype dts[3] = {MK_DT_U32, l.scale_dt, l.scale_dt};
    int64_t lastdim[3] = {l.wq_cols, l.groups, l.groups};
    for (int k = 0; k < q->nparts; k++) {
        cv_out o;
        memset(&o, 0, sizeof o);
        o.name = (k == 0 && !wsuf) ? cv_strdup(base) : cv_printf("%.*s%s", (int)bl, base, suffix[k]);
        o.dt = dts[k];
        o.ndim = ndim;
        memcpy(o.shape, shape, (size_t)ndim * sizeof *shape);
        o.shape[ndim - 1] = lastdim[k];
        o.pc = mk_calloc((size_t)npc, sizeof *o.pc);
        if (!o.name || !o.pc || push_out(b, &o) != MK_OK) {
            free(o.name);
            free(o.pc);
            return mk_err(MK_E_NOMEM, "module '%s': no memory for its %s output (%d pieces)", path, suffix[k],
                          npc);
        }
        cv_out *d = &b->outs[b->n - 1];
        for (int j = 0; j < npc; j++) {
            cv_piece pc = pcs[j];
            pc.sop = (unsigned char)pcs[j].op;
            pc.op = CV_OP_QUANT;
            pc.part = (unsigned char)k;
            pc.dt = dts[k];
            pc.ocols = q->cols;
            pc.q = q;
            pc.nbytes = (uint64_t)pcs[j].nrows * q->rb[k];
            pc.out_off = d->nbytes;
            d->pc[d->npc++] = pc;
            d->nbytes += pc.nbytes;
        }
    }
    return MK_OK;
}

/* Drop an output whose pieces were consumed (name and piece array). */
static void drop_out(cv_out *o) {
    free(o->name);
    free(o->pc);
    free(o->qpath);
}

/* Outputs [first, b->n) belong to expert xe of group xg (packed layouts,
 * plan.c). */
static void tag(qb *b, size_t first, int xg, int xe) {
    for (size_t i = first; i < b->n; i++) {
        b->outs[i].xg = xg;
        b->outs[i].xe = xe;
    }
}

/* plain and stack consume o: it is moved into the new plan or dropped,
 * success or not. */
static mk_status plain(qb *b, cv_out *o) {
    char *path = path_of(o->name);
    if (!path) {
        mk_status e = mk_err(MK_E_NOMEM, "output '%s': no memory for its module path", o->name);
        drop_out(o);
        return e;
    }
    cv_qchoice c;
    cv_qjob_choose(b->job, &b->x, path, NULL, o->shape[o->ndim - 1], &c);
    mk_status st;
    if (c.quant) {
        size_t first = b->n;
        st = emit_module(b, path, o->name, o->ndim, o->shape, o->pc, o->npc, o->dt, &c);
        tag(b, first, o->xg, o->xe);
        drop_out(o);
    } else {
        st = add_float(b, path, o, &c);
        st = st == MK_OK ? push_or_drop(b, o) : (drop_out(o), st);
    }
    free(path);
    return st;
}

/* Does the layer of switch_mlp output o resolve differently per expert?
 * Marks its mlp prefix in b->split. */
static mk_status mark_split(qb *b, const cv_out *o) {
    char *stack = path_of(o->name);
    if (!stack)
        return mk_err(MK_E_NOMEM, "output '%s': no memory for its module path", o->name);
    cv_qchoice c0, c;
    bool differ = false;
    for (int e = 0; e < o->shape[0] && !differ; e++) {
        char *ep = expert_path(stack, e);
        if (!ep) {
            free(stack);
            return mk_err(MK_E_NOMEM, "output '%s': no memory for the module path of expert %d", o->name, e);
        }
        cv_qjob_choose(b->job, &b->x, ep, stack, o->shape[2], e ? &c : &c0);
        differ = e > 0 && !cv_qchoice_same(&c0, &c);
        free(ep);
    }
    mk_status st = MK_OK;
    /* packed layouts write every expert on its own (plan.c), with the
     * choices the stack would have had */
    if (differ || b->p->packed) {
        const char *k = strstr(stack, ".switch_mlp.");
        char *mlp = cv_printf("%.*s", (int)(k - stack), stack);
        char **nk = mk_realloc(b->keys, (b->nkeys + 1) * sizeof *nk);
        if (nk)
            b->keys = nk;
        if (!mlp || !nk || !cv_map_put(b->split, mlp, (void *)1)) {
            free(mlp);
            st = mk_err(MK_E_NOMEM, "output '%s': no memory to mark its experts as quantized one by one",
                        o->name);
        } else
            b->keys[b->nkeys++] = mlp;
    }
    free(stack);
    return st;
}

static bool is_split(const qb *b, const char *name) {
    const char *k = strstr(name, ".switch_mlp.");
    char *mlp = k ? cv_printf("%.*s", (int)(k - name), name) : NULL;
    bool r = mlp && cv_map_get(b->split, mlp) != NULL;
    free(mlp);
    return r;
}

/* A stacked switch_mlp output: one module, or one per expert. */
static mk_status stack(qb *b, cv_out *o) {
    if (!is_split(b, o->name)) {
        char *path = path_of(o->name), *ep = path ? expert_path(path, 0) : NULL;
        if (!ep) {
            free(path);
            mk_status e = mk_err(MK_E_NOMEM, "output '%s': no memory for its module paths", o->name);
            drop_out(o);
            return e;
        }
        cv_qchoice c;
        cv_qjob_choose(b->job, &b->x, ep, path, o->shape[2], &c);
        free(ep);
        mk_status st;
        if (c.quant) {
            st = emit_module(b, path, o->name, 3, o->shape, o->pc, o->npc, o->dt, &c);
            drop_out(o);
        } else {
            st = add_float(b, path, o, &c);
            st = st == MK_OK ? push_or_drop(b, o) : (drop_out(o), st);
        }
        free(path);
        return st;
    }
    char *stk = path_of(o->name);
    mk_status st = stk ? MK_OK : mk_err(MK_E_NOMEM, "output '%s': no memory for its module path", o->name);
    for (int e = 0; st == MK_OK && e < o->shape[0]; e++) {
        char *ep = expert_path(stk, e), *name = ep ? cv_printf("%s.weight", ep) : NULL;
        cv_qchoice c;
        if (!name) {
            free(ep);
            st = mk_err(MK_E_NOMEM, "output '%s': no memory for the names of expert %d", o->name, e);
            break;
        }
        cv_qjob_choose(b->job, &b->x, ep, stk, o->shape[2], &c);
        cv_piece pc = o->pc[e];
        pc.out_off = 0;
        if (c.quant) {
            size_t first = b->n;
            st = emit_module(b, ep, name, 2, o->shape + 1, &pc, 1, o->dt, &c);
            tag(b, first, o->xg, e);
            free(name);
        } else {
            cv_out f;
            memset(&f, 0, sizeof f);
            f.name = name;
            f.dt = o->dt;
            f.ndim = 2;
            f.shape[0] = o->shape[1];
            f.shape[1] = o->shape[2];
            f.nbytes = pc.nbytes;
            f.npc = 1;
            f.xg = o->xg;
            f.xe = e;
            f.pc = mk_malloc(sizeof pc);
            if (!f.pc) {
                free(name);
                st = mk_err(MK_E_NOMEM, "output '%s': no memory for the piece of expert %d", o->name, e);
            } else {
                f.pc[0] = pc;
                st = add_float(b, ep, &f, &c);
                st = st == MK_OK ? push_or_drop(b, &f) : (drop_out(&f), st);
            }
        }
        free(ep);
    }
    free(stk);
    drop_out(o);
    return st;
}

/* Layers of the model for the recipe rule: the config's, else one more
 * than the largest "layers.N" among the outputs. */
static int count_layers(const cv_src *s, const cv_plan *p) {
    if (s->cfg.num_layers > 0)
        return s->cfg.num_layers;
    int L = 0;
    for (size_t i = 0; i < p->nouts; i++) {
        const char *l = strstr(p->outs[i].name, "layers.");
        if (l) {
            int v = atoi(l + 7);
            L = v + 1 > L ? v + 1 : L;
        }
    }
    return L;
}

/* Every exact per-module entry (an allocation) must name a module of this
 * output: a module path, or an expert of a stacked switch_mlp module. A
 * profile made from another model would otherwise apply to nothing. */
static mk_status check_exact(const cv_qstate *qs) {
    const mk_qjob *j = qs->job;
    if (j->nex == 0)
        return MK_OK;
    cv_map *m = cv_map_new(qs->nmods + qs->nfl);
    if (!m)
        return mk_err(MK_E_NOMEM, "quantization plan: no memory for an index of %zu modules",
                      qs->nmods + qs->nfl);
    bool ok = true;
    for (size_t i = 0; i < qs->nmods; i++)
        ok = ok && cv_map_put(m, qs->mods[i]->path, (void *)1);
    for (size_t i = 0; i < qs->nfl; i++)
        ok = ok && cv_map_put(m, qs->fl[i].path, (void *)1);
    mk_status st = ok ? MK_OK
                      : mk_err(MK_E_NOMEM, "quantization plan: no memory for an index of %zu modules",
                               qs->nmods + qs->nfl);
    for (size_t i = 0; st == MK_OK && i < j->nex; i++) {
        const char *pth = j->ex[i].path, *e = strstr(pth, ".experts.");
        if (cv_map_get(m, pth))
            continue;
        const char *dot = e ? strchr(e + 9, '.') : NULL;
        char *stk = dot ? cv_printf("%.*s.switch_mlp%s", (int)(e - pth), pth, dot) : NULL;
        bool found = stk && cv_map_get(m, stk);
        free(stk);
        if (!found)
            st = mk_err(MK_E_MISMATCH,
                        "module '%s' of the allocation is not a module of this checkpoint's MLX output (was the "
                        "profile made from another model?)",
                        pth);
    }
    cv_map_free(m);
    return st;
}

mk_status cv_qplan_apply(const cv_src *s, const mk_conv_opts *o, cv_plan *p) {
    if (!p->tgt || !p->tgt->quantizes)
        return mk_err(MK_E_ARG, "quantization writes the MLX layout (--to mlx)");
    if (o->verify)
        return mk_err(MK_E_ARG, "--verify compares converted tensors with their source; it does not apply to "
                                "quantized output");
    if (s->bare && o->dtype != MK_DT_INVALID)
        return mk_err(MK_E_ARG, "%s: --dtype applies to checkpoint directories; a bare file keeps its dtypes",
                      s->dir);
    cv_qstate *qs = mk_calloc(1, sizeof *qs);
    if (!qs)
        return mk_err(MK_E_NOMEM, "%s: no memory for the quantization state", s->dir);
    p->qs = qs;
    qs->job = o->quant;
    qs->bare = s->bare;
    qs->spill_fd = -1;
    p->scratch_per_elem = 16;
    qb b = {s, o, p, qs, o->quant, {s->cfg.arch, count_layers(s, p), s->bare}, NULL, 0, 0, cv_map_new(64), NULL,
            0, 0};
    mk_status st =
        b.split ? MK_OK : mk_err(MK_E_NOMEM, "%s: no memory for the map of split expert layers", s->dir);
    for (size_t i = 0; st == MK_OK && i < p->nouts; i++)
        if (candidate(&b, &p->outs[i]) == Q_STACK)
            st = mark_split(&b, &p->outs[i]);
    size_t i = 0;
    for (; st == MK_OK && i < p->nouts; i++) {
        cv_out *ot = &p->outs[i];
        switch (candidate(&b, ot)) {
        case Q_PLAIN: st = plain(&b, ot); break;
        case Q_STACK: st = stack(&b, ot); break;
        default: st = push_or_drop(&b, ot); break;
        }
        /* a failed output was consumed too: the loop's i++ steps past it
         * (an extra i++ here skipped the next output, which then leaked) */
    }
    for (; i < p->nouts; i++) /* outputs not reached after an error */
        if (push_out(&b, &p->outs[i]) != MK_OK)
            drop_out(&p->outs[i]);
    free(p->outs);
    p->outs = b.outs;
    p->nouts = b.n;
    for (size_t k = 0; k < b.nkeys; k++)
        free(b.keys[k]);
    free(b.keys);
    cv_map_free(b.split);
    return st == MK_OK ? check_exact(qs) : st;
}

/* ------------------------------------------------- leaders and spills */

mk_status cv_qplan_finish(cv_plan *p) {
    cv_qstate *qs = p->qs;
    if (!qs)
        return MK_OK;
    for (size_t i = p->nouts; i-- > 0;) { /* backwards: order[] ends at the first output */
        const cv_out *o = &p->outs[i];
        for (int j = 0; j < o->npc; j++)
            if (o->pc[j].op == CV_OP_QUANT) {
                cv_qmod *q = o->pc[j].q;
                q->order[o->pc[j].part] = i;
                q->shard[o->pc[j].part] = o->shard;
            }
    }
    uint64_t off = 0;
    for (size_t m = 0; m < qs->nmods; m++) {
        cv_qmod *q = qs->mods[m];
        q->leader = 0;
        for (int k = 1; k < q->nparts; k++)
            if (q->order[k] < q->order[q->leader])
                q->leader = k;
        for (int k = 0; k < q->nparts; k++)
            if (k != q->leader) {
                q->spill_off[k] = off;
                off += (uint64_t)q->rows * q->rb[k];
            }
    }
    qs->spill_bytes = off;
    return MK_OK;
}

void cv_qplan_hash(void *state, const cv_piece *pc) {
    const cv_qmod *q = pc->q;
    int64_t v[7] = {pc->sop, pc->part, q->qp.mode, q->qp.bits, q->qp.group, q->in_dt, q->leader};
    XXH3_64bits_update(state, v, sizeof v);
}

void cv_qstate_free(cv_qstate *qs) {
    if (!qs)
        return;
    if (qs->spill_fd >= 0)
        cv_qstate_close(qs, NULL);
    for (size_t i = 0; i < qs->nmods; i++) {
        pthread_mutex_destroy(&qs->mods[i]->mu);
        for (int k = 0; qs->mods[i]->hs && k < qs->mods[i]->nh; k++)
            mk_qstats_free(&qs->mods[i]->hs[k]);
        free(qs->mods[i]->hs);
        free(qs->mods[i]->hin);
        free(qs->mods[i]->hdone);
        free(qs->mods[i]->path);
        free(qs->mods[i]);
    }
    free(qs->mods);
    for (size_t i = 0; i < qs->nfl; i++) {
        free(qs->fl[i].path);
        free(qs->fl[i].note);
    }
    free(qs->fl);
    free(qs->spill_path);
    free(qs);
}

/* ------------------------------------------------------------ config */

static json_t *quant_block(const cv_qstate *qs) {
    const mk_qjob *j = qs->job;
    json_t *b = json_object();
    json_object_set_new(b, "group_size", json_integer(j->group));
    json_object_set_new(b, "bits", json_integer(j->bits));
    json_object_set_new(b, "mode", json_string(mk_qmode_name(j->mode)));
    for (size_t i = 0; i < qs->nmods; i++) {
        const cv_qmod *q = qs->mods[i];
        if (!q->ch.router && q->qp.mode == j->mode && q->qp.bits == j->bits && q->qp.group == j->group)
            continue;
        json_t *e = json_object();
        json_object_set_new(e, "group_size", json_integer(q->qp.group));
        json_object_set_new(e, "bits", json_integer(q->qp.bits));
        if (q->qp.mode != MK_QMODE_AFFINE)
            json_object_set_new(e, "mode", json_string(mk_qmode_name(q->qp.mode)));
        json_object_set_new(b, q->path, e);
    }
    return b;
}

mk_status cv_qplan_config(const cv_plan *p, void *json_root) {
    /* jansson reports running out of memory only through return values: a
     * module's entry that failed to be added would silently give it the
     * default bits, so any failed allocation meanwhile is an error */
    unsigned long mark = mk_json_mark();
    json_t *root = json_root;
    json_t *b = quant_block(p->qs);
    /* modules passed through quantized (compressed-tensors INT4 repacked,
     * MLX modules copied, gpt_oss's MXFP4 experts rewritten, all byte for
     * byte by plan.c): their own width, group and mode */
    for (size_t i = 0; i < p->nouts; i++) {
        const cv_out *o = &p->outs[i];
        if (!o->qpath)
            continue;
        json_t *e = json_object();
        json_object_set_new(e, "group_size", json_integer(o->qgroup));
        json_object_set_new(e, "bits", json_integer(o->qbits));
        if (o->qmode)
            json_object_set_new(e, "mode", json_string(o->qmode));
        json_object_set_new(b, o->qpath, e);
    }
    json_object_set_new(root, "quantization_config", json_deep_copy(b));
    json_object_set_new(root, "quantization", b);
    return mk_alloc_failures() == mark
               ? MK_OK
               : mk_err(MK_E_NOMEM, "no memory for the quantization block of %zu modules", p->qs->nmods);
}

mk_status cv_qplan_config_bare(const cv_plan *p, const char *dir) {
    unsigned long mark = mk_json_mark();
    json_t *root = json_object();
    mk_status cs = cv_qplan_config(p, root);
    char *js = cs == MK_OK ? mk_json_dumps_checked(root, JSON_INDENT(2), mark) : NULL;
    json_decref(root);
    char *path = mk_path_join(dir, "config.json");
    mk_status s = js && path ? mk_os_write_file_atomic(path, js, strlen(js))
                             : mk_err(MK_E_NOMEM, "%s: no memory to write config.json", dir);
    free(js);
    free(path);
    return s;
}

/* ----------------------------------------------------------- results */

static uint64_t numel_of(const cv_out *o) {
    uint64_t n = 1;
    for (int d = 0; d < o->ndim; d++)
        n *= (uint64_t)o->shape[d];
    return n;
}

static void totals(const cv_plan *p, mk_qjob *job) {
    mk_qjob_totals *t = &job->tot;
    double e2 = 0, r2 = 0;
    for (size_t i = 0; i < job->nres; i++) {
        const mk_qjob_module *m = &job->res[i];
        if (m->quantized) {
            t->n_quantized++;
            t->params_q += m->params;
            t->bytes_q += m->bytes;
        } else
            t->n_float++;
        t->params_lin += m->params;
        t->bytes_lin += m->bytes;
    }
    for (size_t m = 0; m < p->qs->nmods; m++) {
        const cv_qmod *q = p->qs->mods[m];
        if (q->err.n == (uint64_t)(q->rows * q->cols)) {
            e2 += q->err.err2;
            r2 += q->err.ref2;
        }
    }
    for (size_t i = 0; i < p->nouts; i++) {
        const cv_out *o = &p->outs[i];
        const cv_qmod *q = o->npc > 0 && o->pc[0].op == CV_OP_QUANT ? o->pc[0].q : NULL;
        t->bytes_all += o->nbytes;
        if (!q)
            t->params_all += numel_of(o);
        else if (o->pc[0].part == CV_T_MAIN)
            t->params_all += (uint64_t)(q->rows * q->cols);
    }
    t->bpw_q = t->params_q ? 8.0 * (double)t->bytes_q / (double)t->params_q : NAN;
    t->bpw_lin = t->params_lin ? 8.0 * (double)t->bytes_lin / (double)t->params_lin : NAN;
    t->bpw_all = t->params_all ? 8.0 * (double)t->bytes_all / (double)t->params_all : NAN;
    t->rel_err = r2 > 0 ? sqrt(e2 / r2) : NAN;
}

mk_status cv_qstate_export(const cv_plan *p, mk_qjob *job) {
    const cv_qstate *qs = p->qs;
    cv_qjob_clear_results(job);
    size_t n = qs->nmods + qs->nfl;
    job->res = mk_calloc(n ? n : 1, sizeof *job->res);
    if (!job->res)
        return mk_err(MK_E_NOMEM, "quantization results: no memory for %zu module records", n);
    size_t a = 0, f = 0;
    while (a < qs->nmods || f < qs->nfl) { /* merged in planning order */
        mk_qjob_module *r = &job->res[job->nres++];
        const char *note;
        if (f >= qs->nfl || (a < qs->nmods && qs->mods[a]->seq < qs->fl[f].seq)) {
            const cv_qmod *q = qs->mods[a++];
            r->path = cv_qjob_keep(job, q->path);
            r->source = cv_qjob_keep(job, q->source);
            r->quantized = true;
            r->mode = q->qp.mode;
            r->bits = q->qp.bits;
            r->group = q->qp.group;
            r->rows = q->rows;
            r->cols = q->cols;
            r->bytes = (uint64_t)q->rows * (q->rb[0] + q->rb[1] + q->rb[2]);
            bool full = q->err.n == (uint64_t)(q->rows * q->cols);
            r->rel_err = full ? mk_quant_err_rel(&q->err) : NAN;
            r->max_abs_err = full ? q->err.max_abs : NAN;
            r->nonfinite = q->nonfinite;
            r->note = cv_qjob_keep(job, note = q->ch.note);
        } else {
            const cv_qfloat *fl = &qs->fl[f++];
            r->path = cv_qjob_keep(job, fl->path);
            r->source = cv_qjob_keep(job, fl->source);
            r->rows = fl->rows;
            r->cols = fl->cols;
            r->bytes = fl->bytes;
            r->rel_err = r->max_abs_err = NAN;
            r->note = cv_qjob_keep(job, note = fl->note);
        }
        r->params = (uint64_t)(r->rows * r->cols);
        /* cv_qjob_keep returns NULL only for a NULL input or no memory: a
         * result must not lose its source or note silently */
        if (!r->path || !r->source || (!r->note && note))
            return mk_err(MK_E_NOMEM, "quantization results: no memory for the strings of module %zu of %zu",
                          job->nres, n);
    }
    totals(p, job);
    job->tot.n_calibrated = qs->n_cal;
    job->tot.n_uncalibrated = qs->n_uncal;
    return MK_OK;
}
