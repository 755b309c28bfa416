/* model.safetensors.index.json parsing: the weight_map of tensor -> shard.
 * Shard names must be plain file names (no '/' or '..'): an index must not
 * reach outside its directory. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_err.h"
#include "core/alloc.h"
#include "core/str.h"
#include "moekit/st.h"

void mk_st_index_free(char **names, char **files, size_t count) {
    for (size_t i = 0; i < count; i++) {
        if (names)
            free(names[i]);
        if (files)
            free(files[i]);
    }
    free(names);
    free(files);
}

mk_status mk_st_index_parse(const char *what, const char *json, size_t n, char ***names,
                            char ***files, size_t *count) {
    *names = NULL;
    *files = NULL;
    *count = 0;
    json_error_t jerr;
    unsigned long jmark = mk_json_mark();
    json_t *root = mk_json_loadb(json, n, JSON_REJECT_DUPLICATES, &jerr, jmark);
    if (!root && mk_json_nomem(&jerr, jmark)) /* not the file's fault */
        return mk_err(MK_E_NOMEM, "%s: no memory to parse its JSON", what);
    if (!root)
        return mk_err(MK_E_FORMAT, "%s: not valid JSON: %s (line %d)", what, mk_json_errtext(jerr.text), jerr.line);
    mk_status s = MK_OK;
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        json_decref(root);
        return mk_err(MK_E_FORMAT, "%s: field 'weight_map': expected an object of tensor -> file", what);
    }
    size_t cnt = json_object_size(wm);
    char **nm = mk_calloc(cnt ? cnt : 1, sizeof *nm), **fl = mk_calloc(cnt ? cnt : 1, sizeof *fl);
    if (!nm || !fl) {
        free(nm);
        free(fl);
        json_decref(root);
        return mk_err(MK_E_NOMEM, "%s: no memory for a weight_map of %zu entries", what, cnt);
    }
    size_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v)) {
            s = mk_err(MK_E_FORMAT, "%s: weight_map['%s']: expected a file name string", what, key);
            break;
        }
        const char *f = json_string_value(v);
        if (!*f || strchr(f, '/') || strcmp(f, "..") == 0 || strcmp(f, ".") == 0) {
            s = mk_err(MK_E_FORMAT, "%s: weight_map['%s']: '%s' is not a plain file name", what, key, f);
            break;
        }
        nm[i] = mk_strdup(key);
        fl[i] = mk_strdup(f);
        i++;
        if (!nm[i - 1] || !fl[i - 1]) {
            s = mk_err(MK_E_NOMEM, "%s: no memory for weight_map['%s']", what, key);
            break;
        }
    }
    json_decref(root);
    if (s != MK_OK) {
        mk_st_index_free(nm, fl, i);
        return s;
    }
    *names = nm;
    *files = fl;
    *count = i;
    return MK_OK;
}
