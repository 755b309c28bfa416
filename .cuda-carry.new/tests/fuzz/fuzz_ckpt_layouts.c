/* libFuzzer target: what convert, quantize, inspect and verify make of a
 * checkpoint's tensor NAMES, dtypes and shapes (the part of a hostile or
 * broken checkpoint the header parser accepts but the layout logic must
 * still survive: odd expert indices, companions without owners, fused and
 * per-expert forms mixed, shapes that fit no grid).
 *
 * Input = u16 LE length + config.json text, u32 LE data length (at most
 * 16 MiB) + the safetensors header JSON; the seeds are the shared fixtures'
 * and `moekit synth`/`quantize` outputs' own configs, headers and data
 * lengths (tests/fuzz/make_layout_seeds.sh). The target writes a checkpoint
 * directory (header + zero data, sparse) and runs mk_inspect (--scan when the
 * data is small),
 * convert's source model and plans for both targets, and the cross-layout
 * verify of the checkpoint against itself. Any error must be a clean status
 * with a message; crashes, leaks and UB are what libFuzzer reports. The
 * library is built with coverage (MK_FUZZ), so no sources are compiled in. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert/conv_impl.h"
#include "moekit/convert.h"
#include "moekit/verify.h"
#include "moekit/inspect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[256];

static int write_all(const char *path, const void *p, size_t n, uint64_t total) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    int ok = write(fd, p, n) == (ssize_t)n && ftruncate(fd, (off_t)total) == 0;
    close(fd);
    return ok ? 0 : -1;
}

static mk_status no_cb(void *ctx, const mk_xverify_unit *u) {
    (void)ctx;
    return u->name ? MK_OK : MK_E_INTERNAL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 6 || size > (1u << 20))
        return 0;
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "%s/mk-fuzz-ckpt-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(g_dir))
            abort();
    }
    size_t cl = (size_t)data[0] | (size_t)data[1] << 8;
    if (2 + cl + 4 > size)
        return 0;
    const uint8_t *d = data + 2 + cl;
    uint32_t dlen = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
    if (dlen > (16u << 20))
        return 0;
    size_t hl = size - (2 + cl + 4);
    /* the file: u64 header length, header, dlen zero bytes */
    unsigned char *f = malloc(8 + hl);
    if (!f)
        return 0;
    for (int i = 0; i < 8; i++)
        f[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(f + 8, d + 4, hl);
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", g_dir);
    int bad = write_all(p, data + 2, cl, cl);
    snprintf(p, sizeof p, "%s/model.safetensors", g_dir);
    bad |= write_all(p, f, 8 + hl, 8 + hl + dlen);
    free(f);
    if (bad)
        abort();

    mk_inspect_opts io = {.scan = dlen <= (1u << 20)};
    char *js = NULL;
    if (mk_inspect(g_dir, &io, &js) == MK_OK)
        free(js);

    cv_src s;
    if (cv_src_open(g_dir, &s) == MK_OK)
        for (int t = 0; t < 2; t++) {
            mk_conv_opts o;
            mk_conv_opts_init(&o);
            o.to = t ? MK_CONV_MLX : MK_CONV_HF;
            o.threads = 1;
            o.quiet = true;
            cv_plan pl;
            (void)cv_plan_build(&s, &o, &pl);
            cv_plan_free(&pl); /* also after a failed build, as exec.c does */
        }
    cv_src_close(&s); /* after either outcome (conv_impl.h) */
    mk_xverify_opts xo;
    mk_xverify_opts_init(&xo);
    xo.threads = 1;
    mk_xverify_summary sum;
    (void)mk_conv_xverify(g_dir, g_dir, &xo, no_cb, NULL, &sum);
    return 0;
}
