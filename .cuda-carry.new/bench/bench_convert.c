/* bench_convert: compute throughput of the convert operations on one core,
 * without the disk. Plans `SRC -> HF bf16` (or --to mlx), then runs every
 * computed piece (FP8 / INT4 / affine dequantize, float re-encode) through
 * cv_op_run in chunks of 1M values on the calling thread, reading the source
 * from the page cache (a first pass warms it), and reports output GB/s.
 *
 * usage: bench_convert SRC [hf|mlx] [bf16|f32] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "convert/conv_impl.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_convert SRC [hf|mlx] [bf16|f32]\n");
        return 2;
    }
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.to = argc > 2 && strcmp(argv[2], "mlx") == 0 ? MK_CONV_MLX : MK_CONV_HF;
    o.dtype = argc > 3 && strcmp(argv[3], "f32") == 0 ? MK_DT_F32 : MK_DT_BF16;
    cv_src s;
    cv_plan p;
    if (cv_src_open(argv[1], &s) != MK_OK || cv_plan_build(&s, &o, &p) != MK_OK) {
        fprintf(stderr, "bench_convert: %s\n", mk_err_msg());
        return 1;
    }
    const uint64_t chunk = 1u << 20;
    size_t cap = 64u << 20;
    unsigned char *scratch = malloc(cap), *out = malloc(cap);
    double best = 0;
    uint64_t in_bytes = 0, out_bytes = 0;
    for (int pass = 0; pass < 2; pass++) { /* pass 0 warms the page cache */
        in_bytes = out_bytes = 0;
        double t0 = now_s();
        for (size_t i = 0; i < p.nouts; i++)
            for (int j = 0; j < p.outs[i].npc; j++) {
                const cv_piece *pc = &p.outs[i].pc[j];
                if (pc->op == CV_OP_COPY)
                    continue;
                int64_t units = cv_op_units(pc), per = (int64_t)chunk;
                if (cv_op_by_rows(pc->op))
                    per = (int64_t)chunk / pc->mod->cols > 0 ? (int64_t)chunk / pc->mod->cols : 1;
                for (int64_t a = 0; a < units; a += per) {
                    int64_t n = units - a < per ? units - a : per;
                    if (cv_op_scratch(pc, n) > cap || cv_op_run(s.ck, pc, pc->dt, a, n, scratch, out) != MK_OK) {
                        fprintf(stderr, "bench_convert: %s\n", mk_err_msg());
                        return 1;
                    }
                    out_bytes += cv_op_out_bytes(pc, pc->dt, n);
                }
                in_bytes += pc->mod->t[CV_T_MAIN]->nbytes * (uint64_t)pc->nrows / (uint64_t)pc->mod->rows;
            }
        best = now_s() - t0;
    }
    printf("computed pieces: %.3f GB in (main tensors), %.3f GB out, %.3f s on 1 core: %.2f GB/s out, %.2f GB/s in\n",
           (double)in_bytes / 1e9, (double)out_bytes / 1e9, best, (double)out_bytes / 1e9 / best,
           (double)in_bytes / 1e9 / best);
    free(scratch);
    free(out);
    cv_plan_free(&p);
    cv_src_close(&s);
    return 0;
}
