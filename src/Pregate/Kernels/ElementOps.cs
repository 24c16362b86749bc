// Element-wise kernels of the forward pass, computed as ggml computes them (ggml-cpu ops.cpp / vec.cpp):
// rms_norm (sum of squares in double), soft_max (ggml_vec_soft_max_f32 with ggml_v_expf), swiglu (ggml_vec_swiglu_f32),
// top-k selection, and the small vector updates. Each has a scalar reference (…Scalar) the tests compare with.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Pregate.Kernels;

/// <summary>
/// Vector kernels on float spans. Output spans may be the input spans (in-place use); lengths must match
/// (<see cref="ArgumentException"/> otherwise).
/// </summary>
public static class ElementOps
{
    private static void Require(bool ok, string message)
    {
        if (!ok) throw new ArgumentException(message);
    }

    // ---- RMSNorm ----

    /// <summary>
    /// dst[i] = x[i]·s·weight[i] with s = 1/√(mean(x²) + eps), the mean accumulated in double (ggml rms_norm followed by
    /// mul). Throws <see cref="ArgumentException"/> on length mismatch.
    /// </summary>
    public static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> dst)
    {
        Require(weight.Length == x.Length && dst.Length == x.Length, "RmsNorm: x, weight and dst lengths differ");
        Scale(x, RmsScale(x, eps), dst);
        Multiply(dst, weight);
    }

    /// <summary>dst[i] = x[i]·s with s = 1/√(mean(x²) + eps) (no weight; for per-head norms apply it separately).</summary>
    public static void RmsNorm(ReadOnlySpan<float> x, float eps, Span<float> dst)
    {
        Require(dst.Length == x.Length, "RmsNorm: x and dst lengths differ");
        Scale(x, RmsScale(x, eps), dst);
    }

    /// <summary>1/√(mean(x²) + eps) with Σx² in double of float products, mean rounded to float (ggml_compute_forward_rms_norm_f32).</summary>
    internal static float RmsScale(ReadOnlySpan<float> x, float eps)
    {
        if (x.Length == 0) return 0;
        double sum = SumOfSquares(x);
        float mean = (float)(sum / x.Length);
        return 1.0f / MathF.Sqrt(mean + eps);
    }

    internal static double SumOfSquares(ReadOnlySpan<float> x)
    {
        ref float p = ref MemoryMarshal.GetReference(x);
        int n = x.Length, i = 0;
        double sum = 0;
        if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            Vector256<double> a0 = default, a1 = default;
            for (; i + 8 <= n; i += 8)
            {
                var v = Vector256.LoadUnsafe(ref p, (nuint)i);
                var sq = v * v;
                a0 += Vector256.WidenLower(sq);
                a1 += Vector256.WidenUpper(sq);
            }
            var a = a0 + a1;
            sum = (a.GetElement(0) + a.GetElement(1)) + (a.GetElement(2) + a.GetElement(3));
        }
        for (; i < n; i++)
        {
            float v = Unsafe.Add(ref p, i);
            sum += v * v;
        }
        return sum;
    }

    internal static float RmsScaleScalar(ReadOnlySpan<float> x, float eps)
    {
        double sum = 0;
        foreach (float v in x) sum += v * v;
        float mean = (float)(sum / x.Length);
        return 1.0f / MathF.Sqrt(mean + eps);
    }

    // ---- Softmax ----

    /// <summary>
    /// In place x[i] = e^(x[i]−max) / Σ e^(x[j]−max), as ggml soft_max: exps with ggml's vector expf where 8 lanes fit
    /// (expf for the rest), sum in double, then one multiply by (float)(1/sum). An empty span is left as is.
    /// </summary>
    public static void Softmax(Span<float> x)
    {
        if (x.Length == 0) return;
        float max = float.NegativeInfinity;
        foreach (float v in x) max = max > v ? max : v;
        ref float p = ref MemoryMarshal.GetReference(x);
        int n = x.Length, i = 0;
        double sum = 0;
        if (VectorMath.HasExp256)
        {
            var vmax = Vector256.Create(max);
            for (; i + 8 <= n; i += 8)
            {
                var e = VectorMath.Exp(Vector256.LoadUnsafe(ref p, (nuint)i) - vmax);
                e.StoreUnsafe(ref p, (nuint)i);
                sum += VectorMath.HorizontalSum(e);
            }
        }
        for (; i < n; i++)
        {
            float e = MathF.Exp(Unsafe.Add(ref p, i) - max);
            sum += e;
            Unsafe.Add(ref p, i) = e;
        }
        Scale(x, (float)(1.0 / sum));
    }

    internal static void SoftmaxScalar(Span<float> x)
    {
        if (x.Length == 0) return;
        float max = float.NegativeInfinity;
        foreach (float v in x) max = max > v ? max : v;
        double sum = 0;
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = MathF.Exp(x[i] - max);
            sum += x[i];
        }
        float s = (float)(1.0 / sum);
        for (int i = 0; i < x.Length; i++) x[i] *= s;
    }

    // ---- SwiGLU ----

    /// <summary>
    /// In place a[i] = silu(a[i])·b[i], silu(v) = v/(1+e^−v) (ggml_vec_swiglu_f32: ggml's vector expf in 8-lane blocks,
    /// expf for the rest). Throws <see cref="ArgumentException"/> on length mismatch.
    /// </summary>
    public static void SiluMul(Span<float> a, ReadOnlySpan<float> b)
    {
        Require(a.Length == b.Length, "SiluMul: lengths differ");
        ref float pa = ref MemoryMarshal.GetReference(a);
        ref float pb = ref MemoryMarshal.GetReference(b);
        int n = a.Length, i = 0;
        if (VectorMath.HasExp256)
        {
            var one = Vector256.Create(1f);
            for (; i + 8 <= n; i += 8)
            {
                var v = Vector256.LoadUnsafe(ref pa, (nuint)i);
                var silu = v / (one + VectorMath.Exp(Vector256<float>.Zero - v));
                (silu * Vector256.LoadUnsafe(ref pb, (nuint)i)).StoreUnsafe(ref pa, (nuint)i);
            }
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            var one = Vector128.Create(1f);
            for (; i + 4 <= n; i += 4)
            {
                var v = Vector128.LoadUnsafe(ref pa, (nuint)i);
                var silu = v / (one + VectorMath.Exp(Vector128<float>.Zero - v));
                (silu * Vector128.LoadUnsafe(ref pb, (nuint)i)).StoreUnsafe(ref pa, (nuint)i);
            }
        }
        for (; i < n; i++)
        {
            float v = Unsafe.Add(ref pa, i);
            Unsafe.Add(ref pa, i) = v / (1.0f + MathF.Exp(-v)) * Unsafe.Add(ref pb, i);
        }
    }

    internal static void SiluMulScalar(Span<float> a, ReadOnlySpan<float> b)
    {
        for (int i = 0; i < a.Length; i++) a[i] = a[i] / (1.0f + MathF.Exp(-a[i])) * b[i];
    }

    // ---- Top-k ----

    /// <summary>
    /// The <paramref name="k"/> largest scores in descending order: ids[j] is the index, values[j] the score. Ties keep
    /// the lower index first; NaN ranks below every number. Throws <see cref="ArgumentException"/> when k is negative,
    /// larger than the number of scores, or the outputs are shorter than k.
    /// </summary>
    public static void TopK(ReadOnlySpan<float> scores, int k, Span<int> ids, Span<float> values)
    {
        Require(k >= 0 && k <= scores.Length, $"TopK: k = {k} with {scores.Length} scores");
        Require(ids.Length >= k && values.Length >= k, "TopK: outputs shorter than k");
        int count = 0;
        for (int i = 0; i < scores.Length && k > 0; i++)
        {
            float v = scores[i];
            if (count == k && !Before(v, values[k - 1])) continue;
            int pos = count < k ? count++ : k - 1;
            while (pos > 0 && Before(v, values[pos - 1]))
            {
                values[pos] = values[pos - 1];
                ids[pos] = ids[pos - 1];
                pos--;
            }
            values[pos] = v;
            ids[pos] = i;
        }
    }

    // Strictly ahead in the ranking: larger, or a number against NaN. Equal scores never overtake (lower index wins).
    private static bool Before(float a, float b) => a > b || (float.IsNaN(b) && !float.IsNaN(a));

    // ---- Small vector updates ----

    /// <summary>Σ a[i]·b[i] (the F32 dot kernel of the mat-vec). Throws <see cref="ArgumentException"/> on length mismatch.</summary>
    public static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b) => VecDot.F32(a, b);

    /// <summary>dst[i] = a[i] + b[i].</summary>
    public static void Add(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> dst)
    {
        Require(a.Length == b.Length && dst.Length == a.Length, "Add: lengths differ");
        ref float pa = ref MemoryMarshal.GetReference(a);
        ref float pb = ref MemoryMarshal.GetReference(b);
        ref float pd = ref MemoryMarshal.GetReference(dst);
        int n = a.Length, i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= n; i += 8)
                (Vector256.LoadUnsafe(ref pa, (nuint)i) + Vector256.LoadUnsafe(ref pb, (nuint)i)).StoreUnsafe(ref pd, (nuint)i);
        else if (Vector128.IsHardwareAccelerated)
            for (; i + 4 <= n; i += 4)
                (Vector128.LoadUnsafe(ref pa, (nuint)i) + Vector128.LoadUnsafe(ref pb, (nuint)i)).StoreUnsafe(ref pd, (nuint)i);
        for (; i < n; i++) Unsafe.Add(ref pd, i) = Unsafe.Add(ref pa, i) + Unsafe.Add(ref pb, i);
    }

    /// <summary>y[i] += x[i] (residual add).</summary>
    public static void Add(Span<float> y, ReadOnlySpan<float> x) => Add(y, x, y);

    /// <summary>x[i] ·= s.</summary>
    public static void Scale(Span<float> x, float s) => Scale(x, s, x);

    /// <summary>dst[i] = x[i]·s.</summary>
    public static void Scale(ReadOnlySpan<float> x, float s, Span<float> dst)
    {
        Require(dst.Length == x.Length, "Scale: lengths differ");
        ref float px = ref MemoryMarshal.GetReference(x);
        ref float pd = ref MemoryMarshal.GetReference(dst);
        int n = x.Length, i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var vs = Vector256.Create(s);
            for (; i + 8 <= n; i += 8) (Vector256.LoadUnsafe(ref px, (nuint)i) * vs).StoreUnsafe(ref pd, (nuint)i);
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            var vs = Vector128.Create(s);
            for (; i + 4 <= n; i += 4) (Vector128.LoadUnsafe(ref px, (nuint)i) * vs).StoreUnsafe(ref pd, (nuint)i);
        }
        for (; i < n; i++) Unsafe.Add(ref pd, i) = Unsafe.Add(ref px, i) * s;
    }

    /// <summary>x[i] ·= w[i].</summary>
    public static void Multiply(Span<float> x, ReadOnlySpan<float> w)
    {
        Require(w.Length == x.Length, "Multiply: lengths differ");
        ref float px = ref MemoryMarshal.GetReference(x);
        ref float pw = ref MemoryMarshal.GetReference(w);
        int n = x.Length, i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= n; i += 8)
                (Vector256.LoadUnsafe(ref px, (nuint)i) * Vector256.LoadUnsafe(ref pw, (nuint)i)).StoreUnsafe(ref px, (nuint)i);
        else if (Vector128.IsHardwareAccelerated)
            for (; i + 4 <= n; i += 4)
                (Vector128.LoadUnsafe(ref px, (nuint)i) * Vector128.LoadUnsafe(ref pw, (nuint)i)).StoreUnsafe(ref px, (nuint)i);
        for (; i < n; i++) Unsafe.Add(ref px, i) *= Unsafe.Add(ref pw, i);
    }

    /// <summary>
    /// y[i] = y[i] + w·x[i], the product rounded before the add (as llama.cpp's mul-then-add of weighted expert outputs),
    /// so every path gives the same bits.
    /// </summary>
    public static void WeightedAdd(Span<float> y, float w, ReadOnlySpan<float> x)
    {
        Require(x.Length == y.Length, "WeightedAdd: lengths differ");
        ref float py = ref MemoryMarshal.GetReference(y);
        ref float px = ref MemoryMarshal.GetReference(x);
        int n = y.Length, i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var vw = Vector256.Create(w);
            for (; i + 8 <= n; i += 8)
                (Vector256.LoadUnsafe(ref py, (nuint)i) + Vector256.LoadUnsafe(ref px, (nuint)i) * vw).StoreUnsafe(ref py, (nuint)i);
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            var vw = Vector128.Create(w);
            for (; i + 4 <= n; i += 4)
                (Vector128.LoadUnsafe(ref py, (nuint)i) + Vector128.LoadUnsafe(ref px, (nuint)i) * vw).StoreUnsafe(ref py, (nuint)i);
        }
        for (; i < n; i++) Unsafe.Add(ref py, i) += Unsafe.Add(ref px, i) * w;
    }
}
