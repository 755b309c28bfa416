/* Helpers shared by the engine subcommands; see engine_cli.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/resource.h>
#include <string.h>
#include <sys/stat.h>

#include "engine_cli.h"
#include "moekit/backend_cuda.h"
#include "moekit/tokenizer.h"
#include "io/outfile.h"

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
            return mk_err(MK_E_ARG, "--ids: bad item at offset %ld of '%.40s' (expected integers "
                          "from 0 to %d separated by commas)", (long)(p - s), s, INT32_MAX);
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

uint64_t mk_ecli_mem_available(void) {
    uint64_t avail = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                avail = (uint64_t)kb * 1024;
                break;
            }
        fclose(f);
    }
    if (!avail) {
        long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        avail = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
    }
    static const int lims[] = {RLIMIT_AS, RLIMIT_DATA};
    for (int i = 0; i < 2; i++) {
        struct rlimit rl;
        if (getrlimit(lims[i], &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
            (!avail || rl.rlim_cur < avail))
            avail = (uint64_t)rl.rlim_cur;
    }
    return avail;
}

bool mk_ecli_backend_name(const char *name) {
    return !strcmp(name, "cpu") || !strcmp(name, "cuda");
}

mk_status mk_ecli_backend(const char *name, mk_backend **out) {
    *out = NULL;
    if (!name || !strcmp(name, "cpu"))
        return MK_OK;
    if (!strcmp(name, "cuda"))
        return mk_err_wrap(mk_backend_cuda_create(0, out), "--backend cuda");
    return mk_err(MK_E_ARG, "--backend: expected cpu or cuda, found '%s'", name);
}

mk_status mk_ecli_open(const char *path, const mk_model_opts *mo, const mk_engine_opts *o,
                       mk_model **m, mk_engine **e) {
    *e = NULL;
    MK_TRY(mk_model_open_ex(path, mo, m));
    mk_engine_opts eo = *o;
    if (!eo.mem_limit) /* the engine refuses a cache larger than what is available */
        eo.mem_limit = mk_ecli_mem_available();
    mk_status st = mk_engine_create(*m, &eo, e);
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

mk_status mk_ecli_write(const char *path, const void *data, size_t n, bool force) {
    return mk_outfile_write(path, data, n, force);
}

mk_status mk_ecli_read_file(const char *flag, const char *path, char **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return mk_err(errno == ENOENT ? MK_E_NOTFOUND : MK_E_IO, "%s %s: cannot open: %s", flag, path,
                      strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(f);
        return mk_err(MK_E_ARG, "%s %s: is a directory, expected a text file", flag, path);
    }
    char *b = mk_ecli_read_all(f, len);
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (!b)
        return mk_err(MK_E_NOMEM, "%s %s: no memory to read it", flag, path);
    if (rerr) {
        free(b);
        *len = 0;
        return mk_err(MK_E_IO, "%s %s: read failed: %s", flag, path, strerror(rerr));
    }
    *buf = b;
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

mk_status mk_ecli_tokenize_file(const char *model_dir, int64_t vocab, const char *path,
                                int32_t **ids, size_t *n) {
    char *buf;
    size_t len;
    MK_TRY(mk_ecli_read_file("--text", path, &buf, &len));
    mk_tok *tok = NULL;
    mk_status st = mk_tok_load(model_dir, &tok);
    if (st == MK_OK)
        st = mk_tok_check_model_vocab(tok, vocab);
    if (st == MK_OK)
        st = mk_tok_encode(tok, buf, len, 0, ids, n);
    if (st == MK_E_ARG) /* invalid UTF-8: say which file */
        st = mk_err_wrap(st, "--text %s", path);
    free(buf);
    mk_tok_free(tok);
    return st;
}
