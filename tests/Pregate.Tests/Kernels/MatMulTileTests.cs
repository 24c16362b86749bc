// The mat-mul's shared-load tiles (Q8_0 4 rows × 1 vector, 2 rows × 4 vectors with AVX2 and with AVX-VNNI; Q4_0 2 rows ×
// 1 vector and 2 rows × 4 vectors with and without AVX-VNNI; fp16 rows widened once, 1, 2 or 4 rows × 2 vectors and 3 × 3)
// against the single-row dot kernels bit for bit, on every block count including extreme values (±127, −128 weights, zero
// blocks); and fused multi-matrix runs against separate mat-muls.
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Pregate.Core;
using Pregate.Kernels;
using Xunit.Abstractions;

namespace Pregate.Tests.Kernels;

public unsafe class MatMulTileTests(ITestOutputHelper output)
{
    // Extremes: zero blocks, and ±127 / minValue in every fifth block. Weights may hold −128; activations come from the Q8_0
    // activation quantizer, which never produces it (x = −128 would overflow ggml's sign trick), so theirs stop at −127.
    private static BlockQ8_0[] QuantizeRows(int rows, int cols, int seed, bool extremes, sbyte minValue)
    {
        var blocks = new BlockQ8_0[rows * cols / 32];
        var bytes = MemoryMarshal.AsBytes(blocks.AsSpan());
        long rowBytes = DTypes.ByteCount(DType.Q8_0, cols);
        for (int r = 0; r < rows; r++)
        {
            var values = TestData.Gaussian(cols, seed + r);
            if (extremes && r % 3 == 1) for (int c = 0; c < Math.Min(cols, 32); c++) values[c] = 0;
            Quantize.Row(DType.Q8_0, values, bytes.Slice((int)(r * rowBytes), (int)rowBytes));
        }
        if (extremes)
            for (int i = 0; i < blocks.Length; i += 5)
                for (int j = 0; j < 32; j += 3) blocks[i].Qs[j] = j % 2 == 0 ? minValue : (sbyte)127;
        return blocks;
    }

    public static TheoryData<int, bool> BlockCounts => new() { { 1, false }, { 2, true }, { 3, false }, { 8, true }, { 33, true }, { 96, false } };

    [Theory]
    [MemberData(nameof(BlockCounts))]
    public void Q8_0TilesEqualTheSingleRowDot(int nb, bool extremes)
    {
        if (!VecDot.UseAvx2) return; // the tiles are AVX2 code; without it the mat-mul uses the row dot alone
        int cols = nb * 32;
        var w = QuantizeRows(4, cols, 11, extremes, -128);
        var x = QuantizeRows(4, cols, 21, extremes, -127);
        fixed (BlockQ8_0* pw = w) fixed (BlockQ8_0* px = x)
        {
            BlockQ8_0* Row(BlockQ8_0* m, int r) => m + r * nb;
            var expected = new float[4, 4];
            for (int r = 0; r < 4; r++)
                for (int t = 0; t < 4; t++) expected[r, t] = VecDot.Q8_0Avx2(Row(pw, r), Row(px, t), nb);

            float* y = stackalloc float[8];
            VecDot.Q8_0Avx2Tile2x4(Row(pw, 1), Row(pw, 2), Row(px, 0), Row(px, 1), Row(px, 2), Row(px, 3), nb, y);
            CheckTile(expected, y, "AVX2 2×4");
            if (AvxVnni.IsSupported)
            {
                VecDot.Q8_0VnniTile2x4(Row(pw, 1), Row(pw, 2), Row(px, 0), Row(px, 1), Row(px, 2), Row(px, 3), nb, y);
                CheckTile(expected, y, "VNNI 2×4");
            }
            output.WriteLine($"{nb} blocks: 2×4 tiles checked (VNNI {(AvxVnni.IsSupported ? "available" : "not available here")})");

            for (int t = 0; t < 4; t++)
            {
                VecDot.Q8_0Avx2Rows4(Row(pw, 0), Row(pw, 1), Row(pw, 2), Row(pw, 3), Row(px, t), nb, 4L * nb * 34, y);
                for (int r = 0; r < 4; r++) Assert.Equal(Bits(expected[r, t]), Bits(y[r]));
            }
        }

        static void CheckTile(float[,] expected, float* y, string name)
        {
            for (int t = 0; t < 4; t++)
            {
                Assert.True(Bits(expected[1, t]) == Bits(y[t]), $"{name}: row 1, vector {t}");
                Assert.True(Bits(expected[2, t]) == Bits(y[4 + t]), $"{name}: row 2, vector {t}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(BlockCounts))]
    public void Q4_0PairsEqualTheSingleRowDot(int nb, bool extremes)
    {
        if (!VecDot.UseAvx2) return; // AVX2 code; without it the mat-mul uses the scalar row dot alone
        int cols = nb * 32;
        var rng = new Random(nb);
        var w = new BlockQ4_0[3 * nb];
        for (int i = 0; i < w.Length; i++)
        {
            w[i].D = (Half)(0.001f + rng.NextSingle() * 0.01f);
            for (int j = 0; j < 16; j++) w[i].Qs[j] = extremes && i % 4 == 1 ? (j % 2 == 0 ? (byte)0x00 : (byte)0xFF) : (byte)rng.Next(256);
        }
        var x = QuantizeRows(2, cols, 31, extremes, -127);
        fixed (BlockQ4_0* pw = w) fixed (BlockQ8_0* px = x)
        {
            double worst = 0;
            for (int t = 0; t < 2; t++)
                for (int r = 0; r + 1 < 3; r++)
                {
                    VecDot.Q4_0Avx2Rows2(pw + r * nb, pw + (r + 1) * nb, px + t * nb, nb, 0, out float y0, out float y1);
                    Assert.Equal(Bits(VecDot.Q4_0Avx2(pw + r * nb, px + t * nb, nb)), Bits(y0));
                    Assert.Equal(Bits(VecDot.Q4_0Avx2(pw + (r + 1) * nb, px + t * nb, nb)), Bits(y1));
                    float reference = VecDot.Q4_0Scalar(pw + r * nb, px + t * nb, nb);
                    worst = Math.Max(worst, Math.Abs(y0 - reference) / Math.Max(1e-3, Math.Abs(reference)));
                }
            // The scalar reference sums blocks in another order: relative error within 1e-5.
            output.WriteLine($"{nb} blocks: pairs bit-identical to the row dot; worst relative difference from scalar {worst:E2}");
            Assert.True(worst < 1e-5);
        }
    }

    [Theory]
    [MemberData(nameof(BlockCounts))]
    public void Q4_0TilesEqualTheSingleRowDot(int nb, bool extremes)
    {
        if (!VecDot.UseAvx2) return;
        int cols = nb * 32;
        var rng = new Random(100 + nb);
        var w = new BlockQ4_0[3 * nb];
        for (int i = 0; i < w.Length; i++)
        {
            w[i].D = (Half)((rng.NextSingle() - 0.3f) * 0.02f);
            for (int j = 0; j < 16; j++) w[i].Qs[j] = extremes && i % 4 == 1 ? (j % 2 == 0 ? (byte)0x00 : (byte)0xFF) : (byte)rng.Next(256);
        }
        var x = QuantizeRows(4, cols, 41, extremes, -127);
        fixed (BlockQ4_0* pw = w) fixed (BlockQ8_0* px = x)
        {
            float* y = stackalloc float[8];
            string[] names = AvxVnni.IsSupported ? ["FMA3", "dispatch", "VNNI"] : ["FMA3", "dispatch"];
            foreach (string name in names)
            {
                if (name == "FMA3") VecDot.Q4_0Fma3Tile2x4(pw + nb, pw + 2 * nb, px, px + nb, px + 2 * nb, px + 3 * nb, nb, y, 1);
                else if (name == "VNNI") VecDot.Q4_0VnniTile2x4(pw + nb, pw + 2 * nb, px, px + nb, px + 2 * nb, px + 3 * nb, nb, y, 1);
                else VecDot.Q4_0Avx2Tile2x4(pw + nb, pw + 2 * nb, px, px + nb, px + 2 * nb, px + 3 * nb, nb, y);
                for (int r = 0; r < 2; r++)
                    for (int t = 0; t < 4; t++)
                        Assert.True(Bits(VecDot.Q4_0Avx2(pw + (r + 1) * nb, px + t * nb, nb)) == Bits(y[r * 4 + t]), $"{name} 2×4, {nb} blocks: row {r + 1}, vector {t}");
            }
            output.WriteLine($"{nb} blocks: Q4_0 2×4 tiles ({string.Join(", ", names)}) bit-identical to the row dot");
        }
    }

    [Fact]
    public void Fp16WideningIsExactForEveryValue()
    {
        // Every fp16 pattern, in order (whole groups of finite values take the fast path) and shuffled (inf/NaN mixed in).
        var all = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        var shuffled = all.ToArray();
        new Random(3).Shuffle(shuffled);
        foreach (var w in new[] { all, shuffled })
        {
            var expected = w.Select(h => Fp16.ToFloat(h)).ToArray();
            var actual = new float[w.Length];
            fixed (ushort* pw = w) fixed (float* pa = actual) VecDot.WidenF16Row(pw, pa, w.Length);
            for (int i = 0; i < w.Length; i++)
                Assert.True(Bits(expected[i]) == Bits(actual[i]) || (float.IsNaN(expected[i]) && float.IsNaN(actual[i])), $"fp16 0x{w[i]:X4}");
        }
        // The dot product over every finite value (subnormals and zeros included) equals the one over exact widenings.
        if (Vector256.IsHardwareAccelerated)
        {
            var finite = all.Where(h => (h & 0x7C00) != 0x7C00).ToArray();
            var wide = finite.Select(h => Fp16.ToFloat(h)).ToArray();
            var x = TestData.Gaussian(finite.Length, 9);
            fixed (ushort* pw = finite) fixed (float* pWide = wide) fixed (float* px = x)
                Assert.Equal(Bits(VecDot.F16WidenedVector256(pWide, px, finite.Length)), Bits(VecDot.F16Vector256(pw, px, finite.Length)));
        }
        output.WriteLine("65,536 fp16 values widened exactly, sorted and shuffled");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(31)]
    [InlineData(32)]
    [InlineData(259)]
    [InlineData(1024)]
    public void WidenedF16RowsEqualTheF16Dot(int n)
    {
        if (!Vector256.IsHardwareAccelerated) return;
        var wf = TestData.Gaussian(n, 5);
        wf[0] = 0;                       // zero and a subnormal take the general widening path
        if (n > 1) wf[1] = 3e-6f;
        var w = new ushort[n];
        var halves = new Half[n];
        Fp16.FromFloat(wf, halves);
        for (int i = 0; i < n; i++) w[i] = BitConverter.HalfToUInt16Bits(halves[i]);
        var wide = new float[n];
        Fp16.ToFloat(w, wide);
        var rowWide = new float[n];
        fixed (ushort* pw = w) fixed (float* pr = rowWide) VecDot.WidenF16Row(pw, pr, n);
        Assert.Equal(wide.Select(Bits), rowWide.Select(Bits));
        var x0 = TestData.Gaussian(n, 6);
        var x1 = TestData.Gaussian(n, 7);
        fixed (ushort* pw = w) fixed (float* pWide = wide) fixed (float* p0 = x0) fixed (float* p1 = x1)
        {
            float e0 = VecDot.F16Vector256(pw, p0, n), e1 = VecDot.F16Vector256(pw, p1, n);
            Assert.Equal(Bits(e0), Bits(VecDot.F16WidenedVector256(pWide, p0, n)));
            VecDot.F16WidenedVector256x2(pWide, p0, p1, n, out float y0, out float y1);
            Assert.Equal(Bits(e0), Bits(y0));
            Assert.Equal(Bits(e1), Bits(y1));
            // Two rows: the same row twice, and the second row against a shifted copy.
            float* quad = stackalloc float[4];
            VecDot.F16WidenedVector256x2x2(pWide, pWide, p0, p1, n, quad);
            Assert.Equal([Bits(e0), Bits(e1), Bits(e0), Bits(e1)], new[] { Bits(quad[0]), Bits(quad[1]), Bits(quad[2]), Bits(quad[3]) });
            if (n > 1)
            {
                VecDot.F16WidenedVector256x2x2(pWide + 1, pWide, p0, p1, n - 1, quad);
                Assert.Equal(Bits(VecDot.F16WidenedVector256(pWide + 1, p1, n - 1)), Bits(quad[1]));
                Assert.Equal(Bits(VecDot.F16WidenedVector256(pWide, p0, n - 1)), Bits(quad[2]));
            }
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(9)]
    [InlineData(31)]
    [InlineData(32)]
    [InlineData(33)]
    [InlineData(259)]
    [InlineData(512)]
    [InlineData(545)]
    [InlineData(2816)]
    public void WidenedF16ThreeByThreeTileEqualsTheRowDot(int n)
    {
        if (!Vector256.IsHardwareAccelerated) return;
        var w = TestData.Gaussian(3 * n + 5, 60 + n);   // rows 'n + 2' floats apart, inputs 'n + 1' apart: unaligned starts
        var x = TestData.Gaussian(3 * n + 5, 61 + n);
        float* y = stackalloc float[9];
        fixed (float* pw = w) fixed (float* px = x)
        {
            VecDot.F16WidenedVector256x3x3(pw, n + 2, px, n + 1, n, y);
            for (int r = 0; r < 3; r++)
                for (int t = 0; t < 3; t++)
                    Assert.True(Bits(VecDot.F16WidenedVector256(pw + r * (n + 2), px + t * (n + 1), n)) == Bits(y[3 * r + t]), $"n={n}: row {r}, vector {t}");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(15)]
    [InlineData(16)]
    [InlineData(17)]
    [InlineData(31)]
    [InlineData(32)]
    [InlineData(33)]
    [InlineData(259)]
    [InlineData(2816)]
    public void WidenedF16FourByTwoTileEqualsTheRowDot(int n)
    {
        if (!Vector512.IsHardwareAccelerated) return;   // AVX-512 code; elsewhere the 2×2 and 1×2 tiles run
        var w = TestData.Gaussian(4 * n + 3, 50 + n);   // four rows 'n + 1' floats apart: unaligned starts
        var x0 = TestData.Gaussian(n, 51);
        var x1 = TestData.Gaussian(n, 52);
        float* y = stackalloc float[8];
        fixed (float* pw = w) fixed (float* p0 = x0) fixed (float* p1 = x1)
        {
            VecDot.F16WidenedVector512x4x2(pw, n + 1, p0, p1, n, y);
            for (int r = 0; r < 4; r++)
            {
                Assert.Equal(Bits(VecDot.F16WidenedVector256(pw + r * (n + 1), p0, n)), Bits(y[2 * r]));
                Assert.Equal(Bits(VecDot.F16WidenedVector256(pw + r * (n + 1), p1, n)), Bits(y[2 * r + 1]));
            }
        }
    }

    [Theory]
    [InlineData(DType.Q8_0)]
    [InlineData(DType.F16)]
    [InlineData(DType.F32)]
    [InlineData(DType.Q4_K)]
    public void FusedRunsEqualSeparateMatMuls(DType type)
    {
        int cols = DTypes.BlockSize(type) == 256 ? 256 : 64;
        int[] rows = [37, 5, 64];
        int tokens = 13;
        var matrices = new List<(WeightMatrix W, nint Memory)>();
        try
        {
            for (int m = 0; m < rows.Length; m++)
            {
                long rowBytes = DTypes.ByteCount(type, cols);
                nint mem = (nint)NativeMemory.Alloc((nuint)(rowBytes * rows[m]));
                for (int r = 0; r < rows[m]; r++)
                    Quantize.Row(type, TestData.Gaussian(cols, 100 * m + r), new Span<byte>((byte*)mem + r * rowBytes, (int)rowBytes));
                matrices.Add((new WeightMatrix(type, rows[m], cols, mem), mem));
            }
            var act = new ActivationQ8(cols, tokens);
            act.Load(TestData.Gaussian(cols * tokens, 9), tokens);
            // Each matrix takes its own range of the loaded vectors: [0, 13), [2, 9), [12, 13).
            (int First, int Count)[] ranges = [(0, tokens), (2, 7), (12, 1)];

            var expected = new float[rows.Length][];
            var single = new ActivationQ8(cols, tokens);
            for (int m = 0; m < rows.Length; m++)
            {
                single.Load(act.Values().Slice(ranges[m].First * cols, ranges[m].Count * cols), ranges[m].Count);
                expected[m] = new float[ranges[m].Count * rows[m]];
                MatMul.Run(matrices[m].W, single, expected[m]);
            }
            foreach (int threads in new[] { 1, 2, 3 })
            {
                using var team = new WorkerTeam(threads);
                var outputs = new float[rows.Length][];
                var handles = new GCHandle[rows.Length];
                var tasks = new MatMulTask[rows.Length];
                try
                {
                    for (int m = 0; m < rows.Length; m++)
                    {
                        outputs[m] = new float[ranges[m].Count * rows[m]];
                        handles[m] = GCHandle.Alloc(outputs[m], GCHandleType.Pinned);
                        tasks[m] = new MatMulTask(matrices[m].W, act, ranges[m].First, ranges[m].Count, (float*)handles[m].AddrOfPinnedObject());
                    }
                    MatMul.Run(tasks, team);
                }
                finally
                {
                    foreach (var h in handles) if (h.IsAllocated) h.Free();
                }
                for (int m = 0; m < rows.Length; m++)
                    for (int i = 0; i < expected[m].Length; i++)
                        Assert.True(Bits(expected[m][i]) == Bits(outputs[m][i]), $"{type}, {threads} threads, matrix {m}, value {i}");
            }
            output.WriteLine($"{DTypes.Name(type)}: three matrices over vector ranges in one fused run match separate mat-muls");
        }
        finally
        {
            foreach (var (_, mem) in matrices) NativeMemory.Free((void*)mem);
        }
    }

    [Fact]
    public void FusedRunRejectsRangesOutsideTheInput()
    {
        var mem = NativeMemory.AllocZeroed(34 * 4);
        try
        {
            var w = new WeightMatrix(DType.Q8_0, 4, 32, (nint)mem);
            var act = new ActivationQ8(32, 2);
            act.Load(new float[64], 2);
            var y = GC.AllocateArray<float>(16, pinned: true);
            float* py = (float*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref y[0]);
            {
                Assert.Throws<ArgumentException>(() => MatMul.Run([new MatMulTask(w, act, 1, 2, py)]));
                Assert.Throws<ArgumentException>(() => MatMul.Run([new MatMulTask(w, act, -1, 1, py)]));
                Assert.Throws<ArgumentException>(() => MatMul.Run([new MatMulTask(w, act, 0, 1, null)]));
                var wide = new ActivationQ8(64);
                wide.Load(new float[64]);
                Assert.Throws<ArgumentException>(() => MatMul.Run([new MatMulTask(w, wide, py)]));
            }
        }
        finally
        {
            NativeMemory.Free(mem);
        }
    }

    private static uint Bits(float f) => BitConverter.SingleToUInt32Bits(f);
}
