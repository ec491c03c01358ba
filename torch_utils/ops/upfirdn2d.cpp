// Python binding of the upfirdn2d kernel: argument checks, output allocation, dtype dispatch.

#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include "upfirdn2d.h"

//----------------------------------------------------------------------------
// Output length along one axis: floor((in * up + pad0 + pad1 - taps) / down) + 1.

static int64_t out_length(int64_t in, int64_t up, int64_t down, int64_t pad0, int64_t pad1, int64_t taps)
{
    int64_t span = in * up + pad0 + pad1 - taps;
    return span < 0 ? 0 : span / down + 1;
}

//----------------------------------------------------------------------------

static torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y,
    int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip_filter, double gain)
{
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be 4-D [N, C, H, W]");
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble || x.scalar_type() == at::kHalf,
                "upfirdn2d: dtype must be float16, float32 or float64");
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on the same device as x");
    TORCH_CHECK(f.scalar_type() == at::kFloat && f.dim() == 2 && f.is_contiguous(),
                "upfirdn2d: f must be a contiguous 2-D float32 tensor");
    TORCH_CHECK(f.numel() > 0 && f.numel() <= (1 << 20), "upfirdn2d: filter size out of range");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: up and down must be >= 1");
    TORCH_CHECK(x.numel() <= INT_MAX && x.size(2) * up_y <= INT_MAX / 2 && x.size(3) * up_x <= INT_MAX / 2,
                "upfirdn2d: input too large");

    int64_t out_h = out_length(x.size(2), up_y, down_y, pad_y0, pad_y1, f.size(0));
    int64_t out_w = out_length(x.size(3), up_x, down_x, pad_x0, pad_x1, f.size(1));
    TORCH_CHECK(out_h >= 1 && out_w >= 1, "upfirdn2d: output would be empty; check padding and filter size");

    const at::cuda::OptionalCUDAGuard guard(device_of(x));
    torch::Tensor y = torch::empty({x.size(0), x.size(1), out_h, out_w}, x.options(), x.suggest_memory_format());

    Upfirdn2dParams p;
    p.x = x.data_ptr();
    p.f = f.data_ptr<float>();
    p.y = y.data_ptr();
    p.batch = (int)x.size(0); p.channels = (int)x.size(1);
    p.in_h = (int)x.size(2); p.in_w = (int)x.size(3);
    p.out_h = (int)out_h; p.out_w = (int)out_w;
    for (int i = 0; i < 4; i++) {
        p.x_stride[i] = x.stride(i);
        p.y_stride[i] = y.stride(i);
    }
    p.up_x = (int)up_x; p.up_y = (int)up_y; p.down_x = (int)down_x; p.down_y = (int)down_y;
    p.pad_x0 = (int)pad_x0; p.pad_y0 = (int)pad_y0;
    p.filter_w = (int)f.size(1); p.filter_h = (int)f.size(0);
    p.flip_filter = flip_filter ? 1 : 0;
    p.gain = (float)gain;

    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    cudaError_t err = cudaSuccess;
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "upfirdn2d_cuda", [&] {
        err = upfirdn2d_launch<scalar_t>(p, stream);
    });
    TORCH_CHECK(err == cudaSuccess, "upfirdn2d: kernel launch failed: ", cudaGetErrorString(err));
    return y;
}

//----------------------------------------------------------------------------

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("upfirdn2d", &upfirdn2d, "Upsample, FIR-filter and downsample a batch of 2-D images");
}
