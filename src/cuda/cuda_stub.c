/* mk_cuda_* when moekit is built without CUDA (MK_CUDA=OFF): every call
 * fails with MK_E_UNSUPPORTED "built without CUDA", so callers (the GPU
 * tests, a backend choice) skip or fall back with a visible reason instead
 * of failing to link. CMake compiles this file only when MK_CUDA is off. */
#include "cuda/mk_cuda.h"
#include "moekit/backend_cuda.h"

static mk_status no_cuda(void) {
    return mk_err(MK_E_UNSUPPORTED,
                  "moekit was built without CUDA (MK_CUDA=OFF or no CUDA compiler at configure time)");
}

mk_status mk_cuda_probe(int *ndev) {
    if (ndev)
        *ndev = 0;
    return no_cuda();
}
mk_status mk_cuda_describe(char *buf, size_t n) {
    if (buf && n)
        buf[0] = '\0';
    return no_cuda();
}
mk_status mk_cuda_malloc(void **dptr, size_t bytes, const char *what) {
    if (dptr)
        *dptr = NULL;
    return no_cuda();
}
void mk_cuda_free(void *dptr) {
}
mk_status mk_cuda_upload(void *dst, const void *src, size_t bytes) {
    return no_cuda();
}
mk_status mk_cuda_download(void *dst, const void *src, size_t bytes) {
    return no_cuda();
}
mk_status mk_cuda_memset(void *dst, int v, size_t bytes) {
    return no_cuda();
}
mk_status mk_cuda_copy_bandwidth(size_t bytes, double *gbs) {
    (void)bytes;
    if (gbs)
        *gbs = 0;
    return no_cuda();
}
mk_status mk_cuda_host_read_bandwidth(size_t bytes, double *gbs) {
    (void)bytes;
    if (gbs)
        *gbs = 0;
    return no_cuda();
}
mk_status mk_cuda_bf16_gemm_rate(int m, int n, int k, double *tflops) {
    (void)m;
    (void)n;
    (void)k;
    if (tflops)
        *tflops = 0;
    return no_cuda();
}
mk_status mk_cuda_sync(void) {
    return no_cuda();
}
bool mk_cuda_wt_supported(const mk_wt *w) {
    return false;
}
mk_status mk_cuda_wt_upload(const mk_wt *host, mk_wt *dev, const char *what) {
    return no_cuda();
}
void mk_cuda_wt_free(mk_wt *dev) {
}
size_t mk_cuda_wt_row_bytes_all(const mk_wt *w) {
    return 0;
}
mk_status mk_cuda_gemv(const mk_wt *w, const float *x, float *y, bool accumulate, void *stream) {
    return no_cuda();
}
mk_status mk_cuda_gemv_each(const mk_wt *w, const float *x, int64_t n, float *y, bool accumulate, void *stream) {
    return no_cuda();
}
mk_status mk_cuda_gemv_n_fold(const mk_wt *const *w, int count, const mk_cuda_fold *f, float *const *y,
                              void *stream, bool *taken) {
    (void)w;
    (void)count;
    (void)f;
    (void)y;
    (void)stream;
    *taken = false;
    return no_cuda();
}
mk_status mk_cuda_gemv_n(const mk_wt *const *w, int count, const float *x, float *const *y, void *stream) {
    return no_cuda();
}
mk_status mk_cuda_set_kernels(int gen) {
    return no_cuda();
}
int mk_cuda_kernels(void) {
    return 0;
}
void mk_cuda_set_moe_pdl(bool on) {
    (void)on;
}
bool mk_cuda_moe_pdl(void) {
    return false;
}
void mk_cuda_set_step_pdl(bool on) {
    (void)on;
}
bool mk_cuda_step_pdl(void) {
    return false;
}
void mk_cuda_set_step_prefetch(unsigned what) {
    (void)what;
}
unsigned mk_cuda_step_prefetch(void) {
    return 0;
}
void mk_cuda_set_q8p_stages(int stages) {
    (void)stages;
}
int mk_cuda_q8p_stages(void) {
    return 0;
}
void mk_cuda_set_q8_pipelined(bool on) {
    (void)on;
}
bool mk_cuda_q8_pipelined(void) {
    return false;
}
void mk_cuda_set_gemv_staged(bool on) {
    (void)on;
}
bool mk_cuda_gemv_staged(void) {
    return false;
}
void mk_cuda_set_moe_staged(bool on) {
    (void)on;
}
bool mk_cuda_moe_staged(void) {
    return false;
}
void mk_cuda_set_gateup_staged(bool on) {
    (void)on;
}
bool mk_cuda_gateup_staged(void) {
    return false;
}
unsigned long long mk_cuda_gateup_staged_launches(void) {
    return 0;
}
void mk_cuda_set_route_late(bool on) {
    (void)on;
}
void mk_cuda_set_qk_rows_warp(bool on) {
    (void)on;
}
void mk_cuda_set_q8_wgmma(bool on) {
    (void)on;
}
bool mk_cuda_q8_wgmma(void) {
    return false;
}
bool mk_cuda_wgmma_available(void) {
    return false;
}
mk_status mk_cuda_wgmma_probe(const int8_t *A, const uint8_t *B, int32_t *frag) {
    (void)A;
    (void)B;
    (void)frag;
    return mk_err(MK_E_UNSUPPORTED, "cuda: moekit was built without CUDA");
}
bool mk_cuda_qk_rows_warp(void) {
    return false;
}
bool mk_cuda_route_late(void) {
    return false;
}
unsigned long long mk_cuda_route_late_launches(void) {
    return 0;
}
unsigned long long mk_cuda_gemv_staged_launches(void) {
    return 0;
}
void mk_cuda_set_norm_fold(bool on) {
    (void)on;
}
bool mk_cuda_norm_fold(void) {
    return false;
}
void mk_cuda_set_norm_fold_mode(int mode) {
    (void)mode;
}
int mk_cuda_norm_fold_mode(void) {
    return 0;
}
void mk_cuda_set_qk_fold(bool on) {
    (void)on;
}
bool mk_cuda_qk_fold(void) {
    return false;
}
void mk_cuda_set_act_int8(bool on) {
    (void)on;
}
void mk_cuda_reset_act_int8(void) {
}
int mk_cuda_act_int8_setting(void) {
    return -1;
}
void mk_cuda_restore_act_int8(int setting) {
    (void)setting;
}
bool mk_cuda_act_int8(void) {
    return false;
}
bool mk_cuda_prefill_int8(void) {
    return false;
}
void mk_cuda_set_attn_merge_fused(bool on) {
    (void)on;
}
bool mk_cuda_attn_merge_fused(void) {
    return false;
}
mk_status mk_cuda_set_attn_tile_gen(int gen) {
    (void)gen;
    return mk_err(MK_E_UNSUPPORTED, "cuda: moekit was built without CUDA");
}
int mk_cuda_attn_tile_gen(void) {
    return 0;
}
void mk_cuda_set_q8_early(bool on) {
    (void)on;
}
bool mk_cuda_q8_early(void) {
    return false;
}
void mk_cuda_set_lookahead(bool on) {
    (void)on;
}
bool mk_cuda_lookahead(void) {
    return false;
}
void mk_cuda_test_stale(int n) {
    (void)n;
}
void mk_cuda_set_attn_gqa(bool on) {
    (void)on;
}
bool mk_cuda_attn_gqa(void) {
    return false;
}
unsigned long long mk_cuda_attn_gqa_launches(void) {
    return 0;
}
mk_status mk_cuda_set_attn_shares(int n) {
    (void)n;
    return mk_err(MK_E_UNSUPPORTED, "cuda: moekit was built without CUDA");
}
int mk_cuda_attn_shares(void) {
    return 0;
}
void mk_cuda_set_gdn_chunked(bool on) {
    (void)on;
}
bool mk_cuda_gdn_chunked(void) {
    return false;
}
mk_status mk_cuda_moe_check(const mk_cuda_moe *m) {
    return no_cuda();
}
mk_status mk_cuda_moe_ws_new(const mk_cuda_moe *m, mk_cuda_moe_ws **ws) {
    if (ws)
        *ws = NULL;
    return no_cuda();
}
mk_status mk_cuda_moe_ws_new_n(const mk_cuda_moe *m, int64_t nmax, mk_cuda_moe_ws **ws) {
    if (ws)
        *ws = NULL;
    return no_cuda();
}
mk_status mk_cuda_moe_ws_zero(mk_cuda_moe_ws *ws, void *stream) {
    return no_cuda();
}
void mk_cuda_moe_ws_free(mk_cuda_moe_ws *ws) {
}
mk_status mk_cuda_moe_step_fold(const mk_cuda_moe *m, mk_cuda_moe_ws *ws, const mk_cuda_fold *f, float *y,
                                bool accumulate, void *stream, bool *taken) {
    (void)m;
    (void)ws;
    (void)f;
    (void)y;
    (void)accumulate;
    (void)stream;
    *taken = false;
    return no_cuda();
}
mk_status mk_cuda_moe_step(const mk_cuda_moe *m, mk_cuda_moe_ws *ws, const float *x, float *y,
                           bool accumulate, void *stream) {
    return no_cuda();
}
mk_status mk_cuda_moe_step_n(const mk_cuda_moe *m, mk_cuda_moe_ws *ws, const float *x, float *y, int64_t n,
                             bool accumulate, void *stream) {
    return no_cuda();
}
mk_status mk_cuda_moe_routing(const mk_cuda_moe_ws *ws, int32_t *idx, float *w) {
    return no_cuda();
}
mk_status mk_cuda_moe_activations(const mk_cuda_moe_ws *ws, float *h, float *hs) {
    return no_cuda();
}
mk_status mk_cuda_moe_cache_slots(const mk_cuda_moe_ws *ws, int32_t *loc) {
    return no_cuda();
}
size_t mk_cuda_moe_bytes(const mk_cuda_moe *m) {
    return 0;
}
mk_status mk_cuda_stack_new(const mk_cuda_moe *layers, int L, mk_cuda_stack **out) {
    if (out)
        *out = NULL;
    return no_cuda();
}
void mk_cuda_stack_free(mk_cuda_stack *s) {
}
mk_cuda_moe_ws *mk_cuda_stack_ws(mk_cuda_stack *s) {
    return NULL;
}
mk_status mk_cuda_stack_run(mk_cuda_stack *s, float *x, void *stream) {
    return no_cuda();
}

/* the CUDA backend (include/moekit/backend_cuda.h) */
mk_status mk_backend_cuda_create(int device, mk_backend **out) {
    (void)device;
    if (out)
        *out = NULL;
    return no_cuda();
}
void mk_backend_cuda_forget(mk_backend *b, const void *host_data) {
    (void)b;
    (void)host_data;
}
size_t mk_backend_cuda_weight_bytes(const mk_backend *b) {
    (void)b;
    return 0;
}
int64_t mk_backend_cuda_folds(const mk_backend *b) {
    (void)b;
    return 0;
}
void mk_backend_cuda_set_expert_cache(mk_backend *b, size_t bytes) {
    (void)b;
    (void)bytes;
}
void mk_backend_cuda_expert_cache_stats(const mk_backend *b, int *slots, uint64_t *copies, double *hit_share) {
    (void)b;
    *slots = 0;
    *copies = 0;
    *hit_share = 0.0;
}
void mk_backend_cuda_cache_stats(const mk_backend *b, size_t *live, size_t *spare) {
    (void)b;
    *live = *spare = 0;
}
void mk_backend_cuda_graph_stats(const mk_backend *b, int *built, int *updated, int *replayed) {
    (void)b;
    *built = *updated = *replayed = 0;
}
int mk_backend_cuda_chained(const mk_backend *b) {
    (void)b;
    return 0;
}
void mk_backend_cuda_time_steps(mk_backend *b, bool on) {
    (void)b;
    (void)on;
}
void mk_backend_cuda_step_time(mk_backend *b, double *ms, int *n) {
    (void)b;
    *ms = 0.0;
    *n = 0;
}
void mk_backend_cuda_set_graphs(mk_backend *b, bool on) {
    (void)b;
    (void)on;
}
void mk_backend_cuda_set_expert_vram(mk_backend *b, size_t bytes) {
    (void)b;
    (void)bytes;
}
void mk_backend_cuda_expert_stats(const mk_backend *b, size_t *vram, size_t *host, int *host_layers) {
    (void)b;
    *vram = *host = 0;
    *host_layers = 0;
}
const char *mk_backend_cuda_gemm_status(void) {
    return "moekit was built without CUDA";
}
void mk_backend_cuda_set_gemm(mk_backend *b, mk_cuda_gemm mode, size_t scratch_bytes) {
    (void)b;
    (void)mode;
    (void)scratch_bytes;
}
