/* Benchmark: opening a large sharded checkpoint (mk_ckpt_open).
 *
 *   bench_st_open DIR [RUNS]
 *
 * DIR holds (or receives, written with mk_stw on first use) a synthetic
 * checkpoint of 40,000 tensors of 4 KiB each (BF16 [2048], names in the HF
 * per-expert style) in 8 shards with a model.safetensors.index.json: the
 * open cost is all header parsing, validation, index cross-checks and the
 * name table, the shape of a 400B-parameter per-expert checkpoint's open.
 * Prints the median, min and max over RUNS opens (default 9) with mmap and
 * with NO_MMAP, warm cache, plus one cold open (every file dropped from the
 * page cache with posix_fadvise first). One line per measurement, "key=value"
 * fields, for bench/run.sh to tabulate. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/os.h"
#include "moekit/st.h"

#define NLAYERS 40
#define NEXPERTS 333
#define ELEMS 2048 /* BF16 -> 4 KiB */
#define NTENSORS 40000
#define SHARD_BYTES (5000ull * ELEMS * 2) /* 8 shards of 5,000 tensors */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static mk_status generate(const char *dir) {
    static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
    mk_stw_opts o = {.shard_size = SHARD_BYTES};
    mk_stw *w = NULL;
    MK_TRY(mk_stw_create(dir, &o, &w));
    mk_status s = MK_OK;
    const int64_t shape[1] = {ELEMS};
    char name[128];
    size_t n = 0;
    for (int l = 0; l < NLAYERS && s == MK_OK; l++) {
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        s = mk_stw_add(w, name, MK_DT_BF16, 1, shape);
        n++;
        for (int e = 0; e < NEXPERTS && s == MK_OK; e++)
            for (int p = 0; p < 3 && s == MK_OK; p++, n++) {
                snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.%s.weight", l, e, proj[p]);
                s = mk_stw_add(w, name, MK_DT_BF16, 1, shape);
            }
    }
    if (s == MK_OK && n != NTENSORS)
        s = mk_err(MK_E_INTERNAL, "generated %zu tensors, not %d", n, NTENSORS);
    if (s == MK_OK)
        s = mk_stw_begin_data(w);
    unsigned char buf[ELEMS * 2];
    for (size_t i = 0; i < NTENSORS && s == MK_OK; i++) {
        memset(buf, (int)(i & 0x7f), sizeof buf);
        s = mk_stw_write(w, buf, sizeof buf);
    }
    if (s == MK_OK)
        s = mk_stw_finish(w);
    mk_stw_free(w);
    return s;
}

/* Drop every shard and the index from the page cache. */
static void drop_cache(const mk_ckpt *c, const char *dir) {
    for (size_t i = 0; i < mk_ckpt_nshards(c); i++) {
        int fd = open(mk_ckpt_shard_path(c, i), O_RDONLY);
        if (fd >= 0) {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
    char *ip = mk_path_join(dir, "model.safetensors.index.json");
    int fd = ip ? open(ip, O_RDONLY) : -1;
    if (fd >= 0) {
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    free(ip);
}

static int time_opens(const char *dir, unsigned flags, int runs, const char *mode) {
    double *t = calloc((size_t)runs, sizeof *t);
    if (!t)
        return 1;
    size_t count = 0, shards = 0;
    for (int r = 0; r < runs; r++) {
        mk_ckpt *c = NULL;
        double t0 = now_s();
        mk_status s = mk_ckpt_open(dir, flags, &c);
        t[r] = now_s() - t0;
        if (s != MK_OK) {
            fprintf(stderr, "bench_st_open: %s\n", mk_err_msg());
            free(t);
            return 1;
        }
        count = mk_ckpt_count(c);
        shards = mk_ckpt_nshards(c);
        mk_ckpt_close(c);
    }
    qsort(t, (size_t)runs, sizeof *t, cmp_d);
    printf("bench=st_open mode=%s cache=warm tensors=%zu shards=%zu runs=%d median_ms=%.2f min_ms=%.2f "
           "max_ms=%.2f\n",
           mode, count, shards, runs, t[runs / 2] * 1e3, t[0] * 1e3, t[runs - 1] * 1e3);
    free(t);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_st_open DIR [RUNS]\n");
        return 2;
    }
    const char *dir = argv[1];
    int runs = argc > 2 ? atoi(argv[2]) : 9;
    if (runs < 1)
        runs = 1;
    char *ip = mk_path_join(dir, "model.safetensors.index.json");
    if (!ip)
        return 1;
    if (!mk_os_exists(ip)) {
        fprintf(stderr, "bench_st_open: generating %d tensors in %s ...\n", NTENSORS, dir);
        double t0 = now_s();
        mk_status s = generate(dir);
        if (s != MK_OK) {
            fprintf(stderr, "bench_st_open: %s\n", mk_err_msg());
            free(ip);
            return 1;
        }
        fprintf(stderr, "bench_st_open: generated in %.1f s\n", now_s() - t0);
    }
    free(ip);
    /* one cold open (headers and index dropped from the page cache) */
    mk_ckpt *c = NULL;
    if (mk_ckpt_open(dir, MK_CKPT_NO_MMAP, &c) != MK_OK) {
        fprintf(stderr, "bench_st_open: %s\n", mk_err_msg());
        return 1;
    }
    drop_cache(c, dir);
    mk_ckpt_close(c);
    double t0 = now_s();
    if (mk_ckpt_open(dir, 0, &c) != MK_OK) {
        fprintf(stderr, "bench_st_open: %s\n", mk_err_msg());
        return 1;
    }
    double cold = now_s() - t0;
    printf("bench=st_open mode=mmap cache=cold tensors=%zu shards=%zu runs=1 median_ms=%.2f min_ms=%.2f "
           "max_ms=%.2f\n",
           mk_ckpt_count(c), mk_ckpt_nshards(c), cold * 1e3, cold * 1e3, cold * 1e3);
    mk_ckpt_close(c);
    int rc = time_opens(dir, 0, runs, "mmap");
    rc |= time_opens(dir, MK_CKPT_NO_MMAP, runs, "pread");
    return rc;
}
