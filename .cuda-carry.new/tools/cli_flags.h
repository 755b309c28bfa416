/* Numeric flag values with one message shape for every subcommand:
 *   moekit run: --max-tokens wants an integer from 1 to 16777216, got '100000000'
 * i.e. the flag, the allowed range and the value given, whatever was wrong
 * with it (junk, out of range, NaN, infinity). Each parser returns -1 when
 * the value is good (stored in *out) and otherwise prints the message
 * (mk_cli_usage) and returns its exit code, 2, so a caller writes
 *   if ((rc = mk_flag_int("run", "--seed", optarg, 0, INT64_MAX, &v)) >= 0) return rc; */
#ifndef MK_TOOLS_CLI_FLAGS_H
#define MK_TOOLS_CLI_FLAGS_H

#include <stdbool.h>

/* A decimal integer in [lo, hi]. */
int mk_flag_int(const char *cmd, const char *flag, const char *val, long long lo, long long hi,
                long long *out);

/* A finite real number in the interval from lo to hi, each end open or
 * closed (MK_FLAG_LO_OPEN, MK_FLAG_HI_OPEN); hi = INFINITY for no upper
 * bound (the message then says "a number > lo" or ">= lo"). */
enum { MK_FLAG_LO_OPEN = 1u << 0, MK_FLAG_HI_OPEN = 1u << 1 };
int mk_flag_real(const char *cmd, const char *flag, const char *val, double lo, double hi, unsigned open,
                 double *out);

/* A byte size such as 512M, 1G or 4096, at least lo bytes. */
int mk_flag_size(const char *cmd, const char *flag, const char *val, unsigned long long lo,
                 unsigned long long *out);

#endif
