/* libFuzzer target: the tensor-name map (src/model/layout.c). Tensor names
 * come straight from untrusted safetensors headers, and inspect, convert,
 * quantize, profile and the loader all take them apart here.
 *
 * Input = one name (NUL-terminated copy, any bytes). Every entry point runs
 * on it and on its canonical form; invariants that must hold for any input
 * are checked with __builtin_trap (libFuzzer reports it as a crash):
 * the text model's canonical names stay text-model names, a per-expert form
 * has a non-negative or -2 index and an mlp prefix, parse never yields an
 * unterminated field. Sources are compiled in for coverage. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/str.c"
#include "../../src/model/layout.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
    if (!ok)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096)
        return 0;
    char *name = malloc(size + 1);
    if (!name)
        return 0;
    memcpy(name, data, size);
    name[size] = 0;

    mk_part part, part2;
    bool vl, vl2;
    char *c = mk_layout_canon(name, (int)(size % 7), &part, &vl);
    if (c) {
        /* canonical names of the text model stay in it */
        char *c2 = mk_layout_canon(c, 0, &part2, &vl2);
        if (c2 && part == MK_PART_LM && strncmp(c, "model.layers.", 13) == 0)
            check(part2 == MK_PART_LM);
        free(c2);
        char *mlp = NULL;
        int e = 0, p = 0;
        mk_eform f = mk_layout_expert(c, &mlp, &e, &p);
        if (f == MK_EF_PER_EXPERT)
            check(mlp != NULL && (e >= 0 || e == -2) && p >= 0 && p < 3);
        if (f == MK_EF_NONE)
            check(mlp == NULL);
        free(mlp);
        for (int m = 0; m < 8; m++) {
            char *o = mk_layout_out_name(m & 1, (m >> 1) & 1, (m >> 2) & 1, part, c);
            free(o);
        }
        (void)mk_layout_is_shifted_norm(c, 1);
        (void)mk_layout_keeps_dtype(c);
        free(c);
    }
    char *base = NULL;
    const char *suf = NULL;
    mk_qrole r = mk_layout_role(name, &base, &suf);
    if (base) {
        check(suf != NULL);
        check(r == MK_QR_MAIN ? strcmp(base, name) == 0 : strlen(suf) > 0);
        free(base);
    }
    mk_lname t;
    mk_layout_parse(name, &t);
    check(memchr(t.module, 0, sizeof t.module) != NULL && memchr(t.storage, 0, sizeof t.storage) != NULL);
    check(t.xform != MK_XF_PER_EXPERT || t.expert >= 0);
    free(name);
    return 0;
}
