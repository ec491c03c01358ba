// Upsample + FIR filter + downsample CUDA kernel: one thread per output pixel, visiting only the
// filter taps that land on non-zero (non-inserted, in-image) input pixels, with no 64-bit integer
// division and coalesced accesses in both contiguous and channels_last layouts.

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
// pixel when divisible by `up`. A power-of-two `up` (always, in StyleGAN2) uses a mask and a shift
// (`up_shift` >= 0) instead of two integer divisions per output pixel.

struct TapStart { int k0, i0; };

__device__ __forceinline__ TapStart first_tap(int o, int up, int up_shift, int down, int pad0)
{
    int base = o * down - pad0;
    TapStart t;
    if (up_shift >= 0) {
        t.k0 = (-base) & (up - 1);
        t.i0 = (base + t.k0) >> up_shift;   // exact: base + k0 is a multiple of up
    } else {
        t.k0 = pos_mod(-base, up);
        t.i0 = floor_div(base + t.k0, up);
    }
    return t;
}

__device__ __forceinline__ int pow2_shift(int v)   // log2(v) for a power of two, else -1
{
    int s = 0;
    while ((1 << s) < v) s++;
    return (1 << s) == v ? s : -1;
}

//----------------------------------------------------------------------------
// Thread layout: threads x run over the output index that is innermost in memory (c when the
// output is channels_last, else ox), so that a warp reads and writes contiguous memory; threads y
// over output rows; blocks z over the rest (n and the other of c / ox), divided once per z step.
// All three are grid-stride loops, so any grid covers the output.

__host__ __device__ inline bool upfirdn2d_channel_inner(const Upfirdn2dParams& p) { return p.y_stride[1] < p.y_stride[3]; }

template <class T> __global__ void upfirdn2d_kernel(Upfirdn2dParams p)
{
    typedef typename AccType<T>::type A;
    const T* x = (const T*)p.x;
    T* y = (T*)p.y;
    const bool cl = upfirdn2d_channel_inner(p);
    const int inner_n = cl ? p.channels : p.out_w, outer_n = cl ? p.out_w : p.channels;
    const int z_n = p.batch * outer_n;
    const int shift_x = pow2_shift(p.up_x), shift_y = pow2_shift(p.up_y);

    for (int z = blockIdx.z; z < z_n; z += gridDim.z) {
        const int n = z / outer_n, o = z % outer_n;
        for (int oy = blockIdx.y * blockDim.y + threadIdx.y; oy < p.out_h; oy += blockDim.y * gridDim.y) {
            const TapStart ty = first_tap(oy, p.up_y, shift_y, p.down_y, p.pad_y0);
            for (int inner = blockIdx.x * blockDim.x + threadIdx.x; inner < inner_n; inner += blockDim.x * gridDim.x) {
                const int c = cl ? inner : o, ox = cl ? o : inner;
                const TapStart tx = first_tap(ox, p.up_x, shift_x, p.down_x, p.pad_x0);
                const T* xnc = x + n * p.x_stride[0] + c * p.x_stride[1];
                A acc = 0;
                for (int ky = ty.k0, iy = ty.i0; ky < p.filter_h; ky += p.up_y, iy++) {
                    if (iy < 0 || iy >= p.in_h)
                        continue;
                    const T* xrow = xnc + iy * p.x_stride[2];
                    const float* frow = p.f + (p.flip_filter ? ky : p.filter_h - 1 - ky) * p.filter_w;
                    for (int kx = tx.k0, ix = tx.i0; kx < p.filter_w; kx += p.up_x, ix++) {
                        if (ix < 0 || ix >= p.in_w)
                            continue;
                        acc += (A)xrow[ix * p.x_stride[3]] * (A)frow[p.flip_filter ? kx : p.filter_w - 1 - kx];
                    }
                }
                y[n * p.y_stride[0] + c * p.y_stride[1] + oy * p.y_stride[2] + ox * p.y_stride[3]] = (T)(acc * (A)p.gain);
            }
        }
    }
}

//----------------------------------------------------------------------------
// Launcher (nvcc only: tests/test_ops_emulated.py compiles the kernel above with a host compiler).

#ifdef __CUDACC__

template <class T> cudaError_t upfirdn2d_launch(const Upfirdn2dParams& p, cudaStream_t stream)
{
    if ((long long)p.batch * p.channels * p.out_h * p.out_w == 0)
        return cudaSuccess;
    const bool cl = upfirdn2d_channel_inner(p);
    const int inner_n = cl ? p.channels : p.out_w, outer_n = cl ? p.out_w : p.channels;
    int bx = 1;                                    // threads along the inner index (up to 256), the rest
    while (bx < inner_n && bx < 256) bx *= 2;      // along rows: no idle lanes for narrow outputs
    const int by = 256 / bx;
    dim3 block(bx, by, 1);
    long long gx = (inner_n + bx - 1) / bx, gy = (p.out_h + by - 1) / by, gz = (long long)p.batch * outer_n;
    dim3 grid((unsigned int)gx, (unsigned int)(gy < 65535 ? gy : 65535), (unsigned int)(gz < 65535 ? gz : 65535));
    upfirdn2d_kernel<T><<<grid, block, 0, stream>>>(p);
    return cudaGetLastError();
}

template cudaError_t upfirdn2d_launch<float>(const Upfirdn2dParams& p, cudaStream_t stream);
template cudaError_t upfirdn2d_launch<double>(const Upfirdn2dParams& p, cudaStream_t stream);
template cudaError_t upfirdn2d_launch<c10::Half>(const Upfirdn2dParams& p, cudaStream_t stream);

#endif // __CUDACC__
