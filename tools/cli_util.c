/* Flag-value parsing shared by the moekit subcommands (see cmd.h): sizes,
 * bounded integers and dtype names, plus the small facts about the running
 * process (CPU count, sanitizer build) that several commands report. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "moekit/convert.h"

int mk_cli_parse_size(const char *s, unsigned long long *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0) || !isfinite(v)) /* NaN and inf are not sizes */
        return 0;
    double m = 1;
    switch (*end) {
    case 'k': case 'K': m = 1024.0; end++; break;
    case 'm': case 'M': m = 1024.0 * 1024; end++; break;
    case 'g': case 'G': m = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': m = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'B' || *end == 'b')
        end++;
    if (*end == 'B')
        end++;
    if (*end || v * m >= 9223372036854775808.0) /* 8 EiB: no size we handle, and the cast's limit */
        return 0;
    *out = (unsigned long long)(v * m);
    return 1;
}

bool mk_cli_parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

bool mk_cli_parse_dtype(const char *s, mk_dtype *out) {
    static const struct {
        const char *name;
        mk_dtype dt;
    } t[] = {{"bf16", MK_DT_BF16}, {"bfloat16", MK_DT_BF16}, {"f16", MK_DT_F16}, {"float16", MK_DT_F16},
             {"fp16", MK_DT_F16},  {"f32", MK_DT_F32},       {"float32", MK_DT_F32}, {"fp32", MK_DT_F32}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strcmp(s, t[i].name) == 0) {
            *out = t[i].dt;
            return true;
        }
    return false;
}

int mk_cli_ncpu(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static uint64_t proc_status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long v = 0;
    size_t k = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, k) == 0 && line[k] == ':') {
            v = strtoull(line + k + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

uint64_t mk_cli_rss(void) { return proc_status_kb("VmRSS") * 1024; }
uint64_t mk_cli_peak_rss(void) { return proc_status_kb("VmHWM") * 1024; }

int mk_cli_sanitized(void) {
#if defined(__SANITIZE_ADDRESS__)
    return 1;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return 1;
#else
    return 0;
#endif
#else
    return 0;
#endif
}

void mk_cli_pack_note(const char *cmd, const mk_conv_stats *st, bool quiet) {
    if (!quiet)
        fprintf(stderr, "%s: packed layout: %llu experts, each one contiguous block, %llu of them 4 KiB-aligned\n",
            cmd, (unsigned long long)st->experts_packed, (unsigned long long)st->experts_aligned);
    if (st->pack_note[0])
        fprintf(stderr, "%s: note: %s\n", cmd, st->pack_note);
}
