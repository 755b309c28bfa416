/* moekit: the command-line entry point. Dispatches to the subcommands that
 * registered themselves (see cmd.h) and prints the overview help.
 *
 * Every command's stdout goes through one check here (finish_stdout): a
 * report, manifest or JSON that could not be written in full (`> /dev/full`,
 * a full disk, a closed pipe) is an error, never a success with a truncated
 * result. Commands that stream (run) also check as they go, to stop early. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "moekit/convert.h"
#include "moekit/escape.h"
#include "moekit/isa.h"
#include "moekit/kernels.h"
#include "moekit/version.h"

#define MK_MAX_CMDS 64
static const mk_cmd *g_cmds[MK_MAX_CMDS];
static int g_ncmds;

void mk_cmd_register(const mk_cmd *c) {
    if (g_ncmds < MK_MAX_CMDS)
        g_cmds[g_ncmds++] = c;
}

static int cmd_cmp(const void *a, const void *b) {
    const mk_cmd *x = *(const mk_cmd *const *)a, *y = *(const mk_cmd *const *)b;
    if (x->order != y->order)
        return x->order < y->order ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Messages quote names from files and flags: escaped (moekit/escape.h), a
 * message is one line and cannot drive the terminal. */
int mk_cli_fail(mk_status s) {
    char esc[4 * 2048 + 1];
    mk_escape(esc, sizeof esc, *mk_err_msg() ? mk_err_msg() : mk_status_name(s), 0);
    fprintf(stderr, "moekit: %s\n", esc);
    return mk_status_exit_code(s);
}

int mk_cli_usage(const char *cmd, const char *fmt, ...) {
    char msg[2048], esc[4 * sizeof msg + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mk_escape(esc, sizeof esc, msg, 0);
    fprintf(stderr, "moekit %s: %s (see 'moekit %s --help')\n", cmd, esc, cmd);
    return 2;
}

int mk_cli_stdout_failed(void) {
    return ferror(stdout) || fflush(stdout) != 0;
}

/* Flush and close stdout; on a write error report it once and turn a success
 * into exit 1 (an output the user asked for is incomplete). A failing stderr
 * cannot be reported, but still makes the exit non-zero. */
static int finish_stdout(int rc) {
    errno = 0;
    int bad = fflush(stdout) != 0; /* first: it retries what is buffered and sets errno */
    int err = errno;
    bad = bad || ferror(stdout);
    if (fclose(stdout) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    if (bad && rc == 0) { /* a failed command has already said why */
        fprintf(stderr, "moekit: writing standard output failed: %s; the output is incomplete\n",
                err ? strerror(err) : "write error");
        rc = 1;
    }
    if ((ferror(stderr) || fflush(stderr) != 0) && rc == 0)
        rc = 1;
    return rc;
}

static void usage(FILE *f) {
    qsort(g_cmds, (size_t)g_ncmds, sizeof g_cmds[0], cmd_cmp);
    fprintf(f, "moekit %s - convert, quantize, verify and run Mixture-of-Experts models\n\n"
               "usage: moekit <command> [options]   (moekit <command> --help for details)\n\n"
               "commands:\n", MK_VERSION);
    for (int i = 0; i < g_ncmds; i++)
        fprintf(f, "  %-10s %s\n", g_cmds[i]->name, g_cmds[i]->summary);
    fprintf(f, "\nexit codes: 0 ok, 1 internal failure, failed comparison or unwritable stdout, 2 bad\n"
               "input or usage (verify: 1 differences found, 3 no verdict: see moekit verify --help)\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return finish_stdout(0);
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("moekit %s\n", MK_VERSION);
        return finish_stdout(0);
    }
    /* MK_KERNELS=ref|avx2|avxvnni|avx512|avx512vnni|amx forces a kernel path (the library reads no
     * environment; this is the CLI's mapping to mk_isa_set) */
    const char *kp = getenv("MK_KERNELS");
    mk_isa isa;
    if (kp && *kp && (mk_isa_parse(kp, &isa) != MK_OK || mk_isa_set(isa) != MK_OK)) {
        fprintf(stderr, "moekit: MK_KERNELS: %s\n", mk_err_msg());
        return 2;
    }
    /* MK_ACT_INT8=1|0: int8 or float activations for the MLX affine 4/8-bit
     * decode products (kernels.h mk_kernels_set_int8; int8 by default on x86 paths), as
     * the engine commands' --act-int8 on|off, which wins when both are given */
    const char *ai = getenv("MK_ACT_INT8");
    if (ai && *ai) {
        if (strcmp(ai, "0") && strcmp(ai, "1")) {
            fprintf(stderr, "moekit: MK_ACT_INT8: expected 0 or 1\n");
            return 2;
        }
        mk_kernels_set_int8(!strcmp(ai, "1"));
    }
    /* MK_PREFILL_INT8=0|1: int8 activations for the MLX affine 4/8-bit
     * multi-token (prefill) products forced off or on (kernels.h
     * mk_kernels_set_prefill_int8; by default prefill follows --act-int8) */
    const char *pi = getenv("MK_PREFILL_INT8");
    if (pi && *pi) {
        if (strcmp(pi, "0") && strcmp(pi, "1")) {
            fprintf(stderr, "moekit: MK_PREFILL_INT8: expected 0 or 1\n");
            return 2;
        }
        mk_kernels_set_prefill_int8(!strcmp(pi, "1"));
    }
#ifdef MK_TEST_HOOKS
    /* crash points for the resume tests (tests/cli/convert_resume.sh) */
    mk_conv_test_crash_at(getenv("MK_CONVERT_CRASH"));
#endif
    for (int i = 0; i < g_ncmds; i++)
        if (!strcmp(argv[1], g_cmds[i]->name))
            return finish_stdout(g_cmds[i]->fn(argc - 1, argv + 1));
    fprintf(stderr, "moekit: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
