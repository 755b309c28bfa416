/* The safetensors implementation of the convert writer interface
 * (writer.h), over the streaming writer of src/format/st_write.c.
 *
 * Each shard of the plan is its own one-file mk_stw: model.safetensors
 * when there is one shard, model-0000k-of-0000n.safetensors otherwise, with
 * header metadata {"format": <target's tag>} ("pt" for transformers, "mlx"
 * for mlx-lm). The format orders tensors by element alignment (larger
 * first: every tensor starts aligned to its element size), then by name;
 * mk_stw orders them itself, so begin checks that the plan's order is the
 * writer's. A packed plan (plan.c) keeps its own order (experts together)
 * and asks for the data buffer to start at a 4 KiB boundary (the header is
 * padded with spaces: the only padding a valid file can hold). A multi-shard checkpoint gets model.safetensors.index.json
 * (weight_map: tensor -> shard file, metadata.total_size). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/writer.h"
#include "core/alloc.h"
#include "core/json_err.h"
#include "io/os.h"

struct cv_writer {
    mk_stw *w;
};

static unsigned align_of(mk_dtype t) {
    unsigned b = mk_dtype_info(t)->bits / 8;
    return b ? b : 1;
}

/* The writer's order (st_write.c cmp_plan): alignment descending, then name. */
static int st_order(const void *a, const void *b) {
    const cv_out *x = a, *y = b;
    unsigned ax = align_of(x->dt), ay = align_of(y->dt);
    if (ax != ay)
        return ax > ay ? -1 : 1;
    return strcmp(x->name, y->name);
}

static char *st_shard_file(int k, int n) {
    return n == 1 ? cv_strdup("model.safetensors") : cv_printf("model-%05d-of-%05d.safetensors", k + 1, n);
}

static void st_free(cv_writer *w) {
    if (!w)
        return;
    mk_stw_free(w->w);
    free(w);
}

static mk_status st_begin(const char *dir, const cv_plan *p, int k, const char *format_tag, cv_writer **out) {
    *out = NULL;
    char base[64], meta[64];
    if (p->nshards == 1)
        snprintf(base, sizeof base, "model");
    else
        snprintf(base, sizeof base, "model-%05d-of-%05d", k + 1, p->nshards);
    snprintf(meta, sizeof meta, "{\"format\":\"%s\"}", format_tag);
    cv_writer *w = mk_calloc(1, sizeof *w);
    if (!w)
        return mk_err(MK_E_NOMEM, "%s: no memory for the writer of shard %d", dir, k + 1);
    /* packed: the plan's order, and data from a 4 KiB boundary (plan.c) */
    mk_stw_opts wo = {0, true, base, meta, p->packed, p->packed ? CV_PACK_ALIGN : 0};
    mk_status s = mk_stw_create(dir, &wo, &w->w);
    for (size_t i = p->shard_first[k]; s == MK_OK && i < p->shard_first[k + 1]; i++)
        s = mk_stw_add(w->w, p->outs[i].name, p->outs[i].dt, p->outs[i].ndim, p->outs[i].shape);
    if (s == MK_OK)
        s = mk_stw_begin_data(w->w);
    /* the writer orders tensors itself; the plan was sorted the same way */
    for (size_t i = 0; s == MK_OK && i < mk_stw_count(w->w); i++)
        if (strcmp(mk_stw_name(w->w, i), p->outs[p->shard_first[k] + i].name) != 0)
            s = mk_err(MK_E_INTERNAL, "convert: writer order '%s' differs from plan order '%s'",
                       mk_stw_name(w->w, i), p->outs[p->shard_first[k] + i].name);
    if (s != MK_OK) {
        st_free(w);
        return s;
    }
    *out = w;
    return MK_OK;
}

/* Each output shard is its own one-file writer: its file is shard 0. */
static int st_fd(const cv_writer *w) {
    return mk_stw_shard_fd(w->w, 0);
}

static mk_status st_write(cv_writer *w, const void *data, size_t n) {
    return mk_stw_write(w->w, data, n);
}

static mk_status st_copy(cv_writer *w, int fd, uint64_t off, uint64_t n) {
    return mk_stw_copy_from_fd(w->w, fd, off, n);
}

static mk_status st_finish(cv_writer *w) {
    return mk_stw_finish(w->w);
}

static mk_status st_index(const cv_plan *p, const char *dir) {
    if (p->nshards < 2)
        return MK_OK;
    /* jansson reports running out of memory only through return values: an
     * entry it failed to add would silently leave a tensor out of the index */
    unsigned long mark = mk_json_mark();
    json_t *root = json_object(), *meta = json_object(), *wm = json_object();
    json_object_set_new(meta, "total_size", json_integer((json_int_t)p->total_bytes));
    json_object_set_new(root, "metadata", meta);
    for (size_t i = 0; i < p->nouts; i++)
        json_object_set_new(wm, p->outs[i].name, json_string(p->shard_files[p->outs[i].shard]));
    json_object_set_new(root, "weight_map", wm);
    char *js = mk_json_dumps_checked(root, JSON_INDENT(2) | JSON_SORT_KEYS, mark);
    json_decref(root);
    char *path = mk_path_join(dir, "model.safetensors.index.json");
    mk_status s = js && path ? mk_os_write_file_atomic(path, js, strlen(js))
                             : mk_err(MK_E_NOMEM, "%s: no memory to write model.safetensors.index.json", dir);
    free(js);
    free(path);
    return s;
}

const cv_writer_ops cv_writer_safetensors = {
    .name = "safetensors",
    .order = st_order,
    .shard_file = st_shard_file,
    .begin = st_begin,
    .fd = st_fd,
    .write = st_write,
    .copy = st_copy,
    .finish = st_finish,
    .free = st_free,
    .index = st_index,
};
