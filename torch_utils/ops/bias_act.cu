// Fused bias + activation + gain + clamp CUDA kernel (forward, first and second derivative).

#include <c10/util/Half.h>
#include "bias_act.h"

//----------------------------------------------------------------------------
// Arithmetic type: half is computed in float.

template <class T> struct OpMath { typedef T type; };
template <> struct OpMath<c10::Half> { typedef float type; };

__device__ __forceinline__ float  op_exp(float v)  { return expf(v); }
__device__ __forceinline__ double op_exp(double v) { return exp(v); }
__device__ __forceinline__ float  op_tanh(float v)  { return tanhf(v); }
__device__ __forceinline__ double op_tanh(double v) { return tanh(v); }
__device__ __forceinline__ float  op_log1p(float v)  { return log1pf(v); }
__device__ __forceinline__ double op_log1p(double v) { return log1p(v); }
__device__ __forceinline__ float  op_abs(float v)  { return fabsf(v); }
__device__ __forceinline__ double op_abs(double v) { return fabs(v); }

//----------------------------------------------------------------------------
// act(z) and its first two derivatives for the activations whose backward reads z.

template <class S> struct ActValues { S v, d1, d2; };

template <class S> __device__ __forceinline__ ActValues<S> act_values(int act, S z, S alpha)
{
    const S one = 1, zero = 0;
    ActValues<S> r = {z, one, zero};
    if (act == kBiasActRelu) {
        r.v = z > zero ? z : zero; r.d1 = z > zero ? one : zero;
    } else if (act == kBiasActLrelu) {
        r.v = z > zero ? z : z * alpha; r.d1 = z > zero ? one : alpha;
    } else if (act == kBiasActTanh) {
        S t = op_tanh(z);
        r.v = t; r.d1 = one - t * t; r.d2 = -2 * t * r.d1;
    } else if (act == kBiasActSigmoid) {
        S s = one / (one + op_exp(-z));
        r.v = s; r.d1 = s * (one - s); r.d2 = r.d1 * (one - 2 * s);
    } else if (act == kBiasActElu) {
        // At z == 0 the reference takes d1 from the exponential side and d2 from the linear side
        // (d2 = 0); half-precision inputs hit z == 0 exactly (x == -b) often enough to matter.
        if (z <= zero) { S e = op_exp(z); r.v = e - one; r.d1 = e; r.d2 = z < zero ? e : zero; }
    } else if (act == kBiasActSelu) {
        const S scale = (S)1.0507009873554804934193349852946, la = (S)1.7580993408473768599402175208123;
        if (z > zero) { r.v = scale * z; r.d1 = scale; }
        else { S e = op_exp(z); r.v = la * (e - one); r.d1 = la * e; r.d2 = z < zero ? la * e : zero; }
    } else if (act == kBiasActSoftplus) {
        if (z <= (S)20) {   // torch's softplus threshold: linear above 20
            S e = op_exp(z), s = one / (one + op_exp(-z));
            r.v = op_log1p(e); r.d1 = s; r.d2 = s * (one - s);
        }
    } else if (act == kBiasActSwish) {
        S s = one / (one + op_exp(-z));
        r.v = z * s; r.d1 = s * (one + z * (one - s)); r.d2 = s * (one - s) * (2 + z * (one - 2 * s));
    }
    return r;
}

//----------------------------------------------------------------------------
// The stored clamped output. Backward reads the clamp mask from the stored y of relu/lrelu/linear,
// so |y| must equal the stored clamp exactly when (and only when) the value was clamped. Rounding
// alone breaks that in half precision: an unclamped 0.7999 rounds onto half(0.8) = 0.7998.
// Such a value is stored one step below the stored clamp instead (an error of one ulp).

__device__ __forceinline__ float     step_down(float c)     { return nextafterf(c, 0.0f); }
__device__ __forceinline__ double    step_down(double c)    { return nextafter(c, 0.0); }
__device__ __forceinline__ c10::Half step_down(c10::Half c) { return c10::Half((unsigned short)(c.x - 1), c10::Half::from_bits()); }

template <class T, class S> __device__ __forceinline__ T store_clamped(S v, S clamp, T clamp_t)
{
    if (v > clamp)  return clamp_t;
    if (v < -clamp) return (T)(-(S)clamp_t);
    T y = (T)v;
    if ((S)clamp_t > (S)0 && !(op_abs((S)y) < (S)clamp_t)) {
        S below = (S)step_down(clamp_t);
        y = (T)(v > (S)0 ? below : -below);
    }
    return y;
}

//----------------------------------------------------------------------------
// One element: the value (mode 0) or a derivative (modes 1, 2). `xref`/`yref`/`dy` are 0 when absent.

template <class T> struct BiasActConsts {
    typedef typename OpMath<T>::type S;
    S gain, clamp, alpha;
    T clamp_t;          // the clamp as stored in y
    bool use_clamp, y_based;
    int mode, act;
};

template <class T> __device__ __forceinline__ BiasActConsts<T> bias_act_consts(const BiasActParams& p)
{
    typedef typename OpMath<T>::type S;
    BiasActConsts<T> c;
    c.gain = (S)p.gain; c.clamp = (S)p.clamp; c.alpha = (S)p.alpha;
    c.clamp_t = (T)c.clamp;
    c.use_clamp = p.clamp >= 0;
    c.y_based = (p.act == kBiasActLinear || p.act == kBiasActRelu || p.act == kBiasActLrelu) && p.yref;
    c.mode = p.mode; c.act = p.act;
    return c;
}

template <class T, class S> __device__ __forceinline__ T bias_act_one(const BiasActConsts<T>& c, S g, S bias, S xref, S yref, S dy)
{
    const S zero = 0;
    if (c.mode == 0) {
        S v = act_values<S>(c.act, g + bias, c.alpha).v * c.gain;
        return c.use_clamp ? store_clamped<T, S>(v, c.clamp, c.clamp_t) : (T)v;
    }
    S result;
    if (c.y_based) {
        // Piecewise-linear activations: the slope and the clamp mask follow from y alone.
        S slope = (c.act == kBiasActLinear) ? (S)1 : (yref * c.gain > zero ? (S)1 : (c.act == kBiasActLrelu ? c.alpha : zero));
        if (c.use_clamp && !(op_abs(yref) < (S)c.clamp_t)) slope = zero;
        result = (c.mode == 1) ? g * slope * c.gain : zero;
    } else {
        ActValues<S> a = act_values<S>(c.act, xref + bias, c.alpha);
        bool pass = !c.use_clamp || op_abs(a.v * c.gain) <= c.clamp;
        if (c.mode == 1) result = pass ? g * a.d1 * c.gain : zero;
        else             result = pass ? g * dy * a.d2 * c.gain : zero;
    }
    return (T)result;
}

//----------------------------------------------------------------------------
// Memory access: each thread handles V consecutive elements per step, one 16-byte load or store
// per tensor when every element pointer is 16-byte aligned (V = 1 otherwise), with 32-bit indices
// I when the tensor has fewer than 2^31 elements. The bias index (i / bias_stride) % bias_size is
// computed once per V elements: they share it when bias_stride is a multiple of V (NCHW), and they
// walk the channels in order when bias_stride is 1 (channels_last, fully connected).

template <class T, int V> struct alignas(sizeof(T) * V) Pack { T v[V]; };

template <class T, int V, class I> __device__ __forceinline__ Pack<T, V> load_pack(const T* base, I i)
{
    return *reinterpret_cast<const Pack<T, V>*>(base + i);
}

template <class T, int V, class I, class S> __device__ __forceinline__ void bias_values(const BiasActParams& p, I i0, S* out)
{
    const T* b = (const T*)p.b;
    const I stride = (I)p.bias_stride, size = (I)p.bias_size;
    if (!b) {
#pragma unroll
        for (int k = 0; k < V; k++) out[k] = (S)0;
    } else if (stride % V == 0) {
        S v = (S)b[(i0 / stride) % size];
#pragma unroll
        for (int k = 0; k < V; k++) out[k] = v;
    } else if (stride == 1) {
        I ch = i0 % size;
#pragma unroll
        for (int k = 0; k < V; k++) { out[k] = (S)b[ch]; if (++ch == size) ch = 0; }
    } else {
#pragma unroll
        for (int k = 0; k < V; k++) out[k] = (S)b[((i0 + k) / stride) % size];
    }
}

// V elements starting at i0 (a multiple of V).
template <class T, int V, class I> __device__ __forceinline__ void bias_act_step(const BiasActParams& p, const BiasActConsts<T>& c, I i0)
{
    typedef typename OpMath<T>::type S;
    Pack<T, V> g = load_pack<T, V>((const T*)p.g, i0), x, y, d, out;
    if (p.xref) x = load_pack<T, V>((const T*)p.xref, i0);
    if (p.yref) y = load_pack<T, V>((const T*)p.yref, i0);
    if (p.dy)   d = load_pack<T, V>((const T*)p.dy, i0);
    S bias[V];
    bias_values<T, V, I, S>(p, i0, bias);
#pragma unroll
    for (int k = 0; k < V; k++)
        out.v[k] = bias_act_one<T, S>(c, (S)g.v[k], bias[k], p.xref ? (S)x.v[k] : (S)0,
                                      p.yref ? (S)y.v[k] : (S)0, p.dy ? (S)d.v[k] : (S)0);
    *reinterpret_cast<Pack<T, V>*>((T*)p.out + i0) = out;
}

template <class T, class I, int V> __global__ void bias_act_kernel(BiasActParams p)
{
    const BiasActConsts<T> c = bias_act_consts<T>(p);
    const I numel = (I)p.numel, full = numel / V, threads = (I)blockDim.x * gridDim.x;
    const I first = (I)blockIdx.x * blockDim.x + threadIdx.x;
    for (I v = first; v < full; v += threads)           // grid-stride loop over whole packs
        bias_act_step<T, V, I>(p, c, v * V);
    for (I i = full * V + first; i < numel; i += threads) // the last numel % V elements
        bias_act_step<T, 1, I>(p, c, i);
}

//----------------------------------------------------------------------------
// Kernel choice (host code, also used by the CPU emulation in tests/test_ops_emulated.py):
// calls run(kernel, V) with the instantiation that suits p. 32-bit indices below `narrow_limit`
// elements (the emulation lowers it to test the 64-bit variants).

typedef void (*BiasActKernel)(BiasActParams);

template <class T, class F> inline void bias_act_dispatch(const BiasActParams& p, F run, long long narrow_limit = 1LL << 31)
{
    const int wide = 16 / (int)sizeof(T);
    const void* ptrs[] = {p.g, p.xref, p.yref, p.dy, p.out};
    bool aligned = true;
    for (const void* q : ptrs)
        aligned = aligned && (reinterpret_cast<unsigned long long>(q) % 16 == 0);
    const bool narrow = p.numel < narrow_limit;
    if (aligned && narrow)  run(&bias_act_kernel<T, unsigned int, 16 / sizeof(T)>, wide);
    else if (aligned)       run(&bias_act_kernel<T, unsigned long long, 16 / sizeof(T)>, wide);
    else if (narrow)        run(&bias_act_kernel<T, unsigned int, 1>, 1);
    else                    run(&bias_act_kernel<T, unsigned long long, 1>, 1);
}

//----------------------------------------------------------------------------
// Launcher (nvcc only: tests/test_ops_emulated.py compiles the code above with a host compiler).

#ifdef __CUDACC__

template <class T> cudaError_t bias_act_launch(const BiasActParams& p, cudaStream_t stream)
{
    if (p.numel == 0)
        return cudaSuccess;
    bias_act_dispatch<T>(p, [&](BiasActKernel kernel, int vec) {
        const int block = 256;
        long long blocks = (p.numel / vec + block - 1) / block;
        blocks = blocks < 1 ? 1 : (blocks > 8192 ? 8192 : blocks);   // grid-stride loops cover the rest
        kernel<<<(unsigned int)blocks, block, 0, stream>>>(p);
    });
    return cudaGetLastError();
}

template cudaError_t bias_act_launch<float>(const BiasActParams& p, cudaStream_t stream);
template cudaError_t bias_act_launch<double>(const BiasActParams& p, cudaStream_t stream);
template cudaError_t bias_act_launch<c10::Half>(const BiasActParams& p, cudaStream_t stream);

#endif // __CUDACC__
