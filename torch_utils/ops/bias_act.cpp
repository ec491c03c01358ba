// Python binding of the fused bias_act kernel: argument checks, dtype dispatch, launch.

#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include "bias_act.h"

//----------------------------------------------------------------------------
// An optional element tensor (numel 0 = absent) must match g exactly in shape, layout and type.

static const void* optional_like(const torch::Tensor& t, const torch::Tensor& g, const char* name)
{
    if (t.numel() == 0)
        return nullptr;
    TORCH_CHECK(t.device() == g.device(), "bias_act: ", name, " must be on the same device as the input");
    TORCH_CHECK(t.dtype() == g.dtype(), "bias_act: ", name, " must have the same dtype as the input");
    TORCH_CHECK(t.sizes() == g.sizes() && t.strides() == g.strides(),
                "bias_act: ", name, " must have the same shape and memory layout as the input");
    return t.data_ptr();
}

//----------------------------------------------------------------------------

static torch::Tensor bias_act(int64_t mode, torch::Tensor g, torch::Tensor b, torch::Tensor xref, torch::Tensor yref,
    torch::Tensor dy, int64_t dim, int64_t act, double alpha, double gain, double clamp)
{
    TORCH_CHECK(g.is_cuda(), "bias_act: input must be a CUDA tensor");
    TORCH_CHECK(g.is_non_overlapping_and_dense(), "bias_act: input must be dense (contiguous or channels_last)");
    TORCH_CHECK(g.scalar_type() == at::kFloat || g.scalar_type() == at::kDouble || g.scalar_type() == at::kHalf,
                "bias_act: dtype must be float16, float32 or float64");
    TORCH_CHECK(mode >= 0 && mode <= 2, "bias_act: mode must be 0, 1 or 2");
    TORCH_CHECK(act >= kBiasActLinear && act <= kBiasActSwish, "bias_act: unknown activation id");
    TORCH_CHECK(dim >= 0 && dim < g.dim(), "bias_act: dim out of range");
    if (b.numel() != 0) {
        TORCH_CHECK(b.device() == g.device() && b.dtype() == g.dtype(), "bias_act: b must match the input's device and dtype");
        TORCH_CHECK(b.dim() == 1 && b.is_contiguous() && b.size(0) == g.size(dim),
                    "bias_act: b must be contiguous, 1-D, with input.size(dim) entries");
    }
    TORCH_CHECK(mode != 2 || dy.numel() != 0, "bias_act: mode 2 needs dy");

    const at::cuda::OptionalCUDAGuard guard(device_of(g));
    torch::Tensor out = torch::empty_like(g);   // keeps g's (dense) strides, e.g. channels_last

    BiasActParams p;
    p.g = g.data_ptr();
    p.b = b.numel() ? b.data_ptr() : nullptr;
    p.xref = optional_like(xref, g, "xref");
    p.yref = optional_like(yref, g, "yref");
    p.dy = optional_like(dy, g, "dy");
    p.out = out.data_ptr();
    p.numel = g.numel();
    p.bias_stride = g.numel() ? g.stride(dim) : 1;
    p.bias_size = (int)g.size(dim);
    p.mode = (int)mode;
    p.act = (int)act;
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    if (p.bias_stride < 1) p.bias_stride = 1;

    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    cudaError_t err = cudaSuccess;
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(g.scalar_type(), "bias_act_cuda", [&] {
        err = bias_act_launch<scalar_t>(p, stream);
    });
    TORCH_CHECK(err == cudaSuccess, "bias_act: kernel launch failed: ", cudaGetErrorString(err));
    return out;
}

//----------------------------------------------------------------------------

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp (mode 0/1/2 = value/1st/2nd derivative)");
}
