// Upsample + FIR filter + downsample CUDA kernel: one thread per output pixel, visiting only the
// filter taps that land on non-zero (non-inserted, in-image) input pixels.

#include <c10/util/Half.h>
#include "upfirdn2d.h"

//----------------------------------------------------------------------------
// Accumulation type: half and float accumulate in float, double in double.

template <class T> struct AccType { typedef float type; };
template <> struct AccType<double> { typedef double type; };

//----------------------------------------------------------------------------
// Floor division and a non-negative remainder for possibly negative numerators.

__device__ __forceinline__ int floor_div(int a, int b) { int q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q; }
__device__ __forceinline__ int pos_mod(int a, int b) { int r = a % b; return r < 0 ? r + b : r; }

//----------------------------------------------------------------------------
// For output coordinate `o`: the first tap k0 that hits an original pixel, and that pixel's index.
// Position of tap k in the upsampled (unpadded) image is o * down - pad0 + k; it is an original
// pixel when divisible by `up`.

struct TapStart { int k0, i0; };

__device__ __forceinline__ TapStart first_tap(int o, int up, int down, int pad0)
{
    int base = o * down - pad0;
    int k0 = pos_mod(-base, up);
    TapStart t = {k0, floor_div(base + k0, up)};
    return t;
}

//----------------------------------------------------------------------------

template <class T> __global__ void upfirdn2d_kernel(Upfirdn2dParams p)
{
    typedef typename AccType<T>::type A;
    const T* x = (const T*)p.x;
    T* y = (T*)p.y;
    const long long total = (long long)p.batch * p.channels * p.out_h * p.out_w;

    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        int ox = (int)(idx % p.out_w);
        long long rest = idx / p.out_w;
        int oy = (int)(rest % p.out_h); rest /= p.out_h;
        int c = (int)(rest % p.channels);
        int n = (int)(rest / p.channels);

        TapStart tx = first_tap(ox, p.up_x, p.down_x, p.pad_x0);
        TapStart ty = first_tap(oy, p.up_y, p.down_y, p.pad_y0);
        const T* xnc = x + n * p.x_stride[0] + c * p.x_stride[1];
        A acc = 0;
        for (int ky = ty.k0, iy = ty.i0; ky < p.filter_h; ky += p.up_y, iy++) {
            if (iy < 0 || iy >= p.in_h)
                continue;
            int fy = p.flip_filter ? ky : p.filter_h - 1 - ky;
            for (int kx = tx.k0, ix = tx.i0; kx < p.filter_w; kx += p.up_x, ix++) {
                if (ix < 0 || ix >= p.in_w)
                    continue;
                int fx = p.flip_filter ? kx : p.filter_w - 1 - kx;
                A w = (A)p.f[fy * p.filter_w + fx];
                acc += (A)xnc[iy * p.x_stride[2] + ix * p.x_stride[3]] * w;
            }
        }
        y[n * p.y_stride[0] + c * p.y_stride[1] + oy * p.y_stride[2] + ox * p.y_stride[3]] = (T)(acc * (A)p.gain);
    }
}

//----------------------------------------------------------------------------
// Launcher (nvcc only: tests/test_ops_emulated.py compiles the kernel above with a host compiler).

#ifdef __CUDACC__

template <class T> cudaError_t upfirdn2d_launch(const Upfirdn2dParams& p, cudaStream_t stream)
{
    long long total = (long long)p.batch * p.channels * p.out_h * p.out_w;
    if (total == 0)
        return cudaSuccess;
    const int block = 256;
    long long blocks = (total + block - 1) / block;
    if (blocks > 65536) blocks = 65536;   // grid-stride loop covers the rest
    upfirdn2d_kernel<T><<<(unsigned int)blocks, block, 0, stream>>>(p);
    return cudaGetLastError();
}

template cudaError_t upfirdn2d_launch<float>(const Upfirdn2dParams& p, cudaStream_t stream);
template cudaError_t upfirdn2d_launch<double>(const Upfirdn2dParams& p, cudaStream_t stream);
template cudaError_t upfirdn2d_launch<c10::Half>(const Upfirdn2dParams& p, cudaStream_t stream);

#endif // __CUDACC__
