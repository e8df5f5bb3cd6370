// The ATen half of asl's native layer: operations libtorch has and tch does
// not bind. Multi-tensor (foreach) kernels and the fused Adam step, which
// update every parameter in a few launches instead of several per tensor;
// memory formats; TF32; the per-device autocast state; and scoped seeding of
// the default random generators.
//
// Same conventions as dist.cpp: `extern "C"`, 0 on success and -1 on failure
// with the message in `asl_last_error()`, no exception crosses the boundary,
// tensors arrive as tch's `at::Tensor*`.

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Generator.h>
#include <mutex>

#include <string>
#include <vector>

#include "guard.hpp"

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
  ASL_GUARD(
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
  ASL_GUARD(
    if (n == 0) return 0;
    at::_foreach_lerp_(list(self, n), list(end, n), at::Scalar(weight));
  )
}

// self[i] += weight · (end[i] − self[i]), with `weight` a one-element
// tensor on the tensors' device (so no value is read back to the host).
int asl_foreach_lerp_tensor(at::Tensor** self, at::Tensor** end, size_t n, at::Tensor* weight) {
  ASL_GUARD(
    if (n == 0) return 0;
    auto s = list(self, n);
    auto differences = at::_foreach_sub(list(end, n), s);
    at::_foreach_mul_(differences, weight->reshape({}));
    at::_foreach_add_(s, differences);
  )
}

// self[i] *= factor (a one-element tensor), in place.
int asl_foreach_mul_tensor(at::Tensor** self, size_t n, at::Tensor* factor) {
  ASL_GUARD(
    if (n == 0) return 0;
    at::_foreach_mul_(list(self, n), factor->reshape({}));
  )
}

// The L2 norm of all `n` tensors together, as a one-element tensor.
int asl_foreach_total_norm(at::Tensor** tensors, size_t n, at::Tensor** out) {
  ASL_GUARD(
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
  ASL_GUARD(
    if (n == 0) return 0;
    at::_amp_foreach_non_finite_check_and_unscale_(list(grads, n), *found_inf, *inv_scale);
  )
}

// Whether a 4-D tensor has exactly the strides `empty(..., ChannelsLast)`
// gives. `is_contiguous(ChannelsLast)` also accepts other strides where a
// dimension has size 1 (a 1x1 kernel [O, I, 1, 1] with strides [I, 1, 1, 1]),
// but a convolution's gradient comes back with the canonical ones, and
// DDP's Reducer copies a gradient whose strides differ from its parameter's
// (warning "grad strides do not match bucket view strides").
bool canonical_channels_last(const at::Tensor& tensor) {
  if (tensor.dim() != 4) return false;
  auto canonical = c10::get_channels_last_strides_2d(tensor.sizes());
  return tensor.strides().vec() == canonical;
}

// A copy of a 4-D `tensor` with canonical channels-last strides (unless it
// has them), or a shallow copy of anything else.
int asl_channels_last(at::Tensor* tensor, at::Tensor** out) {
  ASL_GUARD(
    at::Tensor result = *tensor;
    if (tensor->dim() == 4 && !canonical_channels_last(*tensor)) {
      result = at::empty(tensor->sizes(), tensor->options().memory_format(at::MemoryFormat::ChannelsLast));
      result.copy_(*tensor);
    }
    *out = new at::Tensor(result);
  )
}

int asl_is_channels_last(at::Tensor* tensor) {
  try {
    return canonical_channels_last(*tensor) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

namespace {

at::Generator default_generator(int cuda_device) {
  if (cuda_device < 0) return at::detail::getDefaultCPUGenerator();
  return at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(cuda_device)));
}

}  // namespace

// The state of the default generator of the CPU (`cuda_device` < 0) or of a
// CUDA device, as a byte tensor.
int asl_rng_state(int cuda_device, at::Tensor** out) {
  ASL_GUARD(
    auto generator = default_generator(cuda_device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    *out = new at::Tensor(generator.get_state());
  )
}

// Puts a state read by `asl_rng_state` back.
int asl_rng_set_state(int cuda_device, at::Tensor* state) {
  ASL_GUARD(
    auto generator = default_generator(cuda_device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(*state);
  )
}

// Seeds the default generator of the CPU or of a CUDA device.
int asl_rng_seed(int cuda_device, uint64_t seed) {
  ASL_GUARD(
    auto generator = default_generator(cuda_device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_current_seed(seed);
  )
}

// TF32 for cuDNN convolutions and float32 matrix products ("high"
// precision), or full float32 ("highest"). No effect on CPU.
int asl_set_tf32(int enabled) {
  ASL_GUARD(
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
  ASL_GUARD(
    *previous = at::autocast::is_autocast_enabled(at::kCUDA) ? 1 : 0;
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::increment_nesting();
  )
}

// Leaves a scope entered with `asl_autocast_enter`; the weight casts cached
// for it are dropped when the outermost scope ends, as torch.autocast does.
int asl_autocast_exit(int previous) {
  ASL_GUARD(
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
