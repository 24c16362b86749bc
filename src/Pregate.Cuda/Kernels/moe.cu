// The MoE block on the device: router softmax + top-k (Routing.SoftmaxTopK), SwiGLU's silu·mul, the weighted combine of
// the chosen experts' outputs and the shared expert's sigmoid gate (Qwen2-MoE).

// a ← beats b when its probability is larger, NaN ranking below every number, ties to the lower id (ElementOps.TopK).
__device__ __forceinline__ bool ranks_before(float a, int ia, float b, int ib)
{
    bool an = a != a, bn = b != b;   // NaN
    if (an != bn) return bn;
    if (an || a == b) return ia < ib;
    return a > b;
}

// One warp per token (grid.x = tokens): probs = softmax(logits) as ggml soft_max; ids/weights = the k largest (descending,
// ties to the lower id); weights /= Σ weights (summed in order, float) when renormalize. Dynamic shared memory: experts ints.
extern "C" __global__ void softmax_topk(float* probs, int* ids, float* weights, const float* logits, int experts, int k, int renormalize)
{
    extern __shared__ int taken[];
    int lane = threadIdx.x, t = blockIdx.x;
    const float* l = logits + (long long)t * experts;
    float* p = probs + (long long)t * experts;
    float m = NEG_INF;
    for (int e = lane; e < experts; e += 32) m = fmaxf(m, l[e]);
    m = warp_max(m);
    double sum = 0.0;
    for (int e = lane; e < experts; e += 32)
    {
        float v = expf(l[e] - m);
        p[e] = v;
        sum += v;
        taken[e] = 0;
    }
    sum = warp_sum_double(sum);
    float inv = (float)(1.0 / sum);
    for (int e = lane; e < experts; e += 32) p[e] *= inv;
    __syncwarp();
    for (int j = 0; j < k; j++)
    {
        float best = 0.0f;
        int bestId = -1;
        for (int e = lane; e < experts; e += 32)
            if (!taken[e] && (bestId < 0 || ranks_before(p[e], e, best, bestId))) { best = p[e]; bestId = e; }
        for (int o = 16; o > 0; o >>= 1)
        {
            float ob = __shfl_xor_sync(FULL_MASK, best, o);
            int oi = __shfl_xor_sync(FULL_MASK, bestId, o);
            if (oi >= 0 && (bestId < 0 || ranks_before(ob, oi, best, bestId))) { best = ob; bestId = oi; }
        }
        if (lane == 0)
        {
            ids[t * k + j] = bestId;
            weights[t * k + j] = best;
            taken[bestId] = 1;
        }
        __syncwarp();
    }
    if (lane == 0 && renormalize)
    {
        float s = 0.0f;
        for (int j = 0; j < k; j++) s += weights[t * k + j];
        for (int j = 0; j < k; j++) weights[t * k + j] = weights[t * k + j] / s;
    }
}

// a[i] ← silu(a[i])·b[i], silu(v) = v/(1 + e^−v) (ggml_vec_swiglu_f32).
extern "C" __global__ void silu_mul(float* a, const float* b, long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    {
        float v = a[i];
        a[i] = __fmul_rn(__fdiv_rn(v, __fadd_rn(1.0f, expf(-v))), b[i]);
    }
}

// y[i] = Σ_j weights[j]·outs[j, i] from zero, in j order, each product rounded before its add (ExpertGrouping.Combine).
extern "C" __global__ void moe_combine(float* y, const float* outs, const float* weights, int k, int d)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < d; i += gridDim.x * blockDim.x)
    {
        float acc = 0.0f;
        for (int j = 0; j < k; j++) acc = __fadd_rn(acc, __fmul_rn(outs[(long long)j * d + i], weights[j]));
        y[i] = acc;
    }
}

// out[0] = a·b over n values (one block).
extern "C" __global__ void dot(float* out, const float* a, const float* b, int n)
{
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += a[i] * b[i];
    s = block_sum(s);
    if (threadIdx.x == 0) out[0] = s;
}

// y[i] ← y[i] + x[i]·g with g = 1/(1 + e^−gateLogit[0]) (the shared expert's gate).
extern "C" __global__ void sigmoid_gated_add(float* y, const float* x, const float* gateLogit, int n)
{
    float g = 1.0f / (1.0f + expf(-gateLogit[0]));
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = __fadd_rn(y[i], __fmul_rn(x[i], g));
}
