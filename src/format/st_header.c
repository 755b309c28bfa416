/* Strict safetensors header parsing.
 *
 * Validates exactly what FORMATS.md section 1 (after huggingface/safetensors)
 * requires: a JSON object of entries {dtype, shape, data_offsets} plus an
 * optional __metadata__ of string -> string; known dtypes; byte ranges equal
 * to numel x dtype size; no holes or overlaps (sorted by offset, each begin
 * equals the previous end, the first begins at 0); the data buffer exactly
 * as long as the last end. On top of the reference: duplicate names and
 * element counts that overflow 64 bits are errors. Every message names the
 * file and the tensor. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_err.h"
#include "core/alloc.h"
#include "core/str.h"
#include "moekit/st.h"

void mk_st_header_free(mk_tensor_info *t, size_t count) {
    if (!t)
        return;
    for (size_t i = 0; i < count; i++)
        free((char *)t[i].name);
    free(t);
}

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* Parse one tensor entry into *t (name already set). */
static mk_status parse_entry(const char *what, const char *name, json_t *v, mk_tensor_info *t) {
    if (!json_is_object(v))
        return mk_err(MK_E_FORMAT, "%s: tensor '%s': expected an object, found %s", what, name,
                      json_kind(v));
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *off = json_object_get(v, "data_offsets");
    if (!dt || !sh || !off)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s': missing field '%s'", what, name,
                      !dt ? "dtype" : !sh ? "shape" : "data_offsets");
    if (!json_is_string(dt))
        return mk_err(MK_E_FORMAT, "%s: tensor '%s': dtype: expected a string, found %s", what, name,
                      json_kind(dt));
    t->dtype = mk_dtype_parse(json_string_value(dt));
    if (t->dtype == MK_DT_INVALID)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s': unknown dtype '%s'", what, name,
                      json_string_value(dt));
    if (!json_is_array(sh))
        return mk_err(MK_E_FORMAT, "%s: tensor '%s': shape: expected an array, found %s", what, name,
                      json_kind(sh));
    size_t nd = json_array_size(sh);
    if (nd > MK_MAX_DIMS)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s': %zu dimensions, at most %d supported", what,
                      name, nd, MK_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(sh, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return mk_err(MK_E_FORMAT, "%s: tensor '%s': shape[%zu]: expected a non-negative integer",
                          what, name, i);
        uint64_t dv = (uint64_t)json_integer_value(d);
        t->shape[i] = (int64_t)dv;
        if (dv != 0 && numel > UINT64_MAX / dv)
            overflow = true;
        else
            numel *= dv;
    }
    /* A zero dimension makes the tensor empty even if other dims are huge. */
    for (size_t i = 0; i < nd; i++)
        if (t->shape[i] == 0) {
            numel = 0;
            overflow = false;
        }
    if (overflow)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s': element count of the shape overflows 64 bits",
                      what, name);
    t->numel = numel;
    if (!mk_dtype_nbytes(t->dtype, numel, &t->nbytes))
        return mk_err(MK_E_FORMAT,
                      "%s: tensor '%s': %llu elements of %s is not a whole number of bytes or overflows",
                      what, name, (unsigned long long)numel, mk_dtype_name(t->dtype));
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !json_is_integer(json_array_get(off, 0)) || !json_is_integer(json_array_get(off, 1)) ||
        json_integer_value(json_array_get(off, 0)) < 0 || json_integer_value(json_array_get(off, 1)) < 0)
        return mk_err(MK_E_FORMAT,
                      "%s: tensor '%s': data_offsets: expected [BEGIN, END] non-negative integers", what,
                      name);
    uint64_t b = (uint64_t)json_integer_value(json_array_get(off, 0));
    uint64_t e = (uint64_t)json_integer_value(json_array_get(off, 1));
    if (e < b)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before begin", what,
                      name, (unsigned long long)b, (unsigned long long)e);
    if (e - b != t->nbytes)
        return mk_err(MK_E_FORMAT,
                      "%s: tensor '%s': byte range %llu does not match shape x dtype size (expected %llu "
                      "bytes for %llu x %s)",
                      what, name, (unsigned long long)(e - b), (unsigned long long)t->nbytes,
                      (unsigned long long)numel, mk_dtype_name(t->dtype));
    t->file_offset = b; /* relative for now; the reader adds the data start */
    return MK_OK;
}

static int cmp_by_offset(const void *a, const void *b) {
    const mk_tensor_info *x = a, *y = b;
    if (x->file_offset != y->file_offset)
        return x->file_offset < y->file_offset ? -1 : 1;
    /* empty tensors before a non-empty one at the same offset */
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

mk_status mk_st_header_parse(const char *what, const char *hdr, size_t n, uint64_t data_len,
                             mk_tensor_info **out_tensors, size_t *out_count,
                             char **out_metadata_json) {
    *out_tensors = NULL;
    *out_count = 0;
    if (out_metadata_json)
        *out_metadata_json = NULL;
    json_error_t jerr;
    unsigned long jmark = mk_json_mark();
    json_t *root = mk_json_loadb(hdr, n, JSON_REJECT_DUPLICATES, &jerr, jmark);
    if (!root) {
        if (mk_json_nomem(&jerr, jmark)) /* not the file's fault */
            return mk_err(MK_E_NOMEM, "%s: no memory to parse its JSON", what);
        if (strstr(jerr.text, "duplicate"))
            return mk_err(MK_E_FORMAT, "%s: header has a duplicate tensor name (%s)", what, jerr.text);
        return mk_err(MK_E_FORMAT, "%s: header is not valid JSON: %s at byte %d", what, mk_json_errtext(jerr.text),
                      jerr.position);
    }
    if (!json_is_object(root)) {
        mk_status s = mk_err(MK_E_FORMAT, "%s: header: expected a JSON object, found %s", what,
                             json_kind(root));
        json_decref(root);
        return s;
    }
    size_t cap = json_object_size(root);
    mk_tensor_info *ts = mk_calloc(cap ? cap : 1, sizeof *ts);
    if (!ts) {
        json_decref(root);
        return mk_err(MK_E_NOMEM, "%s: out of memory for %zu header entries", what, cap);
    }
    size_t cnt = 0;
    mk_status s = MK_OK;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) {
                s = mk_err(MK_E_FORMAT, "%s: __metadata__: expected an object, found %s", what,
                           json_kind(val));
                break;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    s = mk_err(MK_E_FORMAT, "%s: __metadata__['%s']: expected a string, found %s",
                               what, mk, json_kind(mv));
                    break;
                }
            }
            if (s != MK_OK)
                break;
            if (out_metadata_json && !(*out_metadata_json = mk_json_dumps_checked(
                                           val, JSON_COMPACT | JSON_SORT_KEYS, mk_json_mark()))) {
                /* not "no metadata": a copy would silently lose it */
                s = mk_err(MK_E_NOMEM, "%s: no memory to keep its __metadata__ (%zu entries)", what,
                           json_object_size(val));
                break;
            }
            continue;
        }
        mk_tensor_info *t = &ts[cnt];
        t->name = mk_strdup(key);
        if (!t->name) {
            s = mk_err(MK_E_NOMEM, "%s: no memory for the name of tensor '%s'", what, key);
            break;
        }
        cnt++;
        s = parse_entry(what, key, val, t);
        if (s != MK_OK)
            break;
    }
    json_decref(root);
    if (s == MK_OK) {
        /* Contiguity: sorted by offset, each begins where the previous ended. */
        mk_tensor_info *sorted = mk_malloc((cnt ? cnt : 1) * sizeof *sorted);
        if (!sorted)
            s = mk_err(MK_E_NOMEM, "%s: no memory to check the offsets of %zu tensors", what, cnt);
        else {
            memcpy(sorted, ts, cnt * sizeof *ts);
            qsort(sorted, cnt, sizeof *sorted, cmp_by_offset);
            uint64_t end = 0;
            for (size_t i = 0; i < cnt && s == MK_OK; i++) {
                uint64_t b = sorted[i].file_offset;
                if (b > end)
                    s = mk_err(MK_E_FORMAT,
                               "%s: tensor '%s': hole in the data buffer (begins at %llu, previous "
                               "tensor ends at %llu)",
                               what, sorted[i].name, (unsigned long long)b, (unsigned long long)end);
                else if (b < end)
                    s = mk_err(MK_E_FORMAT,
                               "%s: tensor '%s': overlaps the previous tensor (begins at %llu, previous "
                               "ends at %llu)",
                               what, sorted[i].name, (unsigned long long)b, (unsigned long long)end);
                else
                    end = b + sorted[i].nbytes;
            }
            if (s == MK_OK && end != data_len) {
                const char *last = cnt ? sorted[cnt - 1].name : "(none)";
                if (end > data_len)
                    s = mk_err(MK_E_FORMAT,
                               "%s: tensor '%s': data ends at %llu, past the end of the %llu-byte data "
                               "buffer (truncated file?)",
                               what, last, (unsigned long long)end, (unsigned long long)data_len);
                else
                    s = mk_err(MK_E_FORMAT,
                               "%s: data buffer is %llu bytes but tensors end at %llu (last tensor '%s')",
                               what, (unsigned long long)data_len, (unsigned long long)end, last);
            }
            /* Keep the tensors in offset order: that is file order. */
            if (s == MK_OK)
                memcpy(ts, sorted, cnt * sizeof *ts);
            free(sorted);
        }
    }
    if (s != MK_OK) {
        mk_st_header_free(ts, cnt);
        if (out_metadata_json) {
            free(*out_metadata_json);
            *out_metadata_json = NULL;
        }
        return s;
    }
    *out_tensors = ts;
    *out_count = cnt;
    return MK_OK;
}
