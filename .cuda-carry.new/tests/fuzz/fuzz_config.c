/* libFuzzer target: config.json reading (mk_config_parse), the validation
 * every engine load runs (mk_config_check, mk_ct_check, mk_config_compare:
 * format/config_check.c) and the queries the model layer makes of the
 * result.
 *
 * Input = the config text (NUL-terminated copy). On success the validation
 * runs; a config it accepts must satisfy the invariants the engine relies
 * on (checked below, abort() otherwise), and the layer queries and the
 * quantization lookup run over it; a config always equals itself. On failure
 * nothing may be left allocated (LeakSanitizer checks). The parser and
 * checker sources are compiled in for coverage (see fuzz_st_header.c). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/format/config.c"
#include "../../src/format/config_check.c"

/* What mk_config_check promises to the engine (divisions, loop bounds,
 * RoPE tables): a violation is a checker bug, so the fuzzer stops. */
static void accepted_invariants(const mk_config *c) {
    if (c->num_layers <= 0 || c->hidden_size <= 0 || c->vocab_size <= 0 || c->num_heads <= 0)
        abort();
    if (!(c->rope.theta > 0) || !isfinite(c->rope.theta) || !(c->rms_norm_eps >= 0))
        abort();
    if (c->arch == MK_ARCH_DEEPSEEK_V3) {
        if (c->n_group <= 0 || c->topk_group <= 0 || c->topk_group > c->n_group ||
            c->qk_rope_head_dim <= 0 || c->qk_rope_head_dim % 2)
            abort();
    } else {
        int rot = (int)(c->head_dim * c->rope.partial_rotary_factor);
        if (c->num_kv_heads <= 0 || c->num_heads % c->num_kv_heads || rot <= 0 || rot % 2 ||
            rot > c->head_dim)
            abort();
    }
    if (strcmp(c->rope.type, "default") && strcmp(c->rope.type, "yarn"))
        abort();
    if (c->decoder_sparse_step <= 0 || strcmp(c->hidden_act, "silu"))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *js = malloc(size + 1);
    if (!js)
        return 0;
    memcpy(js, data, size);
    js[size] = 0;
    mk_config c;
    if (mk_config_parse("fuzz", js, &c) == MK_OK) {
        if (mk_config_check(&c) == MK_OK)
            accepted_invariants(&c);
        for (int zp = -1; zp <= 1; zp++)
            (void)mk_ct_check(&c.quant, "fuzz", "m", zp);
        if (mk_config_compare(&c, &c, "A", "B") != MK_OK)
            abort(); /* a config describes the same model as itself */
        int n = c.num_layers < 512 ? c.num_layers : 512;
        unsigned acc = 0;
        for (int i = -1; i <= n; i++)
            acc += (unsigned)mk_config_layer_is_moe(&c, i) + (unsigned)mk_config_layer_is_full_attn(&c, i);
        acc += (unsigned)mk_config_has_recurrent_state(&c);
        static const char *const paths[] = {"model.layers.0.mlp.gate", "lm_head", "model.embed_tokens", ""};
        for (int i = 0; i < 4; i++) {
            int bits = 0, group = 0;
            mk_qmode mode = MK_QMODE_AFFINE;
            if (mk_qcfg_lookup(&c.quant, paths[i], i & 1, &bits, &group, &mode))
                acc += (unsigned)bits + (unsigned)group + (unsigned)strlen(mk_qmode_name(mode));
        }
        acc += (unsigned)strlen(mk_arch_name(c.arch));
        (void)acc;
        mk_config_free(&c);
    }
    free(js);
    return 0;
}
