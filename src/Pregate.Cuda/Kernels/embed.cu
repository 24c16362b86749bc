// Embedding lookup: out[i] = dequantized element i of row `token` of the table (F32, F16, BF16, Q8_0, Q4_0 rows).
extern "C" __global__ void embed_row(float* out, const unsigned char* table, long long rowBytes, int type, int token, int d)
{
    const unsigned char* row = table + (long long)token * rowBytes;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < d; i += gridDim.x * blockDim.x)
        out[i] = load_weight(row, type, i);
}
