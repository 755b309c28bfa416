/* Hand-built safetensors files for the I/O tests (header-only: each
 * tests/unit/test_*.c is compiled alone with mk_test_util.c).
 *
 * The bytes are written exactly as the format states (u64 LE header length,
 * JSON text, data buffer) without going through moekit's writer, so the
 * reader is tested against an independent producer. Also: a seeded PRNG
 * and a directory lister shared by the read and write tests. */
#ifndef MK_TEST_ST_BUILD_H
#define MK_TEST_ST_BUILD_H

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Write `hdr_len_field` as the u64 LE length, then `hdr` (hl bytes), then
 * `data` (dl bytes; zeros when data is NULL). Returns 0 on success. */
static inline int stb_write_raw(const char *path, uint64_t hdr_len_field, const char *hdr, size_t hl,
                                const void *data, size_t dl) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    unsigned char lb[8];
    for (int i = 0; i < 8; i++)
        lb[i] = (unsigned char)(hdr_len_field >> (8 * i));
    int ok = fwrite(lb, 1, 8, f) == 8 && (hl == 0 || fwrite(hdr, 1, hl, f) == hl);
    if (ok && dl) {
        if (data)
            ok = fwrite(data, 1, dl, f) == dl;
        else {
            unsigned char z[4096] = {0};
            for (size_t left = dl; ok && left;) {
                size_t k = left < sizeof z ? left : sizeof z;
                ok = fwrite(z, 1, k, f) == k;
                left -= k;
            }
        }
    }
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* A well-formed file: correct length field, `dl` data bytes. */
static inline int stb_write(const char *path, const char *hdr, const void *data, size_t dl) {
    return stb_write_raw(path, strlen(hdr), hdr, strlen(hdr), data, dl);
}

/* dir/name into a caller buffer. */
static inline const char *stb_path(char *buf, size_t n, const char *dir, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

/* xorshift64*: deterministic test data. */
static inline uint64_t stb_rand(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

static inline void stb_fill(uint64_t *s, void *p, size_t n) {
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(stb_rand(s) >> 32);
}

/* Number of entries of `dir` (excluding . and ..) whose name contains
 * `needle` (NULL: all). */
static inline int stb_count_entries(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (!needle || strstr(e->d_name, needle))
            n++;
    }
    closedir(d);
    return n;
}

#endif
