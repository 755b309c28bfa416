/* Strict safetensors reading: every bad input of issue 2 fails with the right
 * status and a message naming the file and tensor; every valid shape of the
 * format (all dtypes, scalars, empty tensors, whitespace, unaligned data,
 * sharded sets, 64-bit sizes and offsets) opens and reads back exactly.
 *
 * Files are built by hand (st_build.h): 8-byte LE length + JSON + data, so
 * the reader is never tested against moekit's own writer here. Divisions:
 * helpers -> bad single files -> bad sets -> valid files -> data access ->
 * real fixtures -> reader I/O faults (short reads, EINTR, EIO). */
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <sys/stat.h>

#include "io/os.h"
#include "mk_test_util.h"
#include "moekit/st.h"
#include "st_build.h"

/* ------------------------------------------------------------------ helpers */

static int setup_dir(void **state) {
    char *d = mk_test_tmpdir("stread");
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

/* Open `path` with both access modes and expect failure `want` whose message
 * contains every non-NULL needle. */
static void expect_fail(const char *path, mk_status want, const char *n1, const char *n2) {
    const unsigned modes[2] = {0, MK_CKPT_NO_MMAP};
    for (int m = 0; m < 2; m++) {
        mk_ckpt *c = (mk_ckpt *)&modes; /* must be reset to NULL */
        mk_err_clear();
        mk_status s = mk_ckpt_open(path, modes[m], &c);
        const char *msg = mk_err_msg();
        if (m == 0 && getenv("MK_TEST_VERBOSE")) /* review the messages by eye */
            print_message("  -> %s\n", msg);
        if (s != want || (n1 && !strstr(msg, n1)) || (n2 && !strstr(msg, n2)))
            print_message("open(%s): status %s (want %s), message: %s\n  expected to contain '%s' and '%s'\n",
                          path, mk_status_name(s), mk_status_name(want), msg, n1 ? n1 : "",
                          n2 ? n2 : "");
        assert_int_equal(s, want);
        assert_null(c);
        if (n1)
            assert_non_null(strstr(msg, n1));
        if (n2)
            assert_non_null(strstr(msg, n2));
        mk_ckpt_close(c);
    }
}

static mk_ckpt *open_ok(const char *path, unsigned flags) {
    mk_ckpt *c = NULL;
    mk_status s = mk_ckpt_open(path, flags, &c);
    if (s != MK_OK)
        print_message("open(%s) failed: %s\n", path, mk_err_msg());
    assert_int_equal(s, MK_OK);
    assert_non_null(c);
    return c;
}

/* ------------------------------------------------------- bad single files */

typedef struct bad_case {
    const char *label;
    const char *hdr;
    size_t data_len;
    const char *n1, *n2; /* message must contain these (besides the file name) */
} bad_case;

static const bad_case g_bad[] = {
    {"missing dtype", "{\"blk.w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "'blk.w'", "dtype"},
    {"missing shape", "{\"blk.w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "'blk.w'", "shape"},
    {"missing offsets", "{\"blk.w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "'blk.w'", "data_offsets"},
    {"unknown dtype", "{\"blk.w\":{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "'blk.w'", "F128"},
    {"lower-case dtype", "{\"blk.w\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "'blk.w'", "f32"},
    {"dtype not a string", "{\"blk.w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "'blk.w'",
     "dtype"},
    {"shape not an array", "{\"blk.w\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8,
     "'blk.w'", "shape"},
    {"negative dim", "{\"blk.w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
     "'blk.w'", "shape"},
    {"real dim", "{\"blk.w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "'blk.w'",
     "shape"},
    {"too many dims",
     "{\"blk.w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, "'blk.w'",
     "dimensions"},
    {"byte range too short", "{\"blk.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,6]}}", 6,
     "'blk.w'", "byte range"},
    {"byte range too long", "{\"blk.w\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16,
     "'blk.w'", "byte range"},
    {"F4 odd count", "{\"blk.w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2, "'blk.w'",
     "whole number of bytes"},
    {"F6 count not x4", "{\"blk.w\":{\"dtype\":\"F6_E2M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
     "'blk.w'", "whole number of bytes"},
    {"offsets arity", "{\"blk.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "'blk.w'",
     "data_offsets"},
    {"offsets negative", "{\"blk.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8,
     "'blk.w'", "data_offsets"},
    {"offsets strings", "{\"blk.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",\"8\"]}}", 8,
     "'blk.w'", "data_offsets"},
    {"end before begin", "{\"blk.w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
     "'blk.w'", "end before begin"},
    {"entry not an object", "{\"blk.w\":[1,2]}", 0, "'blk.w'", "object"},
    {"hole",
     "{\"a.w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b.w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
     12, "'b.w'", "hole"},
    {"hole at start", "{\"a.w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "'a.w'",
     "hole"},
    {"overlap",
     "{\"a.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, "'b.w'", "overlaps"},
    {"same range twice",
     "{\"a.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b.w\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     8, "'b.w'", "overlaps"},
    {"empty tensor inside another",
     "{\"a.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"e.w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
     8, "'e.w'", "overlaps"},
    {"empty tensor past the end",
     "{\"a.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"e.w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[20,20]}}",
     8, "'e.w'", "hole"},
    {"offsets past the end", "{\"blk.w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
     "'blk.w'", "past the end"},
    {"buffer longer than last end", "{\"blk.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     16, "'blk.w'", "16 bytes"},
    {"data but no tensors", "{}", 4, "4 bytes", NULL},
    {"duplicate name",
     "{\"blk.w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"blk.w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "blk.w", "duplicate"},
    {"element count overflow",
     "{\"blk.w\":{\"dtype\":\"U8\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,8]}}", 8,
     "'blk.w'", "overflow"},
    {"byte count overflow",
     "{\"blk.w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}", 8,
     "'blk.w'", NULL},
    {"offset over int64", "{\"blk.w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}}",
     1, "JSON", NULL},
    {"not JSON", "{\"blk.w\": {\"dtype\": ", 0, "JSON", NULL},
    {"empty header", "", 0, "JSON", NULL},
    {"trailing garbage", "{} x", 0, "JSON", NULL},
    {"escaped NUL in name",
     "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "JSON", NULL},
    {"not an object: array", "[1, 2]", 0, "object", NULL},
    {"metadata not an object", "{\"__metadata__\": [\"pt\"]}", 0, "__metadata__", NULL},
    {"metadata value not a string", "{\"__metadata__\": {\"format\": 1}}", 0, "'format'", NULL},
};

static void test_bad_headers(void **state) {
    const char *dir = *state;
    char path[4096];
    for (size_t i = 0; i < sizeof g_bad / sizeof g_bad[0]; i++) {
        const bad_case *b = &g_bad[i];
        snprintf(path, sizeof path, "%s/bad%02zu.safetensors", dir, i);
        assert_int_equal(stb_write(path, b->hdr, NULL, b->data_len), 0);
        print_message("case: %s\n", b->label);
        expect_fail(path, MK_E_FORMAT, path, b->n1);
        if (b->n2)
            expect_fail(path, MK_E_FORMAT, b->n1, b->n2);
        /* the same file alone in a directory: the message names the shard */
        char sub[4096], in[4200];
        snprintf(sub, sizeof sub, "%s/dir%02zu", dir, i);
        assert_int_equal(mkdir(sub, 0755), 0);
        snprintf(in, sizeof in, "%s/model.safetensors", sub);
        assert_int_equal(stb_write(in, b->hdr, NULL, b->data_len), 0);
        expect_fail(sub, MK_E_FORMAT, "model.safetensors", b->n1);
    }
}

static void test_truncated_file(void **state) {
    const char *dir = *state;
    char p[4096];
    /* fewer than 8 bytes, including an empty file */
    for (size_t n = 0; n < 8; n++) {
        snprintf(p, sizeof p, "%s/short%zu.safetensors", dir, n);
        assert_int_equal(mk_test_write(p, "\x02\0\0\0\0\0\0", n), 0);
        expect_fail(p, MK_E_FORMAT, p, "truncated");
    }
    /* a valid file cut inside its data buffer: data shorter than the offsets */
    const char *h = "{\"x.w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    stb_path(p, sizeof p, dir, "cut.safetensors");
    assert_int_equal(stb_write(p, h, NULL, 16), 0);
    mk_ckpt *c = open_ok(p, 0);
    mk_ckpt_close(c);
    assert_int_equal(truncate(p, (off_t)(8 + strlen(h) + 10)), 0);
    expect_fail(p, MK_E_FORMAT, p, "'x.w'");
    /* cut inside the header */
    assert_int_equal(truncate(p, (off_t)(8 + strlen(h) - 1)), 0);
    expect_fail(p, MK_E_FORMAT, p, "larger than the file");
}

static void test_header_length_bad(void **state) {
    const char *dir = *state;
    char p[4096];
    const char *h = "{}";
    /* longer than the file */
    stb_path(p, sizeof p, dir, "long.safetensors");
    assert_int_equal(stb_write_raw(p, 1000, h, 2, NULL, 0), 0);
    expect_fail(p, MK_E_FORMAT, p, "larger than the file");
    /* one past the file by exactly one byte */
    assert_int_equal(stb_write_raw(p, 3, h, 2, NULL, 0), 0);
    expect_fail(p, MK_E_FORMAT, p, "larger than the file");
    /* 2^64-1: must not wrap around into a small allocation */
    assert_int_equal(stb_write_raw(p, UINT64_MAX, h, 2, NULL, 0), 0);
    expect_fail(p, MK_E_FORMAT, p, "100,000,000");
    /* over the 100,000,000 limit even though the file is larger still
     * (sparse: no disk used), so the limit and not the size is what fires */
    stb_path(p, sizeof p, dir, "huge.safetensors");
    assert_int_equal(stb_write_raw(p, MK_ST_MAX_HEADER + 1, h, 2, NULL, 0), 0);
    assert_int_equal(truncate(p, 200000000), 0);
    expect_fail(p, MK_E_FORMAT, p, "100,000,000");
    /* exactly at the limit is accepted: "{}" and 99,999,998 spaces */
    stb_path(p, sizeof p, dir, "limit.safetensors");
    char *big = malloc(MK_ST_MAX_HEADER);
    assert_non_null(big);
    memset(big, ' ', MK_ST_MAX_HEADER);
    big[0] = '{';
    big[1] = '}';
    assert_int_equal(stb_write_raw(p, MK_ST_MAX_HEADER, big, MK_ST_MAX_HEADER, NULL, 0), 0);
    free(big);
    mk_ckpt *c = open_ok(p, MK_CKPT_NO_MMAP);
    assert_int_equal(mk_ckpt_count(c), 0);
    mk_ckpt_close(c);
    assert_int_equal(unlink(p), 0);
}

/* ------------------------------------------------------------- bad sets */

#define F32x1(off) "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" off "]}"

static void make_shard(const char *dir, const char *name, const char *hdr, size_t dl) {
    char p[4096];
    assert_int_equal(stb_write(stb_path(p, sizeof p, dir, name), hdr, NULL, dl), 0);
}

static void make_index(const char *dir, const char *json) {
    char p[4096];
    assert_int_equal(mk_test_write(stb_path(p, sizeof p, dir, "model.safetensors.index.json"), json,
                                   strlen(json)),
                     0);
}

/* A fresh subdirectory with two valid shards: a.w,b.w in shard 1; c.w in shard 2. */
static const char *two_shards(const char *root, const char *name, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", root, name);
    assert_int_equal(mkdir(buf, 0755), 0);
    make_shard(buf, "model-00001-of-00002.safetensors", "{\"a.w\":" F32x1("0,4") ",\"b.w\":" F32x1("4,8") "}",
               8);
    make_shard(buf, "model-00002-of-00002.safetensors", "{\"c.w\":" F32x1("0,4") "}", 4);
    return buf;
}

#define S1 "\"model-00001-of-00002.safetensors\""
#define S2 "\"model-00002-of-00002.safetensors\""

static void test_bad_sets(void **state) {
    const char *root = *state;
    char d[4096];

    /* a consistent set opens (the baseline every case below breaks) */
    two_shards(root, "good", d, sizeof d);
    make_index(d, "{\"metadata\":{\"total_size\":12},\"weight_map\":{\"a.w\":" S1 ",\"b.w\":" S1
                  ",\"c.w\":" S2 "}}");
    mk_ckpt *c = open_ok(d, 0);
    assert_int_equal(mk_ckpt_count(c), 3);
    mk_ckpt_close(c);

    /* duplicate across two shards, no index */
    snprintf(d, sizeof d, "%s/dup-shards", root);
    assert_int_equal(mkdir(d, 0755), 0);
    make_shard(d, "a.safetensors", "{\"x.w\":" F32x1("0,4") "}", 4);
    make_shard(d, "b.safetensors", "{\"y.w\":" F32x1("0,4") ",\"x.w\":" F32x1("4,8") "}", 8);
    expect_fail(d, MK_E_FORMAT, "'x.w'", "b.safetensors");
    expect_fail(d, MK_E_FORMAT, "twice", "a.safetensors");

    /* duplicate across two shards, both indexed (the index can list it once only) */
    two_shards(root, "dup-indexed", d, sizeof d);
    make_shard(d, "model-00002-of-00002.safetensors", "{\"c.w\":" F32x1("0,4") ",\"a.w\":" F32x1("4,8") "}",
               8);
    make_index(d, "{\"weight_map\":{\"a.w\":" S1 ",\"b.w\":" S1 ",\"c.w\":" S2 "}}");
    expect_fail(d, MK_E_FORMAT, "'a.w'", "model-00002-of-00002.safetensors");

    /* duplicate index entries */
    two_shards(root, "dup-index", d, sizeof d);
    make_index(d, "{\"weight_map\":{\"a.w\":" S1 ",\"b.w\":" S1 ",\"c.w\":" S2 ",\"a.w\":" S2 "}}");
    expect_fail(d, MK_E_FORMAT, "model.safetensors.index.json", "a.w");

    /* index naming a missing shard */
    two_shards(root, "missing-shard", d, sizeof d);
    make_index(d, "{\"weight_map\":{\"a.w\":" S1 ",\"b.w\":" S1 ",\"c.w\":" S2
                  ",\"d.w\":\"model-00003-of-00003.safetensors\"}}");
    expect_fail(d, MK_E_FORMAT, "model.safetensors.index.json", "model-00003-of-00003.safetensors");
    expect_fail(d, MK_E_FORMAT, "'d.w'", "does not exist");

    /* index naming a tensor its shard does not hold (it is in the other one) */
    two_shards(root, "wrong-shard", d, sizeof d);
    make_index(d, "{\"weight_map\":{\"a.w\":" S1 ",\"b.w\":" S2 ",\"c.w\":" S2 "}}");
    expect_fail(d, MK_E_FORMAT, "'b.w'", "model-00002-of-00002.safetensors");

    /* index naming a tensor no shard holds */
    two_shards(root, "ghost", d, sizeof d);
    make_index(d, "{\"weight_map\":{\"a.w\":" S1 ",\"b.w\":" S1 ",\"c.w\":" S2 ",\"ghost.w\":" S2 "}}");
    expect_fail(d, MK_E_FORMAT, "'ghost.w'", "model.safetensors.index.json");

    /* a shard tensor missing from the index */
    two_shards(root, "unindexed", d, sizeof d);
    make_index(d, "{\"weight_map\":{\"a.w\":" S1 ",\"c.w\":" S2 "}}");
    expect_fail(d, MK_E_FORMAT, "'b.w'", "missing from the index");

    /* a shard the index never names, holding an extra tensor: not part of the set */
    two_shards(root, "stray", d, sizeof d);
    make_shard(d, "extra.safetensors", "{\"z.w\":" F32x1("0,4") "}", 4);
    make_index(d, "{\"weight_map\":{\"a.w\":" S1 ",\"b.w\":" S1 ",\"c.w\":" S2 "}}");
    c = open_ok(d, 0);
    assert_int_equal(mk_ckpt_count(c), 3);
    assert_null(mk_ckpt_find(c, "z.w"));
    mk_ckpt_close(c);

    /* broken index files */
    static const struct {
        const char *json, *needle;
    } idx[] = {
        {"{\"weight_map\":", "JSON"},
        {"[]", "weight_map"},
        {"{\"metadata\":{}}", "weight_map"},
        {"{\"weight_map\":[]}", "weight_map"},
        {"{\"weight_map\":{}}", "empty"},
        {"{\"weight_map\":{\"a.w\":1}}", "'a.w'"},
        {"{\"weight_map\":{\"a.w\":\"../model-00001-of-00002.safetensors\"}}", "plain file name"},
        {"{\"weight_map\":{\"a.w\":\"..\"}}", "plain file name"},
        {"{\"weight_map\":{\"a.w\":\"\"}}", "plain file name"},
    };
    for (size_t i = 0; i < sizeof idx / sizeof idx[0]; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "badidx%zu", i);
        two_shards(root, nm, d, sizeof d);
        make_index(d, idx[i].json);
        expect_fail(d, MK_E_FORMAT, "model.safetensors.index.json", idx[i].needle);
    }
    /* a bad shard inside an indexed set names the shard and tensor */
    two_shards(root, "bad-member", d, sizeof d);
    make_shard(d, "model-00002-of-00002.safetensors", "{\"c.w\":" F32x1("0,8") "}", 8);
    make_index(d, "{\"weight_map\":{\"a.w\":" S1 ",\"b.w\":" S1 ",\"c.w\":" S2 "}}");
    expect_fail(d, MK_E_FORMAT, "model-00002-of-00002.safetensors", "'c.w'");
}

static void test_not_found(void **state) {
    const char *root = *state;
    char d[4096];
    /* an empty directory */
    snprintf(d, sizeof d, "%s/empty", root);
    assert_int_equal(mkdir(d, 0755), 0);
    expect_fail(d, MK_E_NOTFOUND, d, "no checkpoint");
    /* a directory with a config and other files, no safetensors */
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", d);
    assert_int_equal(mk_test_write(p, "{}", 2), 0);
    snprintf(p, sizeof p, "%s/model.safetensors.bak", d);
    assert_int_equal(mk_test_write(p, "{}", 2), 0);
    expect_fail(d, MK_E_NOTFOUND, d, "no checkpoint");
    /* a nonexistent path */
    snprintf(p, sizeof p, "%s/nope/model.safetensors", root);
    expect_fail(p, MK_E_NOTFOUND, p, NULL);
    snprintf(p, sizeof p, "%s/nope", root);
    expect_fail(p, MK_E_NOTFOUND, p, NULL);
}

/* Things that are not regular files: a FIFO must not block the open (nobody
 * writes to it), a directory named like a shard is not a shard. */
static void test_not_regular(void **state) {
    const char *root = *state;
    char d[4096], p[4200];
    snprintf(d, sizeof d, "%s/fifo", root);
    assert_int_equal(mkdir(d, 0755), 0);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    assert_int_equal(mkfifo(p, 0644), 0);
    expect_fail(p, MK_E_FORMAT, p, "regular file");
    expect_fail(d, MK_E_FORMAT, p, "regular file");
    assert_int_equal(unlink(p), 0);
    /* the index itself a FIFO */
    make_shard(d, "model.safetensors", "{\"a.w\":" F32x1("0,4") "}", 4);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    assert_int_equal(mkfifo(p, 0644), 0);
    mk_ckpt *c = NULL;
    assert_int_not_equal(mk_ckpt_open(d, 0, &c), MK_OK);
    assert_null(c);
    assert_non_null(strstr(mk_err_msg(), p));
    /* a directory named like a shard */
    snprintf(d, sizeof d, "%s/dirshard", root);
    assert_int_equal(mkdir(d, 0755), 0);
    snprintf(p, sizeof p, "%s/x.safetensors", d);
    assert_int_equal(mkdir(p, 0755), 0);
    expect_fail(d, MK_E_FORMAT, p, "regular file");
    expect_fail("/dev/null", MK_E_FORMAT, "/dev/null", "regular file");
}

/* ------------------------------------------------------------ valid files */

/* One tensor of every dtype, packed without padding (unaligned). */
static void test_all_dtypes(void **state) {
    static const struct {
        const char *dt;
        const char *shape;
        int ndim;
        int64_t d0, d1;
        uint64_t numel, nbytes;
    } k[] = {
        {"BOOL", "[3]", 1, 3, 0, 3, 3},          {"F4", "[2,3]", 2, 2, 3, 6, 3},
        {"F6_E2M3", "[4]", 1, 4, 0, 4, 3},       {"F6_E3M2", "[2,4]", 2, 2, 4, 8, 6},
        {"U8", "[3]", 1, 3, 0, 3, 3},            {"I8", "[3]", 1, 3, 0, 3, 3},
        {"F8_E5M2", "[3]", 1, 3, 0, 3, 3},       {"F8_E4M3", "[3]", 1, 3, 0, 3, 3},
        {"F8_E8M0", "[3]", 1, 3, 0, 3, 3},       {"F8_E4M3FNUZ", "[3]", 1, 3, 0, 3, 3},
        {"F8_E5M2FNUZ", "[3]", 1, 3, 0, 3, 3},   {"I16", "[3]", 1, 3, 0, 3, 6},
        {"U16", "[3]", 1, 3, 0, 3, 6},           {"F16", "[3]", 1, 3, 0, 3, 6},
        {"BF16", "[3]", 1, 3, 0, 3, 6},          {"I32", "[3]", 1, 3, 0, 3, 12},
        {"U32", "[3]", 1, 3, 0, 3, 12},          {"F32", "[3]", 1, 3, 0, 3, 12},
        {"C64", "[3]", 1, 3, 0, 3, 24},          {"F64", "[3]", 1, 3, 0, 3, 24},
        {"I64", "[3]", 1, 3, 0, 3, 24},          {"U64", "[3]", 1, 3, 0, 3, 24},
    };
    const size_t nk = sizeof k / sizeof k[0];
    assert_int_equal(nk, MK_DT_COUNT);
    char hdr[8192];
    size_t hl = 0;
    uint64_t off = 0, begins[32];
    hl += (size_t)snprintf(hdr + hl, sizeof hdr - hl, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < nk; i++) {
        begins[i] = off;
        hl += (size_t)snprintf(hdr + hl, sizeof hdr - hl,
                               ",\"t.%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%llu,%llu]}",
                               k[i].dt, k[i].dt, k[i].shape, (unsigned long long)off,
                               (unsigned long long)(off + k[i].nbytes));
        off += k[i].nbytes;
    }
    hl += (size_t)snprintf(hdr + hl, sizeof hdr - hl, "}");
    unsigned char data[512];
    uint64_t seed = 7;
    stb_fill(&seed, data, off);
    char p[4096];
    stb_path(p, sizeof p, *state, "all.safetensors");
    assert_int_equal(stb_write(p, hdr, data, off), 0);
    const unsigned modes[2] = {0, MK_CKPT_NO_MMAP};
    for (int m = 0; m < 2; m++) {
        mk_ckpt *c = open_ok(p, modes[m]);
        assert_int_equal(mk_ckpt_count(c), nk);
        assert_string_equal(mk_ckpt_metadata_json(c, 0), "{\"format\":\"pt\"}");
        for (size_t i = 0; i < nk; i++) {
            char nm[64];
            snprintf(nm, sizeof nm, "t.%s", k[i].dt);
            const mk_tensor_info *t = mk_ckpt_find(c, nm);
            assert_non_null(t);
            assert_string_equal(mk_dtype_name(t->dtype), k[i].dt);
            assert_int_equal(t->ndim, k[i].ndim);
            assert_int_equal(t->shape[0], k[i].d0);
            if (k[i].ndim > 1)
                assert_int_equal(t->shape[1], k[i].d1);
            assert_int_equal(t->numel, k[i].numel);
            assert_int_equal(t->nbytes, k[i].nbytes);
            assert_int_equal(t->file_offset, 8 + hl + begins[i]);
            assert_int_equal(t->shard, 0);
            /* file order: the i-th tensor by offset */
            assert_ptr_equal(mk_ckpt_tensor(c, i), t);
            unsigned char got[64];
            assert_int_equal(mk_ckpt_read(c, t, 0, got, t->nbytes), MK_OK);
            assert_memory_equal(got, data + begins[i], t->nbytes);
            const void *mp = mk_ckpt_data(c, t);
            if (modes[m] & MK_CKPT_NO_MMAP)
                assert_null(mp);
            else
                assert_memory_equal(mp, data + begins[i], t->nbytes);
        }
        assert_null(mk_ckpt_find(c, "t.F128"));
        assert_null(mk_ckpt_find(c, "__metadata__"));
        assert_null(mk_ckpt_tensor(c, nk));
        mk_ckpt_close(c);
    }
}

/* Scalars, empty tensors (at the start, between, at the end, with huge
 * other dims), a header with no tensors, JSON whitespace around the header. */
static void test_scalars_empty_whitespace(void **state) {
    const char *dir = *state;
    char p[4096];
    const char *h = " \n\t {\"z.first\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[0,0]},"
                    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                    "\"z.mid\":{\"dtype\":\"F32\",\"shape\":[3,0,1099511627776],\"data_offsets\":[4,4]},"
                    "\"v\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]},"
                    "\"z.last\":{\"dtype\":\"I64\",\"shape\":[0,7],\"data_offsets\":[6,6]}} \r\n  ";
    float sv = 3.5f;
    unsigned char data[6];
    memcpy(data, &sv, 4);
    data[4] = 0xAB;
    data[5] = 0xCD;
    stb_path(p, sizeof p, dir, "se.safetensors");
    assert_int_equal(stb_write(p, h, data, 6), 0);
    for (unsigned fl = 0; fl <= MK_CKPT_NO_MMAP; fl++) {
        mk_ckpt *c = open_ok(p, fl);
        assert_int_equal(mk_ckpt_count(c), 5);
        const mk_tensor_info *s = mk_ckpt_find(c, "s");
        assert_int_equal(s->ndim, 0);
        assert_int_equal(s->numel, 1);
        assert_int_equal(s->nbytes, 4);
        float f = 0;
        assert_int_equal(mk_ckpt_read_f32(c, s, 0, 1, &f), MK_OK);
        assert_true(f == 3.5f);
        const char *empties[] = {"z.first", "z.mid", "z.last"};
        for (int i = 0; i < 3; i++) {
            const mk_tensor_info *e = mk_ckpt_find(c, empties[i]);
            assert_non_null(e);
            assert_int_equal(e->numel, 0);
            assert_int_equal(e->nbytes, 0);
            assert_int_equal(mk_ckpt_read(c, e, 0, NULL, 0), MK_OK);
            assert_int_not_equal(mk_ckpt_read(c, e, 0, &f, 1), MK_OK);
        }
        assert_int_equal(mk_ckpt_find(c, "z.mid")->shape[2], 1099511627776ll);
        const mk_tensor_info *v = mk_ckpt_find(c, "v");
        unsigned char b[2];
        assert_int_equal(mk_ckpt_read(c, v, 0, b, 2), MK_OK);
        assert_memory_equal(b, data + 4, 2);
        assert_int_equal(mk_ckpt_read(c, v, 1, b, 1), MK_OK);
        assert_int_equal(b[0], 0xCD);
        /* reads past the tensor are argument errors, not silent over-reads */
        assert_int_equal(mk_ckpt_read(c, v, 1, b, 2), MK_E_ARG);
        assert_int_equal(mk_ckpt_read(c, v, 3, b, 0), MK_E_ARG);
        assert_non_null(strstr(mk_err_msg(), "'v'"));
        mk_ckpt_close(c);
    }
    /* a header with no tensors and no data */
    stb_path(p, sizeof p, dir, "none.safetensors");
    assert_int_equal(stb_write(p, "{}", NULL, 0), 0);
    mk_ckpt *c = open_ok(p, 0);
    assert_int_equal(mk_ckpt_count(c), 0);
    assert_null(mk_ckpt_find(c, "x"));
    assert_null(mk_ckpt_metadata_json(c, 0));
    mk_ckpt_close(c);
    /* only metadata */
    assert_int_equal(stb_write(p, "{\"__metadata__\":{}}  ", NULL, 0), 0);
    c = open_ok(p, 0);
    assert_int_equal(mk_ckpt_count(c), 0);
    mk_ckpt_close(c);
}

static void put_f32(unsigned char *p, float f) { memcpy(p, &f, 4); }
static void put_u16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

/* MLX-style: no header padding, so data begins at an odd file offset and
 * every tensor is misaligned; float32 reads must still be exact. Also the
 * float32 conversion of BF16/F16/F32/F8 on known values, mmap and pread. */
static void test_unaligned_and_f32(void **state) {
    char hdr[1024];
    int hl = snprintf(hdr, sizeof hdr,
                      "{\"a.f32\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                      "\"b.bf16\":{\"dtype\":\"BF16\",\"shape\":[5],\"data_offsets\":[16,26]},"
                      "\"c.e4m3\":{\"dtype\":\"F8_E4M3\",\"shape\":[6],\"data_offsets\":[26,32]},"
                      "\"d.f16\":{\"dtype\":\"F16\",\"shape\":[5],\"data_offsets\":[32,42]},"
                      "\"e.e5m2\":{\"dtype\":\"F8_E5M2\",\"shape\":[4],\"data_offsets\":[42,46]},"
                      "\"f.i32\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[46,50]}}");
    if ((8 + hl) % 2 == 0) /* make the data start odd */
        hdr[hl++] = ' ', hdr[hl] = 0;
    assert_int_equal((8 + hl) % 2, 1);
    unsigned char d[50] = {0};
    const float a[4] = {1.0f, -2.5f, 3.0e-38f, 65504.0f};
    for (int i = 0; i < 4; i++)
        put_f32(d + 4 * i, a[i]);
    const uint16_t bf[5] = {0x3F80, 0xC000, 0x4049, 0x0000, 0x7F80};
    const float bfv[5] = {1.0f, -2.0f, 3.140625f, 0.0f, INFINITY};
    for (int i = 0; i < 5; i++)
        put_u16(d + 16 + 2 * i, bf[i]);
    const uint8_t e4[6] = {0x38, 0x7E, 0xB8, 0x01, 0x00, 0x7F};
    const float e4v[6] = {1.0f, 448.0f, -1.0f, 0.001953125f, 0.0f, NAN};
    memcpy(d + 26, e4, 6);
    const uint16_t h16[5] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x3555};
    const float h16v[5] = {1.0f, -2.0f, 65504.0f, 5.9604644775390625e-08f, 0.333251953125f};
    for (int i = 0; i < 5; i++)
        put_u16(d + 32 + 2 * i, h16[i]);
    const uint8_t e5[4] = {0x3C, 0x7B, 0x7C, 0xC0};
    const float e5v[4] = {1.0f, 57344.0f, INFINITY, -2.0f};
    memcpy(d + 42, e5, 4);
    char p[4096];
    stb_path(p, sizeof p, *state, "mlx.safetensors");
    assert_int_equal(stb_write(p, hdr, d, sizeof d), 0);
    for (unsigned fl = 0; fl <= MK_CKPT_NO_MMAP; fl++) {
        mk_ckpt *c = open_ok(p, fl);
        float out[8];
        const mk_tensor_info *t = mk_ckpt_find(c, "a.f32");
        assert_int_equal(t->file_offset % 2, 1);
        assert_int_equal(mk_ckpt_read_f32(c, t, 0, 4, out), MK_OK);
        assert_memory_equal(out, a, sizeof a);
        assert_int_equal(mk_ckpt_read_f32(c, t, 1, 2, out), MK_OK); /* a sub-range */
        assert_true(out[0] == -2.5f && out[1] == 3.0e-38f);
        assert_int_equal(mk_ckpt_read_f32(c, t, 3, 2, out), MK_E_ARG);
        assert_int_equal(mk_ckpt_read_f32(c, t, 5, 0, out), MK_E_ARG);
        t = mk_ckpt_find(c, "b.bf16");
        assert_int_equal(mk_ckpt_read_f32(c, t, 0, 5, out), MK_OK);
        for (int i = 0; i < 5; i++)
            assert_true(out[i] == bfv[i]);
        t = mk_ckpt_find(c, "c.e4m3");
        assert_int_equal(mk_ckpt_read_f32(c, t, 0, 6, out), MK_OK);
        for (int i = 0; i < 5; i++)
            assert_true(out[i] == e4v[i]);
        assert_true(isnan(out[5]) && isnan(e4v[5]));
        t = mk_ckpt_find(c, "d.f16");
        assert_int_equal(mk_ckpt_read_f32(c, t, 0, 5, out), MK_OK);
        for (int i = 0; i < 5; i++)
            assert_true(out[i] == h16v[i]);
        t = mk_ckpt_find(c, "e.e5m2");
        assert_int_equal(mk_ckpt_read_f32(c, t, 0, 4, out), MK_OK);
        for (int i = 0; i < 4; i++)
            assert_true(out[i] == e5v[i]);
        /* integers have no float32 view */
        t = mk_ckpt_find(c, "f.i32");
        assert_int_not_equal(mk_ckpt_read_f32(c, t, 0, 1, out), MK_OK);
        assert_non_null(strstr(mk_err_msg(), "'f.i32'"));
        mk_ckpt_close(c);
    }
}

/* A float32 tensor longer than the pread path's bounce buffer: mmap and
 * pread conversions agree element for element, at odd starting elements. */
static void test_f32_chunked(void **state) {
    enum { N = 40003 };
    float *v = malloc(N * sizeof *v), *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    assert_non_null(v);
    assert_non_null(x);
    assert_non_null(y);
    uint64_t seed = 99;
    for (int i = 0; i < N; i++)
        v[i] = (float)(int64_t)(stb_rand(&seed) % 2000001) / 1000.0f - 1000.0f;
    char hdr[256], p[4096];
    snprintf(hdr, sizeof hdr, "{\"big\":{\"dtype\":\"F32\",\"shape\":[%d],\"data_offsets\":[0,%d]}}", N, 4 * N);
    stb_path(p, sizeof p, *state, "chunk.safetensors");
    assert_int_equal(stb_write(p, hdr, v, 4 * (size_t)N), 0);
    mk_ckpt *a = open_ok(p, 0), *b = open_ok(p, MK_CKPT_NO_MMAP);
    const mk_tensor_info *ta = mk_ckpt_find(a, "big"), *tb = mk_ckpt_find(b, "big");
    assert_int_equal(mk_ckpt_read_f32(a, ta, 0, N, x), MK_OK);
    assert_int_equal(mk_ckpt_read_f32(b, tb, 0, N, y), MK_OK);
    assert_memory_equal(x, v, N * sizeof *v);
    assert_memory_equal(y, v, N * sizeof *v);
    assert_int_equal(mk_ckpt_read_f32(b, tb, 17, N - 17, y), MK_OK);
    assert_memory_equal(y, v + 17, (N - 17) * sizeof *v);
    mk_ckpt_close(a);
    mk_ckpt_close(b);
    free(v);
    free(x);
    free(y);
}

/* Sharded directory: with an index, and the same shards without one. */
static void test_sharded(void **state) {
    const char *root = *state;
    char d[4096];
    for (int with_index = 0; with_index < 2; with_index++) {
        two_shards(root, with_index ? "indexed" : "globbed", d, sizeof d);
        char p[4200];
        /* files that are not shards are ignored */
        snprintf(p, sizeof p, "%s/config.json", d);
        assert_int_equal(mk_test_write(p, "{}", 2), 0);
        snprintf(p, sizeof p, "%s/.model.safetensors.tmp", d);
        assert_int_equal(mk_test_write(p, "junk", 4), 0);
        if (with_index)
            make_index(d, "{\"metadata\":{\"total_size\":12},\"weight_map\":{\"c.w\":" S2 ",\"a.w\":" S1
                          ",\"b.w\":" S1 "}}");
        for (unsigned fl = 0; fl <= MK_CKPT_NO_MMAP; fl++) {
            mk_ckpt *c = open_ok(d, fl);
            assert_string_equal(mk_ckpt_dir(c), d);
            assert_int_equal(mk_ckpt_nshards(c), 2);
            assert_non_null(strstr(mk_ckpt_shard_path(c, 0), "model-00001-of-00002.safetensors"));
            assert_non_null(strstr(mk_ckpt_shard_path(c, 1), "model-00002-of-00002.safetensors"));
            assert_int_equal(mk_ckpt_shard_size(c, 1), 8 + strlen("{\"c.w\":" F32x1("0,4") "}") + 4);
            assert_true(mk_ckpt_shard_fd(c, 0) >= 0);
            assert_int_equal(mk_ckpt_count(c), 3);
            static const char *const order[] = {"a.w", "b.w", "c.w"};
            for (size_t i = 0; i < 3; i++)
                assert_string_equal(mk_ckpt_tensor(c, i)->name, order[i]);
            assert_int_equal(mk_ckpt_find(c, "a.w")->shard, 0);
            assert_int_equal(mk_ckpt_find(c, "b.w")->shard, 0);
            assert_int_equal(mk_ckpt_find(c, "c.w")->shard, 1);
            mk_ckpt_close(c);
        }
        /* opening one shard by path gives just that shard */
        snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d);
        mk_ckpt *c = open_ok(p, 0);
        assert_int_equal(mk_ckpt_count(c), 1);
        assert_string_equal(mk_ckpt_dir(c), d);
        mk_ckpt_close(c);
    }
}

/* The Hugging Face cache layout: the snapshot directory and its files are
 * symlinks into a blob store. */
static void test_symlinks(void **state) {
    const char *root = *state;
    char blobs[4096], snap[4096], a[4200], b[4200];
    snprintf(blobs, sizeof blobs, "%s/blobs", root);
    assert_int_equal(mkdir(blobs, 0755), 0);
    make_shard(blobs, "b1", "{\"a.w\":" F32x1("0,4") ",\"b.w\":" F32x1("4,8") "}", 8);
    make_shard(blobs, "b2", "{\"c.w\":" F32x1("0,4") "}", 4);
    snprintf(a, sizeof a, "%s/idx", blobs);
    const char *ix = "{\"weight_map\":{\"a.w\":" S1 ",\"b.w\":" S1 ",\"c.w\":" S2 "}}";
    assert_int_equal(mk_test_write(a, ix, strlen(ix)), 0);
    snprintf(snap, sizeof snap, "%s/snap", root);
    assert_int_equal(mkdir(snap, 0755), 0);
    const char *links[3][2] = {{"../blobs/b1", "model-00001-of-00002.safetensors"},
                               {"../blobs/b2", "model-00002-of-00002.safetensors"},
                               {"../blobs/idx", "model.safetensors.index.json"}};
    for (int i = 0; i < 3; i++) {
        snprintf(b, sizeof b, "%s/%s", snap, links[i][1]);
        assert_int_equal(symlink(links[i][0], b), 0);
    }
    snprintf(a, sizeof a, "%s/latest", root);
    assert_int_equal(symlink("snap", a), 0);
    mk_ckpt *c = open_ok(a, 0);
    assert_int_equal(mk_ckpt_count(c), 3);
    assert_int_equal(mk_ckpt_nshards(c), 2);
    mk_ckpt_close(c);
    /* a dangling shard link is a missing shard */
    snprintf(b, sizeof b, "%s/blobs/b2", root);
    assert_int_equal(unlink(b), 0);
    expect_fail(a, MK_E_FORMAT, "model-00002-of-00002.safetensors", "does not exist");
}

/* 64-bit sizes and offsets: a 10 GiB BF16 tensor (numel > 2^32) followed by
 * a small one that starts past 4 GiB, in a sparse file (ftruncate: no disk). */
static void test_over_4gib(void **state) {
    const uint64_t big = 5ull << 31; /* elements: 5 * 2^31 > 2^32 */
    const uint64_t big_bytes = big * 2;
    char hdr[512], p[4096];
    int hl = snprintf(hdr, sizeof hdr,
                      "{\"huge\":{\"dtype\":\"BF16\",\"shape\":[5,2147483648],\"data_offsets\":[0,%llu]},"
                      "\"tail\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[%llu,%llu]}}",
                      (unsigned long long)big_bytes, (unsigned long long)big_bytes,
                      (unsigned long long)(big_bytes + 8));
    stb_path(p, sizeof p, *state, "sparse.safetensors");
    assert_int_equal(stb_write(p, hdr, NULL, 0), 0);
    const uint64_t ds = 8 + (uint64_t)hl, total = ds + big_bytes + 8;
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    if (ftruncate(fd, (off_t)total) != 0) {
        close(fd);
        skip(); /* filesystem without large sparse files */
    }
    const float tail[2] = {1.25f, -7.0f};
    const unsigned char mark[4] = {0xDE, 0xAD, 0xBE, 0xEF};
    assert_int_equal(pwrite(fd, tail, 8, (off_t)(ds + big_bytes)), 8);
    assert_int_equal(pwrite(fd, mark, 4, (off_t)(ds + big_bytes - 4)), 4);
    close(fd);
    for (unsigned fl = 0; fl <= MK_CKPT_NO_MMAP; fl++) {
        mk_ckpt *c = open_ok(p, fl);
        const mk_tensor_info *h = mk_ckpt_find(c, "huge"), *t = mk_ckpt_find(c, "tail");
        assert_int_equal(h->numel, big);
        assert_int_equal(h->nbytes, big_bytes);
        assert_int_equal(h->shape[1], 2147483648ll);
        assert_int_equal(t->file_offset, ds + big_bytes);
        assert_int_equal(mk_ckpt_shard_size(c, 0), total);
        float f[2];
        assert_int_equal(mk_ckpt_read_f32(c, t, 0, 2, f), MK_OK);
        assert_memory_equal(f, tail, 8);
        unsigned char m[4];
        assert_int_equal(mk_ckpt_read(c, h, big_bytes - 4, m, 4), MK_OK);
        assert_memory_equal(m, mark, 4);
        assert_int_equal(mk_ckpt_read(c, h, (1ull << 32) + 3, m, 1), MK_OK);
        assert_int_equal(m[0], 0);
        if (!fl) {
            const unsigned char *hp = mk_ckpt_data(c, h);
            assert_memory_equal(hp + big_bytes - 4, mark, 4);
            float g[2];
            assert_int_equal(mk_ckpt_read_f32(c, h, big - 2, 2, g), MK_OK);
            assert_true(g[1] == mk_bf16_to_f32(0xEFBE));
        }
        mk_ckpt_close(c);
    }
}

/* ----------------------------------------------------------- real fixtures */

static char g_found[64][4096];
static int g_nfound;

static int find_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb;
    if (type == FTW_F && strcmp(path + ftw->base, "model.safetensors") == 0 && g_nfound < 64)
        snprintf(g_found[g_nfound++], sizeof g_found[0], "%s", path);
    return 0;
}

/* Check the checkpoint against the header as read here with jansson. */
static void check_against_header(const char *path, const mk_ckpt *c) {
    size_t fsz = 0;
    unsigned char *raw = mk_test_slurp(path, &fsz);
    assert_non_null(raw);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | raw[i];
    assert_true(n + 8 <= fsz);
    json_error_t e;
    json_t *root = json_loadb((const char *)raw + 8, n, 0, &e);
    assert_non_null(root);
    size_t count = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__"))
            continue;
        count++;
        const mk_tensor_info *t = mk_ckpt_find(c, key);
        if (!t)
            print_message("%s: '%s' not found\n", path, key);
        assert_non_null(t);
        assert_string_equal(t->name, key);
        assert_string_equal(mk_dtype_name(t->dtype), json_string_value(json_object_get(v, "dtype")));
        json_t *sh = json_object_get(v, "shape");
        assert_int_equal((size_t)t->ndim, json_array_size(sh));
        for (size_t d = 0; d < json_array_size(sh); d++)
            assert_int_equal(t->shape[d], json_integer_value(json_array_get(sh, d)));
        json_t *of = json_object_get(v, "data_offsets");
        uint64_t b = (uint64_t)json_integer_value(json_array_get(of, 0));
        uint64_t en = (uint64_t)json_integer_value(json_array_get(of, 1));
        assert_int_equal(t->file_offset, 8 + n + b);
        assert_int_equal(t->nbytes, en - b);
        /* bytes through the reader equal the bytes in the file */
        const void *mp = mk_ckpt_data(c, t);
        if (mp)
            assert_memory_equal(mp, raw + 8 + n + b, t->nbytes);
    }
    assert_int_equal(mk_ckpt_count(c), count);
    /* mk_ckpt_tensor walks every tensor once, in file order */
    uint64_t prev = 0;
    for (size_t i = 0; i < count; i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(c, i);
        assert_ptr_equal(mk_ckpt_find(c, t->name), t);
        assert_true(t->file_offset >= prev);
        prev = t->file_offset + t->nbytes;
    }
    json_decref(root);
    free(raw);
}

static void test_fixtures(void **state) {
    (void)state;
    const char *root = getenv("MK_FIXTURES");
    if (!root || !mk_os_is_dir(root)) {
        print_message("MK_FIXTURES not set or missing: skipped\n");
        skip();
    }
    g_nfound = 0;
    assert_int_equal(nftw(root, find_cb, 16, FTW_PHYS), 0);
    assert_true(g_nfound > 0);
    for (int i = 0; i < g_nfound; i++) {
        mk_ckpt *a = open_ok(g_found[i], 0), *b = open_ok(g_found[i], MK_CKPT_NO_MMAP);
        check_against_header(g_found[i], a);
        check_against_header(g_found[i], b);
        /* the directory form opens the same tensors */
        char *dir = mk_path_dirname(g_found[i]);
        mk_ckpt *d = open_ok(dir, 0);
        assert_int_equal(mk_ckpt_count(d), mk_ckpt_count(a));
        free(dir);
        mk_ckpt_close(d);
        /* mmap and pread give identical bytes for every tensor */
        size_t cap = 0;
        unsigned char *buf = NULL;
        for (size_t k = 0; k < mk_ckpt_count(a); k++) {
            const mk_tensor_info *t = mk_ckpt_tensor(a, k), *u = mk_ckpt_find(b, t->name);
            assert_int_equal(t->file_offset, u->file_offset);
            if (t->nbytes > cap) {
                cap = t->nbytes;
                buf = realloc(buf, cap);
                assert_non_null(buf);
            }
            assert_int_equal(mk_ckpt_read(b, u, 0, buf, t->nbytes), MK_OK);
            assert_memory_equal(buf, mk_ckpt_data(a, t), t->nbytes);
        }
        free(buf);
        mk_ckpt_close(a);
        mk_ckpt_close(b);
    }
    print_message("checked %d fixture checkpoints\n", g_nfound);
}

/* -------------------------------------------------------- reader I/O faults */

static int g_calls, g_eintr_every, g_fail_at, g_fail_errno;

/* One byte per call (a worst-case short read), with optional EINTR and a
 * hard failure at the g_fail_at-th call. */
static ssize_t pread_1byte(int fd, void *buf, size_t n, off_t off) {
    g_calls++;
    if (g_fail_at && g_calls == g_fail_at) {
        if (g_fail_errno == 0)
            return 0; /* premature end of file */
        errno = g_fail_errno;
        return -1;
    }
    if (g_eintr_every && g_calls % g_eintr_every == 0) {
        errno = EINTR;
        return -1;
    }
    return pread(fd, buf, n ? 1 : 0, off);
}

static const mk_os_vtbl g_short = {.pread = pread_1byte, .pwrite = pwrite, .fsync = fsync, .rename = rename};

static void test_short_reads(void **state) {
    char p[4096];
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[12,16]}}";
    unsigned char d[16];
    uint64_t seed = 5;
    stb_fill(&seed, d, sizeof d);
    stb_path(p, sizeof p, *state, "sr.safetensors");
    assert_int_equal(stb_write(p, h, d, sizeof d), 0);
    for (int eintr = 0; eintr <= 3; eintr += 3) {
        g_calls = 0;
        g_eintr_every = eintr;
        g_fail_at = 0;
        mk_os_override(&g_short);
        mk_ckpt *c = open_ok(p, MK_CKPT_NO_MMAP);
        unsigned char got[16];
        assert_int_equal(mk_ckpt_read(c, mk_ckpt_find(c, "a"), 0, got, 12), MK_OK);
        assert_int_equal(mk_ckpt_read(c, mk_ckpt_find(c, "b"), 0, got + 12, 4), MK_OK);
        assert_memory_equal(got, d, 16);
        float f[3], g[3];
        assert_int_equal(mk_ckpt_read_f32(c, mk_ckpt_find(c, "a"), 0, 3, f), MK_OK);
        memcpy(g, d, 12);
        assert_memory_equal(f, g, 12);
        assert_true(g_calls >= (int)(8 + strlen(h) + 16 + 12));
        mk_ckpt_close(c);
        mk_os_override(NULL);
    }
    /* a real fixture, header and all, one byte at a time */
    const char *fx = mk_test_fixture("deepseekv3-a/fp8/model.safetensors");
    if (mk_os_exists(fx)) {
        char fxp[4096];
        snprintf(fxp, sizeof fxp, "%s", fx);
        mk_ckpt *ref = open_ok(fxp, 0);
        g_calls = 0;
        g_eintr_every = 7;
        mk_os_override(&g_short);
        mk_ckpt *c = open_ok(fxp, MK_CKPT_NO_MMAP);
        assert_int_equal(mk_ckpt_count(c), mk_ckpt_count(ref));
        for (size_t i = 0; i < mk_ckpt_count(c) && i < 8; i++) {
            const mk_tensor_info *t = mk_ckpt_tensor(c, i);
            size_t n = t->nbytes < 4096 ? t->nbytes : 4096;
            unsigned char buf[4096];
            assert_int_equal(mk_ckpt_read(c, t, 0, buf, n), MK_OK);
            assert_memory_equal(buf, mk_ckpt_data(ref, mk_ckpt_find(ref, t->name)), n);
        }
        mk_ckpt_close(c);
        mk_os_override(NULL);
        mk_ckpt_close(ref);
    }
    /* EIO and premature EOF at every read of the open: a clean failure that
     * names the file, never a crash or a half-open checkpoint */
    const int errs[2] = {EIO, 0};
    for (int e = 0; e < 2; e++) {
        for (int at = 1;; at++) {
            g_calls = 0;
            g_eintr_every = 0;
            g_fail_at = at;
            g_fail_errno = errs[e];
            mk_os_override(&g_short);
            mk_ckpt *c = NULL;
            mk_status s = mk_ckpt_open(p, MK_CKPT_NO_MMAP, &c);
            mk_os_override(NULL);
            if (s == MK_OK) {
                assert_true(at > g_calls); /* the fault point was never reached */
                mk_ckpt_close(c);
                break;
            }
            assert_null(c);
            assert_int_equal(s, errs[e] ? MK_E_IO : MK_E_FORMAT);
            assert_non_null(strstr(mk_err_msg(), p));
        }
    }
    g_fail_at = 0;
    /* EIO on a data read */
    mk_ckpt *c = open_ok(p, MK_CKPT_NO_MMAP);
    g_calls = 0;
    g_fail_at = 1;
    g_fail_errno = EIO;
    mk_os_override(&g_short);
    unsigned char b[4];
    assert_int_equal(mk_ckpt_read(c, mk_ckpt_find(c, "a"), 0, b, 4), MK_E_IO);
    assert_non_null(strstr(mk_err_msg(), p));
    mk_os_override(NULL);
    g_fail_at = 0;
    mk_ckpt_close(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_headers, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_truncated_file, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_header_length_bad, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_bad_sets, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_not_found, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_not_regular, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_all_dtypes, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_scalars_empty_whitespace, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_unaligned_and_f32, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_f32_chunked, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_sharded, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_symlinks, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_over_4gib, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_fixtures, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_short_reads, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
