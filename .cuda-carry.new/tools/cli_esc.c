/* mk_cli_esc: escaped untrusted strings for printf (see cli_esc.h). */
#include <string.h>

#include "cli_esc.h"
#include "moekit/escape.h"

const char *mk_cli_esc(const char *s) {
    static char ring[8][4096];
    static unsigned next;
    if (!s)
        return "(null)";
    if (!mk_escape_needed(s, 0))
        return s;
    char *b = ring[next++ % 8];
    if (mk_escape(b, sizeof ring[0] - 3, s, 0) >= sizeof ring[0] - 3)
        strcat(b, "...");
    return b;
}
