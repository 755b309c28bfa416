/* Normalizers: the Unicode normal forms (NFC, NFD, NFKC, NFKD) applied in
 * sequence with utf8proc, as tokenizer.json's "normalizer" lists them.
 *
 * Pure-ASCII text is left alone without calling utf8proc: it is invariant
 * under every normal form, and it is most of what a code or English prompt
 * holds. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tok_impl.h"

static bool is_ascii(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return false;
    return true;
}

static utf8proc_option_t norm_options(tok_norm k) {
    switch (k) {
    case TOK_NORM_NFC: return UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    case TOK_NORM_NFD: return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    case TOK_NORM_NFKC: return UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    case TOK_NORM_NFKD: return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    }
    return UTF8PROC_STABLE;
}

mk_status tok_normalize(const mk_tok *t, const char *s, size_t n, char **out, size_t *out_n) {
    *out = NULL;
    *out_n = n;
    if (t->n_norms == 0 || is_ascii(s, n))
        return MK_OK;
    char *cur = NULL;
    size_t cur_n = n;
    for (size_t i = 0; i < t->n_norms; i++) {
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)(cur ? cur : s),
                                          (utf8proc_ssize_t)cur_n, &dst, norm_options(t->norms[i]));
        free(cur);
        if (r < 0) {
            free(dst);
            return r == UTF8PROC_ERROR_NOMEM
                       ? mk_err(MK_E_NOMEM, "tokenizer: out of memory normalizing %zu bytes", n)
                       : mk_err(MK_E_ARG, "tokenizer: cannot normalize text: %s",
                                utf8proc_errmsg(r));
        }
        cur = (char *)dst;
        cur_n = (size_t)r;
    }
    *out = cur;
    *out_n = cur_n;
    return MK_OK;
}
