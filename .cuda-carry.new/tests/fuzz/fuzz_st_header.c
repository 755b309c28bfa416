/* libFuzzer target: the safetensors header validator (mk_st_header_parse).
 *
 * Input = u64 LE data-buffer length + header JSON text, i.e. a safetensors
 * file with its data cut off and the data length given instead; the seeds
 * are real headers with their true lengths, so mutations explore both the
 * accepting and the rejecting paths. On success the result is checked
 * against the format's rules (contiguous, in offset order, sizes agree), so
 * a validator that accepts a bad header is a crash, not just a pass.
 *
 * The parser source is compiled into this file so it carries the fuzzer's
 * coverage instrumentation (the library itself is built without it); the
 * linker then takes this copy instead of the archive's. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/format/st_header.c"

#define CHECK(x)               \
    do {                       \
        if (!(x))              \
            __builtin_trap();  \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8)
        return 0;
    uint64_t data_len = 0;
    for (int i = 7; i >= 0; i--)
        data_len = (data_len << 8) | data[i];
    const char *hdr = (const char *)data + 8;
    size_t n = size - 8;
    mk_tensor_info *ts = NULL;
    size_t cnt = 0;
    char *meta = NULL;
    mk_status s = mk_st_header_parse("fuzz", hdr, n, data_len, &ts, &cnt, &meta);
    if (s != MK_OK) {
        CHECK(ts == NULL && cnt == 0 && meta == NULL);
        CHECK(s == MK_E_FORMAT || s == MK_E_NOMEM);
        CHECK(mk_err_msg()[0] != 0);
        return 0;
    }
    /* accepted: the tensors tile [0, data_len) exactly, in offset order */
    uint64_t end = 0;
    for (size_t i = 0; i < cnt; i++) {
        const mk_tensor_info *t = &ts[i];
        CHECK(t->name != NULL);
        CHECK(t->ndim >= 0 && t->ndim <= MK_MAX_DIMS);
        uint64_t numel = 1;
        bool zero = false;
        for (int d = 0; d < t->ndim; d++) {
            CHECK(t->shape[d] >= 0);
            if (t->shape[d] == 0)
                zero = true;
            else if (!zero) {
                CHECK(numel <= UINT64_MAX / (uint64_t)t->shape[d]);
                numel *= (uint64_t)t->shape[d];
            }
        }
        if (zero)
            numel = 0;
        CHECK(t->numel == numel);
        uint64_t nb = 0;
        CHECK(mk_dtype_nbytes(t->dtype, numel, &nb) && nb == t->nbytes);
        CHECK(t->file_offset == end);
        end += t->nbytes;
        CHECK(strcmp(t->name, "__metadata__") != 0);
    }
    CHECK(end == data_len);
    mk_st_header_free(ts, cnt);
    free(meta);
    return 0;
}
