// Shared definitions of the Pregate kernels (compiled with NVRTC, no toolkit headers): ggml type ids, the quantized block
// layouts of ggml-common.h, fp16/bf16 conversions through PTX, warp and block reductions.
#define TYPE_F32 0
#define TYPE_F16 1
#define TYPE_Q4_0 2
#define TYPE_Q8_0 8
#define TYPE_BF16 30
#define QK 32
#define NEG_INF __int_as_float(0xff800000)
#define FULL_MASK 0xffffffffu

// ggml block_q8_0: x = d·q, d fp16. 34 bytes.
struct __align__(2) block_q8_0 { unsigned short d; signed char qs[QK]; };
// ggml block_q4_0: x = d·(q − 8); element j is the low nibble of qs[j], element j+16 the high nibble. 18 bytes.
struct __align__(2) block_q4_0 { unsigned short d; unsigned char qs[QK / 2]; };
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 must match ggml (34 bytes)");
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 must match ggml (18 bytes)");

__device__ __forceinline__ float half_to_float(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short float_to_half(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float bf16_to_float(unsigned short b) { return __uint_as_float(((unsigned int)b) << 16); }

// Element c of a weight row of the given type, widened to float (ggml dequantize_row_*).
__device__ __forceinline__ float load_weight(const unsigned char* row, int type, int c)
{
    switch (type)
    {
        case TYPE_F32: return ((const float*)row)[c];
        case TYPE_F16: return half_to_float(((const unsigned short*)row)[c]);
        case TYPE_BF16: return bf16_to_float(((const unsigned short*)row)[c]);
        case TYPE_Q8_0:
        {
            const block_q8_0* b = (const block_q8_0*)row + c / QK;
            return b->qs[c % QK] * half_to_float(b->d);
        }
        default:
        {
            const block_q4_0* b = (const block_q4_0*)row + c / QK;
            int j = c % QK;
            int q = j < QK / 2 ? (b->qs[j] & 0x0F) : (b->qs[j - QK / 2] >> 4);
            return (q - 8) * half_to_float(b->d);
        }
    }
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_double(double v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ double block_sum_double(double v)
{
    __shared__ double partial[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum_double(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < warps ? partial[lane] : 0.0;
    v = warp_sum_double(v);
    __syncthreads();
    return v;
}

__device__ float block_sum(float v)
{
    __shared__ float partial[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < warps ? partial[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

__device__ float block_max(float v)
{
    __shared__ float partial[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < warps ? partial[lane] : NEG_INF;
    v = warp_max(v);
    __syncthreads();
    return v;
}
