/* libFuzzer target: tokenizer.json loading (mk_tok_load) and, when a
 * tokenizer loads, encoding, decoding and streaming decode of fuzzed text.
 *
 * Input = tokenizer JSON, then optionally a 0x00 byte and a text to encode.
 * The JSON goes through a memfd so the real file-reading path runs. Any
 * status is acceptable; crashes, leaks and UB are not. The library is built
 * with -fsanitize=fuzzer-no-link under MK_FUZZ, so coverage reaches it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "moekit/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *sep = memchr(data, 0, size);
    size_t jn = sep ? (size_t)(sep - data) : size;
    const char *text = sep ? (const char *)sep + 1 : "Hello world 123 \xc3\xa9 <|im_end|>";
    size_t tn = sep ? size - jn - 1 : strlen(text);
    int fd = memfd_create("tokenizer.json", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, jn) != (ssize_t)jn) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    mk_tok *t = NULL;
    if (mk_tok_load(path, &t) == MK_OK) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (mk_tok_encode(t, text, tn, MK_TOK_ADD_SPECIAL, &ids, &n) == MK_OK) {
            char *out = NULL;
            size_t on = 0;
            if (mk_tok_decode(t, ids, n, false, &out, &on) == MK_OK)
                free(out);
            mk_tok_stream *s = NULL;
            if (mk_tok_stream_create(t, false, &s) == MK_OK) {
                const char *p;
                size_t pn;
                for (size_t i = 0; i < n; i++)
                    (void)mk_tok_stream_push(s, ids[i], &p, &pn);
                (void)mk_tok_stream_push(s, (int32_t)mk_tok_vocab_size(t) + 5, &p, &pn); /* out of range */
                (void)mk_tok_stream_flush(s, &p, &pn);
                mk_tok_stream_free(s);
            }
            free(ids);
        }
        mk_tok_free(t);
    }
    close(fd);
    return 0;
}
