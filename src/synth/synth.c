/* Synthetic checkpoints, part 2: values and streaming output.
 *
 * Every value is a pure function of (seed, tensor, element index):
 * splitmix64 of a per-tensor key plus the index (a counter-based generator),
 * so a chunk anywhere in a 10 GB tensor is computed without touching what
 * comes before it, chunks are produced by worker threads in any order, and
 * the same arguments always give the same bytes. Normal variates are the
 * sum of the four 16-bit lanes of one 64-bit draw (Irwin-Hall, variance
 * matched; tails end at +-3.5 sigma, which is all a benchmark needs).
 * FP8 scales and INT4 scales / zero points are drawn per block / group from
 * the weight's key, so a weight and its companions agree. Output goes
 * through one safetensors writer (sharded, with index) fed in plan order by
 * the convert pipeline (pipe.c), so memory is a few chunks at any size.
 * The checkpoint is built in DIR.partial/ and swapped in at the end
 * (io/outdir.c), so a full disk or a kill never costs the checkpoint
 * already in DIR and leaves nothing half-written inside it. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert/conv_impl.h"
#include "core/alloc.h"
#include "core/json_err.h"
#include "io/os.h"
#include "io/outdir.h"
#include "io/outpath.h"
#include "synth/synth_impl.h"

#define SY_CHUNK (1u << 20) /* elements per work item */

void mk_synth_opts_init(mk_synth_opts *o) {
    memset(o, 0, sizeof *o);
    o->arch = "qwen3_moe";
    o->preset = "tiny";
    o->format = MK_SYNTH_BF16;
}

static inline uint64_t mix64(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* i-th draw of the stream `key` (splitmix64 at counter i). */
static inline uint64_t draw(uint64_t key, uint64_t i) { return mix64(key + (i + 1) * 0x9e3779b97f4a7c15ull); }

static inline float normal(uint64_t r) {
    uint32_t s = (uint32_t)(r & 0xffff) + (uint32_t)((r >> 16) & 0xffff) + (uint32_t)((r >> 32) & 0xffff) +
                 (uint32_t)(r >> 48);
    return ((float)s - 131070.0f) * (1.0f / 37837.23f);
}

static inline float uniform(uint64_t r) { return (float)(r >> 40) * (1.0f / 16777216.0f); }

/* Round to E4M3FN (nearest even, saturating at 448) without a search. */
static uint8_t to_e4m3(float f) {
    uint8_t sign = f < 0 ? 0x80 : 0;
    float a = fabsf(f);
    if (!(a < 448.0f))
        return sign | 0x7e;
    if (a < 0.015625f) { /* subnormal: multiples of 2^-9 */
        int m = (int)nearbyintf(a * 512.0f);
        return sign | (uint8_t)m; /* m == 8 is 2^-6, the first normal: same code */
    }
    union { float f; uint32_t u; } v = {a};
    int e = (int)((v.u >> 23) & 0xff) - 127;
    uint32_t mant = v.u & 0x7fffffu, keep = mant >> 20, rest = mant & 0xfffffu;
    if (rest > 0x80000u || (rest == 0x80000u && (keep & 1u)))
        keep++;
    if (keep == 8) {
        keep = 0;
        e++;
    }
    uint32_t code = ((uint32_t)(e + 7) << 3) | keep;
    return sign | (uint8_t)(code > 0x7e ? 0x7e : code);
}

/* Nearest E2M1 code (sign bit 3; magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6). */
static uint8_t to_e2m1(float f) {
    static const float mid[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
    float a = fabsf(f);
    uint8_t m = 0;
    while (m < 7 && a > mid[m])
        m++;
    return (uint8_t)((f < 0 ? 8 : 0) | m);
}

static float value(const sy_tensor *t, uint64_t i) {
    uint64_t r = draw(t->key, i);
    switch (t->init) {
    case SY_LIN: return 0.02f * normal(r);
    case SY_NORM1: return 1.0f + 0.02f * normal(r);
    case SY_NORM0: return 0.05f * normal(r);
    case SY_ALOG: return logf(1.0f + 15.0f * uniform(r));
    case SY_DT: return 1.0f + 0.1f * normal(r);
    case SY_CONV: return 0.2f * normal(r);
    case SY_SMALL: return 0.01f * normal(r);
    default: return 0.0f;
    }
}

/* Scale of FP8 block b / INT4 group g: its own stream, salted. */
static float block_scale(uint64_t key, uint64_t b, float base) {
    return base * (1.0f + 0.25f * (2.0f * uniform(draw(key ^ 0x5ca1e5ull, b)) - 1.0f));
}

/* Unsigned INT4 code of element j of row r. */
static uint32_t int4_code(const sy_tensor *t, int64_t r, int64_t j) {
    float z = normal(draw(t->key, (uint64_t)(r * t->wcols + j)));
    int q = (int)nearbyintf(z * 2.2f) + 8;
    return (uint32_t)(q < 0 ? 0 : q > 15 ? 15 : q);
}

/* Elements [e0, e0+n) of tensor t into out (its dtype). */
static void generate(const sy_tensor *t, uint64_t e0, uint64_t n, unsigned char *out) {
    switch (t->init) {
    case SY_FP8W:
        for (uint64_t i = 0; i < n; i++)
            out[i] = to_e4m3(64.0f * normal(draw(t->key, e0 + i)));
        return;
    case SY_FP8S: /* element i = block i of the (matrices x gr x gc) grid */
        for (uint64_t i = 0; i < n; i++) {
            float s = block_scale(t->key, e0 + i, 0.02f / 64.0f);
            memcpy(out + 4 * i, &s, 4);
        }
        return;
    case SY_CTW: { /* I32 word w of row r packs columns 8w .. 8w+7, LSB first */
        int64_t wpr = (t->wcols + 7) / 8;
        for (uint64_t i = 0; i < n; i++) {
            int64_t r = (int64_t)(e0 + i) / wpr, w = (int64_t)(e0 + i) % wpr;
            uint32_t word = 0;
            for (int k = 0; k < 8 && 8 * w + k < t->wcols; k++)
                word |= int4_code(t, r, 8 * w + k) << (4 * k);
            memcpy(out + 4 * i, &word, 4);
        }
        return;
    }
    case SY_CTS:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h = mk_f32_to_bf16(block_scale(t->key, e0 + i, 0.02f / 2.2f));
            memcpy(out + 2 * i, &h, 2);
        }
        return;
    case SY_CTSHAPE: {
        int64_t v[2] = {t->wrows, t->wcols};
        for (uint64_t i = 0; i < n; i++)
            memcpy(out + 8 * i, &v[e0 + i], 8);
        return;
    }
    case SY_MXW: /* byte = (code 2i+1) << 4 | code 2i */
        for (uint64_t i = 0; i < n; i++)
            out[i] = (uint8_t)(to_e2m1(1.5f * normal(draw(t->key, 2 * (e0 + i)))) |
                               to_e2m1(1.5f * normal(draw(t->key, 2 * (e0 + i) + 1))) << 4);
        return;
    case SY_MXS: /* E8M0 2^(s - 127), s in 119..121 */
        for (uint64_t i = 0; i < n; i++)
            out[i] = (uint8_t)(119 + draw(t->key ^ 0x5ca1e5ull, e0 + i) % 3);
        return;
    case SY_MXF: { /* element (e, i, o) of [E, in, out] = code (e, o, i) x 2^(scale (e, o, i/32) - 127) */
        static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
        uint64_t in = (uint64_t)t->wcols, outd = (uint64_t)t->wrows;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t g = e0 + i, e = g / (in * outd), r = g % (in * outd), c = r / outd, o = r % outd;
            uint64_t row = e * outd + o;
            uint8_t code = to_e2m1(1.5f * normal(draw(t->key, row * in + c)));
            int sc = 119 + (int)(draw(t->key2 ^ 0x5ca1e5ull, row * (in / 32) + c / 32) % 3);
            float v = ldexpf(mag[code & 7], sc - 127) * (code & 8 ? -1.0f : 1.0f);
            uint16_t h = mk_f32_to_bf16(v);
            memcpy(out + 2 * i, &h, 2);
        }
        return;
    }
    case SY_CTZP: { /* word (rg, g) packs rows 8rg .. 8rg+7 of group g */
        int64_t ng = t->wcols / 32;
        for (uint64_t i = 0; i < n; i++) {
            int64_t rg = (int64_t)(e0 + i) / ng, g = (int64_t)(e0 + i) % ng;
            uint32_t word = 0;
            for (int k = 0; k < 8 && 8 * rg + k < t->wrows; k++)
                word |= (7u + (uint32_t)(draw(t->key ^ 0x2e50ull, (uint64_t)((8 * rg + k) * ng + g)) % 3)) << (4 * k);
            memcpy(out + 4 * i, &word, 4);
        }
        return;
    }
    default:
        break;
    }
    if (t->dt == MK_DT_F32) {
        for (uint64_t i = 0; i < n; i++) {
            float v = value(t, e0 + i);
            memcpy(out + 4 * i, &v, 4);
        }
        return;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint16_t h = mk_f32_to_bf16(value(t, e0 + i));
        memcpy(out + 2 * i, &h, 2);
    }
}

/* ------------------------------------------------------------ writing */

typedef struct sy_item {
    const sy_tensor *t;
    uint64_t e0, n;
} sy_item;

typedef struct sy_run {
    mk_stw *w;
    sy_item *items;
    size_t nitems;
} sy_run;

static bool sy_parallel(void *ctx, size_t i) {
    (void)ctx;
    (void)i;
    return true;
}

static mk_status sy_produce(void *ctx, size_t i, void *scratch, void *out, size_t *len) {
    const sy_item *it = &((sy_run *)ctx)->items[i];
    (void)scratch;
    generate(it->t, it->e0, it->n, out);
    *len = (size_t)(it->n * cv_esize(it->t->dt));
    return MK_OK;
}

static mk_status sy_consume(void *ctx, size_t i, const void *out, size_t len) {
    (void)i;
    return mk_stw_write(((sy_run *)ctx)->w, out, len);
}

/* DIR may be replaced: a new path, an empty directory, or (force) a
 * checkpoint or moekit output; never anything else (mk_paths_check_dir). */
static mk_status check_dir(const char *dir, bool *force) {
    if (mk_os_dir_empty(dir))
        *force = true; /* an empty directory holds nothing to lose */
    mk_paths p;
    mk_paths_init(&p);
    mk_status s = mk_paths_check_dir(&p, dir, *force);
    mk_paths_free(&p);
    if (s == MK_E_EXISTS)
        s = mk_err(MK_E_EXISTS, "%s already exists (use --force to replace it)", dir);
    return s;
}

static mk_status write_tensors(const char *dir, const sy_list *l, const mk_synth_opts *o) {
    mk_stw_opts wo = {.shard_size = o->shard_size ? o->shard_size : (5ull << 30), .force = true, .basename = "model"};
    sy_run r = {NULL, NULL, 0};
    cv_map *byname = cv_map_new(l->n);
    mk_status s = byname ? mk_stw_create(dir, &wo, &r.w)
                         : mk_err(MK_E_NOMEM, "%s: no memory for an index of %zu tensors", dir, l->n);
    for (size_t i = 0; s == MK_OK && i < l->n; i++) {
        s = mk_stw_add(r.w, l->t[i].name, l->t[i].dt, l->t[i].ndim, l->t[i].shape);
        if (s == MK_OK && !cv_map_put(byname, l->t[i].name, &l->t[i]))
            s = mk_err(MK_E_NOMEM, "%s: no memory to index tensor '%s'", dir, l->t[i].name);
    }
    if (s == MK_OK)
        s = mk_stw_begin_data(r.w);
    size_t cap = 0;
    for (size_t i = 0; s == MK_OK && i < mk_stw_count(r.w); i++) {
        const sy_tensor *t = cv_map_get(byname, mk_stw_name(r.w, i));
        uint64_t numel = mk_stw_info(r.w, i)->numel;
        for (uint64_t e0 = 0; s == MK_OK && e0 < numel; e0 += SY_CHUNK) {
            if (r.nitems == cap) {
                cap = cap ? 2 * cap : 4096;
                sy_item *ni = mk_realloc(r.items, cap * sizeof *ni);
                if (!ni) {
                    s = mk_err(MK_E_NOMEM, "%s: no memory for a work list of %zu chunks", dir, cap);
                    break;
                }
                r.items = ni;
            }
            r.items[r.nitems++] = (sy_item){t, e0, numel - e0 < SY_CHUNK ? numel - e0 : SY_CHUNK};
        }
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = o->threads > 0 ? o->threads : (ncpu > 0 ? (int)ncpu : 1);
    if (s == MK_OK) {
        cv_pipe_ops ops = {sy_parallel, sy_produce, sy_consume};
        s = cv_pipe_run(threads, (size_t)threads + 2, (size_t)SY_CHUNK * 8, 0, r.nitems, &ops, &r);
    }
    if (s == MK_OK)
        s = mk_stw_finish(r.w);
    mk_stw_free(r.w);
    free(r.items);
    cv_map_free(byname);
    return s;
}

mk_status mk_synth_run(const char *dir, const mk_synth_opts *o) {
    sy_cfg c;
    sy_list l;
    memset(&l, 0, sizeof l);
    MK_TRY(sy_cfg_resolve(o, &c));
    if (o->list_only) {
        mk_status s = sy_tensors(&c, o, &l);
        for (size_t i = 0; s == MK_OK && i < l.n; i++) {
            char b[128];
            printf("%s %s %s\n", l.t[i].name, mk_dtype_name(l.t[i].dt), cv_shape_str(b, sizeof b, l.t[i].ndim, l.t[i].shape));
        }
        sy_list_free(&l);
        return s;
    }
    bool force = o->force;
    mk_outdir od = {.lock_fd = -1};
    mk_status s = check_dir(dir, &force);
    if (s == MK_OK)
        s = sy_tensors(&c, o, &l);
    if (s == MK_OK)
        s = mk_outdir_open(&od, dir, force, "synth");
    if (s == MK_OK)
        s = mk_outdir_clear(&od); /* a killed run's leftovers: synth does not resume */
    uint64_t total = 0;
    for (size_t i = 0; i < l.n; i++) {
        uint64_t nb, numel = 1;
        for (int d = 0; d < l.t[i].ndim; d++)
            numel *= (uint64_t)l.t[i].shape[d];
        if (mk_dtype_nbytes(l.t[i].dt, numel, &nb))
            total += nb;
    }
    if (s == MK_OK && !o->quiet)
        fprintf(stderr, "synth: %s %s: %d layers, %d experts, vocab %d, %zu tensors, %.2f GB\n", o->arch,
                o->preset ? o->preset : "tiny", c.L, c.E, c.V, l.n, (double)total / 1e9);
    if (s == MK_OK)
        s = write_tensors(od.partial, &l, o);
    if (s == MK_OK) {
        /* jansson reports running out of memory only through return values:
         * a key that failed to be set would be missing from the config */
        unsigned long mark = mk_json_mark();
        json_t *cfg = sy_config_json(&c, o);
        char *js = cfg ? mk_json_dumps_checked(cfg, JSON_INDENT(2), mark) : NULL;
        char *p = mk_path_join(od.partial, "config.json");
        s = js && p ? mk_os_write_file_atomic(p, js, strlen(js))
                    : mk_err(MK_E_NOMEM, "%s: no memory to write config.json", od.partial);
        free(p);
        free(js);
        json_decref(cfg);
    }
    if (s == MK_OK)
        s = mk_outdir_commit(&od, NULL);
    if (s != MK_OK && od.lock_fd >= 0) {
        /* the old DIR is untouched; synth does not resume */
        char msg[1800];
        snprintf(msg, sizeof msg, "%s", mk_err_msg());
        mk_err(s, "%s (partial output %s removed; %s left as it was)", msg, od.partial, dir);
        mk_outdir_abort(&od);
    }
    mk_outdir_close(&od);
    sy_list_free(&l);
    return s;
}
