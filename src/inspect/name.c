/* Tensor-name classification (see name.h). Prefixes recognised:
 *   model.language_model.X / language_model.model.X   (VL wrapper, HF / MLX)
 *   model.X, language_model.X, X                      (text LM)
 *   model.visual.*, visual.*, vision_tower.*, model.vision_tower.*  (vision)
 *   mtp.*, model.mtp.*, and DeepSeek's extra layers beyond num_layers (by caller)
 * and storage suffixes of every quantization scheme moekit reads. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inspect/name.h"

static bool starts(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static const char *strip_prefix(const char *n, mk_part *part) {
    static const char *const vis[] = {"model.visual.", "visual.", "vision_tower.", "model.vision_tower.",
                                      "language_model.visual.", NULL};
    static const char *const mtp[] = {"mtp.", "model.mtp.", "language_model.mtp.", NULL};
    static const char *const lm[] = {"model.language_model.", "language_model.model.", "language_model.",
                                     "model.", NULL};
    *part = MK_PART_LM;
    for (int i = 0; vis[i]; i++)
        if (starts(n, vis[i])) {
            *part = MK_PART_VISION;
            return n + strlen(vis[i]);
        }
    for (int i = 0; mtp[i]; i++)
        if (starts(n, mtp[i])) {
            *part = MK_PART_MTP;
            return n + strlen(mtp[i]);
        }
    for (int i = 0; lm[i]; i++)
        if (starts(n, lm[i]))
            return n + strlen(lm[i]);
    return n;
}

void mk_tname_parse(const char *name, mk_tname *t) {
    static const char *const storage[] = {".weight_scale_inv", ".weight_packed", ".weight_scale",
                                          ".weight_shape", ".weight_zero_point", ".weight_g_idx",
                                          ".input_scale", ".activation_scale", ".weight", ".scales",
                                          ".biases", ".bias", NULL};
    memset(t, 0, sizeof *t);
    t->layer = -1;
    t->expert = -1;
    const char *r = strip_prefix(name, &t->part);
    if (starts(r, "layers.")) {
        char *end;
        long l = strtol(r + 7, &end, 10);
        if (end != r + 7 && *end == '.') {
            t->layer = (int)l;
            r = end + 1;
        }
    }
    char buf[256];
    snprintf(buf, sizeof buf, "%s", r);
    /* storage suffix */
    size_t n = strlen(buf);
    for (int i = 0; storage[i]; i++) {
        size_t k = strlen(storage[i]);
        if (n > k && strcmp(buf + n - k, storage[i]) == 0) {
            snprintf(t->storage, sizeof t->storage, "%s", storage[i] + 1);
            buf[n - k] = 0;
            break;
        }
    }
    /* expert forms */
    char *e = strstr(buf, "mlp.experts.");
    if (e) {
        char *p = e + strlen("mlp.experts.");
        char *end;
        long x = strtol(p, &end, 10);
        if (end != p && *end == '.') {
            t->expert = (int)x;
            t->xform = MK_XF_PER_EXPERT;
            memmove(p, end + 1, strlen(end + 1) + 1); /* drop the index */
        } else if (!strcmp(p, "gate_up_proj") || !strcmp(p, "down_proj")) {
            t->xform = MK_XF_FUSED;
        }
    } else if (strstr(buf, "mlp.switch_mlp.")) {
        t->xform = MK_XF_SWITCH;
    }
    snprintf(t->module, sizeof t->module, "%s", buf);
}
