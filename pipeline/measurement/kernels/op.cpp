// The torch operators cnp::measure around the fused counting kernel (measure.c) and cnp::random_tiles around
// the random control's fused draws (random_tiles.c), both compiled here as C++:
// built by torch.utils.cpp_extension on first use; its fake kernel is registered in Python
// (pipeline/measurement/kernels/__init__.py), so it traces and runs under fake tensors like any torch op.
#include <torch/extension.h>
#include <torch/library.h>

#define restrict __restrict__
extern "C" {
#include "measure.c"
#include "random_tiles.c"
}
#undef restrict

namespace {

std::tuple<at::Tensor, at::Tensor> measure(at::Tensor activation, const at::Tensor& pattern,
                                           const std::optional<at::Tensor>& given,
                                           const std::optional<at::Tensor>& predicted, int64_t window, int64_t rule,
                                           double threshold, bool apply, bool extra, int64_t threads) {
  TORCH_CHECK(activation.dim() == 4 && activation.scalar_type() == at::kFloat && activation.is_contiguous() &&
                  activation.device().is_cpu(),
              "cnp::measure: activation must be a contiguous float32 CPU tensor (N, C, H, W)");
  TORCH_CHECK(pattern.scalar_type() == at::kByte && pattern.is_contiguous(), "cnp::measure: pattern must be uint8");
  TORCH_CHECK(!given.has_value() || (given->scalar_type() == at::kByte && given->is_contiguous()),
              "cnp::measure: given must be a contiguous uint8 tensor");
  TORCH_CHECK(!predicted.has_value() || (predicted->scalar_type() == at::kByte && predicted->is_contiguous() &&
                                         predicted->numel() == activation.numel()),
              "cnp::measure: predicted must be a contiguous uint8 tensor of one byte per cell");
  auto out = torch::zeros({15}, torch::kInt64);
  auto masses = torch::zeros({6}, torch::kFloat64);
  const int64_t n = activation.size(0), c = activation.size(1), h = activation.size(2), w = activation.size(3);
  const int failed = cnp_measure(activation.data_ptr<float>(), n * c, h, w, window, pattern.data_ptr<uint8_t>(),
                                 static_cast<int>(rule), static_cast<float>(threshold), apply ? 1 : 0,
                                 static_cast<int>(threads), out.data_ptr<int64_t>(), masses.data_ptr<double>(),
                                 given.has_value() ? given->data_ptr<uint8_t>() : nullptr,
                                 predicted.has_value() ? predicted->data_ptr<uint8_t>() : nullptr, extra ? 1 : 0, c);
  TORCH_CHECK(failed != 2, "cnp::measure: the kernel refused rule ", rule, " at window ", window);
  TORCH_CHECK(failed == 0, "cnp::measure: the kernel could not allocate its buffers");
  return {out, masses};
}

at::Tensor random_tiles(const at::Tensor& activation, const at::Tensor& pattern, const at::Tensor& seeds,
                        int64_t window, int64_t threads) {
  TORCH_CHECK(activation.dim() == 4 && activation.scalar_type() == at::kFloat && activation.is_contiguous() &&
                  activation.device().is_cpu(),
              "cnp::random_tiles: activation must be a contiguous float32 CPU tensor (N, C, H, W)");
  TORCH_CHECK(pattern.scalar_type() == at::kByte && pattern.is_contiguous() && pattern.numel() == window * window,
              "cnp::random_tiles: pattern must be a contiguous uint8 window x window mask");
  const int64_t n = activation.size(0), c = activation.size(1), h = activation.size(2), w = activation.size(3);
  TORCH_CHECK(seeds.scalar_type() == at::kLong && seeds.is_contiguous() && seeds.numel() == n,
              "cnp::random_tiles: seeds must be a contiguous int64 tensor of one seed per image");
  TORCH_CHECK(window >= 1, "cnp::random_tiles: window must be at least 1");
  auto fire = torch::empty({n, c, (h + window - 1) / window, (w + window - 1) / window}, torch::kUInt8);
  const int failed = cnp_random_tiles(activation.data_ptr<float>(), n, c, h, w, window, pattern.data_ptr<uint8_t>(),
                                      reinterpret_cast<const uint64_t*>(seeds.data_ptr<int64_t>()),
                                      static_cast<int>(threads), fire.data_ptr<uint8_t>());
  TORCH_CHECK(failed == 0, "cnp::random_tiles: the kernel could not allocate its buffers");
  return fire;
}

}  // namespace

TORCH_LIBRARY(cnp, m) {
  m.def("measure(Tensor(a!) activation, Tensor pattern, Tensor? given, Tensor(b!)? predicted, int window, "
        "int rule, float threshold, bool apply, bool extra, int threads) -> (Tensor, Tensor)");
  m.def("random_tiles(Tensor activation, Tensor pattern, Tensor seeds, int window, int threads) -> Tensor");
}

TORCH_LIBRARY_IMPL(cnp, CPU, m) {
  m.impl("measure", &measure);
  m.impl("random_tiles", &random_tiles);
}
