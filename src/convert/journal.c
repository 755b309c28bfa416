/* The resume journal of a conversion: DST.partial/.moekit-convert-journal.
 *
 * A small text file, rewritten atomically (tmp + fsync + rename) after each
 * finished shard, so after a kill -9 at any moment it names exactly the
 * shards that were complete and durable at its last rewrite:
 *
 *   moekit-convert-journal 1
 *   plan <fingerprint, 16 hex>
 *   shards <n>
 *   done <index> <bytes> <xxh3-128 hex>     (one per finished shard)
 *   complete                                (all shards and side files written)
 *
 * A rerun resumes only under the same plan fingerprint, and re-hashes each
 * finished shard (size + xxh3-128) before trusting it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "convert/conv_impl.h"
#include "io/os.h"

void cv_journal_free(cv_journal *j) {
    free(j->done);
    free(j->size);
    free(j->hash);
    memset(j, 0, sizeof *j);
}

static mk_status alloc_j(cv_journal *j, int n) {
    j->nshards = n;
    j->done = mk_calloc((size_t)n + 1, sizeof *j->done);
    j->size = mk_calloc((size_t)n + 1, sizeof *j->size);
    j->hash = mk_calloc((size_t)n + 1, sizeof *j->hash);
    if (j->done && j->size && j->hash)
        return MK_OK;
    free(j->done); /* all or nothing: callers free only a journal that was made */
    free(j->size);
    free(j->hash);
    j->done = NULL;
    j->size = NULL;
    j->hash = NULL;
    return mk_err(MK_E_NOMEM, "convert journal: no memory for the state of %d shards", n);
}

mk_status cv_journal_init(cv_journal *j, int nshards, uint64_t fingerprint) {
    memset(j, 0, sizeof *j);
    MK_TRY(alloc_j(j, nshards));
    j->fingerprint = fingerprint;
    return MK_OK;
}

mk_status cv_journal_load(const char *dir, int nshards, cv_journal *j) {
    memset(j, 0, sizeof *j);
    char *path = mk_path_join(dir, CV_JOURNAL_NAME);
    if (!path)
        return mk_err(MK_E_NOMEM, "%s: no memory for the journal path", dir);
    char *text = NULL;
    size_t n = 0;
    mk_status s = mk_os_read_file(path, 64u << 20, &text, &n);
    if (s != MK_OK) {
        free(path);
        return s;
    }
    s = alloc_j(j, nshards);
    char *save = NULL;
    int line = 0, declared = -1;
    bool magic = false;
    for (char *l = strtok_r(text, "\n", &save); s == MK_OK && l; l = strtok_r(NULL, "\n", &save), line++) {
        unsigned long long a, b;
        char hex[64];
        int k;
        if (line == 0)
            magic = strcmp(l, "moekit-convert-journal 1") == 0;
        else if (sscanf(l, "plan %llx", &a) == 1)
            j->fingerprint = a;
        else if (sscanf(l, "shards %d", &k) == 1)
            declared = k;
        else if (sscanf(l, "done %d %llu %63s", &k, &b, hex) == 3 && k >= 0 && k < nshards && strlen(hex) == 32) {
            j->done[k] = true;
            j->size[k] = b;
            memcpy(j->hash[k], hex, 33);
        } else if (strcmp(l, "complete") == 0)
            j->complete = true;
        else
            s = mk_err(MK_E_FORMAT, "%s: line %d is not a journal entry", path, line + 1);
    }
    if (s == MK_OK && (!magic || declared != nshards)) {
        /* another version or another plan: caller starts over */
        j->fingerprint = 0;
        j->complete = false;
        memset(j->done, 0, (size_t)nshards * sizeof *j->done);
    }
    free(text);
    free(path);
    return s;
}

mk_status cv_journal_save(const char *dir, const cv_journal *j, const cv_plan *p) {
    size_t cap = 128 + (size_t)j->nshards * 80;
    char *b = mk_malloc(cap);
    char *path = mk_path_join(dir, CV_JOURNAL_NAME);
    if (!b || !path) {
        free(b);
        free(path);
        return mk_err(MK_E_NOMEM, "%s: no memory to write the journal of %d shards", dir, j->nshards);
    }
    size_t k = (size_t)snprintf(b, cap, "moekit-convert-journal 1\nplan %016llx\nshards %d\n",
                                (unsigned long long)p->fingerprint, j->nshards);
    for (int i = 0; i < j->nshards; i++)
        if (j->done[i])
            k += (size_t)snprintf(b + k, cap - k, "done %d %llu %s\n", i, (unsigned long long)j->size[i], j->hash[i]);
    if (j->complete)
        k += (size_t)snprintf(b + k, cap - k, "complete\n");
    mk_status s = mk_os_write_file_atomic(path, b, k);
    free(b);
    free(path);
    return s;
}

mk_status cv_file_hash(const char *path, uint64_t *size, char hex[33]) {
    int fd = mk_os()->open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return mk_err(errno == ENOENT ? MK_E_NOTFOUND : MK_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return mk_err(MK_E_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    size_t bs = 1u << 20;
    unsigned char *buf = mk_malloc(bs);
    XXH3_state_t *h = XXH3_createState();
    mk_status s = buf && h ? MK_OK : mk_err(MK_E_NOMEM, "%s: no memory to hash it", path);
    if (h)
        XXH3_128bits_reset(h);
    uint64_t total = (uint64_t)st.st_size;
    for (uint64_t off = 0; s == MK_OK && off < total; off += bs) {
        size_t n = (size_t)(total - off < bs ? total - off : bs);
        s = mk_os_pread_full(fd, buf, n, off, path);
        if (s == MK_OK)
            XXH3_128bits_update(h, buf, n);
    }
    close(fd);
    if (s == MK_OK) {
        XXH128_hash_t d = XXH3_128bits_digest(h);
        snprintf(hex, 33, "%016llx%016llx", (unsigned long long)d.high64, (unsigned long long)d.low64);
        *size = total;
    }
    XXH3_freeState(h);
    free(buf);
    return s;
}
