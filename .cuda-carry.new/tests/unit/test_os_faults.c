/* System-call faults through the overridable table (src/io/os.h): open,
 * mmap, ftruncate, copy_file_range and unlink, as the SSD store and every
 * writer will meet them. Each injected failure must give a clean error
 * naming the file (never a crash, never a committed output), and the
 * fallbacks must give the very same bytes:
 *   - mmap failing: model open is MK_E_IO naming the shard and "mmap";
 *   - open failing (EMFILE) on a checkpoint: MK_E_IO naming it;
 *   - copy_file_range failing (EXDEV, EIO): convert falls back to read +
 *     write and the output is byte-identical to an undisturbed run;
 *   - ftruncate failing with ENOSPC: MK_E_NOSPACE, no DST;
 *   - open failing (EACCES) when creating a shard: an error, no DST;
 *   - unlink failing: removing a file reports it with the OS reason. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/os.h"
#include "mk_test_util.h"
#include "moekit/convert.h"
#include "moekit/model.h"

static int g_errno;           /* errno the faulty call sets */
static const char *g_match;   /* open(): fail only paths containing this */
static int g_calls;           /* faulty calls made */

static void *f_mmap(void *a, size_t n, int prot, int flags, int fd, off_t off) {
    (void)a, (void)n, (void)prot, (void)flags, (void)fd, (void)off;
    g_calls++;
    errno = g_errno;
    return MAP_FAILED;
}

static int f_open(const char *p, int flags, mode_t mode) {
    if (g_match && strstr(p, g_match)) {
        g_calls++;
        errno = g_errno;
        return -1;
    }
    return open(p, flags, mode);
}

static ssize_t f_cfr(int fi, off_t *oi, int fo, off_t *oo, size_t n, unsigned fl) {
    (void)fi, (void)oi, (void)fo, (void)oo, (void)n, (void)fl;
    g_calls++;
    errno = g_errno;
    return -1;
}

static int f_ftruncate(int fd, off_t len) {
    (void)fd, (void)len;
    g_calls++;
    errno = g_errno;
    return -1;
}

static int f_unlink(const char *p) {
    (void)p;
    g_calls++;
    errno = g_errno;
    return -1;
}

static void fault(const mk_os_vtbl *v, int err, const char *match) {
    g_errno = err;
    g_match = match;
    g_calls = 0;
    mk_os_override(v);
}

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

static void test_model_open_faults(void **st) {
    (void)st;
    const char *src = mk_test_fixture("qwen3moe-a/bf16");
    mk_model *m = NULL;
    fault(&(mk_os_vtbl){.mmap = f_mmap}, ENOMEM, NULL);
    mk_status s = mk_model_open(src, &m);
    mk_os_override(NULL);
    assert_int_equal(s, MK_E_IO);
    assert_null(m);
    assert_true(g_calls > 0);
    assert_non_null(strstr(mk_err_msg(), "model.safetensors"));
    assert_non_null(strstr(mk_err_msg(), "mmap"));
    fault(&(mk_os_vtbl){.open = f_open}, EMFILE, "model.safetensors");
    s = mk_model_open(src, &m);
    mk_os_override(NULL);
    assert_int_not_equal(s, MK_OK);
    assert_null(m);
    assert_true(g_calls > 0);
    assert_non_null(strstr(mk_err_msg(), "model.safetensors"));
}

/* convert SRC -> DIR/name HF per-expert with the current table */
static mk_status convert(const char *src, const char *dir, const char *name) {
    char *dst = join(dir, name);
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.quiet = true;
    o.threads = 2;
    mk_status s = mk_conv_run(src, dst, &o, NULL);
    free(dst);
    return s;
}

static void test_convert_faults(void **st) {
    (void)st;
    const char *src = mk_test_fixture("qwen3moe-a/bf16");
    char *dir = mk_test_tmpdir("osfault");
    assert_int_equal(convert(src, dir, "ref"), MK_OK);
    char *ref = join(dir, "ref/model.safetensors");
    size_t nref, nout;
    void *want = mk_test_slurp(ref, &nref);
    assert_non_null(want);
    /* copy_file_range refused (another filesystem) or failing: read + write */
    int errs[2] = {EXDEV, EIO};
    for (int i = 0; i < 2; i++) {
        char name[16];
        snprintf(name, sizeof name, "cfr%d", i);
        fault(&(mk_os_vtbl){.copy_file_range = f_cfr}, errs[i], NULL);
        mk_status s = convert(src, dir, name);
        mk_os_override(NULL);
        assert_int_equal(s, MK_OK);
        assert_true(g_calls > 0);
        char *p = join(dir, name), *f = join(p, "model.safetensors");
        void *got = mk_test_slurp(f, &nout);
        assert_non_null(got);
        assert_int_equal(nout, nref);
        assert_memory_equal(got, want, nref);
        free(got);
        free(f);
        free(p);
    }
    /* ftruncate: disk full at the end of a shard */
    fault(&(mk_os_vtbl){.ftruncate = f_ftruncate}, ENOSPC, NULL);
    mk_status s = convert(src, dir, "full");
    mk_os_override(NULL);
    assert_int_equal(s, MK_E_NOSPACE);
    char *full = join(dir, "full");
    assert_int_equal(access(full, F_OK), -1); /* nothing committed */
    /* a shard that cannot be created */
    fault(&(mk_os_vtbl){.open = f_open}, EACCES, ".safetensors");
    s = convert(src, dir, "denied");
    mk_os_override(NULL);
    assert_int_not_equal(s, MK_OK);
    assert_true(g_calls > 0);
    char *denied = join(dir, "denied");
    assert_int_equal(access(denied, F_OK), -1);
    free(full);
    free(denied);
    free(want);
    free(ref);
    mk_test_rmrf(dir);
    free(dir);
}

static void test_unlink_fault(void **st) {
    (void)st;
    char *dir = mk_test_tmpdir("osunlink");
    char *d = join(dir, "tree"), *f = join(d, "x");
    assert_int_equal(mkdir(d, 0755), 0);
    assert_int_equal(mk_test_write(f, "x", 1), 0);
    fault(&(mk_os_vtbl){.unlink = f_unlink}, EBUSY, NULL);
    mk_status s = mk_os_rmtree(d);
    mk_os_override(NULL);
    assert_int_equal(s, MK_E_IO);
    assert_true(g_calls > 0);
    assert_non_null(strstr(mk_err_msg(), strerror(EBUSY)));
    assert_int_equal(access(f, F_OK), 0); /* still there */
    free(f);
    free(d);
    mk_test_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_open_faults),
        cmocka_unit_test(test_convert_faults),
        cmocka_unit_test(test_unlink_fault),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
