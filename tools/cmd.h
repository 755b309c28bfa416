/* Subcommand registry of the moekit CLI.
 *
 * Each tools/cmd_<name>.c file defines one subcommand and registers it with
 * MK_CMD_REGISTER, so adding a command needs no edit to main.c. A command
 * returns the process exit code: 0 success, 1 internal failure or a
 * comparison that did not pass (verify), 2 bad input / usage. */
#ifndef MK_TOOLS_CMD_H
#define MK_TOOLS_CMD_H

#include <stdbool.h>
#include <stdio.h>

#include "moekit/dtype.h"
#include "moekit/status.h"

typedef int (*mk_cmd_fn)(int argc, char **argv);

typedef struct mk_cmd {
    const char *name;
    const char *summary; /* one line for `moekit --help` */
    mk_cmd_fn fn;
    int order;           /* position in the help listing */
} mk_cmd;

void mk_cmd_register(const mk_cmd *c);

#define MK_CMD_REGISTER(NAME, ORDER, SUMMARY, FN)                                        \
    static const mk_cmd mk_cmd_def_##NAME = {#NAME, SUMMARY, FN, ORDER};                 \
    __attribute__((constructor)) static void mk_cmd_reg_##NAME(void) {                   \
        mk_cmd_register(&mk_cmd_def_##NAME);                                             \
    }

/* Print "moekit: <msg>" for the current error and return its exit code. */
int mk_cli_fail(mk_status s);
/* Print "moekit <cmd>: <formatted>" to stderr and return 2 (usage error). */
int mk_cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True once writing stdout has failed (flushes first): streaming commands
 * stop early on it; main() reports the failure and exits 1 in any case. */
int mk_cli_stdout_failed(void);

/* Flag-value helpers, defined in cli_util.c. */

/* Parse "1G", "512M", "4096", "1.5G" into bytes. Returns false on junk. */
int mk_cli_parse_size(const char *s, unsigned long long *out);
/* Parse a decimal integer in [lo, hi]; false on junk or out of range. */
bool mk_cli_parse_long(const char *s, long lo, long hi, long *out);
/* Parse a float dtype name (bf16/bfloat16, f16/float16/fp16, f32/float32/fp32);
 * false on any other name. */
bool mk_cli_parse_dtype(const char *s, mk_dtype *out);
/* Number of online CPUs (>= 1). */
int mk_cli_ncpu(void);
/* This process's resident set now (VmRSS) and its peak (VmHWM) in bytes,
 * 0 when unknown: the tools measure, the library is told (mk_conv_opts
 * held_bytes). */
uint64_t mk_cli_rss(void);
uint64_t mk_cli_peak_rss(void);
/* 1 when built with AddressSanitizer, else 0 (the "sanitizer" line of --stats). */
int mk_cli_sanitized(void);
/* convert/quantize --pack-experts: "<cmd>: packed layout: N experts, M
 * 4 KiB-aligned" (not when quiet) and the library's note (unaligned
 * experts, a loader that cannot read the output) on stderr, even when
 * quiet: it says what the output is. */
struct mk_conv_stats;
void mk_cli_pack_note(const char *cmd, const struct mk_conv_stats *st, bool quiet);

#endif
