/* Opening a checkpoint: one safetensors file, an indexed shard set, or a
 * directory of shards; validation across shards; name lookup; data access.
 *
 * Map of this file: shard open (header read + validate + mmap) -> set
 * discovery (index or glob) -> cross-shard checks (duplicates, index vs
 * shard contents) -> name hash table -> accessors. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "io/os.h"
#include "moekit/st.h"

typedef struct shard {
    char *path;
    int fd;
    uint64_t size;
    uint64_t data_start; /* 8 + N */
    void *map;           /* whole-file mapping or NULL */
    mk_tensor_info *ts;
    size_t nts;
    char *metadata;
} mk_shard;

struct mk_ckpt {
    char *dir;
    mk_shard *shards;
    size_t nshards;
    const mk_tensor_info **all; /* every tensor, in shard then offset order */
    size_t n;
    const mk_tensor_info **slots; /* open addressing hash table */
    size_t nslots;
};

static void shard_close(mk_shard *s) {
    if (s->map)
        munmap(s->map, s->size);
    if (s->fd >= 0)
        close(s->fd);
    mk_st_header_free(s->ts, s->nts);
    free(s->metadata);
    free(s->path);
}

void mk_ckpt_close(mk_ckpt *c) {
    if (!c)
        return;
    for (size_t i = 0; i < c->nshards; i++)
        shard_close(&c->shards[i]);
    free(c->shards);
    free(c->all);
    free(c->slots);
    free(c->dir);
    free(c);
}

static mk_status shard_open(mk_shard *s, const char *path, int idx, unsigned flags) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->path = mk_strdup(path);
    if (!s->path)
        return mk_err(MK_E_NOMEM, "%s: no memory for the shard path", path);
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is then
     * refused as not a regular file); regular files ignore the flag */
    s->fd = mk_os()->open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
    if (s->fd < 0)
        return mk_err(errno == ENOENT ? MK_E_NOTFOUND : MK_E_IO, "%s: cannot open: %s", path,
                      strerror(errno));
    struct stat st;
    if (fstat(s->fd, &st) != 0 || !S_ISREG(st.st_mode))
        return mk_err(MK_E_FORMAT, "%s: not a regular file", path);
    s->size = (uint64_t)st.st_size;
    if (s->size < 8)
        return mk_err(MK_E_FORMAT, "%s: truncated file: %llu bytes, a safetensors file needs at least 8",
                      path, (unsigned long long)s->size);
    unsigned char lenb[8];
    MK_TRY(mk_os_pread_full(s->fd, lenb, 8, 0, path));
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | lenb[i];
    if (n > MK_ST_MAX_HEADER)
        return mk_err(MK_E_FORMAT, "%s: header length %llu exceeds the 100,000,000-byte limit", path,
                      (unsigned long long)n);
    if (n > s->size - 8)
        return mk_err(MK_E_FORMAT, "%s: header length %llu is larger than the file (%llu bytes): truncated?",
                      path, (unsigned long long)n, (unsigned long long)s->size);
    char *hdr = mk_malloc(n + 1);
    if (!hdr)
        return mk_err(MK_E_NOMEM, "%s: out of memory for a %llu-byte header", path, (unsigned long long)n);
    mk_status st2 = mk_os_pread_full(s->fd, hdr, n, 8, path);
    if (st2 == MK_OK) {
        hdr[n] = 0;
        s->data_start = 8 + n;
        st2 = mk_st_header_parse(path, hdr, n, s->size - s->data_start, &s->ts, &s->nts, &s->metadata);
    }
    free(hdr);
    MK_TRY(st2);
    for (size_t i = 0; i < s->nts; i++) {
        s->ts[i].file_offset += s->data_start;
        s->ts[i].shard = idx;
    }
    if ((flags & MK_CKPT_COPY) && !(flags & MK_CKPT_NO_MMAP) && s->size > 0) {
        /* anonymous, 2 MiB huge pages where the kernel gives them (madvise mode); read in
         * order, then made read-only like the mapping it replaces */
        void *m = mk_os()->mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return mk_err(MK_E_NOMEM, "%s: no memory for a %llu-byte copy of the file (--load mmap maps it "
                          "instead)", path, (unsigned long long)s->size);
        (void)madvise(m, s->size, MADV_HUGEPAGE); /* a hint: without it, ordinary pages */
        s->map = m;
        MK_TRY(mk_os_pread_full(s->fd, m, s->size, 0, path));
        (void)mprotect(m, s->size, PROT_READ);
        return MK_OK;
    }
    if (!(flags & MK_CKPT_NO_MMAP) && s->size > 0) {
        void *m = mk_os()->mmap(NULL, s->size, PROT_READ, MAP_SHARED, s->fd, 0);
        if (m == MAP_FAILED)
            return mk_err(MK_E_IO, "%s: mmap of %llu bytes failed: %s", path,
                          (unsigned long long)s->size, strerror(errno));
        s->map = m;
    }
    return MK_OK;
}

static uint64_t name_hash(const char *s) { return XXH3_64bits(s, strlen(s)); }

/* Insert into the hash table; false if the name already exists. */
static bool table_insert(mk_ckpt *c, const mk_tensor_info *t) {
    size_t mask = c->nslots - 1, i = (size_t)name_hash(t->name) & mask;
    while (c->slots[i]) {
        if (strcmp(c->slots[i]->name, t->name) == 0)
            return false;
        i = (i + 1) & mask;
    }
    c->slots[i] = t;
    return true;
}

/* Slot index of `name`, or SIZE_MAX when absent. */
static size_t find_slot(const mk_ckpt *c, const char *name) {
    if (!c->nslots)
        return SIZE_MAX;
    size_t mask = c->nslots - 1, i = (size_t)name_hash(name) & mask;
    while (c->slots[i]) {
        if (strcmp(c->slots[i]->name, name) == 0)
            return i;
        i = (i + 1) & mask;
    }
    return SIZE_MAX;
}

const mk_tensor_info *mk_ckpt_find(const mk_ckpt *c, const char *name) {
    size_t i = find_slot(c, name);
    return i == SIZE_MAX ? NULL : c->slots[i];
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Shard file names for a directory: from the index, else every *.safetensors. */
static mk_status discover(const char *dir, char ***files, size_t *nfiles, char ***inames,
                          char ***ifiles, size_t *icount, char **index_path) {
    *files = NULL;
    *nfiles = 0;
    *inames = *ifiles = NULL;
    *icount = 0;
    *index_path = mk_path_join(dir, "model.safetensors.index.json");
    if (!*index_path)
        return mk_err(MK_E_NOMEM, "%s: no memory for the index path", dir);
    if (mk_os_exists(*index_path)) {
        char *js;
        size_t jn;
        MK_TRY(mk_os_read_file(*index_path, 1u << 30, &js, &jn));
        mk_status s = mk_st_index_parse(*index_path, js, jn, inames, ifiles, icount);
        free(js);
        MK_TRY(s);
        /* unique shard names, sorted */
        char **u = mk_malloc((*icount ? *icount : 1) * sizeof *u);
        if (!u)
            return mk_err(MK_E_NOMEM, "%s: no memory for the list of %zu shard names", *index_path, *icount);
        memcpy(u, *ifiles, *icount * sizeof *u);
        qsort(u, *icount, sizeof *u, cmp_str);
        size_t k = 0;
        for (size_t i = 0; i < *icount; i++)
            if (k == 0 || strcmp(u[k - 1], u[i]) != 0)
                u[k++] = u[i];
        bool copied = true;
        for (size_t i = 0; i < k; i++)
            copied = (u[i] = mk_strdup(u[i])) != NULL && copied;
        *files = u;
        *nfiles = k;
        if (!copied) /* a NULL name would be taken for a missing shard */
            return mk_err(MK_E_NOMEM, "%s: no memory for the names of %zu shards", *index_path, k);
        if (k == 0)
            return mk_err(MK_E_FORMAT, "%s: weight_map is empty", *index_path);
        return MK_OK;
    }
    free(*index_path);
    *index_path = NULL;
    DIR *d = opendir(dir);
    if (!d)
        return mk_err(MK_E_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    size_t cap = 16, n = 0;
    char **v = mk_malloc(cap * sizeof *v);
    bool nomem = !v;
    struct dirent *e;
    while (!nomem && (e = readdir(d)) != NULL) {
        if (!ends_with(e->d_name, ".safetensors") || e->d_name[0] == '.')
            continue;
        if (n == cap) {
            char **nv = mk_realloc(v, 2 * cap * sizeof *v);
            nomem = !nv;
            if (nomem)
                break; /* not a shorter listing: a shard left out would be data lost */
            v = nv;
            cap *= 2;
        }
        nomem = (v[n++] = mk_strdup(e->d_name)) == NULL;
    }
    closedir(d);
    if (nomem) {
        for (size_t i = 0; v && i < n; i++)
            free(v[i]);
        free(v);
        return mk_err(MK_E_NOMEM, "%s: no memory for the list of its .safetensors files (%zu so far)", dir,
                      n);
    }
    qsort(v, n, sizeof *v, cmp_str);
    *files = v;
    *nfiles = n;
    if (n == 0)
        return mk_err(MK_E_NOTFOUND,
                      "%s: no checkpoint here (no model.safetensors.index.json and no *.safetensors files)",
                      dir);
    return MK_OK;
}

static mk_status build_table(mk_ckpt *c, const char *what) {
    size_t total = 0;
    for (size_t i = 0; i < c->nshards; i++)
        total += c->shards[i].nts;
    c->n = total;
    c->all = mk_malloc((total ? total : 1) * sizeof *c->all);
    c->nslots = 16;
    while (c->nslots < total * 2)
        c->nslots *= 2;
    c->slots = mk_calloc(c->nslots, sizeof *c->slots);
    if (!c->all || !c->slots)
        return mk_err(MK_E_NOMEM, "out of memory for %zu tensors", total);
    size_t k = 0;
    for (size_t i = 0; i < c->nshards; i++)
        for (size_t j = 0; j < c->shards[i].nts; j++) {
            const mk_tensor_info *t = &c->shards[i].ts[j];
            if (!table_insert(c, t)) {
                const mk_tensor_info *o = mk_ckpt_find(c, t->name);
                return mk_err(MK_E_FORMAT, "%s: tensor '%s' appears twice (in %s and in %s)", what,
                              t->name, c->shards[o->shard].path, c->shards[i].path);
            }
            c->all[k++] = t;
        }
    return MK_OK;
}

mk_status mk_ckpt_open(const char *path, unsigned flags, mk_ckpt **out) {
    *out = NULL;
    mk_ckpt *c = mk_calloc(1, sizeof *c);
    if (!c)
        return mk_err(MK_E_NOMEM, "%s: no memory for a checkpoint", path);
    mk_status s = MK_OK;
    char **files = NULL, **inames = NULL, **ifiles = NULL, *index_path = NULL;
    size_t nfiles = 0, icount = 0;
    struct stat lsb;
    if (lstat(path, &lsb) != 0) { /* the OS's reason: missing, no permission, ... */
        s = mk_err(errno == ENOENT ? MK_E_NOTFOUND : MK_E_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (mk_os_is_dir(path)) {
        c->dir = mk_strdup(path);
        s = discover(path, &files, &nfiles, &inames, &ifiles, &icount, &index_path);
    } else {
        c->dir = mk_path_dirname(path);
        files = mk_malloc(sizeof *files);
        if (files) {
            const char *b = strrchr(path, '/');
            files[0] = mk_strdup(b ? b + 1 : path);
            nfiles = 1;
        }
        if (!files || !files[0])
            s = mk_err(MK_E_NOMEM, "%s: no memory for its file list", path);
    }
    if (s == MK_OK && !c->dir) /* a NULL directory would be joined to every shard name */
        s = mk_err(MK_E_NOMEM, "%s: no memory for its directory name", path);
    if (s != MK_OK)
        goto done;
    c->shards = mk_calloc(nfiles, sizeof *c->shards);
    if (!c->shards) {
        s = mk_err(MK_E_NOMEM, "%s: no memory for a table of %zu shards", path, nfiles);
        goto done;
    }
    for (size_t i = 0; i < nfiles && s == MK_OK; i++) {
        char *p = mk_path_join(c->dir, files[i]);
        c->nshards = i + 1;
        s = p ? shard_open(&c->shards[i], p, (int)i, flags)
              : mk_err(MK_E_NOMEM, "%s: no memory for the path of shard %s", c->dir, files[i]);
        free(p);
    }
    if (s != MK_OK) {
        if (index_path && c->nshards && s == MK_E_NOTFOUND) {
            const char *miss = files[c->nshards - 1], *who = "?";
            for (size_t i = 0; i < icount; i++)
                if (strcmp(ifiles[i], miss) == 0) {
                    who = inames[i];
                    break;
                }
            s = mk_err(MK_E_FORMAT, "%s: tensor '%s' is indexed in shard '%s', which does not exist",
                       index_path, who, miss);
        }
        goto done;
    }
    s = build_table(c, index_path ? index_path : path);
    if (s != MK_OK)
        goto done;
    if (index_path) {
        /* Every index entry must be in the shard it names, and every shard
         * tensor must be indexed: an inconsistent index is corruption. */
        unsigned char *seen = mk_calloc(c->nslots, 1);
        if (!seen)
            s = mk_err(MK_E_NOMEM, "%s: no memory to check %zu index entries", index_path, icount);
        for (size_t i = 0; i < icount && s == MK_OK; i++) {
            size_t slot = find_slot(c, inames[i]);
            const mk_tensor_info *t = slot == SIZE_MAX ? NULL : c->slots[slot];
            if (t)
                seen[slot] = 1;
            const char *sp = t ? strrchr(c->shards[t->shard].path, '/') : NULL;
            sp = sp ? sp + 1 : (t ? c->shards[t->shard].path : NULL);
            if (!t || strcmp(sp, ifiles[i]) != 0)
                s = mk_err(MK_E_FORMAT, "%s: tensor '%s' is indexed in '%s' but that shard does not contain it",
                           index_path, inames[i], ifiles[i]);
        }
        if (s == MK_OK && c->n != icount) {
            for (size_t i = 0; i < c->n; i++) {
                if (!seen[find_slot(c, c->all[i]->name)]) {
                    s = mk_err(MK_E_FORMAT, "%s: tensor '%s' of shard %s is missing from the index",
                               index_path, c->all[i]->name, c->shards[c->all[i]->shard].path);
                    break;
                }
            }
        }
        free(seen);
    }
done:
    if (files)
        for (size_t i = 0; i < nfiles; i++)
            free(files[i]);
    free(files);
    mk_st_index_free(inames, ifiles, icount);
    free(index_path);
    if (s != MK_OK) {
        mk_ckpt_close(c);
        return s;
    }
    *out = c;
    return MK_OK;
}

const char *mk_ckpt_dir(const mk_ckpt *c) { return c->dir; }
mk_status mk_ckpt_mlock(const mk_ckpt *c) {
    for (size_t i = 0; i < c->nshards; i++) {
        const mk_shard *s = &c->shards[i];
        if (s->size == 0)
            continue;
        if (!s->map)
            return mk_err(MK_E_UNSUPPORTED, "%s: not mapped (opened for streaming): nothing to lock", s->path);
        if (mlock(s->map, s->size) != 0) {
            int err = errno;
            struct rlimit rl;
            char lim[64] = "unknown";
            if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
                if (rl.rlim_cur == RLIM_INFINITY)
                    snprintf(lim, sizeof lim, "unlimited");
                else
                    snprintf(lim, sizeof lim, "%llu KiB", (unsigned long long)(rl.rlim_cur >> 10));
            }
            for (size_t j = 0; j < i; j++)
                if (c->shards[j].map)
                    munlock(c->shards[j].map, c->shards[j].size);
            return mk_err(MK_E_NOMEM,
                          "--mlock: locking %s (%.1f MiB) in memory failed: %s; RLIMIT_MEMLOCK is %s (raise it with "
                          "`ulimit -l unlimited` or run with CAP_IPC_LOCK), or leave out --mlock",
                          s->path, (double)s->size / 1048576.0, strerror(err), lim);
        }
    }
    return MK_OK;
}

size_t mk_ckpt_nshards(const mk_ckpt *c) { return c->nshards; }
const char *mk_ckpt_shard_path(const mk_ckpt *c, size_t i) { return c->shards[i].path; }
uint64_t mk_ckpt_shard_size(const mk_ckpt *c, size_t i) { return c->shards[i].size; }
const char *mk_ckpt_metadata_json(const mk_ckpt *c, size_t shard) {
    return shard < c->nshards ? c->shards[shard].metadata : NULL;
}
size_t mk_ckpt_count(const mk_ckpt *c) { return c->n; }
const mk_tensor_info *mk_ckpt_tensor(const mk_ckpt *c, size_t i) { return i < c->n ? c->all[i] : NULL; }
int mk_ckpt_shard_fd(const mk_ckpt *c, size_t shard) { return c->shards[shard].fd; }

const void *mk_ckpt_data(const mk_ckpt *c, const mk_tensor_info *t) {
    const mk_shard *s = &c->shards[t->shard];
    if (!s->map)
        return NULL;
    return (const unsigned char *)s->map + t->file_offset;
}

mk_status mk_ckpt_read(const mk_ckpt *c, const mk_tensor_info *t, uint64_t off, void *buf, size_t n) {
    if (off > t->nbytes || n > t->nbytes - off)
        return mk_err(MK_E_ARG, "tensor '%s': read of %zu bytes at %llu is past its %llu bytes", t->name, n,
                      (unsigned long long)off, (unsigned long long)t->nbytes);
    const mk_shard *s = &c->shards[t->shard];
    return mk_os_pread_full(s->fd, buf, n, t->file_offset + off, s->path);
}

mk_status mk_ckpt_read_f32(const mk_ckpt *c, const mk_tensor_info *t, uint64_t first, uint64_t n,
                           float *dst) {
    const mk_dtype_traits *tr = mk_dtype_info(t->dtype);
    if (!tr || tr->bits % 8 || first > t->numel || n > t->numel - first)
        return mk_err(MK_E_ARG, "tensor '%s': cannot read elements [%llu, +%llu) of %s as float32", t->name,
                      (unsigned long long)first, (unsigned long long)n, mk_dtype_name(t->dtype));
    size_t esz = tr->bits / 8;
    const void *p = mk_ckpt_data(c, t);
    if (p) {
        if (!mk_dtype_to_f32(t->dtype, (const unsigned char *)p + first * esz, dst, n))
            return mk_err(MK_E_UNSUPPORTED, "tensor '%s': dtype %s has no float32 conversion", t->name,
                          mk_dtype_name(t->dtype));
        return MK_OK;
    }
    /* pread path: convert in bounded chunks through a small buffer */
    unsigned char buf[1 << 16];
    size_t per = sizeof buf / esz;
    for (uint64_t i = 0; i < n; i += per) {
        size_t m = (size_t)((n - i) < per ? (n - i) : per);
        MK_TRY(mk_ckpt_read(c, t, (first + i) * esz, buf, m * esz));
        if (!mk_dtype_to_f32(t->dtype, buf, dst + i, m))
            return mk_err(MK_E_UNSUPPORTED, "tensor '%s': dtype %s has no float32 conversion", t->name,
                          mk_dtype_name(t->dtype));
    }
    return MK_OK;
}
