/* Numeric flag parsing with messages that name the flag, the allowed range
 * and the value given (see cli_flags.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli_flags.h"
#include "cmd.h"

int mk_flag_int(const char *cmd, const char *flag, const char *val, long long lo, long long hi,
                long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(val, &end, 10);
    if (end != val && !*end && !errno && v >= lo && v <= hi) {
        *out = v;
        return -1;
    }
    return mk_cli_usage(cmd, "%s wants an integer from %lld to %lld, got '%s'", flag, lo, hi, val);
}

int mk_flag_real(const char *cmd, const char *flag, const char *val, double lo, double hi, unsigned open,
                 double *out) {
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    bool lo_ok = (open & MK_FLAG_LO_OPEN) ? v > lo : v >= lo;
    bool hi_ok = (open & MK_FLAG_HI_OPEN) ? v < hi : v <= hi;
    if (end != val && !*end && !errno && isfinite(v) && lo_ok && hi_ok) {
        *out = v;
        return -1;
    }
    if (isinf(hi))
        return mk_cli_usage(cmd, "%s wants a number %s %g, got '%s'", flag,
                            (open & MK_FLAG_LO_OPEN) ? ">" : ">=", lo, val);
    return mk_cli_usage(cmd, "%s wants a number in %c%g, %g%c, got '%s'", flag,
                        (open & MK_FLAG_LO_OPEN) ? '(' : '[', lo, hi, (open & MK_FLAG_HI_OPEN) ? ')' : ']',
                        val);
}

int mk_flag_size(const char *cmd, const char *flag, const char *val, unsigned long long lo,
                 unsigned long long *out) {
    unsigned long long v;
    if (mk_cli_parse_size(val, &v) && v >= lo) {
        *out = v;
        return -1;
    }
    return mk_cli_usage(cmd, "%s wants a size of at least %llu bytes, such as 512M or 5G (at most 8E), got '%s'",
                        flag, lo, val);
}
