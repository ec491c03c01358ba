// Upsample + FIR filter + downsample in one pass: kernel parameters shared by upfirdn2d.cpp/.cu.
// Kept free of torch headers so that the .cu file compiles quickly.

#pragma once
#include <cuda_runtime.h>

//----------------------------------------------------------------------------
// out[n, c, oy, ox] = gain * sum_{ky, kx} w[ky, kx] * xp[n, c, oy * down_y + ky, ox * down_x + kx]
// where xp is x with up-1 zeros inserted after each pixel and padded by (pad_x0, pad_y0) on the
// top-left, and w is the filter flipped (true convolution) unless `flip_filter` (correlation).
// Strides are in elements, so any layout (contiguous, channels_last) is read and written directly.

struct Upfirdn2dParams {
    const void*  x;
    const float* f;             // [filter_h, filter_w], contiguous float32
    void*        y;
    int          batch, channels, in_h, in_w, out_h, out_w;
    long long    x_stride[4];   // N, C, H, W
    long long    y_stride[4];
    int          up_x, up_y, down_x, down_y;
    int          pad_x0, pad_y0;
    int          filter_w, filter_h;
    int          flip_filter;
    float        gain;
};

//----------------------------------------------------------------------------
// Launch on `stream`; T is float, double or c10::Half.

template <class T> cudaError_t upfirdn2d_launch(const Upfirdn2dParams& p, cudaStream_t stream);
