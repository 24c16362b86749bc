// IEEE half (fp16) and bfloat16 conversions. fp16 → fp32 uses the bit construction of ggml's ggml_compute_fp16_to_fp32
// (Maratyszcza/FP16) through a 64K-entry table for scalars and vector integer ops for spans; fp32 → fp16 rounds to
// nearest even exactly as ggml_compute_fp32_to_fp16. bf16 is a ushort: widening is a 16-bit shift, narrowing rounds to
// nearest even (PyTorch's and ggml's rule).
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Pregate.Core;

/// <summary>IEEE binary16 conversions that never go through <c>(float)Half</c> (which the JIT does not vectorise).</summary>
public static class Fp16
{
    internal const float TwoPow112 = 5.192296858534828e+33f;   // 2^112
    internal const float TwoPowM110 = 7.703719777548943e-34f;  // 2^-110
    internal const float TwoPowM112 = 1.925929944387236e-34f;  // 2^-112

    // Built on first use; immutable afterwards.
    private static class Table
    {
        internal static readonly float[] Values = Build();

        private static float[] Build()
        {
            var t = new float[65536];
            for (int i = 0; i < t.Length; i++) t[i] = Compute((ushort)i);
            return t;
        }
    }

    /// <summary>fp16 bits → fp32, computed (no table). Exact for every finite value and infinity; NaNs stay NaN (quieted).</summary>
    internal static float Compute(ushort h)
    {
        uint w = (uint)h << 16;
        uint sign = w & 0x80000000u;
        uint twoW = w + w;
        // Normal numbers and inf/NaN: move exponent and mantissa into place and rebias by multiplying with 2^-112.
        float normalized = BitConverter.UInt32BitsToSingle((twoW >> 4) + (0xE0u << 23)) * TwoPowM112;
        // Subnormals: 0.5 + m·2^-24, minus 0.5.
        float denormalized = BitConverter.UInt32BitsToSingle((twoW >> 17) | (126u << 23)) - 0.5f;
        uint result = sign | (twoW < (1u << 27) ? BitConverter.SingleToUInt32Bits(denormalized) : BitConverter.SingleToUInt32Bits(normalized));
        return BitConverter.UInt32BitsToSingle(result);
    }

    /// <summary>fp16 bits → fp32 by table lookup.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort bits) => Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(Table.Values), (nint)bits);

    /// <summary>fp16 → fp32 by table lookup.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(Half h) => ToFloat(BitConverter.HalfToUInt16Bits(h));

    /// <summary>Converts <paramref name="src"/> to fp32 in <paramref name="dst"/> (vectorised). Throws when dst is shorter.</summary>
    public static void ToFloat(ReadOnlySpan<Half> src, Span<float> dst) => ToFloat(MemoryMarshal.Cast<Half, ushort>(src), dst);

    /// <summary>Converts fp16 bit patterns to fp32 (vectorised). Throws when dst is shorter than src.</summary>
    public static void ToFloat(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination shorter than source", nameof(dst));
        ref ushort s = ref MemoryMarshal.GetReference(src);
        ref float d = ref MemoryMarshal.GetReference(dst);
        int n = src.Length, i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 16 <= n; i += 16)
            {
                var h = Vector256.LoadUnsafe(ref s, (nuint)i);
                Widen(Vector256.WidenLower(h)).StoreUnsafe(ref d, (nuint)i);
                Widen(Vector256.WidenUpper(h)).StoreUnsafe(ref d, (nuint)(i + 8));
            }
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            for (; i + 8 <= n; i += 8)
            {
                var h = Vector128.LoadUnsafe(ref s, (nuint)i);
                Widen(Vector128.WidenLower(h)).StoreUnsafe(ref d, (nuint)i);
                Widen(Vector128.WidenUpper(h)).StoreUnsafe(ref d, (nuint)(i + 4));
            }
        }
        for (; i < n; i++) Unsafe.Add(ref d, i) = ToFloat(Unsafe.Add(ref s, i));
    }

    /// <summary>Eight fp16 bit patterns (zero-extended to 32 bits) → fp32; same bits as <see cref="Compute"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Widen(Vector256<uint> h)
    {
        var w = h << 16;
        var sign = w & Vector256.Create(0x80000000u);
        var twoW = w + w;
        var normalized = ((twoW >> 4) + Vector256.Create(0xE0u << 23)).AsSingle() * Vector256.Create(TwoPowM112);
        var denormalized = ((twoW >> 17) | Vector256.Create(126u << 23)).AsSingle() - Vector256.Create(0.5f);
        var isDenormal = Vector256.Equals(twoW >> 27, Vector256<uint>.Zero).AsSingle();
        return Vector256.ConditionalSelect(isDenormal, denormalized, normalized) | sign.AsSingle();
    }

    /// <summary>Four fp16 bit patterns (zero-extended to 32 bits) → fp32; same bits as <see cref="Compute"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> Widen(Vector128<uint> h)
    {
        var w = h << 16;
        var sign = w & Vector128.Create(0x80000000u);
        var twoW = w + w;
        var normalized = ((twoW >> 4) + Vector128.Create(0xE0u << 23)).AsSingle() * Vector128.Create(TwoPowM112);
        var denormalized = ((twoW >> 17) | Vector128.Create(126u << 23)).AsSingle() - Vector128.Create(0.5f);
        var isDenormal = Vector128.Equals(twoW >> 27, Vector128<uint>.Zero).AsSingle();
        return Vector128.ConditionalSelect(isDenormal, denormalized, normalized) | sign.AsSingle();
    }

    /// <summary>fp32 → fp16 bits, round to nearest even; overflow → ±inf, NaN → 0x7E00 with the sign (ggml_compute_fp32_to_fp16).</summary>
    public static ushort FromFloatBits(float f)
    {
        float b = (MathF.Abs(f) * TwoPow112) * TwoPowM110;
        uint w = BitConverter.SingleToUInt32Bits(f);
        uint shl1W = w + w;
        uint sign = w & 0x80000000u;
        uint bias = shl1W & 0xFF000000u;
        if (bias < 0x71000000u) bias = 0x71000000u;
        b = BitConverter.UInt32BitsToSingle((bias >> 1) + 0x07800000u) + b;
        uint bits = BitConverter.SingleToUInt32Bits(b);
        uint expBits = (bits >> 13) & 0x00007C00u;
        uint mantissaBits = bits & 0x00000FFFu;
        uint nonSign = expBits + mantissaBits;
        return (ushort)((sign >> 16) | (shl1W > 0xFF000000u ? 0x7E00u : nonSign));
    }

    /// <summary>fp32 → fp16, round to nearest even (see <see cref="FromFloatBits"/>).</summary>
    public static Half FromFloat(float f) => BitConverter.UInt16BitsToHalf(FromFloatBits(f));

    /// <summary>Converts a span to fp16. Throws when dst is shorter than src.</summary>
    public static void FromFloat(ReadOnlySpan<float> src, Span<Half> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination shorter than source", nameof(dst));
        for (int i = 0; i < src.Length; i++) dst[i] = FromFloat(src[i]);
    }
}

/// <summary>bfloat16 conversions; values are carried as their 16-bit patterns.</summary>
public static class Bf16
{
    /// <summary>bf16 bits → fp32 (exact: the bits become the high half of a float).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>Converts bf16 bit patterns to fp32 (vectorised). Throws when dst is shorter than src.</summary>
    public static void ToFloat(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination shorter than source", nameof(dst));
        ref ushort s = ref MemoryMarshal.GetReference(src);
        ref float d = ref MemoryMarshal.GetReference(dst);
        int n = src.Length, i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 16 <= n; i += 16)
            {
                var h = Vector256.LoadUnsafe(ref s, (nuint)i);
                (Vector256.WidenLower(h) << 16).AsSingle().StoreUnsafe(ref d, (nuint)i);
                (Vector256.WidenUpper(h) << 16).AsSingle().StoreUnsafe(ref d, (nuint)(i + 8));
            }
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            for (; i + 8 <= n; i += 8)
            {
                var h = Vector128.LoadUnsafe(ref s, (nuint)i);
                (Vector128.WidenLower(h) << 16).AsSingle().StoreUnsafe(ref d, (nuint)i);
                (Vector128.WidenUpper(h) << 16).AsSingle().StoreUnsafe(ref d, (nuint)(i + 4));
            }
        }
        for (; i < n; i++) Unsafe.Add(ref d, i) = ToFloat(Unsafe.Add(ref s, i));
    }

    /// <summary>
    /// fp32 → bf16 bits, round to nearest even (PyTorch's rule). NaN stays NaN: its sign and top payload bits are kept and
    /// the quiet bit set (ggml_compute_fp32_to_bf16).
    /// </summary>
    public static ushort FromFloat(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (ushort)((u >> 16) | 64);
        return (ushort)((u + (0x7FFFu + ((u >> 16) & 1))) >> 16);
    }

    /// <summary>Converts a span to bf16 bit patterns. Throws when dst is shorter than src.</summary>
    public static void FromFloat(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination shorter than source", nameof(dst));
        for (int i = 0; i < src.Length; i++) dst[i] = FromFloat(src[i]);
    }
}
