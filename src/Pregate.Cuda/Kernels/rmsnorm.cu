// RMSNorm of each of gridDim.x rows of n values (ggml rms_norm followed by mul, as ElementOps.RmsNorm):
// dst[r, i] = (x[r, i]·s_r)·w[i], s_r = 1/sqrtf((float)(Σ (x·x) / n) + eps), the float squares summed in double.
// dst may be x. w == nullptr leaves out the weight.
extern "C" __global__ void rms_norm_rows(float* dst, const float* x, const float* w, int n, float eps)
{
    const float* xr = x + (long long)blockIdx.x * n;
    float* dr = dst + (long long)blockIdx.x * n;
    double sum = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
    {
        float v = xr[i];
        sum += (double)__fmul_rn(v, v);
    }
    sum = block_sum_double(sum);
    float mean = (float)(sum / n);
    float s = 1.0f / sqrtf(mean + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
    {
        float v = __fmul_rn(xr[i], s);
        dr[i] = w != nullptr ? __fmul_rn(v, w[i]) : v;
    }
}
