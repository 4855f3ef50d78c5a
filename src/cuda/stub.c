/* stub.c: the device entry points in a build without CUDA (ROTARY_CUDA off). */
#include "internal.h"
#include "cuda/cuda_model.h"

#define NO_CUDA rotary_fail(ROTARY_EINVAL, "--device cuda: built without CUDA (rebuild with " \
                            "cmake -DROTARY_CUDA=ON, docs/performance.md)")

int cuda_device_check(void) { return NO_CUDA; }
int cuda_config_check(const rotary_config *c) { (void)c; return NO_CUDA; }
int cuda_model_new(cuda_model **g, const rotary_model *m) { (void)m; *g = NULL; return NO_CUDA; }
void cuda_model_free(cuda_model *g) { (void)g; }
int cuda_model_reserve(cuda_model *g, int B, int T) { (void)g, (void)B, (void)T; return NO_CUDA; }
int cuda_model_forward(cuda_model *g, const int *tokens, const int *targets, int B, int T,
                       int train, float *loss) {
    (void)g, (void)tokens, (void)targets, (void)B, (void)T, (void)train, (void)loss;
    return NO_CUDA;
}
int cuda_model_logits(const cuda_model *g, float *out) { (void)g, (void)out; return NO_CUDA; }
int cuda_model_logits_row(const cuda_model *g, size_t row, float *out) {
    (void)g, (void)row, (void)out;
    return NO_CUDA;
}
int cuda_model_backward(cuda_model *g) { (void)g; return NO_CUDA; }
int cuda_model_zero_grad(cuda_model *g) { (void)g; return NO_CUDA; }
int cuda_model_grad_norm(cuda_model *g, float *norm) { (void)g, (void)norm; return NO_CUDA; }
int cuda_model_adamw_step(cuda_model *g, const rotary_adamw_config *c, float grad_scale) {
    (void)g, (void)c, (void)grad_scale;
    return NO_CUDA;
}
int cuda_model_download(const cuda_model *g, float *params, float *grads, rotary_adamw *opt) {
    (void)g, (void)params, (void)grads, (void)opt;
    return NO_CUDA;
}
int cuda_model_upload(cuda_model *g, const float *params, const rotary_adamw *opt) {
    (void)g, (void)params, (void)opt;
    return NO_CUDA;
}
float *cuda_model_grads(cuda_model *g) { (void)g; return NULL; }
void cuda_model_on_grads(cuda_model *g, void (*fn)(void *ctx, size_t from), void *ctx) {
    (void)g, (void)fn, (void)ctx;
}
int cuda_comm_new(cuda_comm **c, const rotary_dist *d, size_t n, int zero) {
    (void)d, (void)n, (void)zero;
    *c = NULL;
    return NO_CUDA;
}
void cuda_comm_ready(cuda_comm *c, float *dev, size_t from) { (void)c, (void)dev, (void)from; }
int cuda_comm_mean(cuda_comm *c, float *dev) { (void)c, (void)dev; return NO_CUDA; }
const char *cuda_comm_how(const cuda_comm *c) { (void)c; return "built without CUDA"; }
void cuda_comm_free(cuda_comm *c) { (void)c; }
int cuda_device_use(int local_rank) { (void)local_rank; return NO_CUDA; }
int cuda_decoder_new(cuda_decoder **d, cuda_model *g, int max_T) {
    (void)g, (void)max_T;
    *d = NULL;
    return NO_CUDA;
}
void cuda_decoder_free(cuda_decoder *d) { (void)d; }
void cuda_decoder_reset(cuda_decoder *d) { (void)d; }
int cuda_decoder_full(const cuda_decoder *d) { (void)d; return 1; }
int cuda_decoder_step(cuda_decoder *d, int token, float *logits) {
    (void)d, (void)token, (void)logits;
    return NO_CUDA;
}
void cuda_decoder_set_graph(cuda_decoder *d, int on) { (void)d, (void)on; }
void cuda_decoder_set_fused(cuda_decoder *d, int on) { (void)d, (void)on; }
int cuda_decoder_quantize(cuda_decoder *d) { (void)d; return NO_CUDA; }
int cuda_decoder_bf16(cuda_decoder *d) { (void)d; return NO_CUDA; }
int cuda_decoder_graphed(const cuda_decoder *d, const char **why) {
    (void)d;
    if (why) *why = "built without CUDA";
    return 0;
}
int cuda_train(rotary_model *m, const rotary_train_opts *o) { (void)m, (void)o; return NO_CUDA; }
