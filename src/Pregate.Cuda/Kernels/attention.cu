// Causal GQA attention over the KV cache, decode (one token) and prefill (a block): grid (heads, tokens); token t at
// position p = firstPosition + t, head h reads kv head h / group and attends to positions 0..p.
// scores_j = (q·k_j)·scale; softmax as ggml soft_max (max, expf, Σ in double, one multiply by (float)(1/Σ));
// out = Σ_j p_j·v_j accumulated in j order with the product rounded before the add (ElementOps.WeightedAdd).
// scores: [tokens·heads, scoreStride] scratch.
extern "C" __global__ void attention(float* out, const float* q, const float* keys, const float* values, float* scores,
    int firstPosition, int heads, int headDim, int kvDim, int group, float scale, int scoreStride)
{
    int h = blockIdx.x, t = blockIdx.y, pos = firstPosition + t, qDim = heads * headDim;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const float* qh = q + (long long)t * qDim + h * headDim;
    int kvOff = (h / group) * headDim;
    float* row = scores + ((long long)t * heads + h) * scoreStride;

    for (int j = warp; j <= pos; j += warps)
    {
        const float* k = keys + (long long)j * kvDim + kvOff;
        float s = 0.0f;
        for (int i = lane; i < headDim; i += 32) s += qh[i] * k[i];
        s = warp_sum(s);
        if (lane == 0) row[j] = s * scale;
    }
    __syncthreads();

    float m = NEG_INF;
    for (int j = threadIdx.x; j <= pos; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_max(m);
    double sum = 0.0;
    for (int j = threadIdx.x; j <= pos; j += blockDim.x)
    {
        float e = expf(row[j] - m);
        row[j] = e;
        sum += e;
    }
    sum = block_sum_double(sum);
    float inv = (float)(1.0 / sum);
    for (int j = threadIdx.x; j <= pos; j += blockDim.x) row[j] *= inv;
    __syncthreads();

    float* o = out + (long long)t * qDim + h * headDim;
    for (int i = threadIdx.x; i < headDim; i += blockDim.x)
    {
        float acc = 0.0f;
        for (int j = 0; j <= pos; j++) acc = __fadd_rn(acc, __fmul_rn(values[(long long)j * kvDim + kvOff + i], row[j]));
        o[i] = acc;
    }
}
