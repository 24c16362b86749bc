// GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers", 2022, Algorithm 1)
// for ggml block formats: columns quantized in order, each column's rounding error spread over the columns not yet quantized
// through the upper Cholesky factor of H⁻¹. A block's scales are fixed when its first column is reached, from the block's
// weights as updated so far (GPTQ with groups = quant blocks); its columns then pick levels on that grid. Refinements: the
// column order follows H's diagonal block by block ("act-order" that keeps each block's columns together), a Q4_0 block's
// scale is searched for the least GPTQ loss (an importance-weighted choice, as llama.cpp's imatrix quantizer makes with
// diag(H)), and Q4_0 scales are finally re-fitted to the chosen levels by least squares in the H norm.
using System.Numerics.Tensors;

namespace Pregate.Core;

/// <summary>Settings of <see cref="Gptq.QuantizeMatrix"/>; the defaults are what <c>pregate quantize --method calibrated</c> uses.</summary>
public sealed record GptqOptions
{
    /// <summary>Damping added to H's diagonal, as a fraction of its mean diagonal.</summary>
    public double Damping { get; init; } = Gptq.DefaultDamping;

    /// <summary>Quantize blocks in order of descending Σ diag(H) over the block, and columns within a block by descending diag(H).</summary>
    public bool ActOrder { get; init; } = true;

    /// <summary>Q4_0: choose each block's scale among candidates by the GPTQ loss it gives (else ggml's max/−8).</summary>
    public bool SearchScales { get; init; } = true;

    /// <summary>Q4_0: after the sweep, re-fit each row's block scales to its levels by least squares in the H norm (kept when lower).</summary>
    public bool RefitScales { get; init; } = true;

    /// <summary>Plain GPTQ as in the paper, with ggml's reference scales: no act-order, search or re-fit.</summary>
    public static GptqOptions Plain { get; } = new() { ActOrder = false, SearchScales = false, RefitScales = false };
}

public static class Gptq
{
    /// <summary>Damping added to H's diagonal, as a fraction of its mean diagonal (the paper's 1%).</summary>
    public const double DefaultDamping = 0.01;

    // Candidate Q4_0 scales map the block's value of largest magnitude to level −(8 + s) or 7 + s for s = ±k·ScaleStep, k ≤ ScaleSteps.
    private const int ScaleSteps = 10;
    private const double ScaleStep = 0.1;

    /// <summary>
    /// Quantizes <paramref name="weights"/> [rows, cols] to <paramref name="type"/> minimising ‖(W − Q)X‖² for inputs whose
    /// Gram matrix Σ x xᵀ is <paramref name="hessian"/> [cols, cols] (H = 2XᵀX up to a factor, which does not matter).
    /// Columns with zero diagonal (inputs never seen) get unit diagonal. When H stays singular after damping the result is
    /// plain round-to-nearest. Deterministic. <paramref name="destination"/> receives rows · ByteCount(type, cols) bytes.
    /// </summary>
    /// <exception cref="ArgumentException">Unsupported type, cols not whole blocks, or mismatched lengths.</exception>
    public static void QuantizeMatrix(DType type, ReadOnlySpan<float> weights, int rows, int cols, ReadOnlySpan<double> hessian, Span<byte> destination, GptqOptions? options = null)
    {
        options ??= new GptqOptions();
        if (!BlockGrid.Supports(type)) throw new ArgumentException($"GPTQ supports q8_0, q4_0, q4_k and q6_k, not {DTypes.Name(type)}", nameof(type));
        int bs = DTypes.BlockSize(type);
        if (cols % bs != 0) throw new ArgumentException($"{cols} columns are not whole {DTypes.Name(type)} blocks of {bs}", nameof(cols));
        if (weights.Length != (long)rows * cols) throw new ArgumentException($"{weights.Length} weights for [{rows}, {cols}]", nameof(weights));
        if (hessian.Length != (long)cols * cols) throw new ArgumentException($"hessian has {hessian.Length} values, {cols}² expected", nameof(hessian));
        long rowBytes = DTypes.ByteCount(type, cols);
        if (destination.Length < rows * rowBytes) throw new ArgumentException("destination too short", nameof(destination));

        var factor = Factor(hessian, cols, bs, options);
        if (factor is null)
        {
            for (int r = 0; r < rows; r++) Quantize.Row(type, weights.Slice(r * cols, cols), destination.Slice((int)(r * rowBytes), (int)rowBytes));
            return;
        }
        (double[] damped, double[] u, int[] order) = factor.Value;
        var w = new double[(long)rows * cols];
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < cols; i++) w[(long)r * cols + i] = weights[r * cols + order[i]];
        Sweep(type, w, rows, cols, u, order, destination, options.SearchScales && type == DType.Q4_0);
        if (options.RefitScales && type == DType.Q4_0)
            for (int r = 0; r < rows; r++)
                RefitQ4_0Scales(weights.Slice(r * cols, cols), destination.Slice((int)(r * rowBytes), (int)rowBytes), damped);
    }

    /// <summary>
    /// Σ_rows (w − ŵ)ᵀ H (w − ŵ): the squared output error of the encoded matrix on the inputs whose Gram matrix is
    /// <paramref name="hessian"/> (what GPTQ minimises).
    /// </summary>
    public static double OutputError(DType type, ReadOnlySpan<float> weights, ReadOnlySpan<byte> encoded, int rows, int cols, ReadOnlySpan<double> hessian)
    {
        long rowBytes = DTypes.ByteCount(type, cols);
        var decoded = new float[cols];
        var delta = new double[cols];
        double total = 0;
        for (int r = 0; r < rows; r++)
        {
            Quantize.Dequantize(type, encoded.Slice((int)(r * rowBytes), (int)rowBytes), decoded);
            for (int j = 0; j < cols; j++) delta[j] = weights[r * cols + j] - decoded[j];
            total += QuadraticForm(hessian, delta, cols);
        }
        return total;
    }

    // The damped H (original column order), the upper Cholesky factor U of its inverse in the sweep's column order
    // (H⁻¹ = UᵀU, permuted), and that order (order[i] = original column swept i-th). Null when H's mean diagonal is not
    // positive, or H is not positive definite even with the damping raised tenfold and a hundredfold.
    private static (double[] Damped, double[] Upper, int[] Order)? Factor(ReadOnlySpan<double> hessian, int n, int blockSize, GptqOptions o)
    {
        double mean = 0;
        for (int i = 0; i < n; i++) mean += hessian[i * n + i];
        mean /= n;
        if (!(mean > 0)) return null;
        double damping = o.Damping;
        for (int attempt = 0; attempt < 3; attempt++, damping *= 10)
        {
            var h = hessian.ToArray();
            for (int i = 0; i < n; i++)
            {
                if (h[i * n + i] == 0) h[i * n + i] = 1;
                h[i * n + i] += damping * mean;
            }
            var order = o.ActOrder ? ActOrder(h, n, blockSize) : Enumerable.Range(0, n).ToArray();
            var p = new double[(long)n * n];
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) p[i * n + j] = h[order[i] * n + order[j]];
            if (!CholeskyLower(p, n)) continue;
            var inv = InverseFromCholesky(p, n);
            if (!CholeskyLower(inv, n)) continue;
            // inv now holds L₂ (lower) with H⁻¹ = L₂L₂ᵀ; U = L₂ᵀ.
            var upper = new double[(long)n * n];
            for (int i = 0; i < n; i++)
                for (int j = 0; j <= i; j++) upper[j * n + i] = inv[i * n + j];
            return (h, upper, order);
        }
        return null;
    }

    // Blocks by descending Σ diag(H) over their columns, and within each block its columns by descending diag(H) (ties by
    // index). Keeping a block's columns together lets its scales still be chosen when the sweep reaches the block.
    internal static int[] ActOrder(double[] h, int n, int blockSize)
    {
        var blocks = Enumerable.Range(0, n / blockSize)
            .Select(b => (Block: b, Sum: Enumerable.Range(b * blockSize, blockSize).Sum(j => h[j * n + j])))
            .OrderByDescending(x => x.Sum).ThenBy(x => x.Block).Select(x => x.Block);
        var order = new int[n];
        int k = 0;
        foreach (int b in blocks)
            foreach (int j in Enumerable.Range(b * blockSize, blockSize).OrderByDescending(j => h[j * n + j]).ThenBy(j => j))
                order[k++] = j;
        return order;
    }

    // One GPTQ pass over the columns of w [rows, cols] (in sweep order, updated in place), writing levels into destination.
    // When the sweep reaches a block, its scales come from ggml's reference quantizer on the block's updated weights (and,
    // with searchQ4_0, the scale search).
    private static void Sweep(DType type, double[] w, int rows, int cols, double[] u, int[] order, Span<byte> destination, bool searchQ4_0)
    {
        int bs = DTypes.BlockSize(type), bb = DTypes.BlockBytes(type);
        long rowBytes = DTypes.ByteCount(type, cols);
        var blockValues = new float[bs];
        var a = new float[(long)rows * bs];
        var b = new float[(long)rows * bs];
        var scratch = new double[bs];
        (int lo, int hi) = BlockGrid.Levels(type);
        var err = new double[rows];
        for (int i = 0; i < cols; i++)
        {
            int blockIndex = order[i] / bs, p = i % bs, position = order[i] % bs;
            if (p == 0)
                for (int r = 0; r < rows; r++)
                {
                    var block = destination.Slice((int)(r * rowBytes + (long)blockIndex * bb), bb);
                    for (int j = 0; j < bs; j++) blockValues[order[i + j] % bs] = (float)w[(long)r * cols + i + j];
                    Quantize.Row(type, blockValues, block);
                    if (searchQ4_0) SearchQ4_0Scale(w.AsSpan((int)((long)r * cols + i), bs), u, cols, i, block, scratch);
                    for (int j = 0; j < bs; j++) (a[r * bs + j], b[r * bs + j]) = BlockGrid.Affine(type, block, order[i + j] % bs);
                }
            double diag = u[(long)i * cols + i];
            for (int r = 0; r < rows; r++)
            {
                var block = destination.Slice((int)(r * rowBytes + (long)blockIndex * bb), bb);
                double x = w[(long)r * cols + i];
                float scale = a[r * bs + p], offset = b[r * bs + p];
                int q = scale != 0 ? (int)Math.Clamp(Math.Round((x - offset) / scale), lo, hi) : BlockGrid.GetLevel(type, block, position);
                BlockGrid.SetLevel(type, block, position, q);
                err[r] = (x - (scale * q + offset)) / diag;
            }
            if (i + 1 == cols) break;
            var uRow = new ReadOnlySpan<double>(u, i * cols + i + 1, cols - i - 1);
            for (int r = 0; r < rows; r++)
            {
                if (err[r] == 0) continue;
                var rest = w.AsSpan(r * cols + i + 1, cols - i - 1);
                TensorPrimitives.MultiplyAdd(uRow, -err[r], rest, rest);
            }
        }
    }

    /// <summary>
    /// Replaces the fp16 scale of the Q4_0 <paramref name="block"/> by the candidate with the least
    /// <see cref="BlockLoss"/>, when lower than the block's own: candidates map the value of largest magnitude of
    /// <paramref name="x"/> (the block's weights in sweep order, starting at sweep column <paramref name="first"/>) to level
    /// −(8 + s) or 7 + s, s = ±0.1·k for k ≤ 10, each rounded to fp16. Levels are left to the sweep.
    /// </summary>
    internal static void SearchQ4_0Scale(ReadOnlySpan<double> x, double[] u, int cols, int first, Span<byte> block, double[] scratch)
    {
        double amax = 0, max = 0;
        for (int j = 0; j < x.Length; j++)
            if (Math.Abs(x[j]) > amax) (amax, max) = (Math.Abs(x[j]), x[j]);
        if (amax == 0) return;
        ushort bestBits = (ushort)(block[0] | (block[1] << 8));
        double best = BlockLoss(x, u, cols, first, Fp16.ToFloat(bestBits), scratch);
        for (int side = 0; side < 2; side++)
            for (int k = -ScaleSteps; k <= ScaleSteps; k++)
            {
                double level = side == 0 ? -(8 + ScaleStep * k) : 7 + ScaleStep * k;
                ushort bits = Fp16.FromFloatBits((float)(max / level));
                if (bits == bestBits) continue;
                double loss = BlockLoss(x, u, cols, first, Fp16.ToFloat(bits), scratch);
                if (loss < best) (best, bestBits) = (loss, bits);
            }
        block[0] = (byte)bestBits;
        block[1] = (byte)(bestBits >> 8);
    }

    /// <summary>
    /// The GPTQ loss Σ_p e_p² a Q4_0 block with scale <paramref name="d"/> adds: e_p = (x_p − d·q_p)/U_pp with
    /// q_p = clamp(round(x_p/d), −8, 7), each column's error spread over the block's later columns through U as the sweep
    /// does. With a diagonal H this is the importance-weighted error Σ h_p (x_p − d·q_p)².
    /// </summary>
    internal static double BlockLoss(ReadOnlySpan<double> x, double[] u, int cols, int first, double d, double[] scratch)
    {
        int n = x.Length;
        x.CopyTo(scratch);
        double loss = 0;
        for (int p = 0; p < n; p++)
        {
            double v = scratch[p];
            double q = d != 0 ? Math.Clamp(Math.Round(v / d), -8, 7) : 0;
            long row = (long)(first + p) * cols + first;
            double e = (v - d * q) / u[row + p];
            loss += e * e;
            for (int j = p + 1; j < n; j++) scratch[j] -= e * u[row + j];
        }
        return loss;
    }

    /// <summary>
    /// For the fixed levels of a Q4_0 row, the block scales minimising (w − ŵ)ᵀ H (w − ŵ), ŵ = Σ_b d_b·v_b with v_b the
    /// block's levels − 8: the normal equations G d = c, G_bc = v_bᵀ H v_c, c_b = v_bᵀ H w. The fp16-rounded scales replace
    /// the row's when they lower the error. Blocks whose levels are all 8 keep their scale.
    /// </summary>
    internal static void RefitQ4_0Scales(ReadOnlySpan<float> weights, Span<byte> row, double[] h)
    {
        const int bs = 32, bb = 18;
        int cols = weights.Length, nb = cols / bs;
        var v = new double[cols];
        var wd = new double[cols];
        for (int j = 0; j < cols; j++)
        {
            v[j] = BlockGrid.GetLevel(DType.Q4_0, row.Slice(j / bs * bb, bb), j % bs) - 8;
            wd[j] = weights[j];
        }
        var hv = new double[(long)nb * cols]; // [block] H·v_b
        for (int blk = 0; blk < nb; blk++)
        {
            var y = hv.AsSpan(blk * cols, cols);
            for (int j = blk * bs; j < (blk + 1) * bs; j++)
                if (v[j] != 0) TensorPrimitives.MultiplyAdd(new ReadOnlySpan<double>(h, j * cols, cols), v[j], y, y);
        }
        var g = new double[nb * nb];
        var c = new double[nb];
        for (int b1 = 0; b1 < nb; b1++)
        {
            c[b1] = TensorPrimitives.Dot(hv.AsSpan(b1 * cols, cols), wd);
            for (int b2 = 0; b2 < nb; b2++)
                g[b1 * nb + b2] = TensorPrimitives.Dot(hv.AsSpan(b1 * cols + b2 * bs, bs), v.AsSpan(b2 * bs, bs));
        }
        if (!SolveActive(g, c, nb)) return;
        var refit = row.ToArray();
        for (int blk = 0; blk < nb; blk++)
        {
            if (g[blk * nb + blk] == 0) continue;
            ushort bits = Fp16.FromFloatBits((float)c[blk]);
            refit[blk * bb] = (byte)bits;
            refit[blk * bb + 1] = (byte)(bits >> 8);
        }
        if (OutputError(DType.Q4_0, weights, refit, 1, cols, h) < OutputError(DType.Q4_0, weights, row, 1, cols, h)) refit.CopyTo(row);
    }

    // Solves G x = c in place (c becomes x) by Gaussian elimination with partial pivoting over the indices whose diagonal
    // G_ii is positive (the others are left out). False when that system is singular.
    private static bool SolveActive(double[] g, double[] c, int n)
    {
        var m = (double[])g.Clone();
        var active = new bool[n];
        for (int i = 0; i < n; i++) active[i] = m[i * n + i] > 0;
        for (int col = 0; col < n; col++)
        {
            if (!active[col]) continue;
            int pivot = col;
            for (int r = col + 1; r < n; r++)
                if (active[r] && Math.Abs(m[r * n + col]) > Math.Abs(m[pivot * n + col])) pivot = r;
            if (m[pivot * n + col] == 0) return false;
            if (pivot != col)
            {
                for (int k = 0; k < n; k++) (m[col * n + k], m[pivot * n + k]) = (m[pivot * n + k], m[col * n + k]);
                (c[col], c[pivot]) = (c[pivot], c[col]);
            }
            for (int r = 0; r < n; r++)
            {
                if (r == col || !active[r]) continue;
                double f = m[r * n + col] / m[col * n + col];
                if (f == 0) continue;
                for (int k = 0; k < n; k++)
                    if (active[k]) m[r * n + k] -= f * m[col * n + k];
                c[r] -= f * c[col];
            }
        }
        for (int i = 0; i < n; i++)
            if (active[i]) c[i] /= m[i * n + i];
        return true;
    }

    private static double QuadraticForm(ReadOnlySpan<double> h, double[] delta, int n)
    {
        double total = 0;
        for (int j = 0; j < n; j++)
            if (delta[j] != 0) total += delta[j] * TensorPrimitives.Dot(h.Slice(j * n, n), delta);
        return total;
    }

    // In place: the lower triangle of a becomes L with A = LLᵀ (upper triangle left as is). False when A is not positive definite.
    private static bool CholeskyLower(double[] a, int n)
    {
        for (int j = 0; j < n; j++)
        {
            double s = a[j * n + j] - TensorPrimitives.Dot(new ReadOnlySpan<double>(a, j * n, j), new ReadOnlySpan<double>(a, j * n, j));
            if (!(s > 0)) return false;
            double d = Math.Sqrt(s);
            a[j * n + j] = d;
            for (int i = j + 1; i < n; i++)
                a[i * n + j] = (a[i * n + j] - TensorPrimitives.Dot(new ReadOnlySpan<double>(a, i * n, j), new ReadOnlySpan<double>(a, j * n, j))) / d;
        }
        return true;
    }

    // (LLᵀ)⁻¹ = L⁻ᵀL⁻¹ from the lower factor in l's lower triangle; a full symmetric matrix.
    private static double[] InverseFromCholesky(double[] l, int n)
    {
        var inv = new double[(long)n * n]; // L⁻¹, lower triangular
        for (int i = 0; i < n; i++)
        {
            inv[i * n + i] = 1 / l[i * n + i];
            for (int j = 0; j < i; j++)
            {
                double s = 0;
                for (int k = j; k < i; k++) s += l[i * n + k] * inv[k * n + j];
                inv[i * n + j] = -s / l[i * n + i];
            }
        }
        var result = new double[(long)n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++)
            {
                double s = 0;
                for (int k = i; k < n; k++) s += inv[k * n + i] * inv[k * n + j];
                result[i * n + j] = s;
                result[j * n + i] = s;
            }
        return result;
    }
}
