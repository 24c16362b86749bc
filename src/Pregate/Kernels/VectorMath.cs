// Shared SIMD helpers: ggml's vectorised expf (ggml-cpu/vec.h ggml_v_expf, "adapted from ARM optimized routines",
// max error 1.45 + 0.5 ulp) in 8- and 4-wide forms, and hsum_float_8.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Pregate.Kernels;

internal static class VectorMath
{
    // Constants of ggml_v_expf (hex floats in the C source: 0x1.8p23, 0x1.715476p+0, ...).
    private const float Shifter = 12582912f;
    private const float Log2E = 1.4426950216293335f;
    private const float Ln2Lo = 1.428606765330187e-06f;
    private const float Ln2Hi = 0.693145751953125f;
    private const float P0 = 0.008247390389442444f;
    private const float P1 = 0.04189976677298546f;
    private const float P2 = 0.16668395698070526f;
    private const float P3 = 0.4999912679195404f;
    private const float P4 = 0.9999994039535522f;

    /// <summary>True when the 8-wide ggml_v_expf (AVX2 + FMA) is available.</summary>
    internal static bool HasExp256 => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>ggml_v_expf, AVX2 + FMA version.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Exp(Vector256<float> x)
    {
        var r = Vector256.Create(Shifter);
        var z = Fma.MultiplyAdd(x, Vector256.Create(Log2E), r);
        var n = z - r;
        var b = Fma.MultiplyAddNegated(n, Vector256.Create(Ln2Lo), Fma.MultiplyAddNegated(n, Vector256.Create(Ln2Hi), x));
        var e = z.AsUInt32() << 23;
        var k = (e + Vector256.Create(1f).AsUInt32()).AsSingle();
        var absN = Vector256.Abs(n);
        var c = Vector256.GreaterThan(absN, Vector256.Create(126f));
        var u = b * b;
        var j = Fma.MultiplyAdd(
            Fma.MultiplyAdd(Fma.MultiplyAdd(Vector256.Create(P0), b, Vector256.Create(P1)), u,
                Fma.MultiplyAdd(Vector256.Create(P2), b, Vector256.Create(P3))),
            u, Vector256.Create(P4) * b);
        if (c.ExtractMostSignificantBits() == 0) return Fma.MultiplyAdd(j, k, k);
        var g = Vector256.LessThanOrEqual(n, Vector256<float>.Zero).AsUInt32() & Vector256.Create(0x82000000u);
        var s1 = (g + Vector256.Create(0x7f000000u)).AsSingle();
        var s2 = (e - g).AsSingle();
        var d = Vector256.GreaterThan(absN, Vector256.Create(192f));
        return Vector256.ConditionalSelect(d, s1 * s1,
            Vector256.ConditionalSelect(c, Fma.MultiplyAdd(s2, j, s2) * s1, Fma.MultiplyAdd(k, j, k)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> MulAdd(Vector128<float> a, Vector128<float> b, Vector128<float> c) =>
        Fma.IsSupported ? Fma.MultiplyAdd(a, b, c) : a * b + c;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> NegMulAdd(Vector128<float> a, Vector128<float> b, Vector128<float> c) =>
        Fma.IsSupported ? Fma.MultiplyAddNegated(a, b, c) : c - a * b;

    /// <summary>ggml_v_expf, SSE version (FMA when available, as ggml's MADD128).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> Exp(Vector128<float> x)
    {
        var r = Vector128.Create(Shifter);
        var z = MulAdd(x, Vector128.Create(Log2E), r);
        var n = z - r;
        var b = NegMulAdd(n, Vector128.Create(Ln2Lo), NegMulAdd(n, Vector128.Create(Ln2Hi), x));
        var e = z.AsUInt32() << 23;
        var k = (e + Vector128.Create(1f).AsUInt32()).AsSingle();
        var absN = Vector128.Abs(n);
        var c = Vector128.GreaterThan(absN, Vector128.Create(126f));
        var u = b * b;
        var j = MulAdd(
            MulAdd(MulAdd(Vector128.Create(P0), b, Vector128.Create(P1)), u, MulAdd(Vector128.Create(P2), b, Vector128.Create(P3))),
            u, Vector128.Create(P4) * b);
        if (c.ExtractMostSignificantBits() == 0) return MulAdd(j, k, k);
        var g = Vector128.LessThanOrEqual(n, Vector128<float>.Zero).AsUInt32() & Vector128.Create(0x82000000u);
        var s1 = (g + Vector128.Create(0x7f000000u)).AsSingle();
        var s2 = (e - g).AsSingle();
        var d = Vector128.GreaterThan(absN, Vector128.Create(192f));
        return Vector128.ConditionalSelect(d, s1 * s1,
            Vector128.ConditionalSelect(c, MulAdd(s2, j, s2) * s1, MulAdd(k, j, k)));
    }

    /// <summary>hsum_float_8: ((x0+x4) + (x2+x6)) + ((x1+x5) + (x3+x7)).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float HorizontalSum(Vector256<float> x)
    {
        var r = x.GetUpper() + x.GetLower();
        r += Vector128.Create(r.GetElement(2), r.GetElement(3), 0f, 0f);
        return r.GetElement(0) + r.GetElement(1);
    }
}
