/* Helpers shared by the engine subcommands; see engine_cli.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_cli.h"

bool mk_ecli_int(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

bool mk_ecli_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (end == s || *end || errno)
        return false;
    *out = v;
    return true;
}

mk_status mk_ecli_ids(const char *s, int32_t **ids, int64_t *n) {
    *ids = NULL;
    *n = 0;
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v)
        return mk_err(MK_E_NOMEM, "no memory for token ids");
    const char *p = s;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (!*p)
            break;
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX ||
            (*end && *end != ',' && *end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')) {
            free(v);
            return mk_err(MK_E_ARG, "token ids: bad item at offset %ld of '%.40s' (expected "
                          "non-negative integers separated by commas)", (long)(p - s), s);
        }
        if (k == cap) {
            int32_t *nv = realloc(v, 2 * cap * sizeof *v);
            if (!nv) {
                free(v);
                return mk_err(MK_E_NOMEM, "no memory for token ids");
            }
            v = nv;
            cap *= 2;
        }
        v[k++] = (int32_t)x;
        p = end;
    }
    *ids = v;
    *n = (int64_t)k;
    return MK_OK;
}

mk_status mk_ecli_open(const char *path, const mk_model_opts *mo, const mk_engine_opts *o,
                       mk_model **m, mk_engine **e) {
    *e = NULL;
    MK_TRY(mk_model_open_ex(path, mo, m));
    mk_status st = mk_engine_create(*m, o, e);
    if (st != MK_OK) {
        mk_model_free(*m);
        *m = NULL;
    }
    return st;
}

char *mk_ecli_read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 16, got;
    char *buf = malloc(cap);
    *len = 0;
    while (buf && (got = fread(buf + *len, 1, cap - *len, f)) > 0) {
        *len += got;
        if (*len == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    return buf;
}

mk_status mk_ecli_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return mk_err(MK_E_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t w = fwrite(data, 1, n, f);
    int bad = w != n || fflush(f) != 0;
    if (fclose(f) != 0)
        bad = 1;
    if (bad)
        return mk_err(MK_E_IO, "%s: write failed: %s", path, strerror(errno));
    return MK_OK;
}

mk_status mk_ecli_check_ctx(const mk_model *m, int64_t ctx, const char *what, bool force, bool warn_only) {
    int mp = mk_model_config(m)->max_position_embeddings;
    if (mp <= 0 || ctx <= mp || force)
        return MK_OK;
    if (warn_only) {
        fprintf(stderr, "moekit: warning: %s of %lld positions exceeds the model's max_position_embeddings "
                "%d: positions beyond it were never trained\n", what, (long long)ctx, mp);
        return MK_OK;
    }
    return mk_err(MK_E_ARG, "%s %lld exceeds the model's max_position_embeddings %d (config.json): positions "
                  "beyond it were never trained; use at most %d or pass --force-ctx", what, (long long)ctx, mp,
                  mp);
}
