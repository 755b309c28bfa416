/* The batched reader (src/io/reader.h) against a temporary file whose every
 * byte is a known function of its offset (the reference is that function,
 * not the reader), under both backends and both O_DIRECT and buffered:
 *   - random batches of requests (unaligned offsets and lengths, length 0,
 *     overlapping and adjacent ranges, requests longer than max_read,
 *     aligned destinations that take the zero-copy path) come back with the
 *     right bytes, every tag reported exactly once, and nothing written
 *     past a request's buffer;
 *   - merging: adjacent ranges are one read, ranges a gap apart are one
 *     read only when merge_gap covers the gap, large ranges that can be
 *     read straight into their buffers are read alone (reads counted
 *     through the syscall table);
 *   - faults through the syscall table: EIO on one range fails exactly the
 *     requests it covers (the message names the file, offset and length),
 *     a read that ends early (injected end of file, or a real request past
 *     the end) is a short-read error, partial counts are continued and give
 *     the right bytes; io_uring refused at setup falls back to pread (AUTO)
 *     or is an error (URING); a failed io_uring submission fails the
 *     requests, never reports them done; O_DIRECT refused by the file
 *     system falls back to buffered reads;
 *   - every allocation failing in turn gives MK_E_NOMEM or success.
 * io_uring cases skip, saying why, where the kernel refuses a ring. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "io/os.h"
#include "io/reader.h"
#include "mk_test_util.h"

#define FILE_SIZE ((size_t)3 * 1024 * 1024 + 4321) /* not a multiple of the alignment */
#define GUARD 64

static char *g_dir, *g_path;

static unsigned char byte_at(uint64_t i) {
    uint64_t z = i * 0x9e3779b97f4a7c15ull;
    return (unsigned char)((z >> 29) ^ (i >> 12));
}

static int setup_file(void **state) {
    (void)state;
    g_dir = mk_test_tmpdir("reader");
    if (!g_dir)
        return -1;
    size_t n = strlen(g_dir) + 16;
    g_path = malloc(n);
    snprintf(g_path, n, "%s/data.bin", g_dir);
    unsigned char *b = malloc(FILE_SIZE);
    for (size_t i = 0; i < FILE_SIZE; i++)
        b[i] = byte_at(i);
    int rc = mk_test_write(g_path, b, FILE_SIZE);
    free(b);
    return rc;
}

static int teardown_file(void **state) {
    (void)state;
    mk_test_rmrf(g_dir);
    free(g_dir);
    free(g_path);
    return 0;
}

static uint64_t g_rng = 12345;
static uint64_t rnd(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A reader of the given backend over the test file, or a skip saying why
 * io_uring is not available here. */
static mk_reader *open_reader(mk_reader_backend be, bool direct, mk_reader_opts *o_in) {
    mk_reader_opts o = o_in ? *o_in : (mk_reader_opts){0};
    o.backend = be;
    o.direct = direct;
    mk_reader *r = NULL;
    mk_status s = mk_reader_create(&o, &r);
    if (s == MK_E_UNSUPPORTED && be == MK_READER_URING) {
        print_message("skip: io_uring not available here: %s\n", mk_err_msg());
        skip();
    }
    assert_int_equal(s, MK_OK);
    assert_string_equal(mk_reader_backend_name(r), be == MK_READER_URING ? "io_uring" : "pread");
    uint32_t idx = 99;
    assert_int_equal(mk_reader_add_file(r, g_path, &idx), MK_OK);
    assert_int_equal(idx, 0);
    if (direct && !mk_reader_file_direct(r, 0))
        print_message("note: %s refuses O_DIRECT here; the direct cases run buffered\n", g_path);
    return r;
}

typedef struct buf {
    unsigned char *mem; /* GUARD | [cap] | GUARD */
    unsigned char *dst;
    size_t cap;
    int seen;
} buf;

/* Random batches, reported in readiness order (sometimes polling). */
static void random_batches(mk_reader_backend be, bool direct) {
    mk_reader_opts o = {0};
    o.max_read = 64 * 1024; /* small, so long requests split and merges are bounded */
    o.queue_depth = 4;
    o.threads = 3;
    o.bounce_slots = 2;
    o.merge_gap = 100;
    mk_reader *r = open_reader(be, direct, &o);
    size_t A = mk_reader_align(r);
    for (int iter = 0; iter < 40; iter++) {
        size_t n = 1 + rnd() % 40;
        mk_reader_req *q = calloc(n, sizeof *q);
        buf *b = calloc(n, sizeof *b);
        for (size_t i = 0; i < n; i++) {
            int kind = (int)(rnd() % 6);
            uint64_t off = rnd() % FILE_SIZE;
            size_t len;
            if (kind == 0)
                len = 0;
            else if (kind == 1)
                len = 1 + rnd() % 100;
            else if (kind == 2)
                len = 1 + rnd() % 20000;
            else if (kind == 3)
                len = 1 + rnd() % (300 * 1024); /* longer than max_read: split */
            else if (kind == 4 && i > 0) {     /* adjacent to or overlapping the previous one */
                off = q[i - 1].off + q[i - 1].len - (rnd() % 2 ? 0 : (q[i - 1].len ? 1 : 0));
                len = 1 + rnd() % 5000;
            } else { /* aligned offset and room for the aligned length: zero copy when direct */
                off = (rnd() % (FILE_SIZE / A)) * A;
                len = 1 + rnd() % (200 * 1024);
            }
            if (off >= FILE_SIZE)
                off = FILE_SIZE - 1;
            if (off + len > FILE_SIZE)
                len = FILE_SIZE - off;
            size_t cap = kind == 5 ? (len + A - 1) / A * A : len;
            /* dst aligned to A (GUARD | pad | dst), sometimes shifted by 1..7 */
            b[i].mem = aligned_alloc(A, (A + cap + GUARD + 8 + A - 1) / A * A);
            b[i].dst = b[i].mem + A + (kind == 5 ? 0 : rnd() % 8);
            b[i].cap = cap;
            memset(b[i].mem, 0xA5, (A + cap + GUARD + 8 + A - 1) / A * A);
            q[i] = (mk_reader_req){0, off, len, b[i].dst, kind == 5 ? cap : 0, 1000 + i};
        }
        assert_int_equal(mk_reader_submit(r, q, n), MK_OK);
        assert_int_equal(mk_reader_pending(r), n);
        for (size_t got = 0; got < n;) {
            uint64_t tag = 0;
            bool done = false;
            mk_status s = mk_reader_next(r, rnd() % 4 != 0, &tag, &done);
            assert_int_equal(s, MK_OK);
            if (!done)
                continue; /* polled, nothing finished yet */
            assert_true(tag >= 1000 && tag < 1000 + n);
            buf *x = &b[tag - 1000];
            assert_int_equal(x->seen, 0); /* exactly once */
            x->seen = 1;
            got++;
        }
        uint64_t tag;
        bool done = true;
        assert_int_equal(mk_reader_next(r, true, &tag, &done), MK_OK);
        assert_false(done); /* nothing more */
        assert_int_equal(mk_reader_pending(r), 0);
        for (size_t i = 0; i < n; i++) {
            for (size_t k = 0; k < q[i].len; k++)
                if (b[i].dst[k] != byte_at(q[i].off + k))
                    fail_msg("iter %d req %zu (off %llu len %zu): byte %zu is %02x, want %02x", iter, i,
                             (unsigned long long)q[i].off, q[i].len, k, b[i].dst[k], byte_at(q[i].off + k));
            /* nothing before the buffer or past its capacity */
            for (unsigned char *p = b[i].mem; p < b[i].dst; p++)
                assert_int_equal(*p, 0xA5);
            for (size_t k = 0; k < GUARD; k++)
                assert_int_equal(b[i].dst[b[i].cap + k], 0xA5);
            free(b[i].mem);
        }
        free(q);
        free(b);
    }
    mk_reader_destroy(r);
}

static void t_random_pread_buffered(void **s) { (void)s; random_batches(MK_READER_PREAD, false); }
static void t_random_pread_direct(void **s) { (void)s; random_batches(MK_READER_PREAD, true); }
static void t_random_uring_buffered(void **s) { (void)s; random_batches(MK_READER_URING, false); }
static void t_random_uring_direct(void **s) { (void)s; random_batches(MK_READER_URING, true); }

/* ---- fault injection through the syscall table ---------------------------- */

static int g_preads;          /* pread calls seen */
static uint64_t g_asked;      /* bytes those calls asked for */
static uint64_t g_bad_off;    /* reads covering this offset fail ... */
static int g_bad_errno;       /* ... with this errno, or 0: */
static int g_eof_from;        /* reads starting at >= g_bad_off see end of file */
static int g_halve;           /* return partial counts */

/* The real read, then its count cut as the fault asks (a count smaller
 * than what was read is a partial count; a direct read keeps its aligned
 * length, so the real call is never refused for alignment). */
static ssize_t f_pread(int fd, void *b, size_t n, off_t off) {
    __atomic_fetch_add(&g_preads, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_asked, (uint64_t)n, __ATOMIC_RELAXED);
    if (g_bad_errno && (uint64_t)off <= g_bad_off && g_bad_off < (uint64_t)off + n) {
        errno = g_bad_errno;
        return -1;
    }
    ssize_t got = pread(fd, b, n, off);
    if (got <= 0)
        return got;
    if (g_eof_from && (uint64_t)off + (uint64_t)got > g_bad_off) /* the "file" ends at g_bad_off */
        return (uint64_t)off >= g_bad_off ? 0 : (ssize_t)(g_bad_off - (uint64_t)off);
    if (g_halve && got >= 8192)
        return got / 2 / 4096 * 4096; /* aligned, so a direct read may continue */
    if (g_halve && got > 1 && !(fcntl(fd, F_GETFL) & O_DIRECT))
        return got / 2;
    return got;
}

static int f_uring_result(int fd, void *b, size_t n, off_t off, int res) {
    (void)fd, (void)b;
    __atomic_fetch_add(&g_preads, 1, __ATOMIC_RELAXED);
    if (res < 0)
        return res;
    if (g_bad_errno && (uint64_t)off <= g_bad_off && g_bad_off < (uint64_t)off + n)
        return -g_bad_errno;
    if (g_eof_from && (uint64_t)off + (uint64_t)res > g_bad_off)
        return (uint64_t)off >= g_bad_off ? 0 : (int)(g_bad_off - (uint64_t)off);
    if (g_halve && res >= 8192)
        return res / 2 / 4096 * 4096;
    return res; /* (a smaller count than the kernel read is a partial count: continued) */
}

static void arm(int err, uint64_t off, int eof, int halve) {
    g_preads = 0;
    g_asked = 0;
    g_bad_errno = err;
    g_bad_off = off;
    g_eof_from = eof;
    g_halve = halve;
    static const mk_os_vtbl v = {.pread = f_pread, .uring_result = f_uring_result};
    mk_os_override(&v);
}

static void disarm(void) {
    mk_os_override(NULL);
    g_bad_errno = g_eof_from = g_halve = 0;
}

/* Reads counted per backend: pread calls, or io_uring results. Modes:
 * 0 adjacent small requests, one read; 1 a 100-byte gap, merge_gap 0: one
 * read each; 2 the same with merge_gap 128: one read; then large adjacent
 * requests that can be read straight into their buffers are read alone. */
static void merging(mk_reader_backend be) {
    for (int mode = 0; mode < 3; mode++) {
        mk_reader_opts o = {0};
        o.merge_gap = mode == 2 ? 128 : 0;
        mk_reader *r = open_reader(be, false, &o);
        unsigned char dst[8][1000];
        mk_reader_req q[8];
        /* mode 0: adjacent; modes 1, 2: 100 bytes apart; submitted out of order */
        for (int i = 0; i < 8; i++) {
            int k = (i * 5) % 8;
            q[i] = (mk_reader_req){0, 10000 + (uint64_t)k * (mode ? 1100 : 1000), 1000, dst[i], 0, (uint64_t)i};
        }
        arm(0, 0, 0, 0);
        assert_int_equal(mk_reader_submit(r, q, 8), MK_OK);
        assert_int_equal(mk_reader_wait_all(r), MK_OK);
        int reads = g_preads;
        disarm();
        for (int i = 0; i < 8; i++)
            for (size_t k = 0; k < 1000; k++)
                assert_int_equal(dst[i][k], byte_at(q[i].off + k));
        if (mode == 1)
            assert_int_equal(reads, 8);
        else
            assert_int_equal(reads, 1);
        mk_reader_destroy(r);
    }
    for (int direct = 0; direct < 2; direct++) {
        mk_reader *r = open_reader(be, direct, NULL);
        size_t A = mk_reader_align(r), L = 32 * A; /* 128 KiB: above merge_max (64 KiB) */
        unsigned char *big = aligned_alloc(A, 3 * L);
        /* [0], [1] adjacent and aligned: alone; [2] right after [1], unaligned end (direct: not
         * zero copy, so it may merge with nothing solo either) */
        const mk_reader_req q[3] = {{0, 8 * A, L, big, 0, 0}, {0, 8 * A + L, L, big + L, 0, 1},
                                    {0, 8 * A + 2 * L, 1000, big + 2 * L, 0, 2}};
        arm(0, 0, 0, 0);
        assert_int_equal(mk_reader_submit(r, q, 3), MK_OK);
        assert_int_equal(mk_reader_wait_all(r), MK_OK);
        int reads = g_preads;
        disarm();
        assert_int_equal(reads, 3);
        for (int i = 0; i < 3; i++)
            for (size_t k = 0; k < q[i].len; k++)
                assert_int_equal(((unsigned char *)q[i].dst)[k], byte_at(q[i].off + k));
        free(big);
        mk_reader_destroy(r);
    }
}

/* A zero-length request beside a real one neither stretches its read nor
 * costs it the straight-into-the-buffer path (the read asks for exactly
 * the request's bytes). */
static void t_merge_zero_len(void **s) {
    (void)s;
    mk_reader *r = open_reader(MK_READER_PREAD, false, NULL);
    unsigned char d[100];
    const mk_reader_req q[2] = {{0, 5000, 100, d, 0, 0}, {0, 1u << 20, 0, d, 0, 1}};
    arm(0, 0, 0, 0);
    assert_int_equal(mk_reader_submit(r, q, 2), MK_OK);
    assert_int_equal(mk_reader_wait_all(r), MK_OK);
    uint64_t asked = g_asked;
    int reads = g_preads;
    disarm();
    assert_int_equal(reads, 1);
    assert_int_equal(asked, 100);
    for (int k = 0; k < 100; k++)
        assert_int_equal(d[k], byte_at(5000u + (unsigned)k));
    mk_reader_destroy(r);
}

static void t_merge_pread(void **s) { (void)s; merging(MK_READER_PREAD); }
static void t_merge_uring(void **s) { (void)s; merging(MK_READER_URING); }

/* Requests: [0] and [2] clear of the bad offset, [1] covers it, [3] is
 * longer than max_read with the bad offset in a later piece. */
#define BAD_OFF 500000u

static void faults(mk_reader_backend be, bool direct) {
    mk_reader_opts o = {0};
    o.max_read = 64 * 1024;
    static unsigned char d[4][300000];
    const mk_reader_req q[4] = {{0, 1000, 5000, d[0], 0, 0},
                                {0, BAD_OFF - 777, 3000, d[1], 0, 1},
                                {0, 900000, 7000, d[2], 0, 2},
                                {0, BAD_OFF - 200000, 250000, d[3], 0, 3}};
    for (int kind = 0; kind < 3; kind++) { /* EIO, end of file, partial counts */
        mk_reader *r = open_reader(be, direct, &o);
        arm(kind == 0 ? EIO : 0, BAD_OFF, kind == 1, kind == 2);
        assert_int_equal(mk_reader_submit(r, q, 4), MK_OK);
        int failed[4] = {0}, seen[4] = {0};
        for (int k = 0; k < 4; k++) {
            uint64_t tag;
            bool done = false;
            mk_status s = mk_reader_next(r, true, &tag, &done);
            assert_true(done);
            assert_true(tag < 4);
            assert_int_equal(seen[tag], 0);
            seen[tag] = 1;
            if (s != MK_OK) {
                failed[tag] = 1;
                char want[128];
                assert_non_null(strstr(mk_err_msg(), g_path));
                snprintf(want, sizeof want, "%zu bytes", q[tag].len);
                assert_non_null(strstr(mk_err_msg(), want));
                snprintf(want, sizeof want, "offset %llu", (unsigned long long)q[tag].off);
                assert_non_null(strstr(mk_err_msg(), want));
                if (kind == 0) {
                    assert_int_equal(s, MK_E_IO);
                    assert_non_null(strstr(mk_err_msg(), strerror(EIO)));
                } else {
                    assert_int_equal(s, MK_E_FORMAT);
                    assert_non_null(strstr(mk_err_msg(), "short read"));
                }
            }
        }
        disarm();
        if (kind == 2) { /* partial counts continue: all good */
            for (int t = 0; t < 4; t++)
                assert_int_equal(failed[t], 0);
        } else { /* exactly the requests over the bad offset fail (EOF: and those after it) */
            assert_int_equal(failed[0], 0);
            assert_int_equal(failed[1], 1);
            assert_int_equal(failed[2], kind == 1);
            assert_int_equal(failed[3], 1);
        }
        for (int t = 0; t < 4; t++)
            if (!failed[t])
                for (size_t k = 0; k < q[t].len; k++)
                    assert_int_equal(d[t][k], byte_at(q[t].off + k));
        mk_reader_destroy(r);
    }
}

static void t_faults_pread_buffered(void **s) { (void)s; faults(MK_READER_PREAD, false); }
static void t_faults_pread_direct(void **s) { (void)s; faults(MK_READER_PREAD, true); }
static void t_faults_uring_buffered(void **s) { (void)s; faults(MK_READER_URING, false); }
static void t_faults_uring_direct(void **s) { (void)s; faults(MK_READER_URING, true); }

/* A request running past the real end of the file: a short read, the
 * bytes before the end of other requests still delivered. */
static void past_eof(mk_reader_backend be, bool direct) {
    mk_reader *r = open_reader(be, direct, NULL);
    unsigned char a[100], b[5000];
    const mk_reader_req q[2] = {{0, FILE_SIZE - 3000, 5000, b, 0, 7}, {0, 0, 100, a, 0, 8}};
    assert_int_equal(mk_reader_submit(r, q, 2), MK_OK);
    for (int k = 0; k < 2; k++) {
        uint64_t tag;
        bool done;
        mk_status s = mk_reader_next(r, true, &tag, &done);
        assert_true(done);
        if (tag == 7) {
            assert_int_equal(s, MK_E_FORMAT);
            char want[64];
            snprintf(want, sizeof want, "the file ends at offset %zu", FILE_SIZE);
            assert_non_null(strstr(mk_err_msg(), want));
            assert_non_null(strstr(mk_err_msg(), "2000 bytes missing"));
        } else {
            assert_int_equal(tag, 8);
            assert_int_equal(s, MK_OK);
        }
    }
    for (int k = 0; k < 100; k++)
        assert_int_equal(a[k], byte_at((uint64_t)k));
    mk_reader_destroy(r);
}

static void t_eof_pread(void **s) { (void)s; past_eof(MK_READER_PREAD, false); past_eof(MK_READER_PREAD, true); }
static void t_eof_uring(void **s) { (void)s; past_eof(MK_READER_URING, false); past_eof(MK_READER_URING, true); }

/* io_uring refused at setup: AUTO falls back and says why; URING fails. */
static int f_uring_init_eperm(unsigned e, void *ring, unsigned fl) {
    (void)e, (void)ring, (void)fl;
    return -EPERM;
}

static void t_uring_refused(void **s) {
    (void)s;
    static const mk_os_vtbl v = {.uring_init = f_uring_init_eperm};
    mk_os_override(&v);
    mk_reader *r = NULL;
    mk_reader_opts o = {0};
    assert_int_equal(mk_reader_create(&o, &r), MK_OK);
    assert_string_equal(mk_reader_backend_name(r), "pread");
    assert_non_null(strstr(mk_reader_fallback_reason(r), strerror(EPERM)));
    mk_reader_destroy(r);
    o.backend = MK_READER_URING;
    r = NULL;
    assert_int_equal(mk_reader_create(&o, &r), MK_E_UNSUPPORTED);
    assert_null(r);
    assert_non_null(strstr(mk_err_msg(), "io_uring"));
    mk_os_override(NULL);
}

/* A failed submission fails the requests (never reported done), and later
 * ones too. */
static int f_uring_submit_eio(void *ring) {
    (void)ring;
    return -EIO;
}

static void t_uring_submit_fails(void **s) {
    (void)s;
    mk_reader *r = open_reader(MK_READER_URING, false, NULL);
    static const mk_os_vtbl v = {.uring_submit = f_uring_submit_eio};
    mk_os_override(&v);
    unsigned char d[3][4096];
    for (int round = 0; round < 2; round++) {
        const mk_reader_req q[3] = {{0, 0, 4096, d[0], 0, 0}, {0, 100000, 4096, d[1], 0, 1},
                                    {0, 200000, 4096, d[2], 0, 2}};
        assert_int_equal(mk_reader_submit(r, q, 3), MK_OK);
        for (int k = 0; k < 3; k++) {
            uint64_t tag;
            bool done;
            assert_int_equal(mk_reader_next(r, true, &tag, &done), MK_E_IO);
            assert_true(done);
            assert_non_null(strstr(mk_err_msg(), g_path));
            assert_non_null(strstr(mk_err_msg(), strerror(EIO)));
        }
        assert_int_equal(mk_reader_pending(r), 0);
    }
    mk_os_override(NULL);
    mk_reader_destroy(r);
}

/* O_DIRECT refused at open (EINVAL, as tmpfs does): read buffered. */
static int f_open_nodirect(const char *p, int flags, mode_t mode) {
    if (flags & O_DIRECT) {
        errno = EINVAL;
        return -1;
    }
    return open(p, flags, mode);
}

static void t_direct_refused(void **s) {
    (void)s;
    static const mk_os_vtbl v = {.open = f_open_nodirect};
    mk_os_override(&v);
    mk_reader *r = open_reader(MK_READER_PREAD, true, NULL);
    mk_os_override(NULL);
    assert_false(mk_reader_file_direct(r, 0));
    unsigned char d[333];
    const mk_reader_req q = {0, 77777, 333, d, 0, 5};
    assert_int_equal(mk_reader_submit(r, &q, 1), MK_OK);
    assert_int_equal(mk_reader_wait_all(r), MK_OK);
    for (int k = 0; k < 333; k++)
        assert_int_equal(d[k], byte_at(77777u + (unsigned)k));
    mk_reader_destroy(r);
}

/* Bad requests are refused whole, nothing queued. */
static void t_bad_requests(void **s) {
    (void)s;
    mk_reader *r = open_reader(MK_READER_PREAD, false, NULL);
    unsigned char d[16];
    mk_reader_req q[2] = {{0, 0, 16, d, 0, 0}, {3, 0, 16, d, 0, 1}};
    assert_int_equal(mk_reader_submit(r, q, 2), MK_E_ARG);
    q[1] = (mk_reader_req){0, 0, 16, NULL, 0, 1};
    assert_int_equal(mk_reader_submit(r, q, 2), MK_E_ARG);
    q[1] = (mk_reader_req){0, 0, 16, d, 8, 1};
    assert_int_equal(mk_reader_submit(r, q, 2), MK_E_ARG);
    q[1] = (mk_reader_req){0, UINT64_MAX - 4, 16, d, 0, 1};
    assert_int_equal(mk_reader_submit(r, q, 2), MK_E_ARG);
    q[1] = (mk_reader_req){0, 4096, SIZE_MAX, d, 0, 1};
    assert_int_equal(mk_reader_submit(r, q, 2), MK_E_ARG);
    q[1] = (mk_reader_req){0, 4096, (size_t)1 << 50, d, 0, 1}; /* 2^28 reads to plan */
    assert_int_equal(mk_reader_submit(r, q, 2), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "larger than any buffer"));
    assert_int_equal(mk_reader_pending(r), 0);
    uint32_t idx;
    assert_int_equal(mk_reader_add_file(r, "/nonexistent/moekit-reader", &idx), MK_E_NOTFOUND);
    assert_non_null(strstr(mk_err_msg(), "/nonexistent/moekit-reader"));
    mk_reader_destroy(r);
}

/* Every allocation failing in turn (create, add_file, submit with bounce
 * buffers, reporting): a clean MK_E_NOMEM or success, never a crash, and
 * on success the right bytes. */
static void t_alloc_faults(void **s) {
    (void)s;
    unsigned char d[3][5000];
    const mk_reader_req q[3] = {{0, 10, 5000, d[0], 0, 0}, {0, 5010, 5000, d[1], 0, 1},
                                {0, 700001, 5000, d[2], 0, 2}};
    for (int be = 0; be < 2; be++) {
        bool ok = false;
        for (long n = 0; n < 1000 && !ok; n++) {
            memset(d, 0, sizeof d);
            mk_reader_opts o = {0};
            o.backend = be ? MK_READER_AUTO : MK_READER_PREAD;
            o.direct = true;
            mk_reader *r = NULL;
            uint32_t idx;
            mk_alloc_fail_after(n);
            mk_status st = mk_reader_create(&o, &r);
            if (st == MK_OK)
                st = mk_reader_add_file(r, g_path, &idx);
            if (st == MK_OK)
                st = mk_reader_submit(r, q, 3);
            if (st == MK_OK)
                st = mk_reader_wait_all(r);
            mk_alloc_fail_after(-1);
            if (st != MK_OK)
                assert_int_equal(st, MK_E_NOMEM);
            else
                for (int t = 0; t < 3; t++)
                    for (size_t k = 0; k < 5000; k++)
                        assert_int_equal(d[t][k], byte_at(q[t].off + k));
            ok = st == MK_OK;
            mk_reader_destroy(r);
        }
        assert_true(ok);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_random_pread_buffered), cmocka_unit_test(t_random_pread_direct),
        cmocka_unit_test(t_random_uring_buffered), cmocka_unit_test(t_random_uring_direct),
        cmocka_unit_test(t_merge_pread),           cmocka_unit_test(t_merge_uring),
        cmocka_unit_test(t_merge_zero_len),
        cmocka_unit_test(t_faults_pread_buffered), cmocka_unit_test(t_faults_pread_direct),
        cmocka_unit_test(t_faults_uring_buffered), cmocka_unit_test(t_faults_uring_direct),
        cmocka_unit_test(t_eof_pread),             cmocka_unit_test(t_eof_uring),
        cmocka_unit_test(t_uring_refused),         cmocka_unit_test(t_uring_submit_fails),
        cmocka_unit_test(t_direct_refused),        cmocka_unit_test(t_bad_requests),
        cmocka_unit_test(t_alloc_faults),
    };
    return cmocka_run_group_tests(tests, setup_file, teardown_file);
}
