// Element-wise kernels against their scalar references (and ggml's own vector softmax / swiglu), top-k ordering,
// and RoPE's two pairings.
using System.Runtime.Intrinsics;
using Pregate.Kernels;
using Xunit.Abstractions;

namespace Pregate.Tests.Kernels;

public unsafe class ElementOpsTests(ITestOutputHelper output)
{
    private static double MaxRelative(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double d = Math.Abs(expected[i] - actual[i]);
            worst = Math.Max(worst, d == 0 ? 0 : d / Math.Max(Math.Abs(expected[i]), 1e-30));
        }
        return worst;
    }

    [Fact]
    public void RmsNormMatchesScalar()
    {
        double worst = 0;
        foreach (int n in TestData.Lengths.Where(n => n > 0).Append(4096))
        {
            var x = TestData.Gaussian(n, n, 3f);
            var w = TestData.Gaussian(n, n + 1);
            float s = ElementOps.RmsScaleScalar(x, 1e-5f);
            var expected = x.Select((v, i) => v * s * w[i]).ToArray();
            var y = new float[n];
            ElementOps.RmsNorm(x, w, 1e-5f, y);
            worst = Math.Max(worst, MaxRelative(expected, y));
            var noWeight = new float[n];
            ElementOps.RmsNorm(x, 1e-5f, noWeight);
            worst = Math.Max(worst, MaxRelative(x.Select(v => v * s).ToArray(), noWeight));
            // In place.
            var inPlace = (float[])x.Clone();
            ElementOps.RmsNorm(inPlace, w, 1e-5f, inPlace);
            Assert.Equal(y, inPlace);
        }
        // The scale differs from the scalar one only through the double summation order (≤ 1 ulp of the mean).
        output.WriteLine($"rms_norm: max relative difference to scalar {worst:G3} (tolerance 2.5e-7)");
        Assert.True(worst <= 2.5e-7);
        var ones = Enumerable.Repeat(2f, 64).ToArray();
        var unit = new float[64];
        ElementOps.RmsNorm(ones, 0f, unit);
        Assert.All(unit, v => Assert.Equal(1f, v));
    }

    [Fact]
    public void SoftmaxMatchesScalarAndGgml()
    {
        var api = GgmlNative.Functions;
        double worst = 0;
        foreach (int n in TestData.Lengths.Where(n => n > 0).Append(1000))
        {
            var x = TestData.Gaussian(n, 50 + n, 4f);
            var expected = (float[])x.Clone();
            ElementOps.SoftmaxScalar(expected);
            var y = (float[])x.Clone();
            ElementOps.Softmax(y);
            worst = Math.Max(worst, MaxRelative(expected, y));
            Assert.InRange(y.Sum(v => (double)v), 1 - 1e-5, 1 + 1e-5);

            // ggml soft_max: max, ggml_vec_soft_max_f32 (exps + double sum), then scale by 1/sum.
            float max = x.Max();
            var g = new float[n];
            double sum;
            fixed (float* pg = g) fixed (float* px = x) sum = api.SoftMaxF32(n, pg, px, max);
            float inv = (float)(1.0 / sum);
            // Identical where ggml's 8-wide expf runs here too; otherwise expf everywhere (within 1e-6).
            for (int i = 0; i < n; i++)
                if (VectorMath.HasExp256) Assert.Equal(BitConverter.SingleToUInt32Bits(g[i] * inv), BitConverter.SingleToUInt32Bits(y[i]));
                else Assert.True(Math.Abs(g[i] * inv - y[i]) <= 1e-6 * Math.Abs(y[i]) + 1e-30);
        }
        output.WriteLine($"softmax: max relative difference to scalar (expf) {worst:G3} (tolerance 1e-6); identical to ggml");
        Assert.True(worst < 1e-6);

        var masked = new[] { 0f, float.NegativeInfinity, 1f, float.NegativeInfinity, 2f, 3f, 4f, 5f, 6f };
        ElementOps.Softmax(masked);
        Assert.Equal(0f, masked[1]);
        Assert.Equal(0f, masked[3]);
    }

    [Fact]
    public void SiluMulMatchesScalarAndGgml()
    {
        var api = GgmlNative.Functions;
        double worst = 0;
        foreach (int n in TestData.Lengths.Append(4096))
        {
            var a = TestData.Gaussian(n, 70 + n, 5f);
            var b = TestData.Gaussian(n, 80 + n);
            var expected = (float[])a.Clone();
            ElementOps.SiluMulScalar(expected, b);
            var y = (float[])a.Clone();
            ElementOps.SiluMul(y, b);
            worst = Math.Max(worst, MaxRelative(expected, y));
            var g = new float[n];
            fixed (float* pg = g) fixed (float* pa = a) fixed (float* pb = b) api.SwigluF32(n, pg, pa, pb);
            for (int i = 0; i < n; i++)
                if (VectorMath.HasExp256) Assert.Equal(BitConverter.SingleToUInt32Bits(g[i]), BitConverter.SingleToUInt32Bits(y[i]));
                else Assert.True(Math.Abs(g[i] - y[i]) <= 1e-6 * Math.Abs(y[i]) + 1e-30);
        }
        output.WriteLine($"silu·mul: max relative difference to scalar (expf) {worst:G3} (tolerance 1e-6); identical to ggml");
        Assert.True(worst < 1e-6);
    }

    [Fact]
    public void VectorExpIsAccurateAndHandlesExtremes()
    {
        if (!VectorMath.HasExp256) return;   // the 8-wide form needs AVX2 + FMA; callers fall back to expf
        double worst = 0;
        var rng = new Random(9);
        for (int k = 0; k < 100_000; k++)
        {
            var v = Vector256.Create((float)(rng.NextDouble() * 190 - 100));
            float e = VectorMath.Exp(v).GetElement(0);
            float e128 = VectorMath.Exp(v.GetLower()).GetElement(0);
            double exact = Math.Exp(v.GetElement(0));
            if (exact < 1e-37 || exact > 3e38) continue;
            worst = Math.Max(worst, Math.Abs(e - exact) / exact);
            Assert.Equal(e, e128);
        }
        output.WriteLine($"ggml_v_expf port: max relative error {worst:G3} over [-100, 90] (tolerance 3e-7)");
        Assert.True(worst < 3e-7);
        Assert.Equal(0f, VectorMath.Exp(Vector256.Create(float.NegativeInfinity)).GetElement(0));
        Assert.Equal(0f, VectorMath.Exp(Vector256.Create(-200f)).GetElement(0));
        Assert.Equal(float.PositiveInfinity, VectorMath.Exp(Vector256.Create(200f)).GetElement(0));
        Assert.Equal(1f, VectorMath.Exp(Vector256.Create(0f)).GetElement(0));
    }

    [Fact]
    public void SmallVectorOpsMatchScalar()
    {
        foreach (int n in TestData.Lengths)
        {
            var a = TestData.Gaussian(n, 1 + n);
            var b = TestData.Gaussian(n, 2 + n);
            var sum = new float[n];
            ElementOps.Add(a, b, sum);
            Assert.Equal(a.Select((v, i) => v + b[i]).ToArray(), sum);
            var acc = (float[])a.Clone();
            ElementOps.Add(acc, b);
            Assert.Equal(sum, acc);
            var scaled = (float[])a.Clone();
            ElementOps.Scale(scaled, 0.37f);
            Assert.Equal(a.Select(v => v * 0.37f).ToArray(), scaled);
            var mul = (float[])a.Clone();
            ElementOps.Multiply(mul, b);
            Assert.Equal(a.Select((v, i) => v * b[i]).ToArray(), mul);
            var y = (float[])a.Clone();
            ElementOps.WeightedAdd(y, -1.25f, b);
            Assert.Equal(a.Select((v, i) => v + b[i] * -1.25f).ToArray(), y);
            float dot = ElementOps.Dot(a, b);
            double exact = a.Select((v, i) => (double)v * b[i]).Sum();
            Assert.True(Math.Abs(dot - exact) <= 1e-6 * a.Select((v, i) => Math.Abs((double)v * b[i])).Sum() + 1e-30);
        }
        Assert.Throws<ArgumentException>(() => ElementOps.Add(new float[3], new float[4], new float[3]));
        Assert.Throws<ArgumentException>(() => ElementOps.WeightedAdd(new float[3], 1f, new float[2]));
        Assert.Throws<ArgumentException>(() => ElementOps.SiluMul(new float[3], new float[2]));
        Assert.Throws<ArgumentException>(() => ElementOps.RmsNorm(new float[3], new float[2], 1e-5f, new float[3]));
    }

    [Fact]
    public void TopKIsDescendingWithLowerIndexFirstOnTies()
    {
        float[] scores = [0.1f, 0.5f, 0.3f, 0.5f, float.NaN, 0.7f, 0.3f, -1f, 0.5f];
        var ids = new int[5];
        var values = new float[5];
        ElementOps.TopK(scores, 5, ids, values);
        Assert.Equal(new[] { 5, 1, 3, 8, 2 }, ids);
        Assert.Equal(new[] { 0.7f, 0.5f, 0.5f, 0.5f, 0.3f }, values);

        ElementOps.TopK(scores, scores.Length, ids = new int[9], values = new float[9]);
        Assert.Equal(new[] { 5, 1, 3, 8, 2, 6, 0, 7, 4 }, ids);
        Assert.True(float.IsNaN(values[8]));

        ElementOps.TopK(scores, 0, Span<int>.Empty, Span<float>.Empty);
        Assert.Throws<ArgumentException>(() => ElementOps.TopK(scores, 10, new int[10], new float[10]));
        Assert.Throws<ArgumentException>(() => ElementOps.TopK(scores, 2, new int[1], new float[2]));

        // Against a stable sort on random scores with many ties.
        var rng = new Random(5);
        for (int round = 0; round < 200; round++)
        {
            var s = Enumerable.Range(0, 64).Select(_ => (float)rng.Next(0, 10)).ToArray();
            int k = rng.Next(1, 65);
            var expected = s.Select((v, i) => (v, i)).OrderByDescending(p => p.v).ThenBy(p => p.i).Take(k).Select(p => p.i).ToArray();
            var got = new int[k];
            ElementOps.TopK(s, k, got, new float[k]);
            Assert.Equal(expected, got);
        }
    }

    [Fact]
    public void RopeNeoxOnPermutedVectorEqualsNormal()
    {
        const int heads = 3, headDim = 64;
        foreach (int pos in new[] { 0, 1, 7, 1000, 32767 })
        {
            var x = TestData.Gaussian(heads * headDim, pos);
            // NEOX pairs (i, i + d/2) hold what NORMAL pairs (2i, 2i+1) hold.
            var permuted = new float[x.Length];
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < headDim / 2; i++)
                {
                    permuted[h * headDim + i] = x[h * headDim + 2 * i];
                    permuted[h * headDim + i + headDim / 2] = x[h * headDim + 2 * i + 1];
                }
            var normal = (float[])x.Clone();
            Rope.Apply(normal, heads, headDim, pos, 10000f, RopeMode.Normal);
            var neox = (float[])permuted.Clone();
            Rope.Apply(neox, heads, headDim, pos, 10000f, RopeMode.Neox);
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < headDim / 2; i++)
                {
                    Assert.Equal(normal[h * headDim + 2 * i], neox[h * headDim + i]);
                    Assert.Equal(normal[h * headDim + 2 * i + 1], neox[h * headDim + i + headDim / 2]);
                }
            if (pos == 0) Assert.Equal(x, normal);
        }
    }

    [Fact]
    public void RopeAnglesAndPartialRotation()
    {
        const int headDim = 128, rotary = 64;
        var cs = new float[rotary];
        Rope.CosSin(123, 1e6f, rotary, cs);
        double worst = 0;
        for (int i = 0; i < rotary / 2; i++)
        {
            double theta = 123 * Math.Pow(1e6, -2.0 * i / rotary);
            // θ is built by repeated float multiplication as in ggml; compare with the exact angle loosely.
            worst = Math.Max(worst, Math.Abs(cs[2 * i] - Math.Cos(theta)) + Math.Abs(cs[2 * i + 1] - Math.Sin(theta)));
        }
        output.WriteLine($"rope cos/sin vs exact angle: max deviation {worst:G3} (tolerance 1e-4)");
        Assert.True(worst < 1e-4);

        var x = TestData.Gaussian(2 * headDim, 8);
        var y = (float[])x.Clone();
        Rope.Apply(y, 2, headDim, 123, 1e6f, RopeMode.Neox, rotary);
        for (int h = 0; h < 2; h++)
        {
            for (int d = rotary; d < headDim; d++) Assert.Equal(x[h * headDim + d], y[h * headDim + d]);
            for (int i = 0; i < rotary / 2; i++)
            {
                int a = h * headDim + i, b = a + rotary / 2;
                double before = x[a] * (double)x[a] + x[b] * (double)x[b];
                double after = y[a] * (double)y[a] + y[b] * (double)y[b];
                Assert.True(Math.Abs(before - after) <= 1e-5 * before + 1e-12);
            }
        }
        Assert.Throws<ArgumentException>(() => Rope.Apply(new float[10], 2, 4, 1, 1e4f, RopeMode.Normal));
        Assert.Throws<ArgumentException>(() => Rope.Apply(new float[8], 2, 4, 1, 1e4f, RopeMode.Normal, 6));
        Assert.Throws<ArgumentException>(() => Rope.CosSin(1, 1e4f, 3, new float[3]));
    }
}
