/* libFuzzer target: model.safetensors.index.json parsing (mk_st_index_parse).
 *
 * Input = the index JSON. On success every entry must name a plain file
 * (no '/', not "." or "..": an index must not reach outside its directory).
 * The parser source is compiled in for coverage (see fuzz_st_header.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/format/st_index.c"

#define CHECK(x)               \
    do {                       \
        if (!(x))              \
            __builtin_trap();  \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char **names = NULL, **files = NULL;
    size_t count = 0;
    mk_status s = mk_st_index_parse("fuzz", (const char *)data, size, &names, &files, &count);
    if (s != MK_OK) {
        CHECK(names == NULL && files == NULL && count == 0);
        CHECK(mk_err_msg()[0] != 0);
        return 0;
    }
    for (size_t i = 0; i < count; i++) {
        CHECK(names[i] != NULL && files[i] != NULL);
        CHECK(files[i][0] != 0 && strchr(files[i], '/') == NULL);
        CHECK(strcmp(files[i], ".") != 0 && strcmp(files[i], "..") != 0);
    }
    mk_st_index_free(names, files, count);
    return 0;
}
