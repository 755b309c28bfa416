/* libFuzzer target: config.json reading (mk_config_parse) and the queries
 * the model layer makes of the result.
 *
 * Input = the config text (NUL-terminated copy). On success the layer
 * queries and the quantization lookup run over the parsed config; on
 * failure nothing may be left allocated (LeakSanitizer checks). The parser
 * source is compiled in for coverage (see fuzz_st_header.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/format/config.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *js = malloc(size + 1);
    if (!js)
        return 0;
    memcpy(js, data, size);
    js[size] = 0;
    mk_config c;
    if (mk_config_parse("fuzz", js, &c) == MK_OK) {
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
