// Fused bias + activation + gain + clamp: kernel parameters shared by bias_act.cpp and bias_act.cu.
// Kept free of torch headers so that the .cu file compiles quickly.

#pragma once
#include <cuda_runtime.h>

//----------------------------------------------------------------------------
// Activation ids; must match `cuda_idx` in bias_act.py's activation table.

enum BiasActKind {
    kBiasActLinear = 1, kBiasActRelu = 2, kBiasActLrelu = 3, kBiasActTanh = 4, kBiasActSigmoid = 5,
    kBiasActElu = 6, kBiasActSelu = 7, kBiasActSoftplus = 8, kBiasActSwish = 9,
};

//----------------------------------------------------------------------------
// mode 0: out = clamp(gain * act(x + b))                        (forward)
// mode 1: out = g * d/dz clamp(gain * act(z)),   z = xref + b   (first derivative, g = dy)
// mode 2: out = g * dy * d2/dz2 clamp(gain * act(z))            (second derivative, g = d(dx))
// All element tensors share one dense memory layout, so the kernel walks them linearly;
// the bias index is (i / bias_stride) % bias_size. Null pointers mean "not given".

struct BiasActParams {
    const void* g;          // main input: x (mode 0), dy (mode 1) or d(dx) (mode 2)
    const void* b;          // bias [bias_size] or null
    const void* xref;       // forward input x (before bias) or null
    const void* yref;       // forward output y or null
    const void* dy;         // incoming gradient (mode 2) or null
    void*       out;        // result, same layout as g
    long long   numel;
    long long   bias_stride;  // memory stride of the bias dimension
    int         bias_size;
    int         mode;
    int         act;
    double      alpha;
    double      gain;
    double      clamp;      // < 0 = no clamp
};

//----------------------------------------------------------------------------
// Launch on `stream`; T is float, double or c10::Half.

template <class T> cudaError_t bias_act_launch(const BiasActParams& p, cudaStream_t stream);
