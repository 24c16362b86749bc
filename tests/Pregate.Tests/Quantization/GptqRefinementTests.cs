// GPTQ's refinements on their own: the Q4_0 scale search against ggml's max/−8 scale, the block loss it scores against the
// sweep's real loss, act-order, the least-squares scale re-fit, determinism, and the output matrix's probability-weighted
// per-row Hessians against their definition.
using Pregate.Core;
using Pregate.Engine;
using Xunit.Abstractions;

namespace Pregate.Tests.Quantization;

public sealed class GptqRefinementTests(ITestOutputHelper output)
{
    private static double[] Gaussian(int n, ulong seed, string stream)
    {
        var rng = new SeededRandom(seed, stream);
        var x = new double[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = Math.Max(rng.NextDouble(), 1e-12), u2 = rng.NextDouble();
            x[i] = Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
        }
        return x;
    }

    // Gram matrix Σ x xᵀ of inputs x = z·A + noise with correlated features.
    private static double[] CorrelatedHessian(int cols, int samples, int latent, ulong seed)
    {
        var z = Gaussian(samples * latent, seed, "z");
        var mix = Gaussian(latent * cols, seed, "mix");
        var noise = Gaussian(samples * cols, seed, "noise");
        var scale = Gaussian(cols, seed, "scale");
        var x = new double[samples * cols];
        for (int s = 0; s < samples; s++)
            for (int c = 0; c < cols; c++)
            {
                double v = 0.1 * noise[s * cols + c];
                for (int l = 0; l < latent; l++) v += z[s * latent + l] * mix[l * cols + c];
                x[s * cols + c] = v * Math.Exp(0.5 * scale[c]);
            }
        var h = new double[cols * cols];
        for (int s = 0; s < samples; s++)
            for (int i = 0; i < cols; i++)
                for (int j = 0; j < cols; j++) h[i * cols + j] += x[s * cols + i] * x[s * cols + j];
        return h;
    }

    private static float[] Weights(int n, ulong seed)
    {
        var g = Gaussian(n, seed, "w");
        var outlier = new SeededRandom(seed, "outliers");
        var w = new float[n];
        for (int i = 0; i < n; i++) w[i] = (float)(g[i] * (outlier.NextDouble() < 0.02 ? 4 : 1));
        return w;
    }

    private static double Fp16Scale(ReadOnlySpan<byte> block) => Fp16.ToFloat((ushort)(block[0] | (block[1] << 8)));

    // Σ h_i (x_i − d·q_i)² with q_i = clamp(round(x_i/d), −8, 7): the importance-weighted error of scale d.
    private static double WeightedError(ReadOnlySpan<double> x, ReadOnlySpan<double> h, double d)
    {
        double e = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double q = d != 0 ? Math.Clamp(Math.Round(x[i] / d), -8, 7) : 0;
            e += h[i] * (x[i] - d * q) * (x[i] - d * q);
        }
        return e;
    }

    // With a diagonal H the search's criterion is the importance-weighted error Σ h_i (w_i − d·q_i)², as llama.cpp's
    // imatrix quantizer uses. On seeded blocks with random importances (and occasional outliers) the chosen fp16 scale never
    // has a larger weighted error than ggml's max/−8, and lowers it on average by more than 10%.
    [Fact]
    public void WeightedScaleSearchNeverLosesToMaxOverMinus8()
    {
        const int bs = 32, blocks = 2000;
        var x = Gaussian(bs * blocks, 21, "x");
        var logH = Gaussian(bs * blocks, 21, "h");
        var outlier = new SeededRandom(21, "outliers");
        var block = new byte[18];
        var scratch = new double[bs];
        var u = new double[bs * bs];
        var floats = new float[bs];
        double sumRef = 0, sumSearch = 0, worstRatio = 0;
        int better = 0;
        for (int b = 0; b < blocks; b++)
        {
            var xb = x.AsSpan(b * bs, bs);
            if (outlier.NextDouble() < 0.3) xb[(int)(outlier.NextULong() % bs)] *= 5;
            var h = logH.AsSpan(b * bs, bs).ToArray().Select(v => Math.Exp(1.5 * v)).ToArray();
            // H = diag(h): U, the upper Cholesky factor of H⁻¹, is diag(1/√h).
            Array.Clear(u);
            for (int i = 0; i < bs; i++) u[i * bs + i] = 1 / Math.Sqrt(h[i]);
            for (int i = 0; i < bs; i++) floats[i] = (float)xb[i];
            Quantize.QuantizeQ4_0(floats, block);
            double dRef = Fp16Scale(block);
            double eRef = WeightedError(xb, h, dRef);
            Assert.Equal(eRef, Gptq.BlockLoss(xb, u, bs, 0, dRef, scratch), 1e-9 * Math.Max(1, eRef));
            Gptq.SearchQ4_0Scale(xb, u, bs, 0, block, scratch);
            double eSearch = WeightedError(xb, h, Fp16Scale(block));
            Assert.True(eSearch <= eRef, $"block {b}: searched scale error {eSearch} > max/−8 error {eRef}");
            if (eSearch < eRef) better++;
            sumRef += eRef;
            sumSearch += eSearch;
            worstRatio = Math.Max(worstRatio, eSearch / eRef);
        }
        output.WriteLine($"{blocks} blocks: weighted error max/−8 {sumRef:E4}, searched {sumSearch:E4} ({sumSearch / sumRef:P1}); " +
            $"lower in {better} blocks, worst ratio {worstRatio:F4} (must be ≤ 1)");
        Assert.True(sumSearch < 0.9 * sumRef, $"search lowered the weighted error only to {sumSearch / sumRef:P1}");
    }

    // GPTQ's loss Σ e² equals the output error (w − ŵ)ᵀ H (w − ŵ) it minimises (H⁻¹ = UᵀU), so the block loss the search
    // scores is the real objective: for a one-block row swept with damping 0, the block loss of the chosen scale equals the
    // output error of the encoded row.
    [Fact]
    public void BlockLossIsTheSweepsOutputError()
    {
        const int cols = 32;
        var h = CorrelatedHessian(cols, 200, 8, 31);
        var u = UpperFactorOfInverse(h, cols);
        var scratch = new double[cols];
        double worst = 0;
        for (int trial = 0; trial < 20; trial++)
        {
            var w = Weights(cols, 100 + (ulong)trial);
            var encoded = new byte[18];
            Gptq.QuantizeMatrix(DType.Q4_0, w, 1, cols, h, encoded, new GptqOptions { Damping = 0, ActOrder = false, RefitScales = false });
            double blockLoss = Gptq.BlockLoss(w.Select(v => (double)v).ToArray(), u, cols, 0, Fp16Scale(encoded), scratch);
            double outputError = Gptq.OutputError(DType.Q4_0, w, encoded, 1, cols, h);
            worst = Math.Max(worst, Math.Abs(blockLoss - outputError) / outputError);
        }
        output.WriteLine($"max relative |block loss − output error| over 20 rows: {worst:E2} (tolerance 1e-6)");
        Assert.True(worst <= 1e-6);
    }

    // On correlated inputs: plain GPTQ, then act-order, the scale search and the re-fit added one by one; each configuration's
    // Σ‖(W − Ŵ)X‖² printed. The full method must be below plain GPTQ by at least 10%, and the re-fit never raises the error.
    [Fact]
    public void RefinementsLowerTheOutputError()
    {
        const int rows = 64, cols = 256;
        var h = CorrelatedHessian(cols, 600, 32, 41);
        var w = Weights(rows * cols, 41);
        long bytes = rows * DTypes.ByteCount(DType.Q4_0, cols);
        double Error(GptqOptions? o)
        {
            var q = new byte[bytes];
            if (o is null) Quantize.Row(DType.Q4_0, w, q);
            else Gptq.QuantizeMatrix(DType.Q4_0, w, rows, cols, h, q, o);
            return Gptq.OutputError(DType.Q4_0, w, q, rows, cols, h);
        }
        double rtn = Error(null), plain = Error(GptqOptions.Plain);
        double act = Error(GptqOptions.Plain with { ActOrder = true });
        double search = Error(GptqOptions.Plain with { ActOrder = true, SearchScales = true });
        double full = Error(new GptqOptions());
        double searchOnlyRefit = Error(GptqOptions.Plain with { SearchScales = true, RefitScales = true });
        double searchOnly = Error(GptqOptions.Plain with { SearchScales = true });
        output.WriteLine($"q4_0 output error: rtn {rtn:E4}; gptq plain {plain:E4} ({plain / rtn:P1} of rtn), + act-order {act:E4} ({act / rtn:P1}), " +
            $"+ scale search {search:E4} ({search / rtn:P1}), + re-fit {full:E4} ({full / rtn:P1}); search without act-order {searchOnly:E4}, with re-fit {searchOnlyRefit:E4}");
        Assert.True(full < 0.9 * plain, $"full {full:E4} not 10% below plain {plain:E4}");
        Assert.True(full <= search && searchOnlyRefit <= searchOnly, "the re-fit raised the error");
    }

    // Act-order is a permutation that keeps each block's columns together (so a block's scale can still be chosen when the
    // sweep reaches it), blocks ordered by descending Σ diag(H) and columns within a block by descending diag(H).
    [Fact]
    public void ActOrderKeepsBlocksTogether()
    {
        const int cols = 128, bs = 32;
        var h = CorrelatedHessian(cols, 100, 16, 51);
        var order = Gptq.ActOrder(h, cols, bs);
        Assert.Equal(Enumerable.Range(0, cols), order.Order());
        double previousSum = double.MaxValue;
        for (int k = 0; k < cols / bs; k++)
        {
            var segment = order.AsSpan(k * bs, bs).ToArray();
            Assert.Single(segment.Select(j => j / bs).Distinct());
            double sum = segment.Sum(j => h[j * cols + j]);
            Assert.True(sum <= previousSum);
            previousSum = sum;
            for (int i = 1; i < bs; i++) Assert.True(h[segment[i] * cols + segment[i]] <= h[segment[i - 1] * cols + segment[i - 1]]);
        }
        output.WriteLine("block order: " + string.Join(" ", Enumerable.Range(0, cols / bs).Select(k => order[k * bs] / bs)));
    }

    // Same inputs, same bytes, for every type (calibration must be reproducible for a fixed seed).
    [Theory]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    [InlineData("q4_k")]
    [InlineData("q6_k")]
    public void QuantizeMatrixIsDeterministic(string name)
    {
        Assert.True(DTypes.TryParse(name, out var type));
        const int rows = 16, cols = 256;
        var h = CorrelatedHessian(cols, 300, 16, 61);
        var w = Weights(rows * cols, 61);
        var a = new byte[rows * DTypes.ByteCount(type, cols)];
        var b = new byte[a.Length];
        Gptq.QuantizeMatrix(type, w, rows, cols, h, a);
        Gptq.QuantizeMatrix(type, w, rows, cols, h, b);
        output.WriteLine($"{name}: two runs of {a.Length} bytes identical: {a.AsSpan().SequenceEqual(b)}");
        Assert.Equal(a, b);
    }

    // H_v from the stored probabilities equals Σ_t p_t(v) x_t x_tᵀ where every probability is stored; rows with unstored
    // probabilities get their unstored total times the mean Gram matrix.
    [Fact]
    public void OutputRowHessiansMatchTheirDefinition()
    {
        const int vocab = 6, d = 4, positions = 30;
        var stats = new OutputRowStatistics(vocab, d);
        var xs = Gaussian(positions * d, 71, "x");
        var logits = Gaussian(positions * vocab, 71, "logits");
        var p = new double[positions * vocab];
        var gram = new double[d * d];
        for (int t = 0; t < positions; t++)
        {
            // Token 5 gets probabilities below the threshold; the others well above it.
            var row = Enumerable.Range(0, vocab).Select(v => v == 5 ? -12.0 : logits[t * vocab + v]).ToArray();
            double max = row.Max(), sum = row.Sum(v => Math.Exp(v - max));
            var probs = row.Select(v => (float)(Math.Exp(v - max) / sum)).ToArray();
            for (int v = 0; v < vocab; v++) p[t * vocab + v] = probs[v];
            var x = xs.AsSpan(t * d, d).ToArray().Select(v => (float)v).ToArray();
            stats.Add(x, probs);
            for (int i = 0; i < d; i++)
                for (int j = 0; j < d; j++) gram[i * d + j] += (double)x[i] * x[j];
        }
        Assert.True(p.Where((_, i) => i % vocab == 5).All(v => v < OutputRowStatistics.Threshold));
        var h = new double[d * d];
        double worst = 0;
        for (int v = 0; v < vocab; v++)
        {
            stats.RowHessian(v, gram, h);
            double mass = Enumerable.Range(0, positions).Sum(t => p[t * vocab + v]);
            for (int i = 0; i < d; i++)
                for (int j = 0; j < d; j++)
                {
                    double expected = v == 5
                        ? mass / positions * gram[i * d + j]
                        : Enumerable.Range(0, positions).Sum(t => p[t * vocab + v] * (float)xs[t * d + i] * (float)xs[t * d + j]);
                    worst = Math.Max(worst, Math.Abs(h[i * d + j] - expected) / Math.Max(1e-3, Math.Abs(expected)));
                }
        }
        output.WriteLine($"{stats.Positions} positions, {stats.StoredProbabilities} stored ({stats.StoredMass:P2} of the mass); max relative error of H_v {worst:E2} (tolerance 1e-5)");
        Assert.Equal(positions * (vocab - 1), stats.StoredProbabilities);
        Assert.True(worst <= 1e-5);
    }

    // U with H⁻¹ = UᵀU, computed independently of Gptq: H⁻¹ by Gauss–Jordan, then its upper Cholesky factor in reverse order.
    private static double[] UpperFactorOfInverse(double[] h, int n)
    {
        var a = (double[])h.Clone();
        var inv = new double[n * n];
        for (int i = 0; i < n; i++) inv[i * n + i] = 1;
        for (int c = 0; c < n; c++)
        {
            int pivot = Enumerable.Range(c, n - c).MaxBy(r => Math.Abs(a[r * n + c]));
            for (int k = 0; k < n; k++)
            {
                (a[c * n + k], a[pivot * n + k]) = (a[pivot * n + k], a[c * n + k]);
                (inv[c * n + k], inv[pivot * n + k]) = (inv[pivot * n + k], inv[c * n + k]);
            }
            double f = a[c * n + c];
            for (int k = 0; k < n; k++) { a[c * n + k] /= f; inv[c * n + k] /= f; }
            for (int r = 0; r < n; r++)
            {
                if (r == c) continue;
                double g = a[r * n + c];
                for (int k = 0; k < n; k++) { a[r * n + k] -= g * a[c * n + k]; inv[r * n + k] -= g * inv[c * n + k]; }
            }
        }
        // UᵀU = M with U upper: U_ii = √(M_ii − Σ_{k<i} U_ki²), U_ij = (M_ij − Σ_{k<i} U_ki U_kj) / U_ii for j > i.
        var u = new double[n * n];
        for (int i = 0; i < n; i++)
        {
            double s = inv[i * n + i];
            for (int k = 0; k < i; k++) s -= u[k * n + i] * u[k * n + i];
            u[i * n + i] = Math.Sqrt(s);
            for (int j = i + 1; j < n; j++)
            {
                double t = inv[i * n + j];
                for (int k = 0; k < i; k++) t -= u[k * n + i] * u[k * n + j];
                u[i * n + j] = t / u[i * n + i];
            }
        }
        return u;
    }
}
