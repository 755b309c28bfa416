/* The system-call table every moekit file operation goes through.
 *
 * Following SQLite's os_unix.c, the calls are reached through a table of
 * function pointers so tests can inject short reads, EIO and ENOSPC at any
 * point (mk_os_override) and check that each path fails cleanly. The
 * wrappers retry EINTR and loop over short reads/writes, so callers see
 * either the full count or an error. */
#ifndef MK_IO_OS_H
#define MK_IO_OS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "moekit/status.h"

/* The calls, with the system's signatures and errno conventions. A test
 * table may leave a slot NULL: the real call is used for it. */
typedef struct mk_os_vtbl {
    ssize_t (*pread)(int fd, void *buf, size_t n, off_t off);
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
    int (*fsync)(int fd);
    int (*rename)(const char *from, const char *to);
    int (*open)(const char *path, int flags, mode_t mode);
    void *(*mmap)(void *addr, size_t len, int prot, int flags, int fd, off_t off);
    int (*ftruncate)(int fd, off_t len);
    ssize_t (*copy_file_range)(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t len,
                               unsigned flags);
    int (*unlink)(const char *path);
} mk_os_vtbl;

/* Replace the table (NULL restores the real one). Test-only. */
void mk_os_override(const mk_os_vtbl *v);
/* The table in force, every slot filled (the real call where the override
 * left NULL): file code calls mk_os()->open(...), never open() itself. */
const mk_os_vtbl *mk_os(void);

/* Read exactly n bytes at off, or fail with a message naming `what`. */
mk_status mk_os_pread_full(int fd, void *buf, size_t n, uint64_t off, const char *what);
/* Write exactly n bytes at off. ENOSPC/EFBIG map to MK_E_NOSPACE. */
mk_status mk_os_pwrite_full(int fd, const void *buf, size_t n, uint64_t off, const char *what);
mk_status mk_os_fsync(int fd, const char *what);
mk_status mk_os_rename(const char *from, const char *to);
/* fsync a directory so a rename inside it is durable. */
mk_status mk_os_fsync_dir(const char *dir);
/* Read a whole small file (config, index) into a NUL-terminated buffer. */
mk_status mk_os_read_file(const char *path, size_t max, char **out, size_t *n);
/* Write a whole file atomically: a unique tmp name, fsync, rename, fsync dir
 * (defined in outfile.c; replaces an existing path). */
mk_status mk_os_write_file_atomic(const char *path, const void *data, size_t n);
/* mkdir -p */
mk_status mk_os_mkdirs(const char *path);
/* rm -rf of a directory tree we created (refuses "/" and ""). */
mk_status mk_os_rmtree(const char *path);
/* Does a path exist? */
int mk_os_exists(const char *path);
int mk_os_is_dir(const char *path);
/* Whether the directory (open as dfd, or at path) holds no entry but . and
 * ..; false when it cannot be read (or is not a directory). */
bool mk_os_dir_empty_fd(int dfd);
bool mk_os_dir_empty(const char *path);
/* Join two path parts into a malloc'd string. */
char *mk_path_join(const char *a, const char *b);
/* Directory part of a path (malloc'd); "." when none. */
char *mk_path_dirname(const char *p);

#endif
