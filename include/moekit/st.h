/* safetensors checkpoints: strict reading (one file or a sharded set) and
 * streaming writing.
 *
 * Reading: mk_ckpt_open() takes a .safetensors file, a directory with a
 * model.safetensors.index.json, or a directory of *.safetensors files. Every
 * header is validated exactly as FORMATS.md section 1 states (plus duplicate
 * names, element-count overflow and index/shard consistency) before anything
 * is returned. Tensor data is reached through mmap (mk_ckpt_data) or pread
 * (mk_ckpt_read); sizes and offsets are 64-bit throughout.
 *
 * Writing: mk_stw_* plans the header from names/dtypes/shapes first, then
 * takes data tensor by tensor (or chunk by chunk) in plan order, and commits
 * by fsync + rename. See the contracts below. */
#ifndef MOEKIT_ST_H
#define MOEKIT_ST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/dtype.h"
#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MK_MAX_DIMS 8
#define MK_ST_MAX_HEADER 100000000ull

typedef struct mk_tensor_info {
    const char *name;
    mk_dtype dtype;
    int ndim;
    int64_t shape[MK_MAX_DIMS];
    uint64_t numel;
    uint64_t nbytes;
    uint64_t file_offset; /* absolute offset of the first byte in its shard */
    int shard;            /* index into the checkpoint's shard list */
} mk_tensor_info;

typedef struct mk_ckpt mk_ckpt;

/* Open flags. */
enum {
    MK_CKPT_NO_MMAP = 1u << 0, /* use pread only (mk_ckpt_data returns NULL) */
    MK_CKPT_COPY = 1u << 1,    /* read each shard once into anonymous memory (transparent huge pages
                                  asked for, then read-only) instead of mapping it: the engine's
                                  streaming of GBs of weights misses the TLB on every 4 KiB page of a
                                  file mapping (bench/RESULTS.md, session 10) */
};

/* Open a checkpoint. `path` is a file or directory. On failure *out is NULL
 * and mk_err_msg() names the file and tensor at fault. */
mk_status mk_ckpt_open(const char *path, unsigned flags, mk_ckpt **out);
void mk_ckpt_close(mk_ckpt *c); /* NULL ok */

/* The directory holding the checkpoint (for config.json etc.), and shards. */
const char *mk_ckpt_dir(const mk_ckpt *c);
size_t mk_ckpt_nshards(const mk_ckpt *c);
const char *mk_ckpt_shard_path(const mk_ckpt *c, size_t i);
uint64_t mk_ckpt_shard_size(const mk_ckpt *c, size_t i);
/* Lock every shard's mapping in memory (mlock: the kernel faults it all in
 * now and never reclaims it), so that reading weights never waits for the
 * disk. MK_E_UNSUPPORTED for a checkpoint opened without mappings; when the
 * kernel refuses (RLIMIT_MEMLOCK), MK_E_NOMEM naming the shard, its size and
 * the limit, with what was locked released again. */
mk_status mk_ckpt_mlock(const mk_ckpt *c);
/* __metadata__ of shard 0 as a JSON text owned by the checkpoint, or NULL. */
const char *mk_ckpt_metadata_json(const mk_ckpt *c, size_t shard);

/* Tensors in a stable order: by shard, then by data offset. */
size_t mk_ckpt_count(const mk_ckpt *c);
const mk_tensor_info *mk_ckpt_tensor(const mk_ckpt *c, size_t i);
/* Lookup by exact name; NULL when absent. O(1). */
const mk_tensor_info *mk_ckpt_find(const mk_ckpt *c, const char *name);

/* Pointer to the tensor's bytes in the mmapped shard (NULL with NO_MMAP).
 * Valid until mk_ckpt_close. Data may be unaligned (MLX files do not pad). */
const void *mk_ckpt_data(const mk_ckpt *c, const mk_tensor_info *t);
/* Copy n bytes at byte offset `off` within the tensor into buf (pread). */
mk_status mk_ckpt_read(const mk_ckpt *c, const mk_tensor_info *t, uint64_t off, void *buf, size_t n);
/* Read the tensor (or `n` elements from element `first`) as float32. */
mk_status mk_ckpt_read_f32(const mk_ckpt *c, const mk_tensor_info *t, uint64_t first, uint64_t n,
                           float *dst);
/* File descriptor of a shard (for copy_file_range / io_uring). */
int mk_ckpt_shard_fd(const mk_ckpt *c, size_t shard);

/* Validate one safetensors header in memory (used by the reader and the
 * fuzzer). `hdr` is the JSON text of length n, `data_len` the length of the
 * data buffer that follows it. On success, *out_tensors / *out_count hold
 * the parsed entries (names owned by the returned array; free with
 * mk_st_header_free). `what` names the file in messages. */
mk_status mk_st_header_parse(const char *what, const char *hdr, size_t n, uint64_t data_len,
                             mk_tensor_info **out_tensors, size_t *out_count,
                             char **out_metadata_json);
void mk_st_header_free(mk_tensor_info *t, size_t count);

/* Parse a model.safetensors.index.json text: weight_map entries, returned as
 * parallel arrays of tensor names and shard file names (owned by the caller,
 * free with mk_st_index_free). */
mk_status mk_st_index_parse(const char *what, const char *json, size_t n, char ***names,
                            char ***files, size_t *count);
void mk_st_index_free(char **names, char **files, size_t count);

/* ---------------------------------------------------------------- writer */

typedef struct mk_stw mk_stw;

typedef struct mk_stw_opts {
    uint64_t shard_size;  /* 0: one file. Otherwise cut shards at this many bytes */
    bool force;           /* overwrite existing outputs */
    const char *basename; /* "model" -> model.safetensors / model-00001-of-0000N... */
    const char *metadata_json; /* JSON object of string->string, or NULL ({"format":"pt"}) */
    /* Packed expert layouts (convert --pack-experts): keep_order lays
     * tensors out in the order they were added instead of the HF order;
     * data_align (0: 8) pads each header with spaces so the data buffer
     * starts at a multiple of it in the file (a power of two, at most 1 MiB):
     * the only padding a valid safetensors file may hold, since the data
     * buffer must be covered by tensors without holes. */
    bool keep_order;
    uint32_t data_align;
} mk_stw_opts;

/* Begin a checkpoint in directory `dir` (created if absent). */
mk_status mk_stw_create(const char *dir, const mk_stw_opts *opts, mk_stw **out);
/* Plan a tensor (before mk_stw_begin_data). Shape of ndim dims. */
mk_status mk_stw_add(mk_stw *w, const char *name, mk_dtype dt, int ndim, const int64_t *shape);
/* Freeze the plan: order tensors the HF way (alignment desc, then name;
 * keep_order: as added), assign shards and offsets, write headers to the
 * temporary files. */
mk_status mk_stw_begin_data(mk_stw *w);
/* The order in which data must be supplied, after begin_data. */
size_t mk_stw_count(const mk_stw *w);
const char *mk_stw_name(const mk_stw *w, size_t i);
const mk_tensor_info *mk_stw_info(const mk_stw *w, size_t i);
/* Descriptor of shard i's temporary file once data has begun (-1 otherwise),
 * for I/O hints such as early writeback. Owned by the writer: do not close
 * it or write through it; it is invalid after mk_stw_finish / mk_stw_free. */
int mk_stw_shard_fd(const mk_stw *w, size_t shard);
/* Append bytes of the current tensor (may be called repeatedly: chunks).
 * A tensor is complete when all of its nbytes have been written; the next
 * write then belongs to the next tensor in plan order. */
mk_status mk_stw_write(mk_stw *w, const void *data, size_t n);
/* Copy n bytes from an fd at offset (copy_file_range when possible). */
mk_status mk_stw_copy_from_fd(mk_stw *w, int fd, uint64_t off, uint64_t n);
/* Check every byte was supplied, fsync, rename temporaries into place,
 * write the index (when sharded), fsync the directory. */
mk_status mk_stw_finish(mk_stw *w);
/* Discard: remove temporaries, and outputs already renamed into place by a
 * finish that then failed. NULL ok. Safe after a successful finish (frees only). */
void mk_stw_free(mk_stw *w);

#ifdef __cplusplus
}
#endif
#endif
