// Interleaved Q8_0 / Q4_0 copies (rows in groups of eight, block by block) against the row-major matrices they copy: the
// eight-row group kernels against the single-row dots on every block count around the vector widths, and mat-vecs and
// mat-muls over the copies bit-identical to those over the originals for any thread count (chunks split groups), plus
// the layout's bookkeeping (which matrices are copied, row ranges).
using Pregate.Core;
using Pregate.Kernels;
using Xunit.Abstractions;

namespace Pregate.Tests.Kernels;

public unsafe class InterleavedWeightsTests(ITestOutputHelper output)
{
    /// <summary>A random quantized matrix in native memory.</summary>
    private sealed class Matrix : IDisposable
    {
        public readonly WeightMatrix W;
        private readonly nint _memory;

        public Matrix(DType type, int rows, int cols, int seed)
        {
            long rowBytes = DTypes.ByteCount(type, cols);
            _memory = (nint)System.Runtime.InteropServices.NativeMemory.AllocZeroed((nuint)Math.Max(1, rowBytes * rows));
            var values = TestData.Gaussian(rows * cols, seed);
            for (int r = 0; r < rows; r++)
                Quantize.Row(type, values.AsSpan(r * cols, cols), new Span<byte>((byte*)_memory + r * rowBytes, (int)rowBytes));
            W = new WeightMatrix(type, rows, cols, _memory);
        }

        public void Dispose() => System.Runtime.InteropServices.NativeMemory.Free((void*)_memory);
    }

    private static uint Bits(float f) => BitConverter.SingleToUInt32Bits(f);

    public static TheoryData<DType> Types => new() { DType.Q8_0, DType.Q4_0 };

    [Theory]
    [MemberData(nameof(Types))]
    public void GroupKernelsEqualTheSingleRowDot(DType type)
    {
        if (!VecDot.UseAvx2) return;   // the interleaved kernels are AVX2 code (and nothing is interleaved without it)
        int compared = 0;
        float* y = stackalloc float[8];
        float* fma3 = stackalloc float[8];
        foreach (int nb in new[] { 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 88 })
        {
            using var m = new Matrix(type, 8, nb * 32, 100 + nb);
            var copies = new InterleavedWeights();
            var packed = copies.Add(m.W);
            Assert.Equal(WeightMatrix.GroupRows, packed.Interleave);
            var act = new ActivationQ8(nb * 32);
            act.Load(TestData.Gaussian(nb * 32, 200 + nb));
            act.Prepare(type);
            var x = (BlockQ8_0*)act.Base(type);
            if (type == DType.Q8_0) VecDot.Q8_0Avx2Group8((BlockQ8_0*)packed.Data, x, nb, y);
            else
            {
                VecDot.Q4_0Avx2Group8((BlockQ4_0*)packed.Data, x, nb, y);
                // Both Q4_0 bodies, whichever the dispatch picked.
                VecDot.Q4_0Fma3Group8((BlockQ4_0*)packed.Data, x, nb, fma3);
                for (int r = 0; r < 8; r++) Assert.Equal(Bits(y[r]), Bits(fma3[r]));
            }
            for (int r = 0; r < 8; r++)
            {
                float expected = type == DType.Q8_0 ? VecDot.Q8_0Avx2((BlockQ8_0*)m.W.Row(r), x, nb) : VecDot.Q4_0Avx2((BlockQ4_0*)m.W.Row(r), x, nb);
                Assert.True(Bits(expected) == Bits(y[r]), $"{type}, {nb} blocks, row {r}: {y[r]:R} vs {expected:R}");
                // The strided single-row dot over the copy too (the edges of a range that splits a group).
                float strided = type == DType.Q8_0
                    ? VecDot.Q8_0Avx2((BlockQ8_0*)packed.BlockRow(r), x, nb, packed.BlockStride)
                    : VecDot.Q4_0Avx2((BlockQ4_0*)packed.BlockRow(r), x, nb, packed.BlockStride);
                Assert.Equal(Bits(expected), Bits(strided));
                compared++;
            }
        }
        output.WriteLine($"{DTypes.Name(type)}: {compared} rows of eight-row groups identical to the row dot (VNNI {System.Runtime.Intrinsics.X86.AvxVnni.IsSupported})");
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void ProductsOverTheCopyAreBitIdenticalForAnyThreadCount(DType type)
    {
        if (!VecDot.UseAvx2) return;
        const int rows = 200, cols = 96, tokens = 11;   // 25 groups; tokens cross the 8-token block and the 4-vector tiles
        using var m = new Matrix(type, rows, cols, 7);
        var copies = new InterleavedWeights();
        var packed = copies.Add(m.W);
        Assert.Equal(rows * m.W.RowBytes, copies.Bytes);
        var x = TestData.Gaussian(tokens * cols, 8);
        foreach (int n in new[] { 1, 2, 3, 4, 5, tokens })
        {
            var act = new ActivationQ8(cols, n);
            act.Load(x.AsSpan(0, n * cols), n);
            var expected = new float[n * rows];
            MatMul.Run(m.W, act, expected);
            foreach (int threads in new[] { 1, 2, 3 })
            {
                using var team = new WorkerTeam(threads);
                var y = new float[n * rows];
                MatMul.Run(packed, act, y, team);
                for (int i = 0; i < y.Length; i++)
                    Assert.True(Bits(expected[i]) == Bits(y[i]), $"{type}, {n} vectors, {threads} threads, row {i % rows}");
                // Fused with a row-major matrix in one job: chunks then straddle tasks and split groups.
                var fusedPacked = new float[n * rows];
                var fusedPlain = new float[n * 24];
                using var small = new Matrix(type, 24, cols, 9);
                fixed (float* pp = fusedPacked) fixed (float* ps = fusedPlain)
                    MatMul.Run([new MatMulTask(small.W, act, ps), new MatMulTask(packed, act, pp)], team);
                Assert.Equal(expected, fusedPacked);
            }
        }
        // A range of whole groups is a matrix of its own; a range that splits a group is refused.
        var half = packed.RowRange(96, 64);
        var single = new ActivationQ8(cols);
        single.Load(x.AsSpan(0, cols));
        var yHalf = new float[64];
        var yAll = new float[rows];
        MatVec.Run(half, single, yHalf);
        MatVec.Run(packed, single, yAll);
        Assert.Equal(yAll.AsSpan(96, 64).ToArray(), yHalf);
        Assert.Throws<ArgumentOutOfRangeException>(() => packed.RowRange(4, 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => packed.RowRange(8, 12));
    }

    [Fact]
    public void OnlyWholeGroupsOfQuantizedRowsAreCopied()
    {
        using var f16 = new Matrix(DType.F16, 16, 64, 1);
        using var odd = new Matrix(DType.Q8_0, 12, 64, 2);
        using var q4k = new Matrix(DType.Q4_K, 16, 256, 3);
        using var q8 = new Matrix(DType.Q8_0, 16, 64, 4);
        var copies = new InterleavedWeights();
        Assert.Equal(1, copies.Add(f16.W).Interleave);
        Assert.Equal(1, copies.Add(odd.W).Interleave);
        Assert.Equal(1, copies.Add(q4k.W).Interleave);
        Assert.Equal(0, copies.Count);
        var packed = copies.Add(q8.W);
        Assert.Equal(VecDot.UseAvx2 ? WeightMatrix.GroupRows : 1, packed.Interleave);
        // An interleaved matrix is not copied again.
        Assert.Equal(packed.Data, copies.Add(packed).Data);
        Assert.Equal(VecDot.UseAvx2 ? 1 : 0, copies.Count);
    }
}
