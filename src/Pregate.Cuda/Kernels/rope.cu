// Rotary position embedding as ggml rope_f32 (Rope.Apply): angles come from the host's table cosSin[pos, headDim]
// (Rope.CosSin: cos θ_i, sin θ_i interleaved), so the angles are bit-identical to the CPU's. NORMAL (neox = 0) rotates
// pairs (2i, 2i+1); NEOX rotates (i, i + headDim/2). Grid: (heads, tokens); token t sits at position firstPosition + t.
extern "C" __global__ void rope(float* x, const float* cosSin, int firstPosition, int heads, int headDim, int neox)
{
    int h = blockIdx.x, t = blockIdx.y, half = headDim / 2;
    float* v = x + ((long long)t * heads + h) * headDim;
    const float* cs = cosSin + (long long)(firstPosition + t) * headDim;
    for (int p = threadIdx.x; p < half; p += blockDim.x)
    {
        int i0 = 2 * p;
        float c = cs[i0], s = cs[i0 + 1];
        int a = neox ? p : i0, b = neox ? p + half : i0 + 1;
        float x0 = v[a], x1 = v[b];
        v[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        v[b] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
    }
}
