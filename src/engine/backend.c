/* The backend wrapper: a table of slots (mk_backend_i) and its context.
 *
 * mk_backend is opaque so that callers reach a backend only through its
 * table; the engine keeps the table pointer for the hot path. The CPU
 * backend (backend_cpu.c) and, later, the CUDA one are made with
 * mk_backend_create. */
#include <stdlib.h>

#include "core/alloc.h"
#include "moekit/backend.h"

struct mk_backend {
    const mk_backend_i *i;
    void *ctx;
    void *ahead; /* the engine with a step queued ahead here (forward.c's decode lookahead) */
    void *last;  /* the engine that last ran a step here (the same) */
};

mk_status mk_backend_create(const mk_backend_i *iface, void *ctx, mk_backend **out) {
    *out = NULL;
    mk_backend *b = mk_calloc(1, sizeof *b);
    if (!b) {
        if (iface && iface->free)
            iface->free(ctx);
        return mk_err(MK_E_NOMEM, "no memory for a backend (%s)", iface ? iface->name : "?");
    }
    b->i = iface;
    b->ctx = ctx;
    *out = b;
    return MK_OK;
}

void mk_backend_free(mk_backend *b) {
    if (!b)
        return;
    if (b->i && b->i->free)
        b->i->free(b->ctx);
    free(b);
}

const mk_backend_i *mk_backend_iface(const mk_backend *b) { return b->i; }
void *mk_backend_ctx(const mk_backend *b) { return b->ctx; }
void **mk_backend_ahead(mk_backend *b) { return &b->ahead; }
void **mk_backend_last(mk_backend *b) { return &b->last; }
