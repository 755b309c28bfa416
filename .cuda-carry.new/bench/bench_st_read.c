/* Benchmark: sequential tensor read throughput against `cat` of the same
 * files, cold and warm page cache.
 *
 *   bench_st_read DIR [SIZE_MB] [REPS]
 *
 * DIR holds (or receives, written with mk_stw on first use) a checkpoint of
 * SIZE_MB (default 1536) in 4 MiB BF16 tensors, cut into 512 MiB shards with
 * an index. Each repetition measures, in this order, with the cache dropped
 * before each cold run (posix_fadvise DONTNEED on every file, plus
 * /proc/sys/vm/drop_caches when writable):
 *   cat    `cat SHARDS > /dev/null` (the bound: what the OS gives a reader)
 *   pread  mk_ckpt_read of every tensor, in file order, into one buffer
 *   mmap   one byte of every 4 KiB page of every tensor through mk_ckpt_data
 *          (the cost of faulting the mapping in: warm, this is page tables,
 *          not data movement)
 *   mmap_sum  every 8-byte word of every tensor summed through the mapping
 *          (what a consumer that reads the data pays; compare with pread)
 * and the same warm. Prints one key=value line per method and cache state
 * (median MB/s over REPS, default 3, and the ratio to cat of the same run
 * kind), for bench/run.sh to tabulate. The resident fraction after a drop is
 * printed so a cold number that is secretly warm shows. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/os.h"
#include "moekit/st.h"

#define TENSOR_BYTES (4u << 20)
#define SHARD_BYTES (512ull << 20)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static mk_status generate(const char *dir, uint64_t total) {
    mk_stw_opts o = {.shard_size = SHARD_BYTES};
    mk_stw *w = NULL;
    MK_TRY(mk_stw_create(dir, &o, &w));
    size_t n = (size_t)(total / TENSOR_BYTES);
    const int64_t shape[2] = {2048, TENSOR_BYTES / 2 / 2048};
    mk_status s = MK_OK;
    char name[96];
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        snprintf(name, sizeof name, "model.layers.%zu.mlp.experts.%zu.down_proj.weight", i / 64, i % 64);
        s = mk_stw_add(w, name, MK_DT_BF16, 2, shape);
    }
    if (s == MK_OK)
        s = mk_stw_begin_data(w);
    uint64_t *buf = malloc(TENSOR_BYTES);
    if (!buf)
        s = mk_err(MK_E_NOMEM, "out of memory");
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        for (size_t k = 0; k < TENSOR_BYTES / 8; k++) { /* incompressible, cheap */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[k] = x;
        }
        s = mk_stw_write(w, buf, TENSOR_BYTES);
    }
    free(buf);
    if (s == MK_OK)
        s = mk_stw_finish(w);
    mk_stw_free(w);
    return s;
}

static int g_drop_caches = -1; /* -1 unknown, 0 not permitted, 1 used */

/* Drop the shards from the page cache; returns the resident fraction after. */
static double drop(const mk_ckpt *c) {
    sync();
    if (g_drop_caches != 0) {
        FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
        int ok = f && fputs("3\n", f) >= 0;
        if (f && fclose(f) != 0)
            ok = 0;
        g_drop_caches = ok;
    }
    uint64_t pages = 0, resident = 0;
    long psz = sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < mk_ckpt_nshards(c); i++) {
        int fd = open(mk_ckpt_shard_path(c, i), O_RDONLY);
        if (fd < 0)
            continue;
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        uint64_t sz = mk_ckpt_shard_size(c, i);
        void *m = mmap(NULL, sz, PROT_READ, MAP_SHARED, fd, 0);
        if (m != MAP_FAILED) {
            size_t np = (size_t)((sz + (uint64_t)psz - 1) / (uint64_t)psz);
            unsigned char *vec = malloc(np);
            if (vec && mincore(m, sz, vec) == 0)
                for (size_t p = 0; p < np; p++)
                    resident += vec[p] & 1;
            pages += np;
            free(vec);
            munmap(m, sz);
        }
        close(fd);
    }
    return pages ? (double)resident / (double)pages : 0;
}

static double run_cat(const mk_ckpt *c) {
    size_t len = 64;
    for (size_t i = 0; i < mk_ckpt_nshards(c); i++)
        len += strlen(mk_ckpt_shard_path(c, i)) + 3;
    char *cmd = malloc(len);
    if (!cmd)
        return -1;
    size_t k = (size_t)snprintf(cmd, len, "cat");
    for (size_t i = 0; i < mk_ckpt_nshards(c); i++)
        k += (size_t)snprintf(cmd + k, len - k, " '%s'", mk_ckpt_shard_path(c, i));
    snprintf(cmd + k, len - k, " > /dev/null");
    double t0 = now_s();
    int rc = system(cmd);
    double t = now_s() - t0;
    free(cmd);
    return rc == 0 ? t : -1;
}

static double run_pread(const mk_ckpt *c, unsigned char *buf) {
    double t0 = now_s();
    for (size_t i = 0; i < mk_ckpt_count(c); i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(c, i);
        if (t->nbytes > TENSOR_BYTES || mk_ckpt_read(c, t, 0, buf, t->nbytes) != MK_OK)
            return -1;
    }
    return now_s() - t0;
}

static volatile unsigned g_sink;

/* Opens its own mapping (and unmaps it after): pages mapped into this
 * process would survive the next cache drop and make "cold" warm. The open
 * (header parsing) is outside the timed part. */
static double run_mmap(const char *dir, int sum_all) {
    mk_ckpt *c = NULL;
    if (mk_ckpt_open(dir, 0, &c) != MK_OK)
        return -1;
    double t0 = now_s();
    uint64_t acc = 0;
    for (size_t i = 0; i < mk_ckpt_count(c); i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(c, i);
        const unsigned char *p = mk_ckpt_data(c, t);
        if (!p)
            continue;
        if (sum_all) {
            uint64_t w;
            for (uint64_t o = 0; o + 8 <= t->nbytes; o += 8) {
                memcpy(&w, p + o, 8); /* data may be unaligned */
                acc += w;
            }
        } else
            for (uint64_t o = 0; o < t->nbytes; o += 4096)
                acc += p[o];
    }
    g_sink = (unsigned)acc;
    double el = now_s() - t0;
    mk_ckpt_close(c);
    return el;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_st_read DIR [SIZE_MB] [REPS]\n");
        return 2;
    }
    const char *dir = argv[1];
    uint64_t mb = argc > 2 ? strtoull(argv[2], NULL, 10) : 1536;
    int reps = argc > 3 ? atoi(argv[3]) : 3;
    if (reps < 1)
        reps = 1;
    if (reps > 64)
        reps = 64;
    char *ip = mk_path_join(dir, "model.safetensors.index.json");
    if (!ip)
        return 1;
    if (!mk_os_exists(ip)) {
        fprintf(stderr, "bench_st_read: generating %llu MB in %s ...\n", (unsigned long long)mb, dir);
        if (generate(dir, mb << 20) != MK_OK) {
            fprintf(stderr, "bench_st_read: %s\n", mk_err_msg());
            free(ip);
            return 1;
        }
    }
    free(ip);
    mk_ckpt *cp = NULL; /* pread only: holds no mapping */
    if (mk_ckpt_open(dir, MK_CKPT_NO_MMAP, &cp) != MK_OK) {
        fprintf(stderr, "bench_st_read: %s\n", mk_err_msg());
        return 1;
    }
    uint64_t bytes = 0, tensor_bytes = 0;
    for (size_t i = 0; i < mk_ckpt_nshards(cp); i++)
        bytes += mk_ckpt_shard_size(cp, i);
    for (size_t i = 0; i < mk_ckpt_count(cp); i++)
        tensor_bytes += mk_ckpt_tensor(cp, i)->nbytes;
    unsigned char *buf = malloc(TENSOR_BYTES);
    if (!buf)
        return 1;
    /* t[method][cold/warm][rep] */
    enum { NM = 4 };
    static const char *const names[NM] = {"cat", "pread", "mmap", "mmap_sum"};
    double t[NM][2][64];
    double resid_max = 0;
    for (int r = 0; r < reps; r++) {
        for (int m = 0; m < NM; m++) { /* cold: drop before each method */
            double res = drop(cp);
            if (res > resid_max)
                resid_max = res;
            t[m][0][r] = m == 0 ? run_cat(cp) : m == 1 ? run_pread(cp, buf) : run_mmap(dir, m == 3);
        }
        run_cat(cp); /* warm up */
        for (int m = 0; m < NM; m++)
            t[m][1][r] = m == 0 ? run_cat(cp) : m == 1 ? run_pread(cp, buf) : run_mmap(dir, m == 3);
    }
    printf("bench=st_read_setup files=%zu tensors=%zu file_mb=%.1f tensor_mb=%.1f reps=%d drop_caches=%s "
           "resident_after_drop_max=%.3f\n",
           mk_ckpt_nshards(cp), mk_ckpt_count(cp), (double)bytes / 1048576.0,
           (double)tensor_bytes / 1048576.0, reps, g_drop_caches == 1 ? "yes" : "no", resid_max);
    for (int cw = 0; cw < 2; cw++) {
        double med[NM];
        for (int m = 0; m < NM; m++) {
            for (int r = 0; r < reps; r++)
                if (t[m][cw][r] < 0) {
                    fprintf(stderr, "bench_st_read: %s failed: %s\n", names[m], mk_err_msg());
                    return 1;
                }
            qsort(t[m][cw], (size_t)reps, sizeof(double), cmp_d);
            med[m] = t[m][cw][reps / 2];
        }
        for (int m = 0; m < NM; m++) {
            /* cat reads whole files; the others the tensor bytes */
            double mbs = (double)(m == 0 ? bytes : tensor_bytes) / 1048576.0 / med[m];
            double cat_mbs = (double)bytes / 1048576.0 / med[0];
            printf("bench=st_read method=%s cache=%s median_s=%.3f min_s=%.3f mb_per_s=%.0f ratio_vs_cat=%.2f\n",
                   names[m], cw ? "warm" : "cold", med[m], t[m][cw][0], mbs, mbs / cat_mbs);
        }
    }
    free(buf);
    mk_ckpt_close(cp);
    return 0;
}
