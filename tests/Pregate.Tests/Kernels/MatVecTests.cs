// Mat-vec / mat-mul over every weight type: each output equals the row dot kernel, mat-mul equals per-token mat-vec bit
// for bit, and results do not depend on the number of threads.
using System.Runtime.InteropServices;
using Pregate.Core;
using Pregate.Kernels;
using Xunit.Abstractions;

namespace Pregate.Tests.Kernels;

public unsafe class MatVecTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> AllTypes() =>
        [[DType.F32], [DType.F16], [DType.BF16], [DType.Q8_0], [DType.Q4_0], [DType.Q4_K], [DType.Q6_K]];

    /// <summary>A quantized random matrix in native memory, with padding between rows to exercise RowStride.</summary>
    private sealed class Matrix : IDisposable
    {
        public readonly WeightMatrix W;
        public readonly float[] Decoded;   // [rows, cols]
        private readonly nint _memory;

        public Matrix(DType type, int rows, int cols, int seed, int padding = 0)
        {
            long rowBytes = DTypes.ByteCount(type, cols);
            long stride = rowBytes + padding;
            _memory = (nint)NativeMemory.AllocZeroed((nuint)Math.Max(1, stride * rows));
            Decoded = new float[rows * cols];
            var values = TestData.Gaussian(rows * cols, seed);
            for (int r = 0; r < rows; r++)
            {
                var row = new Span<byte>((byte*)_memory + r * stride, (int)rowBytes);
                Quantize.Row(type, values.AsSpan(r * cols, cols), row);
                Quantize.Dequantize(type, row, Decoded.AsSpan(r * cols, cols));
            }
            W = new WeightMatrix(type, rows, cols, _memory, stride);
        }

        public void Dispose() => NativeMemory.Free((void*)_memory);
    }

    private static int ColsFor(DType type) => DTypes.BlockSize(type) == 256 ? 512 : type switch
    {
        DType.Q8_0 or DType.Q4_0 => 96,
        _ => 259,
    };

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void MatVecEqualsRowDotsAndFloat64Reference(DType type)
    {
        int rows = 37, cols = ColsFor(type);
        using var m = new Matrix(type, rows, cols, 17, padding: 6);
        var x = TestData.Gaussian(cols, 18);
        var act = new ActivationQ8(cols);
        act.Load(x);
        var y = new float[rows];
        MatVec.Run(m.W, act, y);

        var ySpan = new float[rows];
        MatVec.Run(m.W, x, ySpan);
        double worst = 0;
        for (int r = 0; r < rows; r++)
        {
            Assert.Equal(BitConverter.SingleToUInt32Bits(y[r]), BitConverter.SingleToUInt32Bits(ySpan[r]));
            Assert.Equal(BitConverter.SingleToUInt32Bits(RowDot(m.W, act, r)), BitConverter.SingleToUInt32Bits(y[r]));
            // Against float64 with the unquantized activation: exact for float types, activation quantization otherwise.
            double exact = 0, norm = 0, xnorm = 0;
            for (int c = 0; c < cols; c++)
            {
                exact += (double)m.Decoded[r * cols + c] * x[c];
                norm += (double)m.Decoded[r * cols + c] * m.Decoded[r * cols + c];
                xnorm += (double)x[c] * x[c];
            }
            worst = Math.Max(worst, Math.Abs(y[r] - exact) / Math.Sqrt(norm * xnorm));
        }
        double tol = DTypes.IsQuantized(type) ? 1e-2 : 1e-6;
        output.WriteLine($"{DTypes.Name(type)} [{rows}×{cols}]: max |y − f64| / (‖w‖‖x‖) = {worst:G3} (tol {tol})");
        Assert.True(worst < tol);
    }

    private static float RowDot(in WeightMatrix w, ActivationQ8 x, int r)
    {
        byte* row = w.Row(r);
        int cols = w.Cols;
        return w.Type switch
        {
            DType.F32 => VecDot.F32(new ReadOnlySpan<float>(row, cols), x.Values(0)),
            DType.F16 => VecDot.F16(new ReadOnlySpan<Half>(row, cols), x.Values(0)),
            DType.BF16 => VecDot.BF16(new ReadOnlySpan<ushort>(row, cols), x.Values(0)),
            DType.Q8_0 => VecDot.Q8_0(new ReadOnlySpan<BlockQ8_0>(row, cols / 32), x.Q8_0(0)),
            DType.Q4_0 => VecDot.Q4_0(new ReadOnlySpan<BlockQ4_0>(row, cols / 32), x.Q8_0(0)),
            DType.Q4_K => VecDot.Q4_K(new ReadOnlySpan<BlockQ4_K>(row, cols / 256), x.Q8_K(0)),
            _ => VecDot.Q6_K(new ReadOnlySpan<BlockQ6_K>(row, cols / 256), x.Q8_K(0)),
        };
    }

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void MatMulIsBitIdenticalToPerTokenMatVecForAnyThreadCount(DType type)
    {
        int rows = 203, cols = ColsFor(type), tokens = 11;   // tokens cross the 8-token block
        using var m = new Matrix(type, rows, cols, 31);
        var x = TestData.Gaussian(tokens * cols, 32);
        var batch = new ActivationQ8(cols, tokens);
        batch.Load(x, tokens);

        var expected = new float[tokens * rows];
        var single = new ActivationQ8(cols);
        for (int t = 0; t < tokens; t++)
        {
            single.Load(x.AsSpan(t * cols, cols));
            MatVec.Run(m.W, single, expected.AsSpan(t * rows, rows));
        }

        foreach (int threads in new[] { 1, 2, 3 })
        {
            using var team = new WorkerTeam(threads);
            var y = new float[tokens * rows];
            MatMul.Run(m.W, batch, y, team);
            for (int i = 0; i < y.Length; i++)
                Assert.True(BitConverter.SingleToUInt32Bits(expected[i]) == BitConverter.SingleToUInt32Bits(y[i]),
                    $"{type}, {threads} threads, token {i / rows}, row {i % rows}");
            var yVec = new float[rows];
            single.Load(x.AsSpan(0, cols));
            MatVec.Run(m.W, single, yVec, team);
            Assert.Equal(expected.AsSpan(0, rows).ToArray(), yVec);
        }
    }

    [Theory]
    [InlineData(DType.F16)]
    [InlineData(DType.BF16)]
    public void HalfWeightsCanMultiplyARoundedInputLikeLlamaCpp(DType type)
    {
        int rows = 21, cols = 259, tokens = 3;
        using var m = new Matrix(type, rows, cols, 41);
        var x = TestData.Gaussian(tokens * cols, 42);
        var act = new ActivationQ8(cols, tokens, HalfWeightInput.WeightType);
        act.Load(x, tokens);
        var y = new float[tokens * rows];
        MatMul.Run(m.W, act, y);
        double worst = 0;
        for (int t = 0; t < tokens; t++)
        {
            var xr = x.AsSpan(t * cols, cols);
            var rounded = new ushort[cols];
            if (type == DType.F16) Fp16.FromFloat(xr, MemoryMarshal.Cast<ushort, Half>(rounded.AsSpan()));
            else Bf16.FromFloat(xr, rounded);
            for (int r = 0; r < rows; r++)
            {
                var wRow = new ReadOnlySpan<ushort>(m.W.Row(r), cols);
                float expected = type == DType.F16
                    ? VecDot.F16xF16(MemoryMarshal.Cast<ushort, Half>(wRow), MemoryMarshal.Cast<ushort, Half>(rounded.AsSpan()))
                    : VecDot.BF16xBF16(wRow, rounded);
                Assert.Equal(BitConverter.SingleToUInt32Bits(expected), BitConverter.SingleToUInt32Bits(y[t * rows + r]));
                double exact = 0;
                for (int c = 0; c < cols; c++) exact += (double)m.Decoded[r * cols + c] * xr[c];
                worst = Math.Max(worst, Math.Abs(y[t * rows + r] - exact) / Math.Sqrt(m.Decoded.AsSpan(r * cols, cols).ToArray().Sum(v => (double)v * v) * xr.ToArray().Sum(v => (double)v * v)));
            }
        }
        double tol = type == DType.F16 ? 1e-3 : 1e-2;
        output.WriteLine($"{DTypes.Name(type)} with the input rounded to {DTypes.Name(type)}: max |y − f64(float input)| / (‖w‖‖x‖) = {worst:G3} (tol {tol})");
        Assert.True(worst < tol);
    }

    [Theory]
    [InlineData(HalfWeightInput.Float)]
    [InlineData(HalfWeightInput.WeightType)]
    public void F16MatVecIsTheRowDotWithLargeInputsAndSpecialWeights(HalfWeightInput mode)
    {
        // The decode kernel takes the input scaled by 2^112; an input of 2^16 or more cannot be scaled exactly (float
        // mode) and rows holding inf or NaN weights take the general kernel: every row still equals its row dot.
        int rows = 9, cols = 96;
        using var m = new Matrix(DType.F16, rows, cols, 41);
        var w = new Span<ushort>((void*)m.W.Data, rows * cols);
        w[2 * cols + 5] = 0x7C00;
        w[4 * cols + 40] = 0xFE00;
        foreach (float big in new[] { 1f, 65504f, 70000f, float.PositiveInfinity })
        {
            var x = TestData.Gaussian(cols, 42);
            x[7] = big;
            var act = new ActivationQ8(cols, 1, mode);
            act.Load(x);
            var y = new float[rows];
            MatVec.Run(m.W, act, y);
            act.Prepare(DType.F16);
            bool scalable = mode == HalfWeightInput.WeightType || !(float.IsFinite(big) && big >= 65536f);
            if (VecDot.HasScaledF16) Assert.Equal(scalable, act.ScaledHalfInput() != null);
            for (int r = 0; r < rows; r++)
            {
                var row = new ReadOnlySpan<Half>(m.W.Row(r), cols);
                float expected;
                if (mode == HalfWeightInput.Float) expected = VecDot.F16(row, x);
                else
                {
                    var rounded = new Half[cols];
                    Fp16.FromFloat(x, rounded);
                    expected = VecDot.F16xF16(row, rounded);
                }
                Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(y[r]), $"{mode}, x[7] = {big}, row {r}: {y[r]:R} vs {expected:R}");
            }
        }
    }

    [Fact]
    public void OneActivationServesSeveralMatricesAndIsRequantizedAfterLoad()
    {
        const int cols = 512;
        using var q8 = new Matrix(DType.Q8_0, 8, cols, 1);
        using var q4 = new Matrix(DType.Q4_0, 8, cols, 2);
        using var q4k = new Matrix(DType.Q4_K, 8, cols, 3);
        using var q6k = new Matrix(DType.Q6_K, 8, cols, 4);
        using var f16 = new Matrix(DType.F16, 8, cols, 5);
        var act = new ActivationQ8(cols);
        foreach (int seed in new[] { 10, 11 })
        {
            var x = TestData.Gaussian(cols, seed);
            act.Load(x);
            foreach (var m in new[] { q8, q4, q4k, q6k, f16 })
            {
                var shared = new float[8];
                var fresh = new float[8];
                MatVec.Run(m.W, act, shared);
                MatVec.Run(m.W, x, fresh);
                Assert.Equal(fresh, shared);
            }
        }
    }

    [Fact]
    public void EmptyAndSmallShapes()
    {
        using var m = new Matrix(DType.F32, 0, 32, 1);
        MatVec.Run(m.W, new float[32], Span<float>.Empty);
        using var one = new Matrix(DType.Q8_0, 1, 32, 2);
        var y = new float[1];
        MatVec.Run(one.W, TestData.Gaussian(32, 3), y);
        Assert.True(float.IsFinite(y[0]));
        using var noCols = new Matrix(DType.F32, 3, 0, 4);
        var y3 = new float[] { 1, 1, 1 };
        MatVec.Run(noCols.W, ReadOnlySpan<float>.Empty, y3);
        Assert.Equal(new float[3], y3);
    }

    [Fact]
    public void ArgumentsAreValidated()
    {
        using var m = new Matrix(DType.Q4_K, 4, 256, 1);
        Assert.Throws<ArgumentException>(() => MatVec.Run(m.W, new float[255], new float[4]));
        Assert.Throws<ArgumentException>(() => MatVec.Run(m.W, new float[256], new float[3]));
        var act = new ActivationQ8(256, 2);
        act.Load(new float[512], 2);
        Assert.Throws<ArgumentException>(() => MatVec.Run(m.W, act, new float[8]));
        Assert.Throws<ArgumentException>(() => MatMul.Run(m.W, act, new float[7]));
        var wrongCols = new ActivationQ8(512);
        wrongCols.Load(new float[512]);
        Assert.Throws<ArgumentException>(() => MatMul.Run(m.W, wrongCols, new float[4]));
        var odd = new ActivationQ8(100);
        odd.Load(new float[100]);
        Assert.Throws<ArgumentException>(() => odd.Prepare(DType.Q8_0));
        Assert.Throws<ArgumentOutOfRangeException>(() => act.Load(new float[768], 3));
        Assert.Throws<ArgumentException>(() => act.Load(new float[1024], 2));

        Assert.Throws<ArgumentException>(() => new WeightMatrix(DType.Q8_0, 2, 33, 16, 64));
        Assert.Throws<ArgumentException>(() => new WeightMatrix(DType.Q8_0, 2, 32, 16, 33));
        Assert.Throws<ArgumentException>(() => new WeightMatrix(DType.I32, 2, 32, 16, 128));
        Assert.Throws<ArgumentException>(() => new WeightMatrix(DType.F32, 2, 32, 0, 128));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.W.RowRange(3, 2));
        Assert.Equal(2, m.W.RowRange(2, 2).Rows);
    }

    [Fact]
    public void TensorViewsBecomeMatrices()
    {
        const int experts = 3, rows = 5, cols = 64;
        var bytes = new byte[experts * rows * DTypes.ByteCount(DType.Q8_0, cols)];
        fixed (byte* p = bytes)
        {
            var stacked = new TensorView("ffn_up_exps", DType.Q8_0, [experts, rows, cols], (nint)p, bytes.Length);
            var e2 = WeightMatrix.FromTensor(stacked, 2);
            Assert.Equal((nint)p + 2 * rows * 68, e2.Data);
            Assert.Equal(68, e2.RowStride);
            Assert.Throws<ArgumentOutOfRangeException>(() => WeightMatrix.FromTensor(stacked, 3));
            Assert.Throws<ArgumentException>(() => WeightMatrix.FromTensor(stacked));
            var flat = new TensorView("w", DType.Q8_0, [rows, cols], (nint)p, rows * 68);
            Assert.Equal(rows, WeightMatrix.FromTensor(flat).Rows);
            var truncated = new TensorView("w", DType.Q8_0, [rows, cols], (nint)p, rows * 68 - 1);
            Assert.Throws<ArgumentException>(() => WeightMatrix.FromTensor(truncated));
        }
    }
}
