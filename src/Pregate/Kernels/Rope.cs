// Rotary position embedding as ggml computes it (ggml-cpu ops.cpp rope_f32, ggml_rope_cache_init, rope_yarn with
// freq_scale 1 and no YaRN): θ_i = pos·s^i with s = powf(base, −2/n_dims) applied by repeated float multiplication,
// cos/sin in float. NORMAL rotates adjacent pairs (2i, 2i+1) (llama/Mixtral GGUF); NEOX rotates (i, i + n_dims/2) (HF,
// Qwen, OLMoE). Dimensions past n_dims are left unchanged.

namespace Pregate.Kernels;

/// <summary>Which pairs of dimensions a rotation acts on.</summary>
public enum RopeMode
{
    /// <summary>Adjacent pairs (2i, 2i+1).</summary>
    Normal,

    /// <summary>Half split: pairs (i, i + n_dims/2).</summary>
    Neox,
}

/// <summary>Rotary position embedding over [heads, headDim] vectors, in place.</summary>
public static class Rope
{
    /// <summary>
    /// Fills cosSin[2i] = cos θ_i, cosSin[2i+1] = sin θ_i for i &lt; rotaryDims/2, θ_i = position·base^(−2i/rotaryDims)
    /// computed as ggml does (θ_0 = position, θ_{i+1} = θ_i·powf(base, −2/rotaryDims) in float). Throws
    /// <see cref="ArgumentException"/> when rotaryDims is odd or not positive, or cosSin is shorter than rotaryDims.
    /// </summary>
    public static void CosSin(int position, float freqBase, int rotaryDims, Span<float> cosSin)
    {
        if (rotaryDims <= 0 || rotaryDims % 2 != 0) throw new ArgumentException($"rotary dims must be positive and even, got {rotaryDims}", nameof(rotaryDims));
        if (cosSin.Length < rotaryDims) throw new ArgumentException("cosSin shorter than rotaryDims", nameof(cosSin));
        float thetaScale = MathF.Pow(freqBase, -2.0f / rotaryDims);
        float theta = position;
        for (int i0 = 0; i0 < rotaryDims; i0 += 2)
        {
            cosSin[i0] = MathF.Cos(theta);
            cosSin[i0 + 1] = MathF.Sin(theta);
            theta *= thetaScale;
        }
    }

    /// <summary>
    /// Rotates each of the <paramref name="heads"/> vectors of <paramref name="headDim"/> values in x by the angles in
    /// <paramref name="cosSin"/> (from <see cref="CosSin"/>; its length is the number of rotated dims, even and at most
    /// headDim): x0' = x0·cos − x1·sin, x1' = x0·sin + x1·cos. Throws <see cref="ArgumentException"/> on bad sizes.
    /// </summary>
    public static void Apply(Span<float> x, int heads, int headDim, ReadOnlySpan<float> cosSin, RopeMode mode)
    {
        int nDims = cosSin.Length;
        if (heads < 0 || headDim <= 0 || x.Length != (long)heads * headDim)
            throw new ArgumentException($"x has {x.Length} values, expected {heads}×{headDim}", nameof(x));
        if (nDims == 0 || nDims % 2 != 0 || nDims > headDim)
            throw new ArgumentException($"rotary dims {nDims} must be even and in 2..{headDim}", nameof(cosSin));
        int half = nDims / 2;
        for (int h = 0; h < heads; h++)
        {
            var v = x.Slice(h * headDim, headDim);
            for (int i0 = 0; i0 < nDims; i0 += 2)
            {
                float cos = cosSin[i0], sin = cosSin[i0 + 1];
                int a = mode == RopeMode.Normal ? i0 : i0 / 2;
                int b = mode == RopeMode.Normal ? i0 + 1 : i0 / 2 + half;
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * cos - x1 * sin;
                v[b] = x0 * sin + x1 * cos;
            }
        }
    }

    /// <summary>
    /// Rotates x ([heads, headDim]) for <paramref name="position"/>; <paramref name="rotaryDims"/> ≤ 0 means headDim.
    /// Throws <see cref="ArgumentException"/> on bad sizes.
    /// </summary>
    public static void Apply(Span<float> x, int heads, int headDim, int position, float freqBase, RopeMode mode, int rotaryDims = 0)
    {
        if (rotaryDims <= 0) rotaryDims = headDim;
        if (rotaryDims > headDim) throw new ArgumentException($"rotary dims {rotaryDims} exceed head dim {headDim}", nameof(rotaryDims));
        Span<float> cosSin = rotaryDims <= 1024 ? stackalloc float[rotaryDims] : new float[rotaryDims];
        CosSin(position, freqBase, rotaryDims, cosSin);
        Apply(x, heads, headDim, cosSin, mode);
    }
}
