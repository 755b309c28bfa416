/* Expert-sized random reads from disk: the I/O pattern of streaming routed
 * experts from SSD (the expert-store seam of include/moekit/expert_store.h),
 * measured before building it.
 *
 *   bench_expert_io FILE seq
 *   bench_expert_io FILE CHUNK_KiB COUNT [pread THREADS | uring DEPTH] [direct]
 *
 * Reads COUNT chunks of CHUNK_KiB at random CHUNK-aligned offsets of FILE
 * (a decode step touches top-k experts per layer, each one contiguous range
 * of a stacked tensor), cold: the file's pages are dropped from the page
 * cache first (posix_fadvise DONTNEED; no root needed for clean pages).
 * "direct" opens with O_DIRECT (page cache bypassed: what a bounded expert
 * cache would do). The bound, `seq`, is the same file read sequentially,
 * cold, in 8 MiB reads: the best of three passes (bench/bench_expert_io.sh
 * runs it before and after the random runs). Prints one key=value line:
 *   mode, par, direct, chunk_kib, count, rand_mbps, iops, lat_us_p50/p99
 * (per-read latency; for uring, from submission to completion), or for
 * `seq`: seq_mbps. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void drop_cache(int fd) {
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}

static void die(const char *what) {
    fprintf(stderr, "bench_expert_io: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* splitmix64: offsets are random but the same for every mode */
static uint64_t next_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct job {
    int fd;
    size_t chunk;
    const uint64_t *off;
    double *lat;
    int first, step, count;
} job;

static void *pread_worker(void *arg) {
    job *j = arg;
    void *buf;
    if (posix_memalign(&buf, 4096, j->chunk))
        return NULL;
    for (int i = j->first; i < j->count; i += j->step) {
        double t0 = now_s();
        size_t done = 0;
        while (done < j->chunk) {
            ssize_t r = pread(j->fd, (char *)buf + done, j->chunk - done, (off_t)(j->off[i] + done));
            if (r <= 0)
                die("pread");
            done += (size_t)r;
        }
        j->lat[i] = now_s() - t0;
    }
    free(buf);
    return NULL;
}

static void run_pread(int fd, size_t chunk, const uint64_t *off, double *lat, int count, int threads) {
    pthread_t th[64];
    job jobs[64];
    for (int t = 0; t < threads; t++) {
        jobs[t] = (job){fd, chunk, off, lat, t, threads, count};
        if (pthread_create(&th[t], NULL, pread_worker, &jobs[t]))
            die("pthread_create");
    }
    for (int t = 0; t < threads; t++)
        pthread_join(th[t], NULL);
}

static void run_uring(int fd, size_t chunk, const uint64_t *off, double *lat, int count, int depth) {
    struct io_uring ring;
    int rc = io_uring_queue_init((unsigned)depth, &ring, 0);
    if (rc < 0) {
        errno = -rc;
        die("io_uring_queue_init");
    }
    char *bufs;
    if (posix_memalign((void **)&bufs, 4096, chunk * (size_t)depth))
        die("posix_memalign");
    double *t0 = calloc((size_t)count, sizeof *t0);
    int *slot_of = calloc((size_t)count, sizeof *slot_of);
    int *free_slots = malloc((size_t)depth * sizeof *free_slots);
    for (int s = 0; s < depth; s++)
        free_slots[s] = s;
    int nfree = depth, next = 0, done = 0;
    while (done < count) {
        while (nfree > 0 && next < count) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            if (!sqe)
                break;
            int s = free_slots[--nfree];
            slot_of[next] = s;
            io_uring_prep_read(sqe, fd, bufs + (size_t)s * chunk, (unsigned)chunk, off[next]);
            io_uring_sqe_set_data64(sqe, (uint64_t)next);
            t0[next] = now_s();
            next++;
        }
        io_uring_submit(&ring);
        struct io_uring_cqe *cqe;
        rc = io_uring_wait_cqe(&ring, &cqe);
        if (rc < 0) {
            errno = -rc;
            die("io_uring_wait_cqe");
        }
        do {
            int i = (int)io_uring_cqe_get_data64(cqe);
            if (cqe->res != (int)chunk) {
                errno = cqe->res < 0 ? -cqe->res : EIO;
                die("uring read");
            }
            lat[i] = now_s() - t0[i];
            free_slots[nfree++] = slot_of[i];
            done++;
            io_uring_cqe_seen(&ring, cqe);
        } while (io_uring_peek_cqe(&ring, &cqe) == 0);
    }
    io_uring_queue_exit(&ring);
    free(bufs);
    free(t0);
    free(slot_of);
    free(free_slots);
}

/* Best of three cold sequential passes over the file, MB/s. */
static double seq_mbps(const char *path) {
    double best = 0;
    size_t sb = 8u << 20;
    void *buf;
    if (posix_memalign(&buf, 4096, sb))
        die("posix_memalign");
    for (int pass = 0; pass < 3; pass++) {
        int sfd = open(path, O_RDONLY);
        if (sfd < 0)
            die(path);
        drop_cache(sfd);
        double t = now_s();
        uint64_t total = 0;
        for (;;) {
            ssize_t r = read(sfd, buf, sb);
            if (r < 0)
                die("read");
            if (r == 0)
                break;
            total += (uint64_t)r;
        }
        double v = (double)total / (now_s() - t) / 1e6;
        best = v > best ? v : best;
        drop_cache(sfd);
        close(sfd);
    }
    free(buf);
    return best;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[2], "seq")) {
        printf("mode=seq seq_mbps=%.1f\n", seq_mbps(argv[1]));
        return 0;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: bench_expert_io FILE seq\n"
                        "       bench_expert_io FILE CHUNK_KiB COUNT [pread THREADS | uring DEPTH] [direct]\n");
        return 2;
    }
    const char *path = argv[1];
    size_t chunk = (size_t)strtoull(argv[2], NULL, 10) * 1024;
    int count = atoi(argv[3]);
    const char *mode = argc > 4 ? argv[4] : "pread";
    int par = argc > 5 ? atoi(argv[5]) : 1;
    int direct = argc > 6 && strcmp(argv[6], "direct") == 0;
    if (chunk == 0 || count <= 0 || par <= 0 || par > 64 || (strcmp(mode, "pread") && strcmp(mode, "uring"))) {
        fprintf(stderr, "bench_expert_io: bad arguments\n");
        return 2;
    }
    int fd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
    if (fd < 0)
        die(path);
    struct stat st;
    if (fstat(fd, &st))
        die("fstat");
    uint64_t nchunks = (uint64_t)st.st_size / chunk;
    if (nchunks < 2) {
        fprintf(stderr, "bench_expert_io: %s is smaller than two chunks\n", path);
        return 2;
    }

    uint64_t seed = 42, *off = malloc((size_t)count * sizeof *off);
    double *lat = calloc((size_t)count, sizeof *lat);
    for (int i = 0; i < count; i++)
        off[i] = (next_rand(&seed) % nchunks) * chunk;
    drop_cache(fd);
    double t = now_s();
    if (!strcmp(mode, "pread"))
        run_pread(fd, chunk, off, lat, count, par);
    else
        run_uring(fd, chunk, off, lat, count, par);
    double el = now_s() - t;
    qsort(lat, (size_t)count, sizeof *lat, cmp_d);
    double rnd = (double)chunk * count / el / 1e6;
    printf("mode=%s par=%d direct=%d chunk_kib=%zu count=%d file_mb=%.0f rand_mbps=%.1f iops=%.0f "
           "lat_us_p50=%.0f lat_us_p99=%.0f\n",
           mode, par, direct, chunk / 1024, count, (double)st.st_size / 1e6, rnd, count / el,
           1e6 * lat[count / 2], 1e6 * lat[(int)((count - 1) * 0.99)]);
    free(off);
    free(lat);
    close(fd);
    return 0;
}
