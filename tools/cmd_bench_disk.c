/* moekit bench-disk: the disk probe (src/io/disk_probe.h) from the command
 * line: sequential and random-read bandwidth of the disk holding PATH under
 * io_uring and pread, O_DIRECT and buffered, and which the SSD expert store
 * should use. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_flags.h"
#include "cmd.h"
#include "io/disk_probe.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: moekit bench-disk PATH [--size N] [--direct|--buffered] [--qd N] [--block N]\n"
            "                              [--seconds S] [--repeat N]\n\n"
            "Measure the disk holding PATH the way the SSD expert store reads it: sequential reads (4 MiB\n"
            "requests in order: the disk's roofline) and random reads (a random quarter of the file's\n"
            "--block-sized blocks, each once, in a random order: expert-sized reads, never the same bytes\n"
            "twice so a buffered pass does not find them cached, and most neighbours unread, as most experts\n"
            "are, so readahead is not credited), with --qd requests in flight, through io_uring and the\n"
            "pread thread pool, with O_DIRECT and buffered. Prints GB/s (1e9 bytes/s) for each and which\n"
            "combination it recommends (the best random-read rate; within 5%%, O_DIRECT and then io_uring).\n\n"
            "PATH is a directory: a temporary file of --size bytes is written there under a fresh name\n"
            "(moekit-bench-disk.moekit-tmp-PID-N, never an existing file), fsynced, read, and removed at the\n"
            "end, on an error and on Ctrl-C; it needs --size plus 1 GiB free. PATH is a regular file of at\n"
            "least 64 MiB: its first --size bytes are read, never written.\n\n"
            "The page cache: dropping it needs root, so before each pass the probe asks the kernel to evict\n"
            "the file's pages (posix_fadvise DONTNEED: works on clean pages without privileges; the temporary\n"
            "file is fsynced first) and the O_DIRECT passes bypass the cache. On a virtual machine the host may\n"
            "still cache the disk, which makes every number optimistic. A --size larger than the RAM defeats\n"
            "any cache but takes long. An existing file's cached pages are evicted too (performance only).\n\n"
            "  --size N     temporary file size / bytes read, e.g. 1G (default 1G; at least 64M)\n"
            "  --direct     O_DIRECT passes only        --buffered   buffered passes only\n"
            "  --qd N       requests in flight (io_uring queue depth, pread threads), 1..256 (default 16)\n"
            "  --block N    random-read size, a multiple of 4096, e.g. 2400K (default 4M)\n"
            "  --seconds S  each pass stops after S seconds (default 10)\n"
            "  --repeat N   measure every combination N times in turn, print the median and the range\n"
            "               (default 3, at most 16); the recommendation says when the ranges overlap\n\n"
            "Memory: --qd x max(--block, 4M) bytes of read buffers, 4 bytes per block of the random order, and\n"
            "the reader's bounce buffers (16 MiB).\n"
            "Nothing the probe prints is a test: numbers belong in bench/RESULTS.md with the machine.\n");
}

/* The temporary file, removed by the signal handler if the user interrupts. */
static const char *volatile g_tmp;

static void on_signal(int sig) {
    const char *p = g_tmp;
    if (p)
        unlink(p);
    signal(sig, SIG_DFL);
    raise(sig);
}

enum { O_SIZE = 256, O_DIRECT_, O_BUFFERED, O_QD, O_BLOCK, O_SECONDS, O_REPEAT };

static int cmd_bench_disk(int argc, char **argv) {
    static const struct option opts[] = {
        {"size", required_argument, 0, O_SIZE},   {"direct", no_argument, 0, O_DIRECT_},
        {"buffered", no_argument, 0, O_BUFFERED}, {"qd", required_argument, 0, O_QD},
        {"block", required_argument, 0, O_BLOCK}, {"seconds", required_argument, 0, O_SECONDS},
        {"repeat", required_argument, 0, O_REPEAT},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    mk_disk_probe_opts o = {0};
    o.seed = 1;
    int c, rc;
    unsigned long long v;
    long long iv;
    double dv;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_SIZE:
            if ((rc = mk_flag_size("bench-disk", "--size", optarg, 64ull << 20, &v)) >= 0)
                return rc;
            o.size = v;
            break;
        case O_DIRECT_: o.modes |= MK_PROBE_DIRECT; break;
        case O_BUFFERED: o.modes |= MK_PROBE_BUFFERED; break;
        case O_QD:
            if ((rc = mk_flag_int("bench-disk", "--qd", optarg, 1, 256, &iv)) >= 0)
                return rc;
            o.qd = (unsigned)iv;
            break;
        case O_BLOCK:
            if ((rc = mk_flag_size("bench-disk", "--block", optarg, 4096, &v)) >= 0)
                return rc;
            if (v % 4096 || v > (1ull << 30))
                return mk_cli_usage("bench-disk", "--block wants a multiple of 4096 up to 1G, got '%s'", optarg);
            o.block = (size_t)v;
            break;
        case O_SECONDS:
            if ((rc = mk_flag_real("bench-disk", "--seconds", optarg, 0, 3600, MK_FLAG_LO_OPEN, &dv)) >= 0)
                return rc;
            o.seconds = dv;
            break;
        case O_REPEAT:
            if ((rc = mk_flag_int("bench-disk", "--repeat", optarg, 1, MK_PROBE_MAX_REPEAT, &iv)) >= 0)
                return rc;
            o.repeat = (int)iv;
            break;
        default: help(stderr); return 2;
        }
    }
    if (optind + 1 != argc)
        return mk_cli_usage("bench-disk", "expected exactly one PATH (a directory, or a large file to read)");
    mk_disk_probe_file f;
    mk_status s = mk_disk_probe_open(argv[optind], &o, &f);
    if (s != MK_OK)
        return mk_cli_fail(s);
    if (f.temp) {
        g_tmp = f.path;
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        signal(SIGHUP, on_signal);
        fprintf(stderr, "bench-disk: writing %.2f GiB to %s (removed at the end)\n",
                (double)f.size / (1 << 30), f.path);
    }
    s = mk_disk_probe_fill(&f);
    mk_disk_probe_result res;
    if (s == MK_OK) {
        fprintf(stderr, "bench-disk: measuring (each pass at most %g s)\n", o.seconds > 0 ? o.seconds : 10.0);
        s = mk_disk_probe_measure(&f, &o, &res);
    }
    if (s == MK_OK) {
        size_t block = o.block ? o.block : (size_t)4 << 20;
        printf("file: %s (%s, %.2f GiB read per pass), queue depth %u\n", f.path,
               f.temp ? "temporary" : "existing, read only", (double)f.size / (1 << 30), o.qd ? o.qd : 16);
        printf("%-9s %-9s %-24s %s\n", "backend", "mode", "sequential GB/s", "random GB/s");
        char rh[64];
        snprintf(rh, sizeof rh, "%zu KiB reads", block >> 10);
        printf("%-9s %-9s %-24s %s\n", "", "", "4 MiB reads", rh);
        for (int i = 0; i < res.nrun; i++) {
            const mk_disk_probe_run *r = &res.run[i];
            char a[64], b[64];
            if (r->repeats > 1) {
                snprintf(a, sizeof a, "%.2f (%.2f-%.2f)", r->seq_gbps, r->seq_lo, r->seq_hi);
                snprintf(b, sizeof b, "%.2f (%.2f-%.2f)", r->rand_gbps, r->rand_lo, r->rand_hi);
            } else {
                snprintf(a, sizeof a, "%.2f", r->seq_gbps);
                snprintf(b, sizeof b, "%.2f", r->rand_gbps);
            }
            printf("%-9s %-9s %-24s %s%s\n", r->backend, r->direct ? "O_DIRECT" : "buffered", a, b,
                   i == res.best ? "  <- recommended" : "");
        }
        if (res.note[0])
            printf("note: %s\n", res.note);
        double best_seq = 0;
        for (int i = 0; i < res.nrun; i++)
            if (res.run[i].seq_gbps > best_seq)
                best_seq = res.run[i].seq_gbps;
        const mk_disk_probe_run *b = &res.run[res.best];
        printf("recommend: %s %s, queue depth %u (random reads %.2f GB/s = %.2f of the best sequential "
               "%.2f GB/s)%s\n", b->backend, b->direct ? "O_DIRECT" : "buffered", o.qd ? o.qd : 16, b->rand_gbps,
               best_seq > 0 ? b->rand_gbps / best_seq : 0, best_seq,
               res.within_noise ? "; within the run-to-run noise (ranges overlap): rerun on a quiet machine" : "");
    }
    g_tmp = NULL;
    mk_disk_probe_close(&f);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}

static const mk_cmd mk_cmd_def_bench_disk = {
    "bench-disk", "measure the disk's sequential and random-read GB/s for streaming experts", cmd_bench_disk,
    85};
__attribute__((constructor)) static void mk_cmd_reg_bench_disk(void) { mk_cmd_register(&mk_cmd_def_bench_disk); }
