// Row quantizers and dequantizers, bit-exact ports of ggml (ggml-quants.c: quantize_row_q8_0_ref, quantize_row_q4_0_ref,
// quantize_row_q8_K_ref; ggml-cpu/arch/x86/quants.c: quantize_row_q8_0 for activations). K-quants are in KQuantize.cs.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Pregate.Core;

/// <summary>
/// Quantize float rows into ggml block formats and back. Sources must hold a whole number of blocks; destinations must be
/// at least <c>DTypes.ByteCount(type, src.Length)</c> bytes, else <see cref="ArgumentException"/>.
/// Inputs are expected to be finite (NaN/inf give unspecified but memory-safe blocks, as in ggml).
/// </summary>
public static partial class Quantize
{
    /// <summary>ggml's nearest_int: round half to even via the 1.5·2^23 trick (valid for |f| ≤ 2^22).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int NearestInt(float f)
    {
        float v = f + 12582912f;
        int i = BitConverter.SingleToInt32Bits(v);
        return (i & 0x007FFFFF) - 0x00400000;
    }

    private static Span<TBlock> Blocks<TBlock>(ReadOnlySpan<float> src, Span<byte> dst, DType type) where TBlock : unmanaged =>
        Blocks<TBlock>(src, dst, DTypes.BlockSize(type), DTypes.BlockBytes(type), DTypes.Name(type));

    private static Span<TBlock> Blocks<TBlock>(ReadOnlySpan<float> src, Span<byte> dst, int blockSize, int blockBytes, string name)
        where TBlock : unmanaged
    {
        if (src.Length % blockSize != 0)
            throw new ArgumentException($"{src.Length} values is not a whole number of {name} blocks of {blockSize}", nameof(src));
        int blocks = src.Length / blockSize;
        long need = (long)blocks * blockBytes;
        if (dst.Length < need) throw new ArgumentException($"destination holds {dst.Length} bytes, {need} needed", nameof(dst));
        return MemoryMarshal.Cast<byte, TBlock>(dst[..(int)need]);
    }

    private static ReadOnlySpan<TBlock> Blocks<TBlock>(ReadOnlySpan<byte> src, Span<float> dst, DType type) where TBlock : unmanaged
    {
        int bs = DTypes.BlockSize(type), bb = DTypes.BlockBytes(type);
        if (src.Length % bb != 0)
            throw new ArgumentException($"{src.Length} bytes is not a whole number of {DTypes.Name(type)} blocks of {bb} bytes", nameof(src));
        long values = (long)(src.Length / bb) * bs;
        if (dst.Length < values) throw new ArgumentException($"destination holds {dst.Length} values, {values} needed", nameof(dst));
        return MemoryMarshal.Cast<byte, TBlock>(src);
    }

    /// <summary>Q8_0 as ggml's quantize_row_q8_0_ref (model files): d = amax/127, q = roundf(x/d) (halves away from zero).</summary>
    public static unsafe void QuantizeQ8_0(ReadOnlySpan<float> src, Span<byte> dst)
    {
        var y = Blocks<BlockQ8_0>(src, dst, DType.Q8_0);
        for (int i = 0; i < y.Length; i++)
        {
            var x = src.Slice(i * 32, 32);
            float amax = 0;
            for (int j = 0; j < 32; j++)
            {
                float a = MathF.Abs(x[j]);
                amax = amax > a ? amax : a;
            }
            float d = amax / 127;
            float id = d != 0 ? 1.0f / d : 0.0f;
            y[i].D = Fp16.FromFloat(d);
            for (int j = 0; j < 32; j++) y[i].Qs[j] = (sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
        }
    }

    /// <summary>
    /// Q8_0 for activations, as llama.cpp's x86 quantize_row_q8_0 (what the CPU backend applies to the input of a Q8_0/Q4_0
    /// mat-mul): d = amax/127 stored as fp16, q = round-half-even(x·(127/amax)).
    /// </summary>
    public static void QuantizeQ8_0Activation(ReadOnlySpan<float> src, Span<byte> dst)
    {
        var y = Blocks<BlockQ8_0>(src, dst, DType.Q8_0);
        if (Vector256.IsHardwareAccelerated && Avx2.IsSupported) QuantizeQ8_0ActivationAvx2(src, y);
        else QuantizeQ8_0ActivationScalar(src, y);
    }

    internal static unsafe void QuantizeQ8_0ActivationScalar(ReadOnlySpan<float> src, Span<BlockQ8_0> y)
    {
        for (int i = 0; i < y.Length; i++)
        {
            var x = src.Slice(i * 32, 32);
            float amax = 0;
            for (int j = 0; j < 32; j++)
            {
                float a = MathF.Abs(x[j]);
                amax = amax > a ? amax : a;
            }
            float d = amax / 127f;
            y[i].D = Fp16.FromFloat(d);
            float id = amax != 0.0f ? 127f / amax : 0.0f;
            for (int j = 0; j < 32; j++)
            {
                float r = MathF.Round(x[j] * id, MidpointRounding.ToEven);
                y[i].Qs[j] = (sbyte)Math.Clamp((int)r, -128, 127);
            }
        }
    }

    private static unsafe void QuantizeQ8_0ActivationAvx2(ReadOnlySpan<float> src, Span<BlockQ8_0> y)
    {
        fixed (float* xBase = src)
        fixed (BlockQ8_0* yBase = y)
        {
            var absMask = Vector256.Create(0x7FFFFFFF).AsSingle();
            for (int i = 0; i < y.Length; i++)
            {
                float* x = xBase + i * 32;
                var v0 = Avx.LoadVector256(x);
                var v1 = Avx.LoadVector256(x + 8);
                var v2 = Avx.LoadVector256(x + 16);
                var v3 = Avx.LoadVector256(x + 24);
                var m = Avx.Max(Avx.Max(v0 & absMask, v1 & absMask), Avx.Max(v2 & absMask, v3 & absMask));
                var m4 = Sse.Max(m.GetUpper(), m.GetLower());
                m4 = Sse.Max(m4, Sse.MoveHighToLow(m4, m4));
                m4 = Sse.MaxScalar(m4, Sse3.MoveHighAndDuplicate(m4));
                float amax = m4.ToScalar();
                float d = amax / 127f;
                yBase[i].D = Fp16.FromFloat(d);
                var id = Vector256.Create(amax != 0.0f ? 127f / amax : 0.0f);
                var i0 = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(v0 * id));
                var i1 = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(v1 * id));
                var i2 = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(v2 * id));
                var i3 = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(v3 * id));
                var s01 = Avx2.PackSignedSaturate(i0, i1);
                var s23 = Avx2.PackSignedSaturate(i2, i3);
                var b = Avx2.PackSignedSaturate(s01, s23).AsInt32();
                b = Avx2.PermuteVar8x32(b, Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7));
                Avx.Store((int*)yBase[i].Qs, b);
            }
        }
    }

    /// <summary>Q4_0 as ggml's quantize_row_q4_0_ref: d = max/−8 (max = the value of largest magnitude), q = min(15, ⌊x/d + 8.5⌋).</summary>
    public static unsafe void QuantizeQ4_0(ReadOnlySpan<float> src, Span<byte> dst)
    {
        var y = Blocks<BlockQ4_0>(src, dst, DType.Q4_0);
        for (int i = 0; i < y.Length; i++)
        {
            var x = src.Slice(i * 32, 32);
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
            {
                float v = x[j];
                if (amax < MathF.Abs(v))
                {
                    amax = MathF.Abs(v);
                    max = v;
                }
            }
            float d = max / -8;
            float id = d != 0 ? 1.0f / d : 0.0f;
            y[i].D = Fp16.FromFloat(d);
            for (int j = 0; j < 16; j++)
            {
                float x0 = x[j] * id;
                float x1 = x[16 + j] * id;
                int xi0 = Math.Min(15, (int)(sbyte)(int)(x0 + 8.5f));
                int xi1 = Math.Min(15, (int)(sbyte)(int)(x1 + 8.5f));
                y[i].Qs[j] = (byte)(xi0 | (xi1 << 4));
            }
        }
    }

    /// <summary>
    /// Q8_K as ggml's quantize_row_q8_K_ref (the activation format of k-quant dot products): scale −127/max where max is the
    /// value of largest magnitude, q = min(127, nearest_int(x·scale)), plus per-16 sums. An all-zero block gets zeros.
    /// </summary>
    public static unsafe void QuantizeQ8_K(ReadOnlySpan<float> src, Span<byte> dst)
    {
        var y = Blocks<BlockQ8_K>(src, dst, BlockQ8_K.Size, Unsafe.SizeOf<BlockQ8_K>(), "q8_k");
        for (int i = 0; i < y.Length; i++)
        {
            var x = src.Slice(i * 256, 256);
            float max = 0, amax = 0;
            for (int j = 0; j < 256; j++)
            {
                float ax = MathF.Abs(x[j]);
                if (ax > amax)
                {
                    amax = ax;
                    max = x[j];
                }
            }
            if (amax == 0)
            {
                y[i] = default;
                continue;
            }
            float iscale = -127f / max;
            for (int j = 0; j < 256; j++) y[i].Qs[j] = (sbyte)Math.Min(127, NearestInt(iscale * x[j]));
            for (int j = 0; j < 16; j++)
            {
                int sum = 0;
                for (int ii = 0; ii < 16; ii++) sum += y[i].Qs[j * 16 + ii];
                y[i].BSums[j] = (short)sum;
            }
            y[i].D = 1 / iscale;
        }
    }

    /// <summary>
    /// Encodes a float row as <paramref name="type"/> (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K) with the reference
    /// quantizers above. Throws <see cref="ArgumentException"/> for other types or bad lengths.
    /// </summary>
    public static void Row(DType type, ReadOnlySpan<float> src, Span<byte> dst)
    {
        switch (type)
        {
            case DType.F32:
                src.CopyTo(MemoryMarshal.Cast<byte, float>(Checked(type, src.Length, dst)));
                break;
            case DType.F16:
                Fp16.FromFloat(src, MemoryMarshal.Cast<byte, Half>(Checked(type, src.Length, dst)));
                break;
            case DType.BF16:
                Bf16.FromFloat(src, MemoryMarshal.Cast<byte, ushort>(Checked(type, src.Length, dst)));
                break;
            case DType.Q8_0: QuantizeQ8_0(src, dst); break;
            case DType.Q4_0: QuantizeQ4_0(src, dst); break;
            case DType.Q4_K: QuantizeQ4_K(src, dst); break;
            case DType.Q6_K: QuantizeQ6_K(src, dst); break;
            default: throw new ArgumentException($"cannot quantize to {DTypes.Name(type)}", nameof(type));
        }
    }

    private static Span<byte> Checked(DType type, int count, Span<byte> dst)
    {
        long need = DTypes.ByteCount(type, count);
        if (dst.Length < need) throw new ArgumentException($"destination holds {dst.Length} bytes, {need} needed", nameof(dst));
        return dst[..(int)need];
    }

    /// <summary>
    /// Decodes a row of <paramref name="type"/> (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K) into floats, as ggml's
    /// dequantize_row_*. <paramref name="src"/> must be whole blocks and <paramref name="dst"/> long enough, else
    /// <see cref="ArgumentException"/>.
    /// </summary>
    public static void Dequantize(DType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        switch (type)
        {
            case DType.F32:
                {
                    var f = Blocks<float>(src, dst, type);
                    f.CopyTo(dst);
                    break;
                }
            case DType.F16: Fp16.ToFloat(Blocks<ushort>(src, dst, type), dst); break;
            case DType.BF16: Bf16.ToFloat(Blocks<ushort>(src, dst, type), dst); break;
            case DType.Q8_0: Dequantize(Blocks<BlockQ8_0>(src, dst, type), dst); break;
            case DType.Q4_0: Dequantize(Blocks<BlockQ4_0>(src, dst, type), dst); break;
            case DType.Q4_K: Dequantize(Blocks<BlockQ4_K>(src, dst, type), dst); break;
            case DType.Q6_K: Dequantize(Blocks<BlockQ6_K>(src, dst, type), dst); break;
            default: throw new ArgumentException($"cannot dequantize {DTypes.Name(type)}", nameof(type));
        }
    }

    /// <summary>Decodes blocks into <paramref name="dst"/> (at least blocks·Elements long, else <see cref="ArgumentException"/>).</summary>
    public static void Dequantize<TBlock>(ReadOnlySpan<TBlock> blocks, Span<float> dst) where TBlock : unmanaged, IQuantBlock<TBlock>
    {
        int n = TBlock.Elements;
        if (dst.Length < (long)blocks.Length * n) throw new ArgumentException("destination too short", nameof(dst));
        for (int i = 0; i < blocks.Length; i++) TBlock.Dequantize(in blocks[i], dst.Slice(i * n, n));
    }
}
