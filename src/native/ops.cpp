// The ATen half of asl's native layer: operations libtorch has and tch does
// not bind. Multi-tensor (foreach) kernels and the fused Adam step, which
// update every parameter in a few launches instead of several per tensor;
// memory formats; TF32; and the per-device autocast state.
//
// Same conventions as dist.cpp: `extern "C"`, 0 on success and -1 on failure
// with the message in `asl_last_error()`, no exception crosses the boundary,
// tensors arrive as tch's `at::Tensor*`.

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include <string>
#include <vector>

namespace asl_detail {
void set_last_error(const std::string& message);
}

#define ASL_OPS_GUARD(...)                                        \
  try {                                                           \
    __VA_ARGS__                                                   \
  } catch (const c10::Error& e) {                                 \
    asl_detail::set_last_error(e.what_without_backtrace());       \
    return -1;                                                    \
  } catch (const std::exception& e) {                             \
    asl_detail::set_last_error(e.what());                         \
    return -1;                                                    \
  } catch (...) {                                                 \
    asl_detail::set_last_error("unknown C++ exception");          \
    return -1;                                                    \
  }                                                               \
  return 0;

namespace {

std::vector<at::Tensor> list(at::Tensor** tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*tensors[i]);
  return out;
}

std::optional<at::Tensor> optional(at::Tensor* tensor) {
  if (tensor == nullptr) return std::nullopt;
  return *tensor;
}

}  // namespace

extern "C" {

// One Adam (or, with `decoupled`, AdamW) step over `n` parameters, as
// torch.optim.Adam(fused=True) does it: `steps` (one 0-dim float tensor per
// parameter) incremented, then every state tensor updated in place by the
// fused kernel. With `grad_scale` the gradients are unscaled inside the
// kernel; with `found_inf` non-zero the kernel changes nothing and the step
// counts are put back. Both may be null.
int asl_fused_adam(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs, at::Tensor** exp_avg_sqs,
                   at::Tensor** steps, size_t n, double lr, double beta1, double beta2, double weight_decay,
                   double eps, int decoupled, at::Tensor* grad_scale, at::Tensor* found_inf) {
  ASL_OPS_GUARD(
    if (n == 0) return 0;
    auto p = list(params, n);
    auto g = list(grads, n);
    auto m = list(exp_avgs, n);
    auto v = list(exp_avg_sqs, n);
    auto s = list(steps, n);
    std::vector<at::Tensor> no_max;
    at::_foreach_add_(s, at::Scalar(1.0));
    if (decoupled) {
      at::_fused_adamw_(p, g, m, v, no_max, s, lr, beta1, beta2, weight_decay, eps, false, false,
                        optional(grad_scale), optional(found_inf));
    } else {
      at::_fused_adam_(p, g, m, v, no_max, s, lr, beta1, beta2, weight_decay, eps, false, false,
                       optional(grad_scale), optional(found_inf));
    }
    if (found_inf != nullptr) {
      auto skipped = found_inf->reshape({}).to(s[0].scalar_type());
      at::_foreach_sub_(s, std::vector<at::Tensor>(n, skipped));
    }
  )
}

// self[i] += weight · (end[i] − self[i]) for every i.
int asl_foreach_lerp_scalar(at::Tensor** self, at::Tensor** end, size_t n, double weight) {
  ASL_OPS_GUARD(
    if (n == 0) return 0;
    at::_foreach_lerp_(list(self, n), list(end, n), at::Scalar(weight));
  )
}

// self[i] += weight · (end[i] − self[i]), with `weight` a one-element
// tensor on the tensors' device (so no value is read back to the host).
int asl_foreach_lerp_tensor(at::Tensor** self, at::Tensor** end, size_t n, at::Tensor* weight) {
  ASL_OPS_GUARD(
    if (n == 0) return 0;
    auto s = list(self, n);
    auto differences = at::_foreach_sub(list(end, n), s);
    at::_foreach_mul_(differences, weight->reshape({}));
    at::_foreach_add_(s, differences);
  )
}

// self[i] *= factor (a one-element tensor), in place.
int asl_foreach_mul_tensor(at::Tensor** self, size_t n, at::Tensor* factor) {
  ASL_OPS_GUARD(
    if (n == 0) return 0;
    at::_foreach_mul_(list(self, n), factor->reshape({}));
  )
}

// The L2 norm of all `n` tensors together, as a one-element tensor.
int asl_foreach_total_norm(at::Tensor** tensors, size_t n, at::Tensor** out) {
  ASL_OPS_GUARD(
    at::Tensor total;
    if (n == 0) {
      total = at::zeros({}, at::kFloat);
    } else {
      auto norms = at::_foreach_norm(list(tensors, n), 2);
      total = at::stack(norms).to(at::kFloat).norm();
    }
    *out = new at::Tensor(total);
  )
}

// Divides the gradients by the scale (multiplies by `inv_scale`) and sets
// `found_inf` to 1 if any is inf or NaN, in as few kernels as the device allows.
int asl_amp_unscale(at::Tensor** grads, size_t n, at::Tensor* found_inf, at::Tensor* inv_scale) {
  ASL_OPS_GUARD(
    if (n == 0) return 0;
    at::_amp_foreach_non_finite_check_and_unscale_(list(grads, n), *found_inf, *inv_scale);
  )
}

// A copy of `tensor` in channels-last memory format (a 4-D tensor), or a
// shallow copy of anything else.
int asl_channels_last(at::Tensor* tensor, at::Tensor** out) {
  ASL_OPS_GUARD(
    auto result = tensor->dim() == 4 ? tensor->contiguous(at::MemoryFormat::ChannelsLast) : *tensor;
    *out = new at::Tensor(result);
  )
}

int asl_is_channels_last(at::Tensor* tensor) {
  try {
    return tensor->dim() == 4 && tensor->is_contiguous(at::MemoryFormat::ChannelsLast) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// TF32 for cuDNN convolutions and float32 matrix products ("high"
// precision), or full float32 ("highest"). No effect on CPU.
int asl_set_tf32(int enabled) {
  ASL_OPS_GUARD(
    at::globalContext().setAllowTF32CuDNN(enabled != 0);
    at::globalContext().setFloat32MatmulPrecision(enabled != 0 ? "high" : "highest");
  )
}

int asl_tf32_enabled() {
  try {
    return at::globalContext().allowTF32CuDNN() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// CUDA fp16 autocast on this thread: enter returns the previous state.
int asl_autocast_enter(int* previous) {
  ASL_OPS_GUARD(
    *previous = at::autocast::is_autocast_enabled(at::kCUDA) ? 1 : 0;
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::increment_nesting();
  )
}

// Leaves a scope entered with `asl_autocast_enter`; the weight casts cached
// for it are dropped when the outermost scope ends, as torch.autocast does.
int asl_autocast_exit(int previous) {
  ASL_OPS_GUARD(
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, previous != 0);
  )
}

int asl_autocast_enabled() {
  try {
    return at::autocast::is_autocast_enabled(at::kCUDA) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

}  // extern "C"
