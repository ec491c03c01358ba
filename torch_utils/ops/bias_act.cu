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
// One element per loop step; grid-stride loop with 64-bit indices.

template <class T> __global__ void bias_act_kernel(BiasActParams p)
{
    typedef typename OpMath<T>::type S;
    const T* g = (const T*)p.g;
    const T* b = (const T*)p.b;
    const T* xref = (const T*)p.xref;
    const T* yref = (const T*)p.yref;
    const T* dy = (const T*)p.dy;
    T* out = (T*)p.out;
    const S gain = (S)p.gain, clamp = (S)p.clamp, alpha = (S)p.alpha, zero = 0;
    const bool use_clamp = p.clamp >= 0;
    const T clamp_t = (T)clamp;     // the clamp as stored in y
    const bool y_based = (p.act == kBiasActLinear || p.act == kBiasActRelu || p.act == kBiasActLrelu) && yref;

    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.numel;
         i += (long long)blockDim.x * gridDim.x) {
        S bias = b ? (S)b[(i / p.bias_stride) % p.bias_size] : zero;
        S gi = (S)g[i];
        if (p.mode == 0) {
            S v = act_values<S>(p.act, gi + bias, alpha).v * gain;
            out[i] = use_clamp ? store_clamped<T, S>(v, clamp, clamp_t) : (T)v;
            continue;
        }
        S result;
        if (y_based) {
            // Piecewise-linear activations: the slope and the clamp mask follow from y alone.
            S y = (S)yref[i];
            S slope = (p.act == kBiasActLinear) ? (S)1 : (y * gain > zero ? (S)1 : (p.act == kBiasActLrelu ? alpha : zero));
            if (use_clamp && !(op_abs(y) < (S)clamp_t)) slope = zero;
            result = (p.mode == 1) ? gi * slope * gain : zero;
        } else {
            S z = (xref ? (S)xref[i] : zero) + bias;
            ActValues<S> a = act_values<S>(p.act, z, alpha);
            bool pass = !use_clamp || op_abs(a.v * gain) <= clamp;
            if (p.mode == 1) result = pass ? gi * a.d1 * gain : zero;
            else             result = pass ? gi * (S)dy[i] * a.d2 * gain : zero;
        }
        out[i] = (T)result;
    }
}

//----------------------------------------------------------------------------
// Launcher (nvcc only: tests/test_ops_emulated.py compiles the kernel above with a host compiler).

#ifdef __CUDACC__

template <class T> cudaError_t bias_act_launch(const BiasActParams& p, cudaStream_t stream)
{
    if (p.numel == 0)
        return cudaSuccess;
    const int block = 256;
    long long blocks = (p.numel + block - 1) / block;
    if (blocks > 65536) blocks = 65536;   // grid-stride loop covers the rest
    bias_act_kernel<T><<<(unsigned int)blocks, block, 0, stream>>>(p);
    return cudaGetLastError();
}

template cudaError_t bias_act_launch<float>(const BiasActParams& p, cudaStream_t stream);
template cudaError_t bias_act_launch<double>(const BiasActParams& p, cudaStream_t stream);
template cudaError_t bias_act_launch<c10::Half>(const BiasActParams& p, cudaStream_t stream);

#endif // __CUDACC__
