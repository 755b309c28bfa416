/* Streaming safetensors writer: round trips through the strict reader,
 * HF ordering and padding, sharding with an index, refusal to overwrite,
 * misuse, and SQLite-style fault loops (ENOSPC at every pwrite, EIO at
 * every fsync, failure at every rename, short writes): each run ends in
 * success or the expected error, and a failed run leaves nothing behind.
 *
 * Divisions: random checkpoint specs -> write drivers (chunked, per tensor,
 * copy_from_fd) -> layout checks -> tests -> fault loops. */
#include <errno.h>
#include <jansson.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "io/os.h"
#include "mk_test_util.h"
#include "moekit/st.h"
#include "st_build.h"

/* ------------------------------------------------------------------ specs */

typedef struct tspec {
    char name[64];
    mk_dtype dt;
    int ndim;
    int64_t shape[4];
    uint64_t nbytes;
    unsigned char *data;
} tspec;

typedef struct cspec {
    tspec *t;
    size_t n;
} cspec;

static void cspec_free(cspec *c) {
    for (size_t i = 0; i < c->n; i++)
        free(c->t[i].data);
    free(c->t);
    c->t = NULL;
    c->n = 0;
}

static void add_spec(cspec *c, const char *name, mk_dtype dt, int ndim, const int64_t *shape,
                     uint64_t *seed) {
    c->t = realloc(c->t, (c->n + 1) * sizeof *c->t);
    assert_non_null(c->t);
    tspec *t = &c->t[c->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dt = dt;
    t->ndim = ndim;
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        numel *= (uint64_t)shape[i];
    }
    assert_true(mk_dtype_nbytes(dt, numel, &t->nbytes));
    t->data = malloc(t->nbytes ? t->nbytes : 1);
    assert_non_null(t->data);
    stb_fill(seed, t->data, t->nbytes);
}

/* n tensors of random dtypes (every one, F4/F6 included), 0-3 dims, some
 * scalars and empty tensors, odd byte sizes; plus `big` bytes of U8 when
 * nonzero (to cross the writer's 8 MiB buffer). */
static void random_spec(cspec *c, size_t n, uint64_t seed, uint64_t big) {
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < n; i++) {
        mk_dtype dt = (mk_dtype)(stb_rand(&seed) % MK_DT_COUNT);
        int ndim = (int)(stb_rand(&seed) % 4);
        int64_t sh[4];
        for (int d = 0; d < ndim; d++)
            sh[d] = (int64_t)(stb_rand(&seed) % 9) + (i % 11 == 5 ? 0 : 1);
        unsigned bits = mk_dtype_info(dt)->bits;
        if (bits < 8) { /* sub-byte: keep numel a multiple of 8/gcd */
            if (ndim == 0)
                sh[ndim++] = 4;
            else
                sh[ndim - 1] *= 4;
        }
        char nm[64];
        snprintf(nm, sizeof nm, "model.layers.%zu.%s.w%llu", i % 7, mk_dtype_name(dt),
                 (unsigned long long)(stb_rand(&seed) % 1000));
        /* names must be unique */
        snprintf(nm + strlen(nm), sizeof nm - strlen(nm), ".%zu", i);
        add_spec(c, nm, dt, ndim, sh, &seed);
    }
    if (big) {
        int64_t sh[1] = {(int64_t)big};
        add_spec(c, "zz.big", MK_DT_U8, 1, sh, &seed);
    }
}

static const tspec *spec_find(const cspec *c, const char *name) {
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->t[i].name, name))
            return &c->t[i];
    return NULL;
}

/* ---------------------------------------------------------- write drivers */

enum { W_CHUNKS, W_WHOLE, W_PER_TENSOR, W_COPY_FD, W_COPY_MEMFD, W_NMODES };

/* The plan-order byte stream of all tensors (what the writer expects). */
static unsigned char *plan_stream(const mk_stw *w, const cspec *c, size_t *len) {
    size_t total = 0;
    for (size_t i = 0; i < mk_stw_count(w); i++)
        total += mk_stw_info(w, i)->nbytes;
    unsigned char *s = malloc(total ? total : 1), *p = s;
    assert_non_null(s);
    for (size_t i = 0; i < mk_stw_count(w); i++) {
        const tspec *t = spec_find(c, mk_stw_name(w, i));
        assert_non_null(t);
        assert_int_equal(mk_stw_info(w, i)->nbytes, t->nbytes);
        memcpy(p, t->data, t->nbytes);
        p += t->nbytes;
    }
    *len = total;
    return s;
}

/* Write checkpoint `c` into `dir`. Returns the first failing status (the
 * writer is always freed). */
static mk_status write_ckpt(const char *dir, const cspec *c, const mk_stw_opts *o, int mode,
                            uint64_t seed) {
    mk_stw *w = NULL;
    mk_status s = mk_stw_create(dir, o, &w);
    if (s != MK_OK)
        return s;
    for (size_t i = 0; i < c->n && s == MK_OK; i++)
        s = mk_stw_add(w, c->t[i].name, c->t[i].dt, c->t[i].ndim, c->t[i].shape);
    if (s == MK_OK)
        s = mk_stw_begin_data(w);
    size_t len = 0;
    unsigned char *stream = s == MK_OK ? plan_stream(w, c, &len) : NULL;
    if (s == MK_OK && mode == W_CHUNKS) {
        /* odd chunk sizes that straddle tensor boundaries, some large */
        for (size_t off = 0; off < len && s == MK_OK;) {
            uint64_t r = stb_rand(&seed);
            size_t k = (r & 15) == 0 ? (size_t)(r >> 8) % (3u << 20) + 1 : (size_t)(r >> 8) % 4099 + 1;
            if (k > len - off)
                k = len - off;
            s = mk_stw_write(w, stream + off, k);
            off += k;
        }
    } else if (s == MK_OK && mode == W_WHOLE) {
        s = mk_stw_write(w, stream, len);
    } else if (s == MK_OK && mode == W_PER_TENSOR) {
        for (size_t i = 0, off = 0; i < mk_stw_count(w) && s == MK_OK; i++) {
            size_t k = mk_stw_info(w, i)->nbytes;
            s = mk_stw_write(w, stream + off, k);
            off += k;
        }
    } else if (s == MK_OK) { /* copy_from_fd in odd pieces, alternating with writes */
        int fd;
        if (mode == W_COPY_MEMFD)
            fd = memfd_create("mk-src", 0);
        else {
            char src[4096];
            snprintf(src, sizeof src, "%s.src", dir);
            fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0644);
            unlink(src);
        }
        assert_true(fd >= 0);
        /* the stream lives at offset 7 of the source, to test offsets */
        assert_int_equal(mk_os_pwrite_full(fd, stream, len, 7, "src"), MK_OK);
        int turn = 0;
        for (size_t off = 0; off < len && s == MK_OK; turn++) {
            size_t k = (size_t)(stb_rand(&seed) % 70001) + 1;
            if (k > len - off)
                k = len - off;
            s = (turn & 1) ? mk_stw_write(w, stream + off, k) : mk_stw_copy_from_fd(w, fd, 7 + off, k);
            off += k;
        }
        close(fd);
    }
    free(stream);
    if (s == MK_OK)
        s = mk_stw_finish(w);
    mk_stw_free(w);
    return s;
}

/* ---------------------------------------------------------- layout checks */

static unsigned align_of(mk_dtype dt) {
    unsigned b = mk_dtype_info(dt)->bits / 8;
    return b ? b : 1;
}

/* Header padding check_roundtrip allows: under 8 bytes, under data_align
 * for test_keep_order_aligned. */
static size_t g_pad_max = 8;

/* Re-read `dir` strictly and compare every tensor with the spec. */
static void check_roundtrip(const char *dir, const cspec *c) {
    for (unsigned fl = 0; fl <= MK_CKPT_NO_MMAP; fl++) {
        mk_ckpt *k = NULL;
        mk_status s = mk_ckpt_open(dir, fl, &k);
        if (s != MK_OK)
            print_message("re-read of %s failed: %s\n", dir, mk_err_msg());
        assert_int_equal(s, MK_OK);
        assert_int_equal(mk_ckpt_count(k), c->n);
        unsigned char *buf = NULL;
        for (size_t i = 0; i < c->n; i++) {
            const tspec *t = &c->t[i];
            const mk_tensor_info *r = mk_ckpt_find(k, t->name);
            assert_non_null(r);
            assert_int_equal(r->dtype, t->dt);
            assert_int_equal(r->ndim, t->ndim);
            for (int d = 0; d < t->ndim; d++)
                assert_int_equal(r->shape[d], t->shape[d]);
            assert_int_equal(r->nbytes, t->nbytes);
            /* aligned to its element size (absolute file offset) */
            assert_int_equal(r->file_offset % align_of(t->dt), 0);
            buf = realloc(buf, t->nbytes ? t->nbytes : 1);
            assert_int_equal(mk_ckpt_read(k, r, 0, buf, t->nbytes), MK_OK);
            assert_memory_equal(buf, t->data, t->nbytes);
            if (!fl)
                assert_memory_equal(mk_ckpt_data(k, r), t->data, t->nbytes);
        }
        free(buf);
        /* header: length a multiple of 8, padded with spaces after the JSON */
        for (size_t si = 0; si < mk_ckpt_nshards(k); si++) {
            int fd = mk_ckpt_shard_fd(k, si);
            unsigned char lb[8];
            assert_int_equal(pread(fd, lb, 8, 0), 8);
            uint64_t n = 0;
            for (int b = 7; b >= 0; b--)
                n = (n << 8) | lb[b];
            assert_int_equal(n % 8, 0);
            char *h = malloc(n + 1);
            assert_int_equal(pread(fd, h, n, 8), (ssize_t)n);
            h[n] = 0;
            size_t e = n;
            while (e > 0 && h[e - 1] == ' ')
                e--;
            assert_true(e > 0 && e + g_pad_max > n); /* fewer than 8 pad bytes (data_align: g_pad_max) */
            assert_int_equal(h[e - 1], '}');
            assert_int_equal(h[0], '{');
            free(h);
        }
        mk_ckpt_close(k);
    }
}

/* No file of any kind left in dir (no final file, no temporary). */
static void check_empty_dir(const char *dir) {
    int n = stb_count_entries(dir, NULL);
    if (n != 0) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "ls -la '%s' >&2", dir);
        if (system(cmd) != 0)
            print_message("ls failed\n");
    }
    assert_int_equal(n, 0);
}

/* ------------------------------------------------------------------ tests */

static int setup_dir(void **state) {
    char *d = mk_test_tmpdir("stwrite");
    if (!d)
        return -1;
    *state = d;
    return 0;
}

static int teardown_dir(void **state) {
    mk_os_override(NULL);
    mk_test_rmrf(*state);
    free(*state);
    return 0;
}

static void test_roundtrip_modes(void **state) {
    for (int mode = 0; mode < W_NMODES; mode++) {
        cspec c;
        random_spec(&c, 80, 1000 + (uint64_t)mode, mode == W_PER_TENSOR ? 0 : (9u << 20) + 3);
        char d[4096];
        snprintf(d, sizeof d, "%s/m%d", (char *)*state, mode);
        mk_stw_opts o = {0};
        mk_status s = write_ckpt(d, &c, &o, mode, 77 + (uint64_t)mode);
        if (s != MK_OK)
            print_message("mode %d: %s\n", mode, mk_err_msg());
        assert_int_equal(s, MK_OK);
        /* one file, no index, no temporaries */
        assert_int_equal(stb_count_entries(d, NULL), 1);
        assert_int_equal(stb_count_entries(d, "model.safetensors"), 1);
        check_roundtrip(d, &c);
        char f[4200];
        snprintf(f, sizeof f, "%s/model.safetensors", d);
        mk_ckpt *k = NULL;
        assert_int_equal(mk_ckpt_open(f, 0, &k), MK_OK);
        assert_string_equal(mk_ckpt_metadata_json(k, 0), "{\"format\":\"pt\"}");
        mk_ckpt_close(k);
        cspec_free(&c);
    }
}

/* keep_order + data_align (convert --pack-experts): tensors laid out in the
 * order they were added, the data buffer at a multiple of 4096 in the file
 * (header padded with spaces), and the file reads back through the strict
 * reader; an alignment that is not a power of two is refused. */
static void test_keep_order_aligned(void **state) {
    cspec c;
    random_spec(&c, 40, 777, 0);
    mk_stw *w = NULL;
    mk_stw_opts o = {.keep_order = true, .data_align = 4096};
    char d[4096];
    snprintf(d, sizeof d, "%s/keep", (char *)*state);
    assert_int_equal(mk_stw_create(d, &o, &w), MK_OK);
    /* names descending within each alignment: not the HF order, but every
     * tensor still aligned to its element size (check_roundtrip) */
    size_t *ord = malloc(c.n * sizeof *ord);
    for (size_t i = 0; i < c.n; i++)
        ord[i] = i;
    for (size_t i = 1; i < c.n; i++)
        for (size_t j = i; j > 0; j--) {
            const tspec *a = &c.t[ord[j - 1]], *b = &c.t[ord[j]];
            unsigned aa = align_of(a->dt), ab = align_of(b->dt);
            if (aa > ab || (aa == ab && strcmp(a->name, b->name) > 0))
                break;
            size_t t = ord[j];
            ord[j] = ord[j - 1];
            ord[j - 1] = t;
        }
    for (size_t i = 0; i < c.n; i++)
        assert_int_equal(mk_stw_add(w, c.t[ord[i]].name, c.t[ord[i]].dt, c.t[ord[i]].ndim, c.t[ord[i]].shape), MK_OK);
    assert_int_equal(mk_stw_begin_data(w), MK_OK);
    for (size_t i = 0; i < c.n; i++) {
        assert_string_equal(mk_stw_name(w, i), c.t[ord[i]].name);
        const tspec *sp = spec_find(&c, mk_stw_name(w, i));
        assert_int_equal(mk_stw_write(w, sp->data, sp->nbytes), MK_OK);
    }
    assert_int_equal(mk_stw_finish(w), MK_OK);
    mk_stw_free(w);
    g_pad_max = 4096;
    check_roundtrip(d, &c);
    g_pad_max = 8;
    char f[4200];
    snprintf(f, sizeof f, "%s/model.safetensors", d);
    FILE *fp = fopen(f, "rb");
    assert_non_null(fp);
    unsigned char lb[8];
    assert_int_equal(fread(lb, 1, 8, fp), 8);
    fclose(fp);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | lb[i];
    assert_int_equal((8 + n) % 4096, 0);
    mk_ckpt *k = NULL;
    assert_int_equal(mk_ckpt_open(f, 0, &k), MK_OK);
    /* file order (by offset; empty tensors first at equal offsets) = the
     * order added, for the tensors that hold bytes */
    size_t j = 0;
    for (size_t i = 0; i < c.n; i++) {
        const tspec *t = &c.t[ord[i]];
        if (!t->nbytes)
            continue;
        while (j < mk_ckpt_count(k) && !mk_ckpt_tensor(k, j)->nbytes)
            j++;
        assert_true(j < mk_ckpt_count(k));
        assert_string_equal(mk_ckpt_tensor(k, j)->name, t->name);
        if (i == 0)
            assert_int_equal(mk_ckpt_tensor(k, j)->file_offset % 4096, 0);
        j++;
    }
    mk_ckpt_close(k);
    free(ord);
    cspec_free(&c);
    mk_stw_opts bad = {.data_align = 3000};
    snprintf(d, sizeof d, "%s/bad", (char *)*state);
    assert_int_equal(mk_stw_create(d, &bad, &w), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "power of two"));
}

/* The plan is in HF order (alignment desc, then name) and data offsets
 * follow it contiguously; custom metadata is kept. */
static void test_order_and_metadata(void **state) {
    cspec c;
    random_spec(&c, 60, 4242, 0);
    mk_stw *w = NULL;
    mk_stw_opts o = {.metadata_json = "{\"format\":\"mlx\",\"note\":\"x y\"}"};
    char d[4096];
    snprintf(d, sizeof d, "%s/ord", (char *)*state);
    assert_int_equal(mk_stw_create(d, &o, &w), MK_OK);
    for (size_t i = 0; i < c.n; i++)
        assert_int_equal(mk_stw_add(w, c.t[i].name, c.t[i].dt, c.t[i].ndim, c.t[i].shape), MK_OK);
    assert_int_equal(mk_stw_begin_data(w), MK_OK);
    assert_int_equal(mk_stw_count(w), c.n);
    uint64_t off = 0;
    for (size_t i = 0; i < c.n; i++) {
        const mk_tensor_info *t = mk_stw_info(w, i);
        assert_string_equal(t->name, mk_stw_name(w, i));
        assert_int_equal(t->file_offset, off); /* relative to the data start */
        off += t->nbytes;
        if (i) {
            const mk_tensor_info *p = mk_stw_info(w, i - 1);
            unsigned ap = align_of(p->dtype), at = align_of(t->dtype);
            assert_true(ap > at || (ap == at && strcmp(p->name, t->name) < 0));
        }
        const tspec *sp = spec_find(&c, t->name);
        assert_int_equal(mk_stw_write(w, sp->data, sp->nbytes), MK_OK);
    }
    assert_int_equal(mk_stw_finish(w), MK_OK);
    mk_stw_free(w);
    check_roundtrip(d, &c);
    char f[4200];
    snprintf(f, sizeof f, "%s/model.safetensors", d);
    mk_ckpt *k = NULL;
    assert_int_equal(mk_ckpt_open(f, 0, &k), MK_OK);
    assert_string_equal(mk_ckpt_metadata_json(k, 0), "{\"format\":\"mlx\",\"note\":\"x y\"}");
    /* file order of the non-empty tensors is the plan order */
    const mk_tensor_info *prev = NULL;
    for (size_t i = 0; i < mk_ckpt_count(k); i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(k, i);
        if (!t->nbytes)
            continue;
        if (prev) {
            unsigned ap = align_of(prev->dtype), at = align_of(t->dtype);
            assert_true(ap > at || (ap == at && strcmp(prev->name, t->name) < 0));
        }
        prev = t;
    }
    mk_ckpt_close(k);
    cspec_free(&c);
}

/* Cut at a size limit: greedy cuts, HF shard names, an index naming every
 * tensor's shard and the total size; a tensor above the limit gets a shard
 * of its own; the set re-reads under strict validation. */
static void test_sharding(void **state) {
    const uint64_t limits[] = {4096, 1000, 1};
    for (size_t li = 0; li < 3; li++) {
        cspec c;
        random_spec(&c, 70, 555 + li, 0);
        int64_t sh[1] = {20000};
        uint64_t seed = 3;
        add_spec(&c, "a.oversized", MK_DT_F32, 1, sh, &seed); /* 80 KB > limit */
        char d[4096];
        snprintf(d, sizeof d, "%s/sh%zu", (char *)*state, li);
        mk_stw_opts o = {.shard_size = limits[li]};
        mk_status s = write_ckpt(d, &c, &o, W_CHUNKS, 9);
        if (s != MK_OK)
            print_message("%s\n", mk_err_msg());
        assert_int_equal(s, MK_OK);
        check_roundtrip(d, &c);
        mk_ckpt *k = NULL;
        assert_int_equal(mk_ckpt_open(d, 0, &k), MK_OK);
        size_t ns = mk_ckpt_nshards(k);
        assert_true(ns > 2);
        assert_int_equal(stb_count_entries(d, NULL), (int)ns + 1); /* shards + index, nothing else */
        /* shard names and sizes; greedy: the next shard's first tensor did not fit */
        uint64_t total = 0;
        for (size_t si = 0; si < ns; si++) {
            char want[128];
            snprintf(want, sizeof want, "/model-%05zu-of-%05zu.safetensors", si + 1, ns);
            assert_non_null(strstr(mk_ckpt_shard_path(k, si), want));
            uint64_t used = 0, n = 0, first_next = 0;
            for (size_t i = 0; i < mk_ckpt_count(k); i++) {
                const mk_tensor_info *t = mk_ckpt_tensor(k, i);
                if ((size_t)t->shard == si) {
                    used += t->nbytes;
                    n++;
                }
            }
            total += used;
            assert_true(n > 0);
            assert_true(used <= limits[li] || n == 1 || used == 0 || limits[li] == 1);
            if (si + 1 < ns) {
                /* plan order is the order of mk_ckpt_tensor within and across shards */
                for (size_t i = 0; i < mk_ckpt_count(k); i++)
                    if ((size_t)mk_ckpt_tensor(k, i)->shard == si + 1 && mk_ckpt_tensor(k, i)->nbytes) {
                        first_next = mk_ckpt_tensor(k, i)->nbytes;
                        break;
                    }
                if (used > 0 && first_next > 0)
                    assert_true(used + first_next > limits[li]);
            }
        }
        /* the oversized tensor is alone in its shard */
        const mk_tensor_info *big = mk_ckpt_find(k, "a.oversized");
        for (size_t i = 0; i < mk_ckpt_count(k); i++) {
            const mk_tensor_info *t = mk_ckpt_tensor(k, i);
            if (t != big && t->shard == big->shard)
                assert_int_equal(t->nbytes, 0);
        }
        /* the index, read independently */
        char ip[4200];
        snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", d);
        json_error_t je;
        json_t *ix = json_load_file(ip, 0, &je);
        assert_non_null(ix);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(ix, "metadata"), "total_size")),
                         total);
        json_t *wm = json_object_get(ix, "weight_map");
        assert_int_equal(json_object_size(wm), c.n);
        for (size_t i = 0; i < c.n; i++) {
            const mk_tensor_info *t = mk_ckpt_find(k, c.t[i].name);
            const char *f = json_string_value(json_object_get(wm, c.t[i].name));
            assert_non_null(f);
            const char *sp = strrchr(mk_ckpt_shard_path(k, (size_t)t->shard), '/') + 1;
            assert_string_equal(f, sp);
        }
        json_decref(ix);
        mk_ckpt_close(k);
        cspec_free(&c);
    }
    /* a limit larger than the checkpoint gives one plain file */
    cspec c;
    random_spec(&c, 10, 8, 0);
    char d[4096];
    snprintf(d, sizeof d, "%s/one", (char *)*state);
    mk_stw_opts o = {.shard_size = 1ull << 40};
    assert_int_equal(write_ckpt(d, &c, &o, W_WHOLE, 1), MK_OK);
    assert_int_equal(stb_count_entries(d, NULL), 1);
    assert_int_equal(stb_count_entries(d, "model.safetensors"), 1);
    check_roundtrip(d, &c);
    cspec_free(&c);
}

/* An existing output is never overwritten without force. */
static void test_exists(void **state) {
    for (int sharded = 0; sharded < 2; sharded++) {
        cspec a, b;
        random_spec(&a, 20, 11, 0);
        random_spec(&b, 20, 12, 0);
        char d[4096];
        snprintf(d, sizeof d, "%s/ex%d", (char *)*state, sharded);
        mk_stw_opts o = {.shard_size = sharded ? 256 : 0};
        assert_int_equal(write_ckpt(d, &a, &o, W_WHOLE, 1), MK_OK);
        int files = stb_count_entries(d, NULL);
        char f[4200];
        snprintf(f, sizeof f, sharded ? "%s/model.safetensors.index.json" : "%s/model.safetensors", d);
        size_t n0 = 0, n1 = 0;
        void *before = mk_test_slurp(f, &n0);
        mk_status s = write_ckpt(d, &b, &o, W_WHOLE, 1);
        assert_int_equal(s, MK_E_EXISTS);
        assert_non_null(strstr(mk_err_msg(), d));
        assert_non_null(strstr(mk_err_msg(), "exists"));
        void *after = mk_test_slurp(f, &n1);
        assert_int_equal(n0, n1);
        assert_memory_equal(before, after, n0);
        free(after);
        assert_int_equal(stb_count_entries(d, NULL), files); /* no temporaries left */
        check_roundtrip(d, &a);
        /* with force: replaced */
        o.force = true;
        assert_int_equal(write_ckpt(d, &b, &o, W_WHOLE, 1), MK_OK);
        check_roundtrip(d, &b);
        free(before);
        cspec_free(&a);
        cspec_free(&b);
    }
    /* only the index of a previous sharded write is there */
    cspec a;
    random_spec(&a, 20, 13, 0);
    char d[4096], f[4200];
    snprintf(d, sizeof d, "%s/ex-index", (char *)*state);
    assert_int_equal(mkdir(d, 0755), 0);
    snprintf(f, sizeof f, "%s/model.safetensors.index.json", d);
    assert_int_equal(mk_test_write(f, "{}", 2), 0);
    mk_stw_opts o = {.shard_size = 256};
    assert_int_equal(write_ckpt(d, &a, &o, W_WHOLE, 1), MK_E_EXISTS);
    assert_int_equal(stb_count_entries(d, NULL), 1);
    cspec_free(&a);
}

/* Misuse is an error with a message, never a corrupt file. */
static void test_misuse(void **state) {
    char d[4096];
    snprintf(d, sizeof d, "%s/mis", (char *)*state);
    mk_stw *w = NULL;
    assert_int_equal(mk_stw_create(d, NULL, &w), MK_OK);
    const int64_t s3[1] = {3}, s2[1] = {2}, neg[1] = {-1}, huge[2] = {1ll << 40, 1ll << 40};
    assert_int_equal(mk_stw_add(w, "f4.odd", MK_DT_F4, 1, s3), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "f4.odd"));
    assert_int_equal(mk_stw_add(w, "bad.dt", (mk_dtype)99, 1, s3), MK_E_ARG);
    assert_int_equal(mk_stw_add(w, "bad.dims", MK_DT_F32, MK_MAX_DIMS + 1, s3), MK_E_ARG);
    assert_int_equal(mk_stw_add(w, "neg", MK_DT_F32, 1, neg), MK_E_ARG);
    assert_int_equal(mk_stw_add(w, "huge", MK_DT_U8, 2, huge), MK_E_ARG);
    assert_int_equal(mk_stw_add(w, "bad\xff\xfe", MK_DT_F32, 1, s3), MK_E_ARG);
    assert_int_equal(mk_stw_add(w, "__metadata__", MK_DT_F32, 1, s3), MK_E_ARG);
    assert_int_equal(mk_stw_add(w, "a", MK_DT_F32, 1, s3), MK_OK);
    assert_int_equal(mk_stw_add(w, "b", MK_DT_F16, 1, s2), MK_OK);
    assert_int_equal(mk_stw_add(w, "a", MK_DT_BF16, 1, s2), MK_OK); /* found at begin_data */
    assert_int_equal(mk_stw_begin_data(w), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "'a'"));
    mk_stw_free(w);
    check_empty_dir(d);

    assert_int_equal(mk_stw_create(d, NULL, &w), MK_OK);
    assert_int_equal(mk_stw_write(w, "x", 1), MK_E_INTERNAL); /* before begin_data */
    assert_int_equal(mk_stw_add(w, "a", MK_DT_F32, 1, s3), MK_OK);
    assert_int_equal(mk_stw_add(w, "b", MK_DT_F16, 1, s2), MK_OK);
    assert_int_equal(mk_stw_begin_data(w), MK_OK);
    assert_int_equal(mk_stw_add(w, "c", MK_DT_F16, 1, s2), MK_E_INTERNAL);
    assert_int_equal(mk_stw_begin_data(w), MK_E_INTERNAL);
    unsigned char z[32] = {0};
    assert_int_equal(mk_stw_write(w, z, 13), MK_OK); /* a (12) + 1 byte of b */
    assert_int_equal(mk_stw_finish(w), MK_E_INTERNAL);  /* b is missing 3 bytes */
    assert_non_null(strstr(mk_err_msg(), "'b'"));
    assert_int_equal(mk_stw_write(w, z, 4), MK_E_INTERNAL); /* one byte too many */
    mk_stw_free(w);
    check_empty_dir(d);

    /* metadata must be an object of strings, or the reader would reject the file */
    const char *bad_meta[] = {"[1]", "{\"a\":1}", "{", "\"x\""};
    for (int i = 0; i < 4; i++) {
        mk_stw_opts o = {.metadata_json = bad_meta[i]};
        w = NULL;
        assert_int_equal(mk_stw_create(d, &o, &w), MK_E_ARG);
        assert_null(w);
    }
    /* no tensors at all: a valid empty checkpoint */
    assert_int_equal(mk_stw_create(d, NULL, &w), MK_OK);
    assert_int_equal(mk_stw_finish(w), MK_OK);
    mk_stw_free(w);
    mk_ckpt *k = NULL;
    assert_int_equal(mk_ckpt_open(d, 0, &k), MK_OK);
    assert_int_equal(mk_ckpt_count(k), 0);
    mk_ckpt_close(k);
}

/* ------------------------------------------------------------ fault loops */

static int g_pw, g_fs, g_rn;      /* calls so far */
static int g_pw_fail, g_fs_fail, g_rn_fail; /* fail at this call (0: never) */
static int g_short;               /* short writes */
static uint64_t g_seed = 1;

static ssize_t f_pwrite(int fd, const void *b, size_t n, off_t off) {
    if (++g_pw == g_pw_fail) {
        errno = ENOSPC;
        return -1;
    }
    if (g_short && n > 1)
        n = 1 + (size_t)(stb_rand(&g_seed) % (n - 1));
    return pwrite(fd, b, n, off);
}

static int f_fsync(int fd) {
    if (++g_fs == g_fs_fail) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

static int f_rename(const char *a, const char *b) {
    if (++g_rn == g_rn_fail) {
        errno = EACCES;
        return -1;
    }
    return rename(a, b);
}

static const mk_os_vtbl g_faulty = {.pread = pread, .pwrite = f_pwrite, .fsync = f_fsync, .rename = f_rename};

/* Run the write with a fault at call `at` of one kind; return the status. */
static mk_status faulty_write(const char *d, const cspec *c, uint64_t shard, int kind, int at, int *calls) {
    g_pw = g_fs = g_rn = 0;
    g_pw_fail = kind == 0 ? at : 0;
    g_fs_fail = kind == 1 ? at : 0;
    g_rn_fail = kind == 2 ? at : 0;
    mk_os_override(&g_faulty);
    mk_stw_opts o = {.shard_size = shard};
    mk_status s = write_ckpt(d, c, &o, W_CHUNKS, (uint64_t)at);
    mk_os_override(NULL);
    *calls = kind == 0 ? g_pw : kind == 1 ? g_fs : g_rn;
    return s;
}

/* For every N: a fault at the Nth call. Each run ends in success or the
 * fault's status; a failed run leaves the directory empty. */
static void fault_loop(const char *root, int kind, uint64_t shard, mk_status want, uint64_t big) {
    cspec c;
    random_spec(&c, 12, 31 + (uint64_t)kind, big);
    int runs = 0;
    for (int at = 1;; at++) {
        char d[4096];
        snprintf(d, sizeof d, "%s/fault-%d-%llu-%d", root, kind, (unsigned long long)shard, at);
        int calls = 0;
        mk_status s = faulty_write(d, &c, shard, kind, at, &calls);
        runs++;
        if (s == MK_OK) {
            assert_true(at > calls); /* the fault was never reached */
            check_roundtrip(d, &c);
            break;
        }
        if (s != want)
            print_message("kind %d at %d: %s (%s)\n", kind, at, mk_status_name(s), mk_err_msg());
        assert_int_equal(s, want);
        check_empty_dir(d);
        mk_test_rmrf(d);
        assert_true(at < 100000);
    }
    assert_true(runs > 1);
    print_message("fault kind %d, shard size %llu: %d runs\n", kind, (unsigned long long)shard, runs);
    cspec_free(&c);
}

static void test_fault_enospc(void **state) {
    fault_loop(*state, 0, 0, MK_E_NOSPACE, 0);
    fault_loop(*state, 0, 300, MK_E_NOSPACE, 0); /* sharded: the index write too */
    /* data past the 8 MiB buffer: flushes and straight-through writes */
    fault_loop(*state, 0, 5u << 20, MK_E_NOSPACE, (21u << 20) + 5);
}

static void test_fault_fsync(void **state) {
    fault_loop(*state, 1, 0, MK_E_IO, 0);
    fault_loop(*state, 1, 300, MK_E_IO, 0);
}

static void test_fault_rename(void **state) {
    fault_loop(*state, 2, 0, MK_E_IO, 0);
    fault_loop(*state, 2, 300, MK_E_IO, 0);
}

/* pwrite returning short counts (any length from 1 byte) must still give
 * exact files. */
static void test_short_writes(void **state) {
    cspec c;
    random_spec(&c, 40, 71, 0);
    char d[4096];
    snprintf(d, sizeof d, "%s/short", (char *)*state);
    g_short = 1;
    int calls = 0;
    mk_status s = faulty_write(d, &c, 500, 0, 0, &calls);
    g_short = 0;
    assert_int_equal(s, MK_OK);
    assert_true(calls > 100);
    check_roundtrip(d, &c);
    cspec_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_modes, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_order_and_metadata, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_sharding, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_exists, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_misuse, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_fault_enospc, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_fault_fsync, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_fault_rename, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_short_writes, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_keep_order_aligned, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
