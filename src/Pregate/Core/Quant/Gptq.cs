// GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers", 2022, Algorithm 1)
// for ggml block formats: columns quantized in order, each column's rounding error spread over the columns not yet quantized
// through the upper Cholesky factor of H⁻¹. A block's scales are fixed when its first column is reached, by ggml's reference
// quantizer on the block's weights as updated so far (GPTQ with groups = quant blocks); its columns then pick levels on that grid.
using System.Numerics.Tensors;

namespace Pregate.Core;

public static class Gptq
{
    /// <summary>Damping added to H's diagonal, as a fraction of its mean diagonal (the paper's 1%).</summary>
    public const double DefaultDamping = 0.01;

    /// <summary>
    /// Quantizes <paramref name="weights"/> [rows, cols] to <paramref name="type"/> minimising ‖(W − Q)X‖² for inputs whose
    /// Gram matrix Σ x xᵀ is <paramref name="hessian"/> [cols, cols] (H = 2XᵀX up to a factor, which does not matter).
    /// Columns with zero diagonal (inputs never seen) get unit diagonal. When H stays singular after damping the result is
    /// plain round-to-nearest. <paramref name="destination"/> receives rows · ByteCount(type, cols) bytes.
    /// </summary>
    /// <exception cref="ArgumentException">Unsupported type, cols not whole blocks, or mismatched lengths.</exception>
    public static void QuantizeMatrix(DType type, ReadOnlySpan<float> weights, int rows, int cols, ReadOnlySpan<double> hessian, Span<byte> destination, double damping = DefaultDamping)
    {
        if (!BlockGrid.Supports(type)) throw new ArgumentException($"GPTQ supports q8_0, q4_0, q4_k and q6_k, not {DTypes.Name(type)}", nameof(type));
        int bs = DTypes.BlockSize(type), bb = DTypes.BlockBytes(type);
        if (cols % bs != 0) throw new ArgumentException($"{cols} columns are not whole {DTypes.Name(type)} blocks of {bs}", nameof(cols));
        if (weights.Length != (long)rows * cols) throw new ArgumentException($"{weights.Length} weights for [{rows}, {cols}]", nameof(weights));
        if (hessian.Length != (long)cols * cols) throw new ArgumentException($"hessian has {hessian.Length} values, {cols}² expected", nameof(hessian));
        long rowBytes = DTypes.ByteCount(type, cols);
        if (destination.Length < rows * rowBytes) throw new ArgumentException("destination too short", nameof(destination));

        var u = InverseCholeskyUpper(hessian, cols, damping);
        if (u is null)
        {
            for (int r = 0; r < rows; r++) Quantize.Row(type, weights.Slice(r * cols, cols), destination.Slice((int)(r * rowBytes), (int)rowBytes));
            return;
        }
        var w = new double[(long)rows * cols];
        for (int i = 0; i < w.Length; i++) w[i] = weights[i];
        var blockValues = new float[bs];
        var a = new float[(long)rows * bs];
        var b = new float[(long)rows * bs];
        (int lo, int hi) = BlockGrid.Levels(type);
        var err = new double[rows];
        for (int i = 0; i < cols; i++)
        {
            int blockIndex = i / bs, p = i % bs;
            if (p == 0)
                for (int r = 0; r < rows; r++)
                {
                    var block = destination.Slice((int)(r * rowBytes + (long)blockIndex * bb), bb);
                    for (int j = 0; j < bs; j++) blockValues[j] = (float)w[(long)r * cols + i + j];
                    Quantize.Row(type, blockValues, block);
                    for (int j = 0; j < bs; j++) (a[r * bs + j], b[r * bs + j]) = BlockGrid.Affine(type, block, j);
                }
            double diag = u[(long)i * cols + i];
            for (int r = 0; r < rows; r++)
            {
                var block = destination.Slice((int)(r * rowBytes + (long)blockIndex * bb), bb);
                double x = w[(long)r * cols + i];
                float scale = a[r * bs + p], offset = b[r * bs + p];
                int q = scale != 0 ? (int)Math.Clamp(Math.Round((x - offset) / scale), lo, hi) : BlockGrid.GetLevel(type, block, p);
                BlockGrid.SetLevel(type, block, p, q);
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
            for (int j = 0; j < cols; j++)
            {
                if (delta[j] == 0) continue;
                total += delta[j] * TensorPrimitives.Dot(hessian.Slice(j * cols, cols), delta);
            }
        }
        return total;
    }

    // U with H⁻¹ = UᵀU (upper Cholesky factor of the inverse of the damped H); null when H is not positive definite even
    // after raising the damping a hundredfold.
    private static double[]? InverseCholeskyUpper(ReadOnlySpan<double> hessian, int n, double damping)
    {
        double mean = 0;
        for (int i = 0; i < n; i++) mean += hessian[i * n + i];
        mean /= n;
        if (!(mean > 0)) return null;
        for (int attempt = 0; attempt < 3; attempt++, damping *= 10)
        {
            var h = hessian.ToArray();
            for (int i = 0; i < n; i++)
            {
                if (h[i * n + i] == 0) h[i * n + i] = 1;
                h[i * n + i] += damping * mean;
            }
            if (!CholeskyLower(h, n)) continue;
            var inv = InverseFromCholesky(h, n);
            if (!CholeskyLower(inv, n)) continue;
            // inv now holds L₂ (lower) with H⁻¹ = L₂L₂ᵀ; U = L₂ᵀ.
            var upper = new double[(long)n * n];
            for (int i = 0; i < n; i++)
                for (int j = 0; j <= i; j++) upper[j * n + i] = inv[i * n + j];
            return upper;
        }
        return null;
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
