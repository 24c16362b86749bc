// Dot-product kernels: every SIMD body against its scalar reference at lengths around the vector widths, quantized dots
// against a float64 dot of the dequantized operands, and the AVX2 quantized dots against ggml's own bit for bit.
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Pregate.Core;
using Pregate.Kernels;
using Xunit.Abstractions;

namespace Pregate.Tests.Kernels;

public unsafe class VecDotTests(ITestOutputHelper output)
{
    private delegate float FloatDot(void* w, float* x, int n);

    // Relative to Σ|w·x| (the condition number of the sum); float accumulation over n ≤ 4096 terms stays well inside.
    private const double FloatTolerance = 2e-6;

    private static double AbsSum(float[] w, float[] x)
    {
        double s = 0;
        for (int i = 0; i < w.Length; i++) s += Math.Abs((double)w[i] * x[i]);
        return s;
    }

    private void CheckFloatKernel(string name, DType type, FloatDot scalar, params (string Name, bool Available, FloatDot Kernel)[] kernels)
    {
        double worst = 0;
        foreach (int n in TestData.Lengths.Append(4096))
        {
            var wf = TestData.Gaussian(n, 100 + n);
            var x = TestData.Gaussian(n, 200 + n);
            var bytes = new byte[DTypes.ByteCount(type, n)];
            Quantize.Row(type, wf, bytes);
            var wDecoded = new float[n];
            Quantize.Dequantize(type, bytes, wDecoded);
            fixed (byte* pw = bytes) fixed (float* px = x)
            {
                float reference = scalar(pw, px, n);
                // The scalar reference itself equals a float64 dot of the decoded weights to float rounding.
                double exact = 0;
                for (int i = 0; i < n; i++) exact += (double)wDecoded[i] * x[i];
                double scale = Math.Max(AbsSum(wDecoded, x), 1e-30);
                Assert.True(Math.Abs(reference - exact) / scale < FloatTolerance, $"{name} scalar n={n}");
                foreach (var k in kernels)
                {
                    if (!k.Available) continue;
                    float got = k.Kernel(pw, px, n);
                    double rel = Math.Abs(got - reference) / scale;
                    worst = Math.Max(worst, rel);
                    Assert.True(rel < FloatTolerance, $"{name} {k.Name} n={n}: {got} vs {reference} (rel {rel:G3})");
                }
            }
        }
        output.WriteLine($"{name}: max |simd − scalar| / Σ|w·x| = {worst:G3} (tolerance {FloatTolerance})");
    }

    [Fact]
    public void F32KernelsMatchScalar() => CheckFloatKernel("f32", DType.F32,
        (w, x, n) => VecDot.F32Scalar((float*)w, x, n),
        ("vector256", Vector256.IsHardwareAccelerated, (w, x, n) => VecDot.F32Vector256((float*)w, x, n)),
        ("vector128", Vector128.IsHardwareAccelerated, (w, x, n) => VecDot.F32Vector128((float*)w, x, n)),
        ("dispatch", true, (w, x, n) => VecDot.F32((float*)w, x, n)));

    [Fact]
    public void F16KernelsMatchScalar() => CheckFloatKernel("f16", DType.F16,
        (w, x, n) => VecDot.F16Scalar((ushort*)w, x, n),
        ("vector512", Vector512.IsHardwareAccelerated, (w, x, n) => VecDot.F16Vector512((ushort*)w, x, n)),
        ("vector256", Vector256.IsHardwareAccelerated, (w, x, n) => VecDot.F16Vector256((ushort*)w, x, n)),
        ("vector128", Vector128.IsHardwareAccelerated, (w, x, n) => VecDot.F16Vector128((ushort*)w, x, n)),
        ("dispatch", true, (w, x, n) => VecDot.F16((ushort*)w, x, n)));

    [Fact]
    public void BF16KernelsMatchScalar() => CheckFloatKernel("bf16", DType.BF16,
        (w, x, n) => VecDot.BF16Scalar((ushort*)w, x, n),
        ("vector256", Vector256.IsHardwareAccelerated, (w, x, n) => VecDot.BF16Vector256((ushort*)w, x, n)),
        ("vector128", Vector128.IsHardwareAccelerated, (w, x, n) => VecDot.BF16Vector128((ushort*)w, x, n)),
        ("dispatch", true, (w, x, n) => VecDot.BF16((ushort*)w, x, n)));

    [Fact]
    public void F16WidenHandlesSubnormalsInfinityAndSignedZero()
    {
        ushort[] specials = [0x0000, 0x8000, 0x0001, 0x83FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00, 0x3C00, 0xBC00, 0x3555, 0x03FF];
        var w = new ushort[32];
        var x = new float[32];
        foreach (ushort h in specials)
        {
            for (int i = 0; i < 32; i += 5)
            {
                // One special weight at position i, everything else zero, so the dot is exactly that weight.
                Array.Clear(w);
                Array.Clear(x);
                w[i] = h;
                x[i] = 1f;
                float expected = (float)BitConverter.UInt16BitsToHalf(h);
                fixed (ushort* pw = w) fixed (float* px = x)
                {
                    Assert.Equal(expected, VecDot.F16Vector256(pw, px, 32));
                    Assert.Equal(expected, VecDot.F16Vector128(pw, px, 32));
                    if (Vector512.IsHardwareAccelerated) Assert.Equal(expected, VecDot.F16Vector512(pw, px, 32));
                }
            }
        }
    }

    [Fact]
    public void F16FastAndGeneralWideningGiveTheSameSums()
    {
        // Groups of 32 with only normal numbers take the integer fast path, others (zero, subnormal) the general one;
        // both convert exactly, so the sum equals the F32 kernel on the decoded weights bit for bit.
        const int n = 4096;
        var rng = new Random(3);
        var w = new ushort[n];
        for (int i = 0; i < n; i++)
        {
            int group = i / 32;
            w[i] = (group % 3) switch
            {
                0 => BitConverter.HalfToUInt16Bits((Half)(rng.NextDouble() - 0.5)),
                1 => (ushort)rng.Next(0, 0x0400),                    // zero and subnormals
                _ => (ushort)(rng.Next(0, 0x7C00) | (rng.Next(2) << 15)),
            };
        }
        var decoded = new float[n];
        Fp16.ToFloat(w, decoded);
        var x = TestData.Gaussian(n, 4);
        fixed (ushort* pw = w) fixed (float* pd = decoded) fixed (float* px = x)
        {
            float f16 = VecDot.F16Vector256(pw, px, n);
            float f32 = VecDot.F32Vector256(pd, px, n);
            Assert.Equal(BitConverter.SingleToUInt32Bits(f32), BitConverter.SingleToUInt32Bits(f16));
            // The 16-lane widening keeps the 8-wide accumulators and their order: the same bits as well.
            if (Vector512.IsHardwareAccelerated)
                Assert.Equal(BitConverter.SingleToUInt32Bits(f16), BitConverter.SingleToUInt32Bits(VecDot.F16Vector512(pw, px, n)));
        }
        // fp16 × fp16 likewise, with the special groups in the activation as well (shifted by one group).
        var x16 = new ushort[n];
        for (int i = 0; i < n; i++) x16[i] = w[(i + 32) % n];
        var xDecoded = new float[n];
        Fp16.ToFloat(x16, xDecoded);
        fixed (ushort* pw = w) fixed (ushort* px16 = x16) fixed (float* pd = decoded) fixed (float* pxd = xDecoded)
            Assert.Equal(BitConverter.SingleToUInt32Bits(VecDot.F32Vector256(pd, pxd, n)), BitConverter.SingleToUInt32Bits(VecDot.F16xF16Vector256(pw, px16, n)));
    }

    // fp16 weights of every kind: Gaussian normals, zeros and subnormals, and any finite bit pattern, a group of 32 each.
    private static ushort[] MixedHalfWeights(int n, int seed)
    {
        var rng = new Random(seed);
        var w = new ushort[n];
        for (int i = 0; i < n; i++)
            w[i] = (i / 32 % 3) switch
            {
                0 => BitConverter.HalfToUInt16Bits((Half)(rng.NextDouble() - 0.5)),
                1 => (ushort)(rng.Next(0, 0x0400) | (rng.Next(2) << 15)),
                _ => (ushort)(rng.Next(0, 0x7C00) | (rng.Next(2) << 15)),
            };
        return w;
    }

    private static float[] ScaledInput(float[] x) => x.Select(v => v * VecDot.HalfInputScale).ToArray();

    [Fact]
    public void ScaledF16KernelsAreBitIdenticalToF16Vector256()
    {
        if (!VecDot.HasScaledF16) return;   // the scaled kernels need AVX2 and FMA
        int compared = 0;
        foreach (int n in TestData.Lengths.Append(96).Append(4096).Append(4099))
        {
            var w = MixedHalfWeights(n, 50 + n);
            var x = TestData.Gaussian(n, 60 + n, 30f);
            var xs = ScaledInput(x);
            fixed (ushort* pw = w) fixed (float* px = x) fixed (float* pxs = xs)
            {
                uint expected = BitConverter.SingleToUInt32Bits(VecDot.F16Vector256(pw, px, n));
                Assert.True(VecDot.F16ScaledAvx2(pw, pxs, n, out float avx2), $"n={n}: finite weights flagged");
                Assert.True(expected == BitConverter.SingleToUInt32Bits(avx2), $"avx2 n={n}: {avx2:R}");
                if (Vector512.IsHardwareAccelerated && Avx512BW.IsSupported)
                {
                    Assert.True(VecDot.F16ScaledVector512(pw, pxs, n, out float v512));
                    Assert.True(expected == BitConverter.SingleToUInt32Bits(v512), $"vector512 n={n}: {v512:R}");
                }
                Assert.True(VecDot.F16Scaled(pw, pxs, n, out float dispatched));
                Assert.Equal(expected, BitConverter.SingleToUInt32Bits(dispatched));
                compared++;
            }
        }
        output.WriteLine($"{compared} lengths: scaled f16 dots (avx2{(Vector512.IsHardwareAccelerated ? ", vector512" : "")}) identical to F16Vector256");
    }

    [Fact]
    public void ScaledF16KernelsRefuseInfAndNanWeightsOutsideTheTail()
    {
        if (!VecDot.HasScaledF16) return;
        const int n = 67;   // two groups of 32 and a tail of 3
        var x = ScaledInput(TestData.Gaussian(n, 7));
        foreach (ushort special in new ushort[] { 0x7C00, 0xFC00, 0x7E00, 0xFFFF, 0x7C01 })
            foreach (int at in new[] { 0, 31, 40, 63, 64, 66 })
            {
                var w = MixedHalfWeights(n, 8);
                w[at] = special;
                var xf = x.Select(v => v * BitConverter.Int32BitsToSingle((127 - 112) << 23)).ToArray();
                fixed (ushort* pw = w) fixed (float* px = x) fixed (float* pxf = xf)
                {
                    bool inTail = at >= 64;
                    Assert.Equal(inTail, VecDot.F16ScaledAvx2(pw, px, n, out float avx2));
                    if (Vector512.IsHardwareAccelerated && Avx512BW.IsSupported) Assert.Equal(inTail, VecDot.F16ScaledVector512(pw, px, n, out _));
                    // A special weight in the tail goes through the exact table conversion, as in F16Vector256.
                    if (inTail) Assert.Equal(BitConverter.SingleToUInt32Bits(VecDot.F16Vector256(pw, pxf, n)), BitConverter.SingleToUInt32Bits(avx2));
                }
            }
    }

    [Fact]
    public void F32MatchesGgmlVecDotF32BitForBit()
    {
        // Bit-exact where .NET runs the 8-wide FMA body as llama.cpp's AVX2 build does; within float rounding otherwise
        // (e.g. under DOTNET_EnableAVX2=0).
        bool exact = Vector256.IsHardwareAccelerated && Fma.IsSupported;
        var api = GgmlNative.Functions;
        foreach (int n in TestData.Lengths.Append(4096).Append(4099))
        {
            var w = TestData.Gaussian(n, 10 + n);
            var x = TestData.Gaussian(n, 20 + n);
            float expected;
            fixed (float* pw = w) fixed (float* px = x)
            {
                api.DotF32(n, &expected, 0, pw, 0, px, 0, 1);
                float ours = VecDot.F32(pw, px, n);
                if (exact)
                    Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(ours), $"n={n}: ggml {expected:R}, ours {ours:R}");
                else
                    Assert.True(Math.Abs(expected - ours) <= FloatTolerance * Math.Max(AbsSum(w, x), 1e-30), $"n={n}: ggml {expected:R}, ours {ours:R}");
            }
        }
    }

    [Fact]
    public void HalfByHalfDotsMatchGgmlBitForBit()
    {
        // llama.cpp rounds the activation to the weight's type (ggml_cpu_fp32_to_fp16 / _bf16) and then runs
        // ggml_vec_dot_f16 / ggml_vec_dot_bf16; both steps must give identical bits here.
        bool exact = Vector256.IsHardwareAccelerated && Fma.IsSupported;
        var api = GgmlNative.Functions;
        foreach (int n in TestData.Lengths.Append(4096).Append(4099))
        {
            var wf = TestData.Gaussian(n, 300 + n);
            var xf = TestData.Gaussian(n, 400 + n);
            var w16 = new ushort[n]; var x16 = new ushort[n]; var g16 = new ushort[n];
            var wb = new ushort[n]; var xb = new ushort[n]; var gb = new ushort[n];
            Fp16.FromFloat(wf, MemoryMarshal.Cast<ushort, Half>(w16.AsSpan()));
            Fp16.FromFloat(xf, MemoryMarshal.Cast<ushort, Half>(x16.AsSpan()));
            Bf16.FromFloat(wf, wb);
            Bf16.FromFloat(xf, xb);
            fixed (float* px = xf) fixed (ushort* pg16 = g16) fixed (ushort* pgb = gb)
            {
                api.CpuFp32ToFp16Row(px, pg16, n);
                api.CpuFp32ToBf16Row(px, pgb, n);
            }
            Assert.Equal(g16, x16);
            Assert.Equal(gb, xb);

            fixed (ushort* pw16 = w16) fixed (ushort* px16 = x16) fixed (ushort* pwb = wb) fixed (ushort* pxb = xb)
            {
                float e16, eb;
                api.DotF16(n, &e16, 0, pw16, 0, px16, 0, 1);
                api.DotBF16(n, &eb, 0, pwb, 0, pxb, 0, 1);
                float o16 = VecDot.F16xF16(pw16, px16, n), ob = VecDot.BF16xBF16(pwb, pxb, n);
                double scale = Math.Max(AbsSum(wf, xf), 1e-30);
                if (exact)
                {
                    Assert.True(BitConverter.SingleToUInt32Bits(e16) == BitConverter.SingleToUInt32Bits(o16), $"f16 n={n}: ggml {e16:R}, ours {o16:R}");
                    Assert.True(BitConverter.SingleToUInt32Bits(eb) == BitConverter.SingleToUInt32Bits(ob), $"bf16 n={n}: ggml {eb:R}, ours {ob:R}");
                }
                else
                {
                    Assert.True(Math.Abs(e16 - o16) <= FloatTolerance * scale);
                    Assert.True(Math.Abs(eb - ob) <= FloatTolerance * scale);
                }
                Assert.True(Math.Abs(VecDot.F16xF16Scalar(pw16, px16, n) - o16) <= FloatTolerance * scale);
                Assert.True(Math.Abs(VecDot.BF16xBF16Scalar(pwb, pxb, n) - ob) <= FloatTolerance * scale);
            }
        }
    }

    // ---- Quantized dots ----

    private sealed record QuantCase(DType Type, int BlockSize, Func<nint, nint, int, float> Avx2, Func<nint, nint, int, float> Scalar,
        Func<nint, nint, int, float> Dispatch, bool Q8K);

    private static QuantCase Case(DType type) => type switch
    {
        DType.Q8_0 => new(type, 32, (w, x, nb) => VecDot.Q8_0Avx2((BlockQ8_0*)w, (BlockQ8_0*)x, nb),
            (w, x, nb) => VecDot.Q8_0Scalar((BlockQ8_0*)w, (BlockQ8_0*)x, nb), (w, x, nb) => VecDot.Q8_0((BlockQ8_0*)w, (BlockQ8_0*)x, nb), false),
        DType.Q4_0 => new(type, 32, (w, x, nb) => VecDot.Q4_0Avx2((BlockQ4_0*)w, (BlockQ8_0*)x, nb),
            (w, x, nb) => VecDot.Q4_0Scalar((BlockQ4_0*)w, (BlockQ8_0*)x, nb), (w, x, nb) => VecDot.Q4_0((BlockQ4_0*)w, (BlockQ8_0*)x, nb), false),
        DType.Q4_K => new(type, 256, (w, x, nb) => VecDot.Q4_KAvx2((BlockQ4_K*)w, (BlockQ8_K*)x, nb),
            (w, x, nb) => VecDot.Q4_KScalar((BlockQ4_K*)w, (BlockQ8_K*)x, nb), (w, x, nb) => VecDot.Q4_K((BlockQ4_K*)w, (BlockQ8_K*)x, nb), true),
        _ => new(type, 256, (w, x, nb) => VecDot.Q6_KAvx2((BlockQ6_K*)w, (BlockQ8_K*)x, nb),
            (w, x, nb) => VecDot.Q6_KScalar((BlockQ6_K*)w, (BlockQ8_K*)x, nb), (w, x, nb) => VecDot.Q6_K((BlockQ6_K*)w, (BlockQ8_K*)x, nb), true),
    };

    public static IEnumerable<object[]> QuantTypes() => [[DType.Q8_0], [DType.Q4_0], [DType.Q4_K], [DType.Q6_K]];

    private static (byte[] W, byte[] X, float[] WDecoded, float[] XDecoded, float[] WFloat, float[] XFloat) Operands(QuantCase c, int n, int seed)
    {
        var wf = TestData.Gaussian(n, seed);
        var xf = TestData.Gaussian(n, seed + 1);
        var w = new byte[DTypes.ByteCount(c.Type, n)];
        Quantize.Row(c.Type, wf, w);
        var wd = new float[n];
        Quantize.Dequantize(c.Type, w, wd);
        byte[] x;
        var xd = new float[n];
        if (c.Q8K)
        {
            x = new byte[n / 256 * 292];
            Quantize.QuantizeQ8_K(xf, x);
            Quantize.Dequantize<BlockQ8_K>(MemoryMarshal.Cast<byte, BlockQ8_K>(x), xd);
        }
        else
        {
            x = new byte[DTypes.ByteCount(DType.Q8_0, n)];
            Quantize.QuantizeQ8_0Activation(xf, x);
            Quantize.Dequantize(DType.Q8_0, x, xd);
        }
        return (w, x, wd, xd, wf, xf);
    }

    [Theory]
    [MemberData(nameof(QuantTypes))]
    public void QuantizedDotMatchesFloat64OfDequantizedOperands(DType type)
    {
        var c = Case(type);
        double worstInt = 0, worstAvx = 0, worstQuant = 0;
        foreach (int blocks in new[] { 1, 2, 3, 7, 8, 16 })
        {
            int n = blocks * c.BlockSize;
            var (w, x, wd, xd, wf, xf) = Operands(c, n, 1000 * blocks + (int)type);
            double exact = 0, normW = 0, normX = 0, unquantized = 0;
            for (int i = 0; i < n; i++)
            {
                exact += (double)wd[i] * xd[i];
                unquantized += (double)wf[i] * xf[i];
                normW += (double)wd[i] * wd[i];
                normX += (double)xd[i] * xd[i];
            }
            double scale = Math.Sqrt(normW * normX);
            fixed (byte* pw = w) fixed (byte* px = x)
            {
                float scalar = c.Scalar((nint)pw, (nint)px, blocks);
                float dispatched = c.Dispatch((nint)pw, (nint)px, blocks);
                double relScalar = Math.Abs(scalar - exact) / scale;
                double relDispatch = Math.Abs(dispatched - exact) / scale;
                worstInt = Math.Max(worstInt, Math.Max(relScalar, relDispatch));
                Assert.True(relScalar < 1e-6, $"{type} scalar, {blocks} blocks: {scalar} vs {exact}");
                Assert.True(relDispatch < 1e-6, $"{type} dispatch, {blocks} blocks: {dispatched} vs {exact}");
                if (Avx2.IsSupported && Fma.IsSupported)
                {
                    float avx = c.Avx2((nint)pw, (nint)px, blocks);
                    double rel = Math.Abs(avx - scalar) / scale;
                    worstAvx = Math.Max(worstAvx, rel);
                    Assert.True(rel < 1e-6, $"{type} avx2 vs scalar, {blocks} blocks: {avx} vs {scalar}");
                }
                // And the quantized result is close to the unquantized float dot (quantization error only).
                worstQuant = Math.Max(worstQuant, Math.Abs(dispatched - unquantized) / scale);
            }
        }
        double quantBound = type switch { DType.Q8_0 => 0.02, DType.Q6_K => 0.05, _ => 0.2 };
        output.WriteLine($"{DTypes.Name(type)}: |dot − f64(deq·deq)|/(‖w‖‖x‖) ≤ {worstInt:G3} (tol 1e-6); avx2 vs scalar ≤ {worstAvx:G3} (tol 1e-6); " +
                         $"vs unquantized ≤ {worstQuant:G3} (tol {quantBound})");
        Assert.True(worstQuant < quantBound);
    }

    [Theory]
    [MemberData(nameof(QuantTypes))]
    public void Avx2QuantizedDotMatchesGgmlBitForBit(DType type)
    {
        // llama.cpp's AVX2 build is the oracle: identical bits when our AVX2 body runs, float rounding otherwise (the
        // scalar fallback under DOTNET_EnableAVX2=0).
        bool exact = Avx2.IsSupported && Fma.IsSupported;
        var api = GgmlNative.Functions;
        Assert.Equal(1, api.HasAvx2());
        var c = Case(type);
        var dot = type switch
        {
            DType.Q8_0 => api.DotQ8_0Q8_0,
            DType.Q4_0 => api.DotQ4_0Q8_0,
            DType.Q4_K => api.DotQ4_KQ8_K,
            _ => api.DotQ6_KQ8_K,
        };
        int compared = 0;
        foreach (int blocks in new[] { 1, 2, 3, 5, 8, 16, 56 })
        {
            for (int seed = 0; seed < 4; seed++)
            {
                int n = blocks * c.BlockSize;
                var (w, x, wd, xd, _, _) = Operands(c, n, seed * 7919 + blocks);
                double scale = Math.Sqrt(wd.Sum(v => (double)v * v) * xd.Sum(v => (double)v * v));
                fixed (byte* pw = w) fixed (byte* px = x)
                {
                    float expected;
                    dot(n, &expected, 0, pw, 0, px, 0, 1);
                    float ours = c.Dispatch((nint)pw, (nint)px, blocks);
                    if (exact)
                        Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(ours),
                            $"{type}, {blocks} blocks, seed {seed}: ggml {expected:R}, ours {ours:R}");
                    else
                        Assert.True(Math.Abs(expected - ours) <= 1e-6 * scale, $"{type}, {blocks} blocks: {expected} vs {ours}");
                    compared++;
                }
            }
        }
        output.WriteLine($"{DTypes.Name(type)}: {compared} dots {(exact ? "identical to" : "within 1e-6·‖w‖‖x‖ of")} ggml_vec_dot (AVX2 build)");
    }

    [Fact]
    public void SpanOverloadsValidateLengths()
    {
        Assert.Throws<ArgumentException>(() => VecDot.F32(new float[3], new float[4]));
        Assert.Throws<ArgumentException>(() => VecDot.Q8_0(new BlockQ8_0[2], new BlockQ8_0[1]));
        Assert.Throws<ArgumentException>(() => VecDot.Q6_K(new BlockQ6_K[1], new BlockQ8_K[2]));
    }
}
