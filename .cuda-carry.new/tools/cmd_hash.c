/* moekit hash: one line per tensor (name, dtype, shape, xxh3-128) for
 * manifests and quick byte-identity checks between checkpoints. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "moekit/escape.h"
#include "moekit/st.h"
#include "moekit/tensor_hash.h"

static void help(FILE *f) {
    fprintf(f, "usage: moekit hash PATH\n\n"
               "Print one line per tensor: NAME DTYPE [d0,d1,...] XXH3-128 (hex), sorted by name.\n"
               "Control characters and backslashes in NAME are escaped (\\n, \\t, \\xHH, \\\\), so\n"
               "every line names exactly one tensor.\n"
               "PATH is a .safetensors file, a sharded checkpoint directory (with or without an index).\n"
               "Memory: tensors are hashed from the mmap in place; nothing is copied.\n");
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const mk_tensor_info *const *)a)->name, (*(const mk_tensor_info *const *)b)->name);
}

static int cmd_hash(int argc, char **argv) {
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            help(stdout);
            return 0;
        }
        help(stderr);
        return 2;
    }
    if (optind + 1 != argc)
        return mk_cli_usage("hash", "expected exactly one PATH");
    mk_ckpt *ck;
    mk_status s = mk_ckpt_open(argv[optind], 0, &ck);
    if (s != MK_OK)
        return mk_cli_fail(s);
    size_t n = mk_ckpt_count(ck);
    const mk_tensor_info **v = malloc((n ? n : 1) * sizeof *v);
    if (!v) {
        mk_ckpt_close(ck);
        return mk_cli_fail(mk_err(MK_E_NOMEM, "out of memory"));
    }
    for (size_t i = 0; i < n; i++)
        v[i] = mk_ckpt_tensor(ck, i);
    qsort(v, n, sizeof *v, cmp_name);
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        mk_hash128 h;
        s = mk_tensor_hash(ck, v[i], &h);
        if (s != MK_OK)
            break;
        char hex[33];
        mk_hash128_hex(&h, hex);
        /* One line per tensor, whatever its name holds: escaped one to one
         * (a newline would forge a manifest line, ESC drive the terminal). */
        char *name = mk_escape_dup(v[i]->name, MK_ESC_BACKSLASH);
        if (!name) {
            s = mk_err(MK_E_NOMEM, "out of memory");
            break;
        }
        printf("%s %s [", name, mk_dtype_name(v[i]->dtype));
        free(name);
        for (int d = 0; d < v[i]->ndim; d++)
            printf(d ? ",%lld" : "%lld", (long long)v[i]->shape[d]);
        printf("] %s\n", hex);
    }
    free(v);
    mk_ckpt_close(ck);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}

MK_CMD_REGISTER(hash, 80, "print name, dtype, shape and xxh3-128 of every tensor", cmd_hash)
