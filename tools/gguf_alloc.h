/* `moekit convert --to gguf --target-bpw X --profile P`: moekit's
 * profile-driven allocation choosing a ggml type per GGUF tensor
 * (gguf_alloc.c). */
#ifndef MK_TOOLS_GGUF_ALLOC_H
#define MK_TOOLS_GGUF_ALLOC_H

#include <stddef.h>

#include "moekit/convert.h"
#include "moekit/status.h"

/* The overrides handed to convert (mk_conv_opts.gguf_over_*), owned here. */
typedef struct mk_gguf_alloc {
    char **mod;
    int *type;
    size_t n;
    double expected_bpw; /* the allocation's bits per weight over the profiled tensors */
} mk_gguf_alloc;

/* Solve the allocation of profile `profile` for `target` bits per weight
 * (class weights `class_weights`, NULL: none) and point o's gguf_over_* and
 * gguf_type (the type holding the most parameters, general.file_type's) at
 * it. Free with mk_gguf_alloc_free after the conversion. */
mk_status mk_gguf_alloc_solve(const char *profile, double target, const char *class_weights, mk_conv_opts *o,
                              mk_gguf_alloc *a);
void mk_gguf_alloc_free(mk_gguf_alloc *a);

#endif
