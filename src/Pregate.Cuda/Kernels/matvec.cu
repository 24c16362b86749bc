// y = W·x for decode, one warp per row and MATVEC_WARPS rows per block (grid.x = ceil(rows / MATVEC_WARPS)).
// F32/F16/BF16 weights multiply the float input (HalfWeightInput.Float); Q8_0/Q4_0 weights multiply the input quantized
// to Q8_0 blocks (quantize_q8_0): Σ_blocks (float)(Σ q_w·q_x)·(d_w·d_x), as ggml_vec_dot_q8_0_q8_0 / q4_0_q8_0.
#define MATVEC_WARPS 4

__device__ float row_dot(const unsigned char* w, int type, const float* x, const block_q8_0* xq, int cols, int lane)
{
    float s = 0.0f;
    if (type == TYPE_F32)
    {
        const float* r = (const float*)w;
        for (int c = lane; c < cols; c += 32) s += r[c] * x[c];
    }
    else if (type == TYPE_F16)
    {
        const unsigned short* r = (const unsigned short*)w;
        for (int c = lane; c < cols; c += 32) s += half_to_float(r[c]) * x[c];
    }
    else if (type == TYPE_BF16)
    {
        const unsigned short* r = (const unsigned short*)w;
        for (int c = lane; c < cols; c += 32) s += bf16_to_float(r[c]) * x[c];
    }
    else if (type == TYPE_Q8_0)
    {
        const block_q8_0* b = (const block_q8_0*)w;
        for (int i = lane; i < cols / QK; i += 32)
        {
            int sumi = 0;
            for (int j = 0; j < QK; j++) sumi += (int)b[i].qs[j] * (int)xq[i].qs[j];
            s += (float)sumi * (half_to_float(b[i].d) * half_to_float(xq[i].d));
        }
    }
    else
    {
        const block_q4_0* b = (const block_q4_0*)w;
        for (int i = lane; i < cols / QK; i += 32)
        {
            int sumi = 0;
            for (int j = 0; j < QK / 2; j++)
            {
                sumi += ((b[i].qs[j] & 0x0F) - 8) * (int)xq[i].qs[j];
                sumi += ((b[i].qs[j] >> 4) - 8) * (int)xq[i].qs[j + QK / 2];
            }
            s += (float)sumi * (half_to_float(b[i].d) * half_to_float(xq[i].d));
        }
    }
    return warp_sum(s);
}

// y[t, r] = W[r]·x[t] for grid.y = tokens input vectors (x [tokens, cols], xq [tokens, cols/32] blocks, y [tokens, rows]).
extern "C" __global__ void matvec(float* y, const unsigned char* w, long long rowStride, int type,
    const float* x, const block_q8_0* xq, int rows, int cols)
{
    int lane = threadIdx.x & 31, r = blockIdx.x * MATVEC_WARPS + (threadIdx.x >> 5), t = blockIdx.y;
    if (r >= rows) return;
    float s = row_dot(w + (long long)r * rowStride, type, x + (long long)t * cols, xq + (long long)t * (cols / QK), cols, lane);
    if (lane == 0) y[(long long)t * rows + r] = s;
}

// The chosen experts of one token: grid.y = j < k runs matrix `part` (0 gate, 1 up, 2 down) of expert ids[j], whose device
// address is table[ids[j]·3 + part], on input vector j·inputStride (inputStride 0: every expert reads the same input).
// y [k, rows].
extern "C" __global__ void matvec_experts(float* y, const unsigned long long* table, const int* ids, int part,
    long long rowStride, int type, const float* x, const block_q8_0* xq, int inputStride, int rows, int cols)
{
    int lane = threadIdx.x & 31, r = blockIdx.x * MATVEC_WARPS + (threadIdx.x >> 5), j = blockIdx.y;
    if (r >= rows) return;
    const unsigned char* w = (const unsigned char*)table[(long long)ids[j] * 3 + part];
    long long input = (long long)j * inputStride;
    float s = row_dot(w + (long long)r * rowStride, type, x + input, xq + input / QK, cols, lane);
    if (lane == 0) y[(long long)j * rows + r] = s;
}
