/* Printing untrusted strings (tensor names, paths, fields read from files)
 * in the CLI's text output: mk_cli_esc(s) is s with its control characters
 * escaped (include/moekit/escape.h), for use as a printf argument. */
#ifndef MK_TOOLS_CLI_ESC_H
#define MK_TOOLS_CLI_ESC_H

/* s itself when it needs no escaping, else its escape in one of 8 static
 * buffers used in turn (so up to 8 may appear in one printf; not
 * thread-safe: the CLI prints from one thread). An escape longer than 4 KiB
 * is cut and ends in "...". NULL gives "(null)". */
const char *mk_cli_esc(const char *s);

#endif
