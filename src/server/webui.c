/* The built-in web page (issue 17): GET / and GET /assets/NAME answer with
 * the files of src/server/web, compiled into the binary (web_assets.c,
 * written by cmake/embed_web.cmake at build time), so the page needs no
 * file, CDN or network beyond this server.
 *
 * No API key is needed for them: the page holds no secret; it asks for the
 * key when the API answers 401 and sends it on its own API requests. Every
 * answer carries a strict Content-Security-Policy (script, style, image and
 * fetch from this origin only, no inline script or style, no framing, no
 * form posts elsewhere) and an ETag (the file's SHA-256 prefix, fixed at
 * build time) with Cache-Control: no-cache: a browser revalidates each
 * load and gets 304 until the binary changes. --no-webui turns all of it
 * off (mk_server_opts.no_webui: the paths are then unknown, 404). */
#include <microhttpd.h>
#include <string.h>

#include "server/srv_impl.h"
#include "server/web_assets.h"

/* Tests read this header back (tests/cli/serve_webui.sh): keep them equal. */
static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                          "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                          "frame-ancestors 'none'";

static const char *ctype_of(const char *name) {
    static const struct {
        const char *ext, *type;
    } types[] = {{".html", "text/html; charset=utf-8"},
                 {".js", "text/javascript; charset=utf-8"},
                 {".css", "text/css; charset=utf-8"},
                 {".svg", "image/svg+xml"}};
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof *types; i++)
        if (!strcmp(dot, types[i].ext))
            return types[i].type;
    return "application/octet-stream";
}

/* The file a path names: "/" the page, "/assets/NAME" a file by name. */
static const srv_web_file *find(const char *url) {
    const char *name = !strcmp(url, "/") ? "index.html"
                       : !strncmp(url, "/assets/", 8) ? url + 8 : NULL;
    if (!name || !*name)
        return NULL;
    for (size_t i = 0; i < srv_web_nfiles; i++)
        if (!strcmp(srv_web_files[i].name, name))
            return &srv_web_files[i];
    return NULL;
}

bool srv_webui_serve(mk_server *s, struct MHD_Connection *c, const char *url, const char *method,
                     int *ret) {
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return false; /* the API's routing answers (404 JSON) */
    const srv_web_file *f = find(url);
    if (!f)
        return false;
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    bool fresh = inm && (strstr(inm, f->etag) || !strcmp(inm, "*"));
    /* PERSISTENT: the bytes are static; MHD never writes to them */
    struct MHD_Response *resp = MHD_create_response_from_buffer(fresh ? 0 : f->len, (void *)f->data,
                                                                MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        *ret = MHD_NO;
        return true;
    }
    if (!fresh)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype_of(f->name));
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, f->etag);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "Content-Security-Policy", csp);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    int code = fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK;
    srv_metrics_request(&s->metrics, MHD_HTTP_OK); /* a 304 is a success too (2xx) */
    *ret = MHD_queue_response(c, (unsigned)code, resp);
    MHD_destroy_response(resp);
    return true;
}
