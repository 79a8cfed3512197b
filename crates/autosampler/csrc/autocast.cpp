// libtorch's autocast for one device type, as `torch.autocast(device, dtype=torch.bfloat16)` sets
// it on entry and restores it on exit. tch 0.24 reaches only the CUDA-only `at::autocast::
// set_enabled`; these wrappers reach the per-device state (CPU and CUDA) of the same libtorch.
// No function here throws: the calls below only read and write thread-local flags.
#include <ATen/autocast_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>

namespace {
at::DeviceType device_type(int cuda) { return cuda ? at::kCUDA : at::kCPU; }
}  // namespace

extern "C" {

// Turns bf16 autocast on (or off, `enabled = 0`) for CPU (`cuda = 0`) or CUDA, and returns the
// previous state packed as bits: 1 enabled, 2 cache enabled, and the previous dtype (a
// c10::ScalarType) shifted left by 8. Pass it to `autosampler_autocast_exit` to restore.
long autosampler_autocast_enter(int cuda, int enabled) {
  const auto dt = device_type(cuda);
  long prev = (at::autocast::is_autocast_enabled(dt) ? 1 : 0) |
              (at::autocast::is_autocast_cache_enabled() ? 2 : 0) |
              (static_cast<long>(at::autocast::get_autocast_dtype(dt)) << 8);
  at::autocast::set_autocast_enabled(dt, enabled != 0);
  at::autocast::set_autocast_dtype(dt, at::kBFloat16);
  at::autocast::increment_nesting();
  at::autocast::set_autocast_cache_enabled(true);
  return prev;
}

// Leaves the region `autosampler_autocast_enter` opened: clears the cast-weight cache when the
// outermost region closes, and restores the previous state.
void autosampler_autocast_exit(int cuda, long prev) {
  const auto dt = device_type(cuda);
  if (at::autocast::decrement_nesting() == 0) {
    at::autocast::clear_cache();
  }
  at::autocast::set_autocast_enabled(dt, (prev & 1) != 0);
  at::autocast::set_autocast_dtype(dt, static_cast<at::ScalarType>(prev >> 8));
  at::autocast::set_autocast_cache_enabled((prev & 2) != 0);
}

// Whether this process's CUDA devices run bf16 natively (compute capability 8.0 or newer: cuDNN
// v8's bf16 convolutions need it); 0 without CUDA.
int autosampler_cuda_has_bf16() {
  const auto& hooks = at::detail::getCUDAHooks();
  return hooks.hasCUDA() && hooks.supportsBFloat16ConvolutionWithCuDNNv8() ? 1 : 0;
}

}  // extern "C"
