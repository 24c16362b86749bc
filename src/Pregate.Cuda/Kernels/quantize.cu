// Conversions: float input vectors → Q8_0 blocks (ggml quantize_row_q8_0, Quantize.QuantizeQ8_0Activation:
// d = amax/127 stored as fp16, q = round-half-even(x·(127/amax)) clamped to [-128, 127]), and weights or activations
// → fp16 for the cuBLAS GEMMs of prefill.

// One warp per block of 32 values; 8 blocks per thread block.
extern "C" __global__ void quantize_q8_0(block_q8_0* dst, const float* x, int blocks)
{
    int lane = threadIdx.x & 31, b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (b >= blocks) return;
    float v = x[(long long)b * QK + lane];
    float amax = warp_max(fabsf(v));
    float d = amax / 127.0f;
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    float r = rintf(__fmul_rn(v, id));
    int q = (int)r;
    q = q < -128 ? -128 : (q > 127 ? 127 : q);
    dst[b].qs[lane] = (signed char)q;
    if (lane == 0) dst[b].d = float_to_half(d);
}

// dst [rows, cols] fp16 = dequantized W (rows rowStride bytes apart).
extern "C" __global__ void dequantize_f16(unsigned short* dst, const unsigned char* w, long long rowStride, int type, int rows, int cols)
{
    long long n = (long long)rows * cols;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    {
        long long r = i / cols;
        int c = (int)(i - r * cols);
        dst[i] = float_to_half(load_weight(w + r * rowStride, type, c));
    }
}

// dst[i] = fp16(x[i]).
extern "C" __global__ void float_to_f16(unsigned short* dst, const float* x, long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dst[i] = float_to_half(x[i]);
}
