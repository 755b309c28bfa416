/* moekit status codes and the per-thread error message.
 *
 * Every public call that can fail returns an mk_status. The value is stable
 * (it is part of the ABI and of the CLI's exit-code mapping); the human
 * message with its context (file, tensor, field, expected vs found) is kept
 * per thread and read with mk_err_msg() right after the failing call. */
#ifndef MOEKIT_STATUS_H
#define MOEKIT_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mk_status {
    MK_OK = 0,
    MK_E_IO = 1,          /* a system call failed (open, read, write, fsync, rename, ...) */
    MK_E_FORMAT = 2,      /* input file is malformed (header, JSON, offsets, shapes) */
    MK_E_UNSUPPORTED = 3, /* well-formed but not something moekit handles (arch, dtype, mode) */
    MK_E_ARG = 4,         /* bad argument or flag value */
    MK_E_EXISTS = 5,      /* output exists and --force was not given */
    MK_E_MISMATCH = 6,    /* two things that must agree do not (config bits vs packed shape) */
    MK_E_NOMEM = 7,       /* allocation failed or a memory bound would be exceeded */
    MK_E_NOTFOUND = 8,    /* a named tensor, file or field is absent */
    MK_E_INTERNAL = 9,    /* a moekit bug: an invariant did not hold */
    MK_E_NOSPACE = 10     /* disk full or file-size limit reached while writing */
} mk_status;

/* Stable short name of a status ("ok", "io", "format", ...). */
const char *mk_status_name(mk_status s);

/* Message of the last error set on this thread ("" when none). */
const char *mk_err_msg(void);

/* Record an error for this thread and return `s` (so callers can
 * `return mk_err(MK_E_FORMAT, "%s: ...", path);`). */
mk_status mk_err(mk_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prefix the current message with more context ("while reading X: " + old). */
mk_status mk_err_wrap(mk_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Clear this thread's message. */
void mk_err_clear(void);

/* CLI exit code for a status: 0 ok, 2 for bad input / user errors, 1 internal. */
int mk_status_exit_code(mk_status s);

#define MK_TRY(expr)                  \
    do {                              \
        mk_status mk_try_s_ = (expr); \
        if (mk_try_s_ != MK_OK)       \
            return mk_try_s_;         \
    } while (0)

/* Carrying an error across threads: a worker records the first failure
 * (its status and this thread's message) in a slot the threads share, and
 * the thread that reports it re-raises it on its own thread. The caller
 * serializes access to the slot (a mutex, or one writer then a join). */
typedef struct mk_err_slot {
    mk_status st; /* MK_OK while empty */
    char msg[2048];
} mk_err_slot;

/* Record s with the calling thread's message, unless the slot already
 * holds a failure (the first one wins). Returns s. */
mk_status mk_err_slot_set(mk_err_slot *e, mk_status s);
/* The recorded failure as this thread's error (mk_err_msg), or MK_OK. */
mk_status mk_err_slot_raise(const mk_err_slot *e);

#ifdef __cplusplus
}
#endif
#endif
