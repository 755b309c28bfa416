/* Content hashes of tensors (xxh3-128), used by `hash`, `verify`,
 * `reshard` and convert's passthrough checks. */
#ifndef MOEKIT_TENSOR_HASH_H
#define MOEKIT_TENSOR_HASH_H

#include <stdint.h>

#include "moekit/st.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mk_hash128 {
    uint64_t hi, lo;
} mk_hash128;

/* Hash the tensor's raw bytes. */
mk_status mk_tensor_hash(const mk_ckpt *c, const mk_tensor_info *t, mk_hash128 *out);
/* 32 lowercase hex digits + NUL (high 64 bits first, as XXH128 canonical). */
void mk_hash128_hex(const mk_hash128 *h, char out[33]);

#ifdef __cplusplus
}
#endif
#endif
