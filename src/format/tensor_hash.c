/* xxh3-128 of a tensor's bytes, streamed in bounded chunks so hashing a
 * 10 GB tensor touches a fixed amount of memory (mmap pages are dropped
 * by the kernel as needed; the pread path uses a 1 MiB buffer). */
#include <stdio.h>
#include <stdlib.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "moekit/st.h"
#include "moekit/tensor_hash.h"

mk_status mk_tensor_hash(const mk_ckpt *c, const mk_tensor_info *t, mk_hash128 *out) {
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return mk_err(MK_E_NOMEM, "tensor '%s': no memory for a hash state", t->name);
    XXH3_128bits_reset(st);
    const unsigned char *p = mk_ckpt_data(c, t);
    mk_status s = MK_OK;
    if (p) {
        XXH3_128bits_update(st, p, (size_t)t->nbytes);
    } else {
        size_t bs = 1u << 20;
        unsigned char *buf = mk_malloc(bs);
        if (!buf)
            s = mk_err(MK_E_NOMEM, "tensor '%s': no memory for a read buffer of %zu bytes", t->name, bs);
        for (uint64_t off = 0; s == MK_OK && off < t->nbytes; off += bs) {
            size_t n = (size_t)(t->nbytes - off < bs ? t->nbytes - off : bs);
            s = mk_ckpt_read(c, t, off, buf, n);
            if (s == MK_OK)
                XXH3_128bits_update(st, buf, n);
        }
        free(buf);
    }
    XXH128_hash_t h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    out->hi = h.high64;
    out->lo = h.low64;
    return s;
}

void mk_hash128_hex(const mk_hash128 *h, char out[33]) {
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h->hi, (unsigned long long)h->lo);
}
