// Block layouts, fp16/bf16 conversions and the quantizers: sizes, exhaustive conversions, hand-computed ggml expectations,
// round-trip error bounds, and bit-exactness against ggml's own quantizers and dequantizers.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Pregate.Core;
using Xunit.Abstractions;

namespace Pregate.Tests.Kernels;

public unsafe class QuantTests(ITestOutputHelper output)
{
    [Fact]
    public void BlockSizesAndOffsetsMatchGgml()
    {
        Assert.Equal(34, Unsafe.SizeOf<BlockQ8_0>());
        Assert.Equal(18, Unsafe.SizeOf<BlockQ4_0>());
        Assert.Equal(144, Unsafe.SizeOf<BlockQ4_K>());
        Assert.Equal(210, Unsafe.SizeOf<BlockQ6_K>());
        Assert.Equal(292, Unsafe.SizeOf<BlockQ8_K>());
        foreach (var t in new[] { DType.Q8_0, DType.Q4_0, DType.Q4_K, DType.Q6_K })
            Assert.Equal(DTypes.BlockBytes(t), t switch
            {
                DType.Q8_0 => Unsafe.SizeOf<BlockQ8_0>(),
                DType.Q4_0 => Unsafe.SizeOf<BlockQ4_0>(),
                DType.Q4_K => Unsafe.SizeOf<BlockQ4_K>(),
                _ => Unsafe.SizeOf<BlockQ6_K>(),
            });

        var q6 = default(BlockQ6_K);
        Assert.Equal(208, (int)((byte*)&q6.D - (byte*)&q6));
        Assert.Equal(192, (int)((byte*)q6.Scales - (byte*)&q6));
        var q4k = default(BlockQ4_K);
        Assert.Equal(4, (int)((byte*)q4k.Scales - (byte*)&q4k));
        Assert.Equal(16, (int)((byte*)q4k.Qs - (byte*)&q4k));
        var q8k = default(BlockQ8_K);
        Assert.Equal(260, (int)((byte*)q8k.BSums - (byte*)&q8k));
    }

    [Fact]
    public void PowerOfTwoConstantsAreExact()
    {
        Assert.Equal(Fp16.TwoPow112, MathF.ScaleB(1f, 112));
        Assert.Equal(Fp16.TwoPowM110, MathF.ScaleB(1f, -110));
        Assert.Equal(Fp16.TwoPowM112, MathF.ScaleB(1f, -112));
    }

    [Fact]
    public void Fp16ToFloatExhaustive()
    {
        var bits = new ushort[65536];
        for (int i = 0; i < bits.Length; i++) bits[i] = (ushort)i;
        var vec = new float[65536];
        Fp16.ToFloat(bits, vec);
        int nans = 0;
        for (int i = 0; i < 65536; i++)
        {
            float expected = (float)BitConverter.UInt16BitsToHalf((ushort)i);
            float table = Fp16.ToFloat((ushort)i);
            if (float.IsNaN(expected))
            {
                nans++;
                Assert.True(float.IsNaN(table) && float.IsNaN(vec[i]), $"0x{i:X4} must stay NaN");
                Assert.Equal(BitConverter.SingleToUInt32Bits(table), BitConverter.SingleToUInt32Bits(vec[i]));
                continue;
            }
            Assert.Equal(BitConverter.SingleToUInt32Bits(expected), BitConverter.SingleToUInt32Bits(table));
            Assert.Equal(BitConverter.SingleToUInt32Bits(expected), BitConverter.SingleToUInt32Bits(vec[i]));
        }
        output.WriteLine($"65536 patterns exact ({nans} NaN patterns checked as NaN)");
    }

    [Fact]
    public void Fp16FromFloatRoundsToNearestEven()
    {
        // Every 251st float bit pattern (17M values, all exponents) against .NET's correctly rounded conversion.
        int checkedCount = 0;
        for (ulong u = 0; u <= uint.MaxValue; u += 251)
        {
            float f = BitConverter.UInt32BitsToSingle((uint)u);
            ushort ours = Fp16.FromFloatBits(f);
            if (float.IsNaN(f))
            {
                Assert.True(Half.IsNaN(BitConverter.UInt16BitsToHalf(ours)));
                continue;
            }
            Assert.Equal(BitConverter.HalfToUInt16Bits((Half)f), ours);
            checkedCount++;
        }
        // Ties: 1 + 2^-11 is halfway between 1 and the next half; even mantissa wins. 65520 rounds to infinity.
        Assert.Equal((ushort)0x3C00, Fp16.FromFloatBits(1f + MathF.ScaleB(1f, -11)));
        Assert.Equal((ushort)0x3C02, Fp16.FromFloatBits(1f + 3 * MathF.ScaleB(1f, -11)));
        Assert.Equal((ushort)0x7C00, Fp16.FromFloatBits(65520f));
        Assert.Equal((ushort)0x7BFF, Fp16.FromFloatBits(65519f));
        Assert.Equal((ushort)0x0001, Fp16.FromFloatBits(MathF.ScaleB(1f, -24)));
        Assert.Equal((ushort)0x0000, Fp16.FromFloatBits(MathF.ScaleB(1f, -25)));
        output.WriteLine($"{checkedCount} finite values matched (Half) conversion");
    }

    [Fact]
    public void Fp16MatchesGgmlConversions()
    {
        var api = GgmlNative.Functions;
        for (int i = 0; i < 65536; i++)
        {
            float g = api.Fp16ToFp32((ushort)i);
            float ours = Fp16.ToFloat((ushort)i);
            if (float.IsNaN(g)) Assert.True(float.IsNaN(ours));
            else Assert.Equal(BitConverter.SingleToUInt32Bits(g), BitConverter.SingleToUInt32Bits(ours));
        }
        var rng = new Random(7);
        for (int i = 0; i < 200_000; i++)
        {
            float f = BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32));
            if (float.IsNaN(f)) continue;
            Assert.Equal(api.Fp32ToFp16(f), Fp16.FromFloatBits(f));
            Assert.Equal(api.Fp32ToBf16(f), Bf16.FromFloat(f));
        }
    }

    [Fact]
    public void Bf16Exhaustive()
    {
        var bits = new ushort[65536];
        for (int i = 0; i < bits.Length; i++) bits[i] = (ushort)i;
        var vec = new float[65536];
        Bf16.ToFloat(bits, vec);
        for (int i = 0; i < 65536; i++)
        {
            uint expected = (uint)i << 16;
            Assert.Equal(expected, BitConverter.SingleToUInt32Bits(Bf16.ToFloat((ushort)i)));
            Assert.Equal(expected, BitConverter.SingleToUInt32Bits(vec[i]));
            // Every bf16 value converts back to itself (NaNs stay NaN).
            float f = Bf16.ToFloat((ushort)i);
            if (float.IsNaN(f)) Assert.True(float.IsNaN(Bf16.ToFloat(Bf16.FromFloat(f))));
            else Assert.Equal((ushort)i, Bf16.FromFloat(f));
        }
        // Rounding: the nearest bf16 by distance, ties to the even pattern.
        var rng = new Random(11);
        for (int k = 0; k < 1_000_000; k++)
        {
            float f = BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32));
            if (!float.IsFinite(f) || MathF.Abs(f) > 3.38e38f) continue;
            uint u = BitConverter.SingleToUInt32Bits(f);
            ushort lo = (ushort)(u >> 16), hi = (ushort)(lo + 1);
            double dLo = Math.Abs((double)f - Bf16.ToFloat(lo)), dHi = Math.Abs((double)f - Bf16.ToFloat(hi));
            ushort expected = dLo < dHi ? lo : dHi < dLo ? hi : (lo % 2 == 0 ? lo : hi);
            Assert.Equal(expected, Bf16.FromFloat(f));
        }
    }

    [Fact]
    public void Q8_0RoundsHalvesAwayFromZero()
    {
        // amax = 127 makes d = 1 exactly, so q = roundf(x).
        var x = new float[32];
        float[] head = [-127f, 2.5f, -2.5f, 3.5f, 0.5f, -0.5f, 0.49f, 126.5f, -1.5f, 100.2f];
        head.CopyTo(x, 0);
        var dst = new byte[34];
        Quantize.QuantizeQ8_0(x, dst);
        var b = MemoryMarshal.Read<BlockQ8_0>(dst);
        Assert.Equal((ushort)0x3C00, BitConverter.HalfToUInt16Bits(b.D));
        sbyte[] expected = [-127, 3, -3, 4, 1, -1, 0, 127, -2, 100];
        for (int j = 0; j < expected.Length; j++) Assert.Equal(expected[j], b.Qs[j]);
        for (int j = expected.Length; j < 32; j++) Assert.Equal(0, b.Qs[j]);

        // The activation variant (llama.cpp's x86 quantize_row_q8_0) rounds halves to even.
        Quantize.QuantizeQ8_0Activation(x, dst);
        b = MemoryMarshal.Read<BlockQ8_0>(dst);
        sbyte[] expectedEven = [-127, 2, -2, 4, 0, 0, 0, 126, -2, 100];
        for (int j = 0; j < expectedEven.Length; j++) Assert.Equal(expectedEven[j], b.Qs[j]);

        // All-zero block: d = 0 and q = 0.
        Quantize.QuantizeQ8_0(new float[32], dst);
        Assert.All(dst, v => Assert.Equal(0, v));
    }

    [Fact]
    public void Q4_0UsesSignedMaxAndTruncation()
    {
        // Largest magnitude is −8 → d = 1, q = min(15, ⌊x + 8.5⌋).
        var x = new float[32];
        float[] lowHalf = [-8f, 7f, 7.6f, 0f, 0.5f, -0.5f, 0.49f, 1.5f];
        lowHalf.CopyTo(x, 0);
        x[16] = -7.5f;   // element 16 shares byte 0 (high nibble)
        x[17] = 3.2f;
        var dst = new byte[18];
        Quantize.QuantizeQ4_0(x, dst);
        var b = MemoryMarshal.Read<BlockQ4_0>(dst);
        Assert.Equal((ushort)0x3C00, BitConverter.HalfToUInt16Bits(b.D));
        int[] lowNibbles = [0, 15, 15, 8, 9, 8, 8, 10];
        int[] highNibbles = [1, 11];
        for (int j = 0; j < lowNibbles.Length; j++) Assert.Equal(lowNibbles[j], b.Qs[j] & 0xF);
        for (int j = 0; j < highNibbles.Length; j++) Assert.Equal(highNibbles[j], b.Qs[j] >> 4);

        // Largest magnitude positive (16) → d = −2: 16 → 0, −14 → 15, 3 → 7.
        Array.Clear(x);
        x[0] = 16f; x[1] = -14f; x[2] = 3f;
        Quantize.QuantizeQ4_0(x, dst);
        b = MemoryMarshal.Read<BlockQ4_0>(dst);
        Assert.Equal(-2f, (float)b.D);
        Assert.Equal(0, b.Qs[0] & 0xF);
        Assert.Equal(15, b.Qs[1] & 0xF);
        Assert.Equal(7, b.Qs[2] & 0xF);
        Assert.Equal(8, b.Qs[3] & 0xF);
    }

    [Fact]
    public void Q8_KIsSymmetricWithBlockSums()
    {
        var x = TestData.Gaussian(512, 5);
        var dst = new byte[2 * 292];
        Quantize.QuantizeQ8_K(x, dst);
        var blocks = MemoryMarshal.Cast<byte, BlockQ8_K>(dst);
        for (int i = 0; i < 2; i++)
        {
            int amaxIndex = 0;
            for (int j = 1; j < 256; j++) if (MathF.Abs(x[i * 256 + j]) > MathF.Abs(x[i * 256 + amaxIndex])) amaxIndex = j;
            Assert.Equal(x[i * 256 + amaxIndex] < 0 ? 127 : -127, blocks[i].Qs[amaxIndex]);
            for (int g = 0; g < 16; g++)
            {
                int sum = 0;
                for (int j = 0; j < 16; j++) sum += blocks[i].Qs[g * 16 + j];
                Assert.Equal(sum, blocks[i].BSums[g]);
            }
        }
    }

    public static IEnumerable<object[]> QuantTypes() =>
        [[DType.Q8_0], [DType.Q4_0], [DType.Q4_K], [DType.Q6_K]];

    [Theory]
    [MemberData(nameof(QuantTypes))]
    public void RoundTripErrorIsBounded(DType type)
    {
        // Relative RMS error bounds on Gaussian rows (measured values are printed; bounds leave ~1.5× margin).
        double bound = type switch { DType.Q8_0 => 0.008, DType.Q4_0 => 0.14, DType.Q4_K => 0.12, _ => 0.03 };
        const int n = 4096;
        var x = TestData.Gaussian(n, 42);
        var q = new byte[DTypes.ByteCount(type, n)];
        var y = new float[n];
        Quantize.Row(type, x, q);
        Quantize.Dequantize(type, q, y);
        double err = 0, norm = 0, maxErr = 0;
        for (int i = 0; i < n; i++)
        {
            err += (x[i] - y[i]) * (double)(x[i] - y[i]);
            norm += x[i] * (double)x[i];
            maxErr = Math.Max(maxErr, Math.Abs(x[i] - y[i]));
        }
        double rel = Math.Sqrt(err / norm);
        output.WriteLine($"{DTypes.Name(type)}: relative RMS error {rel:G4} (bound {bound}), max abs error {maxErr:G4}");
        Assert.True(rel < bound);

        if (type == DType.Q8_0)
        {
            // Per element: |x − d·q| ≤ d/2 up to the fp16 rounding of d (|q| ≤ 127).
            var blocks = MemoryMarshal.Cast<byte, BlockQ8_0>(q);
            for (int i = 0; i < n; i++)
            {
                float d = (float)blocks[i / 32].D;
                Assert.True(Math.Abs(x[i] - y[i]) <= 0.5 * d + 127 * d * 4.9e-4 + 1e-7, $"element {i}");
            }
        }
    }

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.F16)]
    [InlineData(DType.BF16)]
    public void FloatFormatsRoundTrip(DType type)
    {
        var x = TestData.Gaussian(259, 3);
        var bytes = new byte[DTypes.ByteCount(type, x.Length)];
        var y = new float[x.Length];
        Quantize.Row(type, x, bytes);
        Quantize.Dequantize(type, bytes, y);
        double tol = type switch { DType.F32 => 0, DType.F16 => 1.0 / 2048, _ => 1.0 / 256 };
        for (int i = 0; i < x.Length; i++) Assert.True(Math.Abs(x[i] - y[i]) <= tol * Math.Abs(x[i]), $"{type} element {i}");
    }

    [Fact]
    public void BadLengthsThrow()
    {
        Assert.Throws<ArgumentException>(() => Quantize.QuantizeQ8_0(new float[33], new byte[68]));
        Assert.Throws<ArgumentException>(() => Quantize.QuantizeQ8_0(new float[32], new byte[33]));
        Assert.Throws<ArgumentException>(() => Quantize.QuantizeQ4_K(new float[128], new byte[144]));
        Assert.Throws<ArgumentException>(() => Quantize.QuantizeQ8_K(new float[256], new byte[291]));
        Assert.Throws<ArgumentException>(() => Quantize.Dequantize(DType.Q6_K, new byte[211], new float[256]));
        Assert.Throws<ArgumentException>(() => Quantize.Dequantize(DType.Q8_0, new byte[68], new float[63]));
        Assert.Throws<ArgumentException>(() => Quantize.Dequantize(DType.I32, new byte[4], new float[1]));
    }

    // ---- Bit-exactness against ggml (the AVX2 build llama.cpp runs on the target machine) ----

    private static void AssertSameBytes(byte[] expected, byte[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (expected[i] != actual[i]) Assert.Fail($"{what}: first difference at byte {i}: ggml {expected[i]}, ours {actual[i]}");
    }

    [Theory]
    [MemberData(nameof(QuantTypes))]
    public void QuantizersMatchGgmlReferenceBitForBit(DType type)
    {
        var api = GgmlNative.Functions;
        var quantize = type switch
        {
            DType.Q8_0 => api.QuantizeQ8_0Ref,
            DType.Q4_0 => api.QuantizeQ4_0Ref,
            DType.Q4_K => api.QuantizeQ4_KRef,
            _ => api.QuantizeQ6_KRef,
        };
        var dequantize = type switch
        {
            DType.Q8_0 => api.DequantizeQ8_0,
            DType.Q4_0 => api.DequantizeQ4_0,
            DType.Q4_K => api.DequantizeQ4_K,
            _ => api.DequantizeQ6_K,
        };
        const int n = 8 * 256;
        int rows = 0;
        foreach (var (name, x) in TestData.QuantizerInputs(n, 1234))
        {
            var expected = new byte[DTypes.ByteCount(type, n)];
            var actual = new byte[expected.Length];
            fixed (float* px = x) fixed (byte* pe = expected) quantize(px, pe, n);
            Quantize.Row(type, x, actual);
            AssertSameBytes(expected, actual, $"{DTypes.Name(type)} {name}");

            var ggmlValues = new float[n];
            var ourValues = new float[n];
            fixed (byte* pe = expected) fixed (float* pv = ggmlValues) dequantize(pe, pv, n);
            Quantize.Dequantize(type, actual, ourValues);
            for (int i = 0; i < n; i++)
                Assert.Equal(BitConverter.SingleToUInt32Bits(ggmlValues[i]), BitConverter.SingleToUInt32Bits(ourValues[i]));
            rows++;
        }
        output.WriteLine($"{DTypes.Name(type)}: {rows} rows of {n} identical to ggml (quantize and dequantize)");
    }

    [Fact]
    public void ActivationQuantizersMatchGgmlCpuBitForBit()
    {
        var api = GgmlNative.Functions;
        const int n = 8 * 256;
        foreach (var (name, x) in TestData.QuantizerInputs(n, 99))
        {
            var expected = new byte[DTypes.ByteCount(DType.Q8_0, n)];
            var actual = new byte[expected.Length];
            fixed (float* px = x) fixed (byte* pe = expected) api.QuantizeRowQ8_0(px, pe, n);
            Quantize.QuantizeQ8_0Activation(x, actual);
            AssertSameBytes(expected, actual, $"q8_0 activation {name}");
            var scalar = new byte[expected.Length];
            Quantize.QuantizeQ8_0ActivationScalar(x, MemoryMarshal.Cast<byte, BlockQ8_0>(scalar.AsSpan()));
            AssertSameBytes(expected, scalar, $"q8_0 activation (scalar) {name}");

            var expectedK = new byte[n / 256 * 292];
            var actualK = new byte[expectedK.Length];
            fixed (float* px = x) fixed (byte* pe = expectedK) api.QuantizeRowQ8_K(px, pe, n);
            Quantize.QuantizeQ8_K(x, actualK);
            var ek = MemoryMarshal.Cast<byte, BlockQ8_K>(expectedK);
            var ak = MemoryMarshal.Cast<byte, BlockQ8_K>(actualK);
            for (int i = 0; i < ek.Length; i++)
            {
                if (ek[i].D == 0) { Assert.Equal(0f, ak[i].D); continue; }   // ggml leaves bsums of an all-zero block unset
                Assert.Equal(BitConverter.SingleToUInt32Bits(ek[i].D), BitConverter.SingleToUInt32Bits(ak[i].D));
                for (int j = 0; j < 256; j++) Assert.Equal(ek[i].Qs[j], ak[i].Qs[j]);
                for (int j = 0; j < 16; j++) Assert.Equal(ek[i].BSums[j], ak[i].BSums[j]);
            }
        }
    }
}
