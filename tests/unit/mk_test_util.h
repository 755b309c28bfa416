/* Shared helpers for the cmocka unit tests: fixture paths, temp dirs. */
#ifndef MK_TEST_UTIL_H
#define MK_TEST_UTIL_H
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* $MK_FIXTURES/<rel> (static buffer per call site is not reentrant: copy it). */
const char *mk_test_fixture(const char *rel);
/* Fresh empty directory under $TMPDIR; caller frees the string. */
char *mk_test_tmpdir(const char *tag);
/* rm -rf */
void mk_test_rmrf(const char *path);
/* Read a whole file; returns malloc'd buffer, *n its size; NULL on error. */
void *mk_test_slurp(const char *path, size_t *n);
/* Write a whole file. Returns 0 on success. */
int mk_test_write(const char *path, const void *data, size_t n);
/* Read faults injected through mk_os_override (src/io/os.h), for the
 * expert-streaming tests: from arming, reads (pread calls and io_uring
 * completions) are numbered from 0, atomically (a pread pool's workers read
 * concurrently); read `at` fails, and with `every` each later one too, as
 * EIO or, with `short_read`, as the end of the file (0 bytes). Arming
 * installs the override; disarming removes it and returns how many reads
 * were numbered. */
void mk_test_fault_arm(int at, bool every, bool short_read);
int mk_test_fault_disarm(void);
#endif
