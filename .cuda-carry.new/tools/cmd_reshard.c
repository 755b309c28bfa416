/* moekit reshard: rewrite a checkpoint into new shards of a given size with
 * every tensor byte-identical (copy_file_range where the filesystem allows),
 * HF ordering and padding, an index when sharded, side files (config,
 * tokenizer) copied. Output is built in DST.partial/ and renamed. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_flags.h"
#include "cmd.h"
#include "io/outdir.h"
#include "io/outpath.h"
#include "moekit/st.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: moekit reshard SRC DST [--shard-size 5G] [--force]\n\n"
            "Rewrite the checkpoint SRC into DST with shards of at most --shard-size bytes\n"
            "(default 5G, as mlx-lm and transformers cut them; 0 = one file). Every tensor is\n"
            "copied byte for byte; `moekit verify SRC DST` proves it. config.json, tokenizer\n"
            "files and generation_config.json are copied alongside.\n\n"
            "  --shard-size N   shard size limit (K/M/G suffixes); a tensor larger than N gets\n"
            "                   a shard of its own\n"
            "  --force          replace DST if it exists and is a checkpoint or a moekit output\n"
            "                   (*.safetensors, a moekit journal, or config.json with no\n"
            "                   subdirectory); any other directory, SRC itself, a directory\n"
            "                   holding SRC, / and the home directory are always refused\n\n"
            "Memory: data moves kernel-side (copy_file_range) or through a 1 MiB buffer, plus an\n"
            "8 MiB write buffer; the header plan is O(number of tensors).\n"
            "DST appears only when complete (built in DST.partial/, fsynced, renamed); one moekit\n"
            "at a time writes a DST (a second one is refused, naming the first one's pid).\n");
}

static int cmd_reshard(int argc, char **argv) {
    static const struct option opts[] = {{"shard-size", required_argument, 0, 's'},
                                         {"force", no_argument, 0, 'f'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    unsigned long long shard = 5ull << 30;
    bool force = false;
    int c, rc;
    while ((c = getopt_long(argc, argv, "s:fh", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if ((rc = mk_flag_size("reshard", "--shard-size", optarg, 1, &shard)) >= 0)
                return rc;
            break;
        case 'f': force = true; break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    if (optind + 2 != argc)
        return mk_cli_usage("reshard", "expected SRC and DST");
    const char *src = argv[optind], *dst = argv[optind + 1];
    mk_ckpt *ck = NULL;
    mk_stw *w = NULL;
    mk_outdir od = {.lock_fd = -1};
    const char *partial = NULL;
    mk_paths paths;
    mk_paths_init(&paths);
    mk_status s = mk_paths_add_input(&paths, src, "SRC");
    if (s == MK_OK)
        s = mk_paths_check_dir(&paths, dst, force);
    mk_paths_free(&paths);
    if (s == MK_OK)
        s = mk_ckpt_open(src, MK_CKPT_NO_MMAP, &ck);
    if (s == MK_OK)
        s = mk_outdir_open(&od, dst, force, "reshard");
    if (s == MK_OK) {
        partial = od.partial;
        s = mk_outdir_clear(&od); /* reshard does not resume: start from nothing */
    }
    if (s == MK_OK) {
        const char *meta = mk_ckpt_metadata_json(ck, 0);
        mk_stw_opts o = {.shard_size = shard, .force = true, .basename = "model", .metadata_json = meta};
        s = mk_stw_create(partial, &o, &w);
    }
    for (size_t i = 0; s == MK_OK && i < mk_ckpt_count(ck); i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(ck, i);
        s = mk_stw_add(w, t->name, t->dtype, t->ndim, t->shape);
    }
    if (s == MK_OK)
        s = mk_stw_begin_data(w);
    for (size_t i = 0; s == MK_OK && i < mk_stw_count(w); i++) {
        const mk_tensor_info *t = mk_ckpt_find(ck, mk_stw_name(w, i));
        s = mk_stw_copy_from_fd(w, mk_ckpt_shard_fd(ck, (size_t)t->shard), t->file_offset, t->nbytes);
    }
    if (s == MK_OK)
        s = mk_stw_finish(w);
    if (s == MK_OK)
        s = mk_outdir_copy_sidecars(mk_ckpt_dir(ck), partial);
    if (s == MK_OK)
        s = mk_outdir_commit(&od, NULL);
    if (s == MK_OK)
        fprintf(stderr, "reshard: wrote %zu tensors into %zu shard(s) in %s\n", mk_stw_count(w),
                mk_stw_count(w) ? (size_t)mk_stw_info(w, mk_stw_count(w) - 1)->shard + 1 : 1, dst);
    mk_stw_free(w);
    if (s != MK_OK && od.lock_fd >= 0) {
        /* reshard does not resume: its partial output goes, and it says so */
        char msg[1800];
        snprintf(msg, sizeof msg, "%s", mk_err_msg());
        mk_err(s, "%s (partial output %s removed; %s left as it was)", msg, od.partial, dst);
        mk_outdir_abort(&od); /* only while this process holds DST.partial/ */
    }
    mk_outdir_close(&od);
    mk_ckpt_close(ck);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}

MK_CMD_REGISTER(reshard, 70, "rewrite a checkpoint into new shards, every tensor byte-identical", cmd_reshard)
