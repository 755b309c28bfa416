/* GGUF files read back (`moekit inspect x.gguf`): the header, every
 * key/value pair and every tensor's name, ggml type, dimensions and extent,
 * as a JSON report (include/moekit/inspect.h, mk_inspect_gguf).
 *
 * The file (docs/FORMATS.md section 6): magic "GGUF", u32 version (2 or
 * 3), u64 tensor count, u64 key/value count, the pairs (u64-length string
 * key, u32 value type, value; an array is u32 element type, u64 count,
 * elements), the tensor infos (name, u32 dimension count <= 4, u64
 * dimensions innermost first, u32 ggml type, u64 offset into the data
 * section), then the data section at the next multiple of
 * general.alignment (32 when absent). Only the header is read, through a
 * window that grows as the parse needs it; every length and count is
 * checked against what is left of the file before it is used, so a
 * truncated or hostile file gets an error naming the field and the offset,
 * never a read past the end. Arrays are summarized (count and first
 * values): a vocabulary of 150k strings is not copied into the report.
 * Problems that do not stop the parse (a tensor outside the file, an
 * unknown type, rows that are not whole blocks) are listed as the
 * safetensors report lists its problems. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/json_err.h"
#include "io/os.h"
#include "moekit/inspect.h"

#define GG_MAX_HEADER (512ull << 20) /* a header larger than this is refused */
#define GG_MAX_COUNT (1ull << 24)    /* tensors, pairs */
#define GG_SHOW 8                    /* array values shown */

typedef struct rd {
    const char *path;
    int fd;
    uint64_t fsize;
    unsigned char *buf; /* file bytes [0, have) */
    uint64_t have, pos;
} rd;

/* Make bytes [pos, pos + n) available. */
static mk_status need(rd *r, uint64_t n, const char *what) {
    if (n > r->fsize || r->pos > r->fsize - n)
        return mk_err(MK_E_FORMAT, "%s: %s at offset %llu needs %llu bytes, past the end of the file (%llu bytes)",
                      r->path, what, (unsigned long long)r->pos, (unsigned long long)n,
                      (unsigned long long)r->fsize);
    uint64_t end = r->pos + n;
    if (end <= r->have)
        return MK_OK;
    if (end > GG_MAX_HEADER)
        return mk_err(MK_E_UNSUPPORTED, "%s: %s at offset %llu: the header would exceed %llu MiB", r->path, what,
                      (unsigned long long)r->pos, GG_MAX_HEADER >> 20);
    uint64_t want = r->have ? r->have : 65536;
    while (want < end)
        want *= 2;
    if (want > r->fsize)
        want = r->fsize;
    unsigned char *nb = mk_realloc(r->buf, (size_t)want);
    if (!nb)
        return mk_err(MK_E_NOMEM, "%s: no memory for %llu bytes of the GGUF header", r->path,
                      (unsigned long long)want);
    r->buf = nb;
    MK_TRY(mk_os_pread_full(r->fd, r->buf + r->have, (size_t)(want - r->have), r->have, r->path));
    r->have = want;
    return MK_OK;
}

static mk_status get(rd *r, void *out, uint64_t n, const char *what) {
    MK_TRY(need(r, n, what));
    memcpy(out, r->buf + r->pos, (size_t)n);
    r->pos += n;
    return MK_OK;
}
static mk_status get_u32(rd *r, uint32_t *v, const char *what) { return get(r, v, 4, what); }
static mk_status get_u64(rd *r, uint64_t *v, const char *what) { return get(r, v, 8, what); }

/* A string as a JSON string; one that is not UTF-8 or holds a NUL as
 * "<N bytes, not UTF-8 text>". */
static mk_status get_str(rd *r, json_t **out, const char *what) {
    uint64_t n;
    MK_TRY(get_u64(r, &n, what));
    MK_TRY(need(r, n, what));
    const char *b = (const char *)r->buf + r->pos;
    /* a NUL inside is refused too: jansson's reader (the CLI's) rejects "\u0000" */
    *out = memchr(b, 0, (size_t)n) ? NULL : json_stringn(b, (size_t)n);
    if (!*out)
        *out = json_sprintf("<%llu bytes, not UTF-8 text>", (unsigned long long)n);
    r->pos += n;
    return *out ? MK_OK : mk_err(MK_E_NOMEM, "%s: no memory for %s (%llu bytes)", r->path, what,
                                 (unsigned long long)n);
}

enum { T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64, T_N };
static const char *const g_vt[T_N] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64",
                                      "i64", "f64"};
static const unsigned g_vsize[T_N] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

/* One scalar of value type t (not an array) as JSON, or skipped (*out NULL
 * when keep is false). */
static mk_status get_value(rd *r, uint32_t t, bool keep, json_t **out, const char *what) {
    *out = NULL;
    if (t == T_STR) {
        json_t *s;
        MK_TRY(get_str(r, &s, what));
        if (keep)
            *out = s;
        else
            json_decref(s);
        return MK_OK;
    }
    unsigned char b[8] = {0};
    MK_TRY(get(r, b, g_vsize[t], what));
    if (!keep)
        return MK_OK;
    int64_t i = 0;
    uint64_t u = 0;
    switch (t) {
    case T_U8: *out = json_integer(b[0]); break;
    case T_I8: *out = json_integer((int8_t)b[0]); break;
    case T_BOOL: *out = json_boolean(b[0] != 0); break;
    case T_U16: { uint16_t v; memcpy(&v, b, 2); *out = json_integer(v); break; }
    case T_I16: { int16_t v; memcpy(&v, b, 2); *out = json_integer(v); break; }
    case T_U32: { uint32_t v; memcpy(&v, b, 4); *out = json_integer(v); break; }
    case T_I32: { int32_t v; memcpy(&v, b, 4); *out = json_integer(v); break; }
    case T_F32: { float v; memcpy(&v, b, 4); *out = json_real(v); break; }
    case T_F64: { double v; memcpy(&v, b, 8); *out = json_real(v); break; }
    case T_I64: memcpy(&i, b, 8); *out = json_integer(i); break;
    case T_U64: memcpy(&u, b, 8); *out = u > (uint64_t)INT64_MAX ? json_real((double)u) : json_integer((json_int_t)u); break;
    }
    /* json_real of a NaN or infinity fails: such a value is shown as a string */
    if (!*out && (t == T_F32 || t == T_F64))
        *out = json_string("non-finite");
    return *out ? MK_OK : mk_err(MK_E_NOMEM, "%s: no memory for %s", r->path, what);
}

/* ggml's types: name, values per block, bytes per block (0: size unknown
 * to moekit, the tensor is listed without its bytes). */
typedef struct gtype {
    int id;
    const char *name;
    int blk, bytes;
} gtype;
static const gtype g_types[] = {
    {0, "F32", 1, 4},        {1, "F16", 1, 2},        {2, "Q4_0", 32, 18},     {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},     {7, "Q5_1", 32, 24},     {8, "Q8_0", 32, 34},     {9, "Q8_1", 32, 36},
    {10, "Q2_K", 256, 84},   {11, "Q3_K", 256, 110},  {12, "Q4_K", 256, 144},  {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},  {15, "Q8_K", 256, 292},  {16, "IQ2_XXS", 256, 0}, {17, "IQ2_XS", 256, 0},
    {18, "IQ3_XXS", 256, 0}, {19, "IQ1_S", 256, 0},   {20, "IQ4_NL", 32, 18},  {21, "IQ3_S", 256, 0},
    {22, "IQ2_S", 256, 0},   {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},       {25, "I16", 1, 2},
    {26, "I32", 1, 4},       {27, "I64", 1, 8},       {28, "F64", 1, 8},       {29, "IQ1_M", 256, 0},
    {30, "BF16", 1, 2},      {34, "TQ1_0", 256, 0},   {35, "TQ2_0", 256, 0},   {39, "MXFP4", 32, 17},
};
static const gtype *gtype_of(uint32_t id) {
    for (size_t i = 0; i < sizeof g_types / sizeof g_types[0]; i++)
        if ((uint32_t)g_types[i].id == id)
            return &g_types[i];
    return NULL;
}

static void problem(json_t *pr, const char *code, const char *tensor, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void problem(json_t *pr, const char *code, const char *tensor, const char *fmt, ...) {
    char cause[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cause, sizeof cause, fmt, ap);
    va_end(ap);
    json_array_append_new(pr, json_pack("{s:s,s:s,s:s}", "code", code, "tensor", tensor, "cause", cause));
}

static mk_status parse(rd *r, json_t *rep) {
    char magic[4];
    MK_TRY(get(r, magic, 4, "the magic"));
    if (memcmp(magic, "GGUF", 4) != 0)
        return mk_err(MK_E_FORMAT, "%s: not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")", r->path,
                      (unsigned char)magic[0], (unsigned char)magic[1], (unsigned char)magic[2],
                      (unsigned char)magic[3]);
    uint32_t ver;
    uint64_t nt, nkv;
    MK_TRY(get_u32(r, &ver, "the version"));
    if (ver != 2 && ver != 3)
        return mk_err(MK_E_UNSUPPORTED, "%s: GGUF version %u (moekit reads versions 2 and 3)", r->path, ver);
    MK_TRY(get_u64(r, &nt, "the tensor count"));
    MK_TRY(get_u64(r, &nkv, "the key/value count"));
    if (nt > GG_MAX_COUNT || nkv > GG_MAX_COUNT)
        return mk_err(MK_E_FORMAT, "%s: %llu tensors and %llu key/value pairs: more than %llu", r->path,
                      (unsigned long long)nt, (unsigned long long)nkv, GG_MAX_COUNT);
    json_object_set_new(rep, "version", json_integer(ver));
    json_t *kv = json_object(), *pr = json_array();
    json_object_set_new(rep, "kv", kv);
    json_object_set_new(rep, "problems", pr);
    uint64_t align = 32;
    char what[160];
    for (uint64_t i = 0; i < nkv; i++) {
        snprintf(what, sizeof what, "key/value pair %llu's key", (unsigned long long)i);
        json_t *k;
        MK_TRY(get_str(r, &k, what));
        const char *key = json_string_value(k);
        snprintf(what, sizeof what, "key '%.80s'", key);
        uint32_t t;
        mk_status st = get_u32(r, &t, what);
        if (st == MK_OK && t >= T_N)
            st = mk_err(MK_E_FORMAT, "%s: key '%.80s': value type %u (expected 0..12)", r->path, key, t);
        json_t *val = NULL;
        if (st == MK_OK && t != T_ARR) {
            st = get_value(r, t, true, &val, what);
            if (st == MK_OK && strcmp(key, "general.alignment") == 0 && t == T_U32) {
                align = (uint64_t)json_integer_value(val);
                if (align == 0 || (align & (align - 1)))
                    st = mk_err(MK_E_FORMAT, "%s: general.alignment %llu is not a power of two", r->path,
                                (unsigned long long)align);
            }
        } else if (st == MK_OK) {
            uint32_t et = 0;
            uint64_t n = 0;
            st = get_u32(r, &et, what);
            if (st == MK_OK)
                st = get_u64(r, &n, what);
            if (st == MK_OK && (et >= T_N || et == T_ARR))
                st = mk_err(MK_E_FORMAT, "%s: key '%.80s': array of value type %u (expected a scalar type 0..12 but "
                            "9)", r->path, key, et);
            /* fixed-size elements: the whole array must fit in what is left */
            if (st == MK_OK && et != T_STR && n > (r->fsize - r->pos) / g_vsize[et])
                st = mk_err(MK_E_FORMAT, "%s: key '%.80s': %llu elements of %s do not fit in the file", r->path, key,
                            (unsigned long long)n, g_vt[et]);
            json_t *head = st == MK_OK ? json_array() : NULL;
            if (st == MK_OK)
                val = json_pack("{s:s,s:I,s:o}", "array", g_vt[et < T_N ? et : 0], "count", (json_int_t)n, "head", head);
            if (st == MK_OK && (!head || !val))
                st = mk_err(MK_E_NOMEM, "%s: no memory for key '%.80s'", r->path, key);
            if (st == MK_OK && et != T_STR && n > GG_SHOW) { /* shown values, then skip the rest in one step */
                for (uint64_t j = 0; st == MK_OK && j < GG_SHOW; j++) {
                    json_t *e;
                    st = get_value(r, et, true, &e, what);
                    if (st == MK_OK)
                        json_array_append_new(head, e);
                }
                if (st == MK_OK)
                    r->pos += (n - GG_SHOW) * g_vsize[et]; /* checked to fit above */
            } else {
                for (uint64_t j = 0; st == MK_OK && j < n; j++) {
                    json_t *e;
                    st = get_value(r, et, j < GG_SHOW, &e, what);
                    if (st == MK_OK && e)
                        json_array_append_new(head, e);
                }
            }
        }
        if (st == MK_OK && json_object_get(kv, key))
            st = mk_err(MK_E_FORMAT, "%s: key '%.80s' appears twice", r->path, key);
        if (st == MK_OK && val)
            json_object_set_new(kv, key, json_pack("{s:s,s:o}", "type", g_vt[t], "value", val));
        else
            json_decref(val);
        json_decref(k);
        MK_TRY(st);
    }
    json_t *arch = json_object_get(json_object_get(kv, "general.architecture"), "value");
    json_object_set(rep, "architecture", json_is_string(arch) ? arch : json_null());
    json_t *tens = json_array(), *by = json_object();
    json_object_set_new(rep, "tensors", tens);
    uint64_t *off = mk_calloc(nt ? nt : 1, sizeof *off), *len = mk_calloc(nt ? nt : 1, sizeof *len);
    if (!off || !len) {
        free(off);
        free(len);
        return mk_err(MK_E_NOMEM, "%s: no memory for %llu tensor extents", r->path, (unsigned long long)nt);
    }
    mk_status st = MK_OK;
    uint64_t params = 0, bytes = 0;
    for (uint64_t i = 0; st == MK_OK && i < nt; i++) {
        snprintf(what, sizeof what, "tensor %llu's name", (unsigned long long)i);
        json_t *name;
        st = get_str(r, &name, what);
        if (st != MK_OK)
            break;
        const char *nm = json_string_value(name);
        snprintf(what, sizeof what, "tensor '%.80s'", nm);
        uint32_t nd, ty;
        uint64_t ne[4] = {1, 1, 1, 1}, n = 1;
        st = get_u32(r, &nd, what);
        if (st == MK_OK && (nd == 0 || nd > 4))
            st = mk_err(MK_E_FORMAT, "%s: tensor '%.80s': %u dimensions (expected 1 to 4)", r->path, nm, nd);
        json_t *shape = json_array();
        for (uint32_t d = 0; st == MK_OK && d < nd; d++) {
            st = get_u64(r, &ne[d], what);
            if (st == MK_OK && (ne[d] == 0 || ne[d] > (1ull << 40) || n > (1ull << 62) / ne[d]))
                st = mk_err(MK_E_FORMAT, "%s: tensor '%.80s': dimension %u is %llu", r->path, nm, d,
                            (unsigned long long)ne[d]);
            if (st == MK_OK) {
                n *= ne[d];
                json_array_append_new(shape, json_integer((json_int_t)ne[d]));
            }
        }
        if (st == MK_OK)
            st = get_u32(r, &ty, what);
        if (st == MK_OK)
            st = get_u64(r, &off[i], what);
        if (st != MK_OK) {
            json_decref(name);
            json_decref(shape);
            break;
        }
        const gtype *g = gtype_of(ty);
        char tname[24];
        snprintf(tname, sizeof tname, "%s", g ? g->name : "?");
        if (!g)
            snprintf(tname, sizeof tname, "type %u", ty);
        uint64_t nb = 0;
        if (!g)
            problem(pr, "unknown_type", nm, "ggml type %u is unknown to moekit: its size is not checked", ty);
        else if (ne[0] % (uint64_t)g->blk)
            problem(pr, "partial_block", nm, "rows of %llu values are not whole %s blocks of %d",
                    (unsigned long long)ne[0], g->name, g->blk);
        else if (g->bytes)
            nb = n / (uint64_t)g->blk * (uint64_t)g->bytes;
        len[i] = nb;
        params += n;
        bytes += nb;
        json_t *bt = json_object_get(by, tname);
        if (!bt) {
            bt = json_pack("{s:I,s:I,s:I}", "tensors", (json_int_t)0, "params", (json_int_t)0, "bytes", (json_int_t)0);
            json_object_set_new(by, tname, bt);
        }
        json_object_set_new(bt, "tensors", json_integer(json_integer_value(json_object_get(bt, "tensors")) + 1));
        json_object_set_new(bt, "params", json_integer(json_integer_value(json_object_get(bt, "params")) +
                                                       (json_int_t)n));
        json_object_set_new(bt, "bytes", json_integer(json_integer_value(json_object_get(bt, "bytes")) +
                                                      (json_int_t)nb));
        json_array_append_new(tens, json_pack("{s:o,s:s,s:o,s:I,s:I}", "name", name, "type", tname, "ne", shape,
                                              "offset", (json_int_t)off[i], "bytes", (json_int_t)nb));
    }
    if (st == MK_OK) {
        uint64_t data = (r->pos + align - 1) / align * align;
        json_object_set_new(rep, "alignment", json_integer((json_int_t)align));
        json_object_set_new(rep, "data_offset", json_integer((json_int_t)data));
        size_t i;
        json_t *t;
        json_array_foreach(tens, i, t) {
            const char *nm = json_string_value(json_object_get(t, "name"));
            if (off[i] % align)
                problem(pr, "misaligned", nm, "offset %llu is not a multiple of the alignment %llu",
                        (unsigned long long)off[i], (unsigned long long)align);
            if (data > r->fsize || off[i] > r->fsize - data || len[i] > r->fsize - data - off[i])
                problem(pr, "outside_file", nm, "bytes [%llu, %llu) of the data section (at %llu) pass the end of "
                        "the file (%llu bytes)", (unsigned long long)off[i], (unsigned long long)(off[i] + len[i]),
                        (unsigned long long)data, (unsigned long long)r->fsize);
        }
        json_object_set_new(rep, "totals", json_pack("{s:I,s:I,s:I,s:o}", "tensors", (json_int_t)nt, "params",
                                                     (json_int_t)params, "bytes", (json_int_t)bytes, "by_type", by));
    } else {
        json_decref(by);
    }
    free(off);
    free(len);
    return st;
}

mk_status mk_inspect_gguf(const char *path, char **json_out) {
    *json_out = NULL;
    rd r = {.path = path, .fd = -1};
    r.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r.fd < 0)
        return mk_err(MK_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(r.fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(r.fd);
        return mk_err(MK_E_IO, "%s: not a regular file", path);
    }
    r.fsize = (uint64_t)sb.st_size;
    unsigned long mark = mk_json_mark();
    json_t *rep = json_pack("{s:s,s:s,s:I}", "path", path, "format", "gguf", "file_bytes", (json_int_t)r.fsize);
    mk_status st = rep ? parse(&r, rep) : mk_err(MK_E_NOMEM, "%s: no memory for the report", path);
    if (st == MK_OK) {
        *json_out = mk_json_dumps_checked(rep, JSON_INDENT(2) | JSON_PRESERVE_ORDER, mark);
        if (!*json_out)
            st = mk_err(MK_E_NOMEM, "%s: no memory for the inspection report", path);
    }
    json_decref(rep);
    free(r.buf);
    close(r.fd);
    return st;
}
