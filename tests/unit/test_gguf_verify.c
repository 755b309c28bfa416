/* `convert --to gguf --verify` (src/convert/verify.c, the GGUF branch):
 * it passes on an intact file and fails, naming what differs, when one
 * byte of the written file is not what the plan computes. The writer's
 * pwrite is replaced (io/os.h's test table) by one that flips a byte of
 * what it writes at a chosen file offset: in a tensor's data (the last
 * tensor, a K-quant computed from the source) and in the header (a key's
 * name). Without the GGUF branch --verify was refused; with a verify that
 * only re-read the file, the flips would pass. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/os.h"
#include "mk_test_util.h"
#include "moekit/convert.h"
#include "moekit/ggml_quant.h"

static int64_t g_flip = -1; /* file offset of the byte to flip; -1: none */
static int g_flipped;

/* Is fd the GGUF being written (the writer's DST.partial/model.gguf.tmp)? */
static int is_gguf(int fd) {
    char l[64], t[4200];
    snprintf(l, sizeof l, "/proc/self/fd/%d", fd);
    ssize_t k = readlink(l, t, sizeof t - 1);
    if (k <= 0)
        return 0;
    t[k] = 0;
    return strstr(t, "model.gguf") != NULL;
}

static ssize_t f_pwrite(int fd, const void *buf, size_t n, off_t off) {
    if (g_flip >= off && g_flip < off + (off_t)n && is_gguf(fd)) {
        unsigned char *c = malloc(n);
        if (!c)
            return -1;
        memcpy(c, buf, n);
        c[g_flip - off] ^= 0x10;
        g_flipped++;
        ssize_t r = pwrite(fd, c, n, off);
        free(c);
        return r;
    }
    return pwrite(fd, buf, n, off);
}

/* Convert qwen3moe-a to a Q4_K_M GGUF with --verify, flipping the byte at
 * file offset `flip` (-1: none); the file's size is returned in *size. */
static mk_status run(int64_t flip, const char *tag, long long *size, mk_conv_stats *st) {
    /* the fixture first: without it the test skips here, before it has
     * made a directory or overridden the os table */
    const char *src = mk_test_fixture("qwen3moe-a/bf16");
    char *dir = mk_test_tmpdir(tag);
    char dst[4200];
    snprintf(dst, sizeof dst, "%s/out.gguf", dir);
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.to = MK_CONV_GGUF;
    o.gguf_type = MK_GGUF_Q4_K_M;
    o.verify = true;
    o.quiet = true;
    o.threads = 2;
    g_flip = flip;
    g_flipped = 0;
    mk_os_override(&(mk_os_vtbl){.pwrite = f_pwrite});
    mk_status s = mk_conv_run(src, dst, &o, st);
    mk_os_override(NULL);
    size_t n = 0;
    void *d = s == MK_OK ? mk_test_slurp(dst, &n) : NULL;
    *size = (long long)n;
    free(d);
    mk_test_rmrf(dir);
    free(dir);
    return s;
}

static void test_gguf_verify(void **state) {
    (void)state;
    mk_conv_stats st;
    long long size = 0, ignored;
    assert_int_equal(run(-1, "ggv-ok", &size, &st), MK_OK);
    assert_true(size > 100000);
    assert_int_equal(st.verify_failures, 0);
    assert_true(st.verified_hash > 30); /* every tensor: 39 */
    /* a byte of the last tensor's data (token_embd, Q4_K: computed) */
    mk_status s = run(size - 100, "ggv-data", &ignored, &st);
    assert_true(g_flipped > 0);
    assert_int_equal(s, MK_E_MISMATCH);
    assert_non_null(strstr(mk_err_msg(), "differ from what the source gives"));
    /* a byte of the header (in the first key's name, past the magic and counts) */
    s = run(40, "ggv-head", &ignored, &st);
    assert_true(g_flipped > 0);
    assert_int_equal(s, MK_E_MISMATCH);
    assert_non_null(strstr(mk_err_msg(), "header"));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_gguf_verify)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
