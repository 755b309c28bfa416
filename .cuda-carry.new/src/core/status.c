/* Status names, exit-code mapping and the per-thread error message.
 *
 * The message buffer is thread-local so worker threads can fail
 * independently; mk_err_wrap prepends context as an error travels up. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "moekit/status.h"

static _Thread_local char g_msg[2048];

const char *mk_status_name(mk_status s) {
    static const char *const names[] = {
        "ok", "io error", "bad format", "unsupported", "bad argument", "output exists",
        "mismatch", "out of memory", "not found", "internal error", "no space left",
    };
    if ((unsigned)s < sizeof names / sizeof names[0])
        return names[s];
    return "unknown status";
}

const char *mk_err_msg(void) { return g_msg; }

void mk_err_clear(void) { g_msg[0] = 0; }

mk_status mk_err(mk_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return s;
}

mk_status mk_err_wrap(mk_status s, const char *fmt, ...) {
    char prefix[1024], old[sizeof g_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    /* Truncation is acceptable: the head of the message carries the context. */
    size_t pl = strlen(prefix);
    if (pl > sizeof g_msg - 3)
        pl = sizeof g_msg - 3;
    memcpy(g_msg, prefix, pl);
    g_msg[pl] = ':';
    g_msg[pl + 1] = ' ';
    size_t room = sizeof g_msg - pl - 3, ol = strlen(old);
    if (ol > room)
        ol = room;
    memcpy(g_msg + pl + 2, old, ol);
    g_msg[pl + 2 + ol] = 0;
    return s;
}

int mk_status_exit_code(mk_status s) {
    switch (s) {
    case MK_OK: return 0;
    case MK_E_NOMEM:
    case MK_E_INTERNAL: return 1;
    default: return 2; /* everything a user's file, flag or disk can cause */
    }
}

mk_status mk_err_slot_set(mk_err_slot *e, mk_status s) {
    if (s != MK_OK && e->st == MK_OK) {
        e->st = s;
        snprintf(e->msg, sizeof e->msg, "%s", mk_err_msg());
    }
    return s;
}

mk_status mk_err_slot_raise(const mk_err_slot *e) {
    return e->st == MK_OK ? MK_OK : mk_err(e->st, "%s", e->msg);
}
