// Block quantizers and GPTQ on their own: quantize → dequantize error bounds per block type, per-element level access
// (BlockGrid) against ggml's decoding, and GPTQ's output error on correlated inputs against round-to-nearest.
using Pregate.Core;
using Xunit.Abstractions;

namespace Pregate.Tests.Quantization;

public sealed class BlockQuantTests(ITestOutputHelper output)
{
    public static TheoryData<string> Types => new() { "q8_0", "q4_0", "q4_k", "q6_k" };

    private static float[] Gaussian(int n, ulong seed, string stream)
    {
        var rng = new SeededRandom(seed, stream);
        var x = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = Math.Max(rng.NextDouble(), 1e-12), u2 = rng.NextDouble();
            x[i] = (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return x;
    }

    // Worst error per block relative to the block's largest magnitude, and RMS error relative to RMS value, on Gaussian rows.
    // RMS bounds sit above uniform rounding noise (step/√12 for a step of amax/levels). Bounds: q8_0 ≤ 0.6 steps of amax/127 (half a step plus fp16 rounding of d); q4_0 ≤ one step amax/8 (the clipped end);
    // q4_k ≤ amax/8 (a 15-level grid over a sub-block's range ≤ 2·amax, with 6-bit scales); q6_k ≤ amax/32.
    [Theory]
    [InlineData("q8_0", 0.6 / 127, 0.007)]
    [InlineData("q4_0", 1.05 / 8, 0.12)]
    [InlineData("q4_k", 1.0 / 8, 0.1)]
    [InlineData("q6_k", 1.0 / 32, 0.025)]
    public void QuantizeDequantizeErrorIsBounded(string name, double maxPerAmax, double maxRelativeRms)
    {
        Assert.True(DTypes.TryParse(name, out var type));
        int n = 256 * 64, bs = DTypes.BlockSize(type);
        var x = Gaussian(n, 11, name);
        var bytes = new byte[DTypes.ByteCount(type, n)];
        Quantize.Row(type, x, bytes);
        var y = new float[n];
        Quantize.Dequantize(type, bytes, y);
        double worst = 0, se = 0, sx = 0;
        for (int b = 0; b < n / bs; b++)
        {
            double amax = 0, err = 0;
            for (int i = b * bs; i < (b + 1) * bs; i++)
            {
                amax = Math.Max(amax, Math.Abs(x[i]));
                err = Math.Max(err, Math.Abs(x[i] - y[i]));
                se += (x[i] - y[i]) * (double)(x[i] - y[i]);
                sx += x[i] * (double)x[i];
            }
            worst = Math.Max(worst, err / amax);
        }
        double rms = Math.Sqrt(se / sx);
        output.WriteLine($"{name}: worst block error {worst:F5} of amax (bound {maxPerAmax:F5}), relative RMS error {rms:F5} (bound {maxRelativeRms})");
        Assert.True(worst <= maxPerAmax, $"{name}: worst {worst}");
        Assert.True(rms <= maxRelativeRms, $"{name}: rms {rms}");
    }

    // a·q + b from BlockGrid reproduces ggml's decoding of every element; setting a level changes that element alone.
    [Theory]
    [MemberData(nameof(Types))]
    public void BlockGridMatchesDequantization(string name)
    {
        Assert.True(DTypes.TryParse(name, out var type));
        int bs = DTypes.BlockSize(type), bb = DTypes.BlockBytes(type), blocks = 8;
        var x = Gaussian(bs * blocks, 5, name);
        var bytes = new byte[bb * blocks];
        Quantize.Row(type, x, bytes);
        var decoded = new float[bs];
        var after = new float[bs];
        (int lo, int hi) = BlockGrid.Levels(type);
        var rng = new SeededRandom(3, name);
        double worst = 0;
        for (int b = 0; b < blocks; b++)
        {
            var block = bytes.AsSpan(b * bb, bb);
            Quantize.Dequantize(type, block, decoded);
            for (int p = 0; p < bs; p++)
            {
                (float a, float off) = BlockGrid.Affine(type, block, p);
                int q = BlockGrid.GetLevel(type, block, p);
                Assert.InRange(q, lo, hi);
                worst = Math.Max(worst, Math.Abs(a * q + off - decoded[p]));
                var copy = block.ToArray();
                int other = lo + (int)(rng.NextULong() % (ulong)(hi - lo + 1));
                BlockGrid.SetLevel(type, copy, p, other);
                Assert.Equal(other, BlockGrid.GetLevel(type, copy, p));
                Quantize.Dequantize(type, copy, after);
                for (int j = 0; j < bs; j++)
                {
                    if (j == p) Assert.True(Math.Abs(after[j] - (a * other + off)) <= 1e-6 * Math.Max(1, Math.Abs(after[j])), $"{name} element {p}");
                    else Assert.Equal(decoded[j], after[j]);
                }
                BlockGrid.SetLevel(type, copy, p, q);
                Assert.Equal(block.ToArray(), copy);
            }
        }
        output.WriteLine($"{name}: max |a·q + b − dequantized| = {worst:E2} (tolerance 1e-6)");
        Assert.True(worst <= 1e-6);
    }

    // Inputs with correlated features (x = z·A): GPTQ's Σ‖(W − Ŵ)X‖² must be below round-to-nearest's for every type.
    [Theory]
    [MemberData(nameof(Types))]
    public void GptqBeatsRoundToNearestOnCorrelatedInputs(string name)
    {
        Assert.True(DTypes.TryParse(name, out var type));
        int rows = 48, cols = 256, samples = 600, latent = 32;
        var w = Gaussian(rows * cols, 1, "w");
        var z = Gaussian(samples * latent, 2, "z");
        var mix = Gaussian(latent * cols, 3, "mix");
        var noise = Gaussian(samples * cols, 4, "noise");
        var x = new double[samples * cols];
        for (int s = 0; s < samples; s++)
            for (int c = 0; c < cols; c++)
            {
                double v = 0.1 * noise[s * cols + c];
                for (int l = 0; l < latent; l++) v += z[s * latent + l] * mix[l * cols + c];
                x[s * cols + c] = v;
            }
        var h = new double[cols * cols];
        for (int s = 0; s < samples; s++)
            for (int i = 0; i < cols; i++)
                for (int j = 0; j < cols; j++) h[i * cols + j] += x[s * cols + i] * x[s * cols + j];
        long bytes = rows * DTypes.ByteCount(type, cols);
        var rtn = new byte[bytes];
        for (int r = 0; r < rows; r++) Quantize.Row(type, w.AsSpan(r * cols, cols), rtn.AsSpan((int)(r * (bytes / rows)), (int)(bytes / rows)));
        var gptq = new byte[bytes];
        Gptq.QuantizeMatrix(type, w, rows, cols, h, gptq);
        double eRtn = Gptq.OutputError(type, w, rtn, rows, cols, h), eGptq = Gptq.OutputError(type, w, gptq, rows, cols, h);
        output.WriteLine($"{name}: output error rtn {eRtn:E3}, gptq {eGptq:E3} ({eGptq / eRtn:P1} of rtn)");
        Assert.True(eGptq < 0.9 * eRtn, $"{name}: gptq {eGptq:E3} not below 90% of rtn {eRtn:E3}");
    }

    // Without input statistics (H = 0) GPTQ is plain round-to-nearest, byte for byte.
    [Fact]
    public void GptqWithoutStatisticsIsRoundToNearest()
    {
        int rows = 4, cols = 64;
        var w = Gaussian(rows * cols, 8, "w");
        var rtn = new byte[rows * DTypes.ByteCount(DType.Q4_0, cols)];
        Quantize.Row(DType.Q4_0, w, rtn);
        var gptq = new byte[rtn.Length];
        Gptq.QuantizeMatrix(DType.Q4_0, w, rows, cols, new double[cols * cols], gptq);
        Assert.Equal(rtn, gptq);
    }
}
