/* libFuzzer target: tokenizer.json loading (mk_tok_load) and, when a
 * tokenizer loads, encoding, decoding and streaming decode of fuzzed text.
 *
 * Input = tokenizer JSON, then optionally a 0x00 byte and a text to encode.
 * The JSON goes through a memfd so the real file-reading path runs. Any
 * status is acceptable; crashes, leaks and UB are not, nor an encode that
 * changes its answer on a second call or yields an id outside the vocab, nor
 * a load whose result differs from the one through jansson's DOM alone
 * (tok_json_test_dom: model.vocab and model.merges are read from the bytes
 * otherwise). The library is built
 * with -fsanitize=fuzzer-no-link under MK_FUZZ, so coverage reaches it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "moekit/tokenizer.h"
#include "tokenizer/tok_json.h"

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
    mk_status st = mk_tok_load(path, &t);
    /* the vocab and merges read from the bytes (tokenizer/tok_json.c) agree with jansson's
     * DOM of the same file: the same status, the same strings for every id */
    mk_tok *ref = NULL;
    tok_json_test_dom(true);
    mk_status rst = mk_tok_load(path, &ref);
    tok_json_test_dom(false);
    if (rst != st || (st == MK_OK && mk_tok_vocab_size(ref) != mk_tok_vocab_size(t)))
        abort();
    for (int32_t id = 0; st == MK_OK && id < (int32_t)mk_tok_vocab_size(t); id++) {
        size_t la = 0, lb = 0;
        const char *a = mk_tok_token_str(t, id, &la), *b = mk_tok_token_str(ref, id, &lb);
        if (!a != !b || la != lb || (a && memcmp(a, b, la)))
            abort();
    }
    mk_tok_free(ref);
    if (st == MK_OK) {
        /* the model-vocabulary check (run/eval/profile) at a size from the input */
        (void)mk_tok_check_model_vocab(t, (int64_t)(size ? data[size - 1] : 0) * 17);
        int32_t *ids = NULL;
        size_t n = 0;
        mk_status first = mk_tok_encode(t, text, tn, MK_TOK_ADD_SPECIAL, &ids, &n);
        /* text that cannot be encoded is an error, never dropped: the same
         * text must fail (or succeed) again, whatever the word cache holds */
        int32_t *again = NULL;
        size_t n2 = 0;
        if (mk_tok_encode(t, text, tn, MK_TOK_ADD_SPECIAL, &again, &n2) != first ||
            (first == MK_OK && (n2 != n || memcmp(again, ids, n * sizeof *ids) != 0)))
            abort();
        free(again);
        for (size_t i = 0; first == MK_OK && i < n; i++)
            if (ids[i] < 0 || (size_t)ids[i] >= mk_tok_vocab_size(t))
                abort(); /* an id outside the tokenizer's own id space */
        if (first == MK_OK) {
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
