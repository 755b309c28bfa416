/* libFuzzer target: the GGUF reader of `moekit inspect x.gguf`
 * (mk_inspect_gguf, src/inspect/inspect_gguf.c).
 *
 * Input = a whole GGUF file (header and whatever data follows), written to
 * an anonymous memory file that the reader opens by its /proc path; the
 * seeds are moekit's own GGUF headers (cut after their tensor infos), so
 * mutations explore the accepting and the rejecting paths. A read is either
 * a report that parses as JSON with the fields the CLI renders, or an error
 * with a message; anything else (a crash, a report without its fields) is a
 * failure.
 *
 * The reader's source is compiled into this file so it carries the
 * fuzzer's coverage instrumentation (see fuzz_st_header.c). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../src/inspect/inspect_gguf.c"

#define CHECK(x)               \
    do {                       \
        if (!(x))              \
            __builtin_trap();  \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("fuzz.gguf", 0);
    if (fd < 0)
        return 0;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) {
            close(fd);
            return 0;
        }
        done += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    char *out = NULL;
    mk_status s = mk_inspect_gguf(path, &out);
    close(fd);
    if (s != MK_OK) {
        CHECK(out == NULL);
        CHECK(mk_err_msg()[0] != 0);
        return 0;
    }
    json_error_t e;
    json_t *r = json_loads(out, 0, &e);
    CHECK(r != NULL);
    CHECK(json_is_array(json_object_get(r, "tensors")) && json_is_object(json_object_get(r, "kv")));
    CHECK(json_is_array(json_object_get(r, "problems")) && json_is_object(json_object_get(r, "totals")));
    json_decref(r);
    free(out);
    return 0;
}
