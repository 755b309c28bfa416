/* The web page's files (src/server/web), compiled into the binary: the
 * build writes web_assets.c from them (cmake/embed_web.cmake). webui.c
 * serves them at / and /assets/NAME. */
#ifndef MK_SERVER_WEB_ASSETS_H
#define MK_SERVER_WEB_ASSETS_H

#include <stddef.h>

typedef struct srv_web_file {
    const char *name;          /* the file's name in src/server/web */
    const unsigned char *data; /* its bytes, [len], then a NUL */
    size_t len;
    const char *etag;          /* a quoted strong ETag: its SHA-256's first 16 hex digits */
} srv_web_file;

/* [srv_web_nfiles] in name order, then an entry of NULLs. */
extern const srv_web_file srv_web_files[];
extern const size_t srv_web_nfiles;

#endif
