/* Output-path safety (io/outpath.c, io/outfile.c, io/outdir.c) at the
 * library level: canonical paths, which DSTs and files are refused and why,
 * the atomic single-file writer (unique temporary names, no replace without
 * force even when the file appears mid-run), and DST.partial/ ownership and
 * locking (a second holder in the same process is refused like a second
 * process: flock is per open file). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/os.h"
#include "io/outdir.h"
#include "io/outfile.h"
#include "io/outpath.h"
#include "mk_test_util.h"

static char *g_tmp;

static char *P(const char *rel) {
    static char b[8][4096];
    static int k;
    k = (k + 1) % 8;
    snprintf(b[k], sizeof b[k], "%s/%s", g_tmp, rel);
    return b[k];
}

static void put(const char *rel, const char *text) { assert_int_equal(mk_test_write(P(rel), text, strlen(text)), 0); }

static int setup(void **state) {
    (void)state;
    g_tmp = mk_test_tmpdir("outpath");
    char *r = realpath(g_tmp, NULL); /* compare against canonical forms */
    free(g_tmp);
    g_tmp = r;
    mkdir(P("src"), 0755);
    put("src/config.json", "{}");
    put("src/model.safetensors", "x");
    mkdir(P("plain"), 0755);
    put("plain/notes.txt", "mine");
    mkdir(P("ckpt"), 0755);
    put("ckpt/config.json", "{}");
    symlink(P("src"), P("srclink"));
    link(P("src/config.json"), P("hard.json"));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    mk_test_rmrf(g_tmp);
    free(g_tmp);
    return 0;
}

static void test_canon(void **state) {
    (void)state;
    char *c = mk_path_canon(P("src/../src/"));
    assert_string_equal(c, P("src"));
    free(c);
    c = mk_path_canon(P("srclink"));
    assert_string_equal(c, P("src"));
    free(c);
    c = mk_path_canon(P("nope/a/../b/"));
    assert_string_equal(c, P("nope/b"));
    free(c);
    assert_null(mk_path_canon(""));
}

/* check DST against SRC; returns the status, message in mk_err_msg() */
static mk_status dir_check(const char *dst, bool force) {
    mk_paths p;
    mk_paths_init(&p);
    assert_int_equal(mk_paths_add_input(&p, P("src"), "SRC"), MK_OK);
    mk_status s = mk_paths_check_dir(&p, dst, force);
    mk_paths_free(&p);
    return s;
}

static void test_dir_rules(void **state) {
    (void)state;
    assert_int_equal(dir_check(P("src"), true), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "is SRC"));
    assert_int_equal(dir_check(P("srclink/"), true), MK_E_ARG);
    assert_int_equal(dir_check(g_tmp, true), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "contains SRC"));
    assert_int_equal(dir_check(P("src/out"), false), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "inside SRC"));
    assert_int_equal(dir_check(P("plain"), true), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "not a checkpoint"));
    assert_int_equal(dir_check(P("plain"), false), MK_E_EXISTS);
    assert_int_equal(dir_check(P("hard.json"), true), MK_E_ARG);
    assert_int_equal(dir_check("", true), MK_E_ARG);
    assert_int_equal(dir_check("/", true), MK_E_ARG);
    assert_int_equal(dir_check(P("plain/.."), true), MK_E_ARG);
    /* DST.partial may not be SRC either */
    mk_paths p;
    mk_paths_init(&p);
    assert_int_equal(mk_paths_add_input(&p, P("x.partial"), "SRC"), MK_OK);
    assert_int_equal(mk_paths_check_dir(&p, P("x"), false), MK_E_ARG);
    mk_paths_free(&p);
    /* allowed: a checkpoint with force, a new path */
    assert_int_equal(dir_check(P("ckpt"), true), MK_OK);
    assert_int_equal(dir_check(P("new/deeper"), false), MK_OK);
    assert_true(mk_paths_looks_like_checkpoint(P("ckpt")));
    assert_false(mk_paths_looks_like_checkpoint(P("plain")));
    /* a project with a config.json and subdirectories is not a checkpoint */
    mkdir(P("proj"), 0755);
    mkdir(P("proj/src"), 0755);
    put("proj/config.json", "{}");
    assert_false(mk_paths_looks_like_checkpoint(P("proj")));
    assert_int_equal(dir_check(P("proj"), true), MK_E_ARG);
    put("proj/model.safetensors", "x");
    assert_true(mk_paths_looks_like_checkpoint(P("proj")));
}

static void test_file_rules(void **state) {
    (void)state;
    mk_paths p;
    mk_paths_init(&p);
    assert_int_equal(mk_paths_add_input(&p, P("src"), "MODEL"), MK_OK);
    assert_int_equal(mk_paths_check_file(&p, P("src/config.json"), "--out", true), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "config.json of MODEL"));
    assert_int_equal(mk_paths_check_file(&p, P("hard.json"), "--out", true), MK_E_ARG); /* same inode */
    assert_int_equal(mk_paths_check_file(&p, P("plain/notes.txt"), "--out", false), MK_E_EXISTS);
    assert_int_equal(mk_paths_check_file(&p, P("plain"), "--out", true), MK_E_ARG);
    assert_int_equal(mk_paths_check_file(&p, P("nodir/x"), "--out", true), MK_E_ARG);
    assert_int_equal(mk_paths_check_file(&p, "", "--out", true), MK_E_ARG);
    assert_int_equal(mk_paths_check_file(&p, "/dev/null", "--out", true), MK_E_ARG);
    assert_int_equal(mk_paths_check_file(&p, P("a.out"), "--out", false), MK_OK);
    assert_int_equal(mk_paths_check_file(&p, P("plain/../a.out"), "--hidden-out", false), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "two outputs"));
    assert_int_equal(mk_paths_check_file(&p, P("plain/notes.txt"), "--report", true), MK_OK);
    mk_paths_free(&p);
}

static void test_outfile(void **state) {
    (void)state;
    put("r.json.tmp", "user data");
    assert_int_equal(mk_os_write_file_atomic(P("r.json"), "new", 3), MK_OK);
    size_t n;
    char *b = mk_test_slurp(P("r.json.tmp"), &n);
    assert_non_null(b);
    assert_memory_equal(b, "user data", 9);
    free(b);
    /* no replace: a file that appears while the output is written stays */
    mk_outfile o;
    assert_int_equal(mk_outfile_open(&o, P("late.bin"), false), MK_OK);
    fputs("ours", o.f);
    put("late.bin", "theirs");
    assert_int_equal(mk_outfile_commit(&o), MK_E_EXISTS);
    b = mk_test_slurp(P("late.bin"), &n);
    assert_memory_equal(b, "theirs", 6);
    free(b);
    assert_int_equal(mk_outfile_write(P("late.bin"), "ours", 4, true), MK_OK);
    b = mk_test_slurp(P("late.bin"), &n);
    assert_int_equal(n, 4);
    free(b);
}

static void test_outdir_lock(void **state) {
    (void)state;
    mk_outdir a, b;
    assert_int_equal(mk_outdir_open(&a, P("od/"), false, "test"), MK_OK);
    assert_string_equal(a.partial, P("od.partial"));
    assert_int_equal(mk_outdir_open(&b, P("od"), true, "test"), MK_E_EXISTS);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %d", (int)getpid());
    assert_non_null(strstr(mk_err_msg(), pid));
    put("od.partial/shard", "x");
    assert_int_equal(mk_outdir_clear(&a), MK_OK);
    assert_false(mk_os_exists(P("od.partial/shard")));
    assert_true(mk_os_exists(P("od.partial/" MK_OUTDIR_OWNER)));
    put("od.partial/config.json", "{\"new\":1}");
    mk_outdir_close(&a); /* kept for a rerun, lock released */
    assert_int_equal(mk_outdir_open(&a, P("od"), false, "test"), MK_OK);
    assert_true(mk_os_exists(P("od.partial/config.json")));
    assert_int_equal(mk_outdir_commit(&a, NULL), MK_OK);
    assert_false(mk_os_exists(P("od.partial")));
    assert_false(mk_os_exists(P("od/" MK_OUTDIR_OWNER)));
    /* replace with force: the old DST goes, the new one is complete */
    assert_int_equal(mk_outdir_open(&a, P("od"), true, "test"), MK_OK);
    put("od.partial/model.safetensors", "v2");
    assert_int_equal(mk_outdir_commit(&a, NULL), MK_OK);
    assert_false(mk_os_exists(P("od/config.json")));
    assert_true(mk_os_exists(P("od/model.safetensors")));
    /* without force an existing DST is kept and so is the partial */
    assert_int_equal(mk_outdir_open(&a, P("od"), false, "test"), MK_OK);
    assert_int_equal(mk_outdir_commit(&a, NULL), MK_E_EXISTS);
    mk_outdir_close(&a);
    assert_true(mk_os_exists(P("od.partial")));
    /* a foreign DST.partial is refused and untouched; abort only removes a held one */
    mkdir(P("f.partial"), 0755);
    put("f.partial/mine.txt", "mine");
    assert_int_equal(mk_outdir_open(&a, P("f"), true, "test"), MK_E_EXISTS);
    assert_non_null(strstr(mk_err_msg(), "did not write"));
    mk_outdir_abort(&a);
    assert_true(mk_os_exists(P("f.partial/mine.txt")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canon),   cmocka_unit_test(test_dir_rules),   cmocka_unit_test(test_file_rules),
        cmocka_unit_test(test_outfile), cmocka_unit_test(test_outdir_lock),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
