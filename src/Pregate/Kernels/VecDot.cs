// Float dot products of a weight row (F32, F16, BF16) with a float activation. The Vector256 bodies mirror ggml-cpu's
// vec.cpp: ggml_vec_dot_f32 (GGML_F32_STEP 32: four 8-wide FMA accumulators, GGML_F32x8_REDUCE, leftovers added in float;
// bit-identical to llama.cpp's AVX2 build) and, for F16/BF16, the same shape with the sum and leftovers in double as
// ggml_vec_dot_f16. fp16 weights are widened with integer ops (an exponent-rebias fast path for groups of normal
// numbers, the full conversion otherwise: both exact); decode multiplies them against the input scaled by 2^112, which
// saves the rescaling of each widened weight and gives the same bits. Vector128 is the same shape 4 wide; the scalar
// versions (ggml's non-SIMD path, double accumulation) are the references the tests compare with.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Pregate.Core;

namespace Pregate.Kernels;

/// <summary>
/// Dot products Σ w[i]·x[i] between one weight row and one activation vector, for every weight type the mat-vec supports.
/// Quantized rows take a quantized activation (Q8_0 for Q8_0/Q4_0 weights, Q8_K for Q4_K/Q6_K), as ggml does.
/// Lengths must agree (<see cref="ArgumentException"/> otherwise).
/// </summary>
public static unsafe partial class VecDot
{
    /// <summary>Σ w[i]·x[i] for fp32 weights.</summary>
    public static float F32(ReadOnlySpan<float> w, ReadOnlySpan<float> x)
    {
        SameLength(w.Length, x.Length);
        fixed (float* pw = w) fixed (float* px = x) return F32(pw, px, w.Length);
    }

    /// <summary>Σ w[i]·x[i] for fp16 weights.</summary>
    public static float F16(ReadOnlySpan<Half> w, ReadOnlySpan<float> x)
    {
        SameLength(w.Length, x.Length);
        fixed (Half* pw = w) fixed (float* px = x) return F16((ushort*)pw, px, w.Length);
    }

    /// <summary>Σ w[i]·x[i] for bf16 weights (given as bit patterns).</summary>
    public static float BF16(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x)
    {
        SameLength(w.Length, x.Length);
        fixed (ushort* pw = w) fixed (float* px = x) return BF16(pw, px, w.Length);
    }

    private static void SameLength(int a, int b)
    {
        if (a != b) throw new ArgumentException($"length mismatch: {a} weights, {b} activations");
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> MulAdd(Vector256<float> a, Vector256<float> b, Vector256<float> acc) =>
        Fma.IsSupported ? Fma.MultiplyAdd(a, b, acc) : a * b + acc;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> MulAdd(Vector128<float> a, Vector128<float> b, Vector128<float> acc) =>
        Fma.IsSupported ? Fma.MultiplyAdd(a, b, acc) : a * b + acc;

    // GGML_F32x8_REDUCE of four accumulators: (s0+s2)+(s1+s3), then low+high halves, then two horizontal adds.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Reduce(Vector256<float> s0, Vector256<float> s1, Vector256<float> s2, Vector256<float> s3)
    {
        var s = (s0 + s2) + (s1 + s3);
        var t = s.GetLower() + s.GetUpper();
        return (t.GetElement(0) + t.GetElement(1)) + (t.GetElement(2) + t.GetElement(3));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Reduce(Vector128<float> s0, Vector128<float> s1, Vector128<float> s2, Vector128<float> s3)
    {
        var t = (s0 + s2) + (s1 + s3);
        return (t.GetElement(0) + t.GetElement(1)) + (t.GetElement(2) + t.GetElement(3));
    }

    // ---- F32 ----

    internal static float F32(float* w, float* x, int n)
    {
        if (Vector256.IsHardwareAccelerated) return F32Vector256(w, x, n);
        if (Vector128.IsHardwareAccelerated) return F32Vector128(w, x, n);
        return F32Scalar(w, x, n);
    }

    internal static float F32Vector256(float* w, float* x, int n)
    {
        int np = n & ~31;
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (int i = 0; i < np; i += 32)
        {
            s0 = MulAdd(Vector256.Load(w + i), Vector256.Load(x + i), s0);
            s1 = MulAdd(Vector256.Load(w + i + 8), Vector256.Load(x + i + 8), s1);
            s2 = MulAdd(Vector256.Load(w + i + 16), Vector256.Load(x + i + 16), s2);
            s3 = MulAdd(Vector256.Load(w + i + 24), Vector256.Load(x + i + 24), s3);
        }
        float sum = Reduce(s0, s1, s2, s3);
        for (int i = np; i < n; i++) sum += w[i] * x[i];
        return sum;
    }

    internal static float F32Vector128(float* w, float* x, int n)
    {
        int np = n & ~15;
        Vector128<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (int i = 0; i < np; i += 16)
        {
            s0 = MulAdd(Vector128.Load(w + i), Vector128.Load(x + i), s0);
            s1 = MulAdd(Vector128.Load(w + i + 4), Vector128.Load(x + i + 4), s1);
            s2 = MulAdd(Vector128.Load(w + i + 8), Vector128.Load(x + i + 8), s2);
            s3 = MulAdd(Vector128.Load(w + i + 12), Vector128.Load(x + i + 12), s3);
        }
        float sum = Reduce(s0, s1, s2, s3);
        for (int i = np; i < n; i++) sum += w[i] * x[i];
        return sum;
    }

    internal static float F32Scalar(float* w, float* x, int n)
    {
        double sum = 0;
        for (int i = 0; i < n; i++) sum += w[i] * x[i];
        return (float)sum;
    }

    // ---- F16 (weights widened with integer ops, see Fp16.Widen) ----

    internal static float F16(ushort* w, float* x, int n)
    {
        if (Vector512.IsHardwareAccelerated) return F16Vector512(w, x, n);
        if (Vector256.IsHardwareAccelerated) return F16Vector256(w, x, n);
        if (Vector128.IsHardwareAccelerated) return F16Vector128(w, x, n);
        return F16Scalar(w, x, n);
    }

    internal static float F16Vector256(ushort* w, float* x, int n)
    {
        int np = n & ~31;
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (int i = 0; i < np; i += 32)
        {
            var h0 = Vector256.Load(w + i);
            var h1 = Vector256.Load(w + i + 16);
            // Finite numbers widen in three instructions (AVX2); normal numbers with integer ops alone; inf and NaN (and,
            // without AVX2, zeros and subnormals) take the general path.
            if (Avx2.IsSupported && AllFinite(h0, h1))
            {
                s0 = MulAdd(WidenFiniteHalf(w + i), Vector256.Load(x + i), s0);
                s1 = MulAdd(WidenFiniteHalf(w + i + 8), Vector256.Load(x + i + 8), s1);
                s2 = MulAdd(WidenFiniteHalf(w + i + 16), Vector256.Load(x + i + 16), s2);
                s3 = MulAdd(WidenFiniteHalf(w + i + 24), Vector256.Load(x + i + 24), s3);
            }
            else if (AllNormal(h0, h1))
            {
                s0 = MulAdd(WidenNormalHalf(Vector256.WidenLower(h0)), Vector256.Load(x + i), s0);
                s1 = MulAdd(WidenNormalHalf(Vector256.WidenUpper(h0)), Vector256.Load(x + i + 8), s1);
                s2 = MulAdd(WidenNormalHalf(Vector256.WidenLower(h1)), Vector256.Load(x + i + 16), s2);
                s3 = MulAdd(WidenNormalHalf(Vector256.WidenUpper(h1)), Vector256.Load(x + i + 24), s3);
            }
            else
            {
                s0 = MulAdd(Fp16.Widen(Vector256.WidenLower(h0)), Vector256.Load(x + i), s0);
                s1 = MulAdd(Fp16.Widen(Vector256.WidenUpper(h0)), Vector256.Load(x + i + 8), s1);
                s2 = MulAdd(Fp16.Widen(Vector256.WidenLower(h1)), Vector256.Load(x + i + 16), s2);
                s3 = MulAdd(Fp16.Widen(Vector256.WidenUpper(h1)), Vector256.Load(x + i + 24), s3);
            }
        }
        double sum = Reduce(s0, s1, s2, s3);
        for (int i = np; i < n; i++) sum += Fp16.ToFloat(w[i]) * x[i];
        return (float)sum;
    }

    // ---- F16 against an input scaled by 2^112 (decode) ----

    /// <summary>
    /// The factor the input of <see cref="F16Scaled"/> carries: x' = x·2^112. Scaling by a power of two is exact for every
    /// |x| &lt; 2^16 (larger values would overflow to infinity), and so is x'·2^−112.
    /// </summary>
    internal static float HalfInputScale => BitConverter.Int32BitsToSingle((127 + 112) << 23);

    /// <summary>True where <see cref="F16Scaled"/> runs (AVX2 with FMA).</summary>
    internal static bool HasScaledF16 => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>
    /// <see cref="F16Vector256"/> of w and x for an input given as xScaled = x·2^112, in fewer instructions: each fp16 weight
    /// widens to w·2^−112 with a sign extension, a shift and a mask (no rescaling multiply), and the FMA of w·2^−112 with
    /// x·2^112 rounds the exact product w·x, so the accumulators, their order and the result are the same bits. Weights that
    /// are inf or NaN would widen to finite values: the groups of 32 are checked, and on any such weight this returns false
    /// without a result (the caller runs <see cref="F16"/> instead). Needs <see cref="HasScaledF16"/>.
    /// </summary>
    internal static bool F16Scaled(ushort* w, float* xScaled, int n, out float result) =>
        Vector512.IsHardwareAccelerated && Avx512BW.IsSupported ? F16ScaledVector512(w, xScaled, n, out result) : F16ScaledAvx2(w, xScaled, n, out result);

    internal static bool F16ScaledAvx2(ushort* w, float* x, int n, out float result)
    {
        int np = n & ~31;
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        // Max of each weight shifted left by one (the sign dropped): 0xF800 or more means an all-ones exponent.
        var special = Vector256<ushort>.Zero;
        for (int i = 0; i < np; i += 32)
        {
            var h0 = Vector256.Load(w + i);
            var h1 = Vector256.Load(w + i + 16);
            special = Avx2.Max(special, Avx2.Max(h0 + h0, h1 + h1));
            s0 = Fma.MultiplyAdd(ScaledHalf(w + i), Vector256.Load(x + i), s0);
            s1 = Fma.MultiplyAdd(ScaledHalf(w + i + 8), Vector256.Load(x + i + 8), s1);
            s2 = Fma.MultiplyAdd(ScaledHalf(w + i + 16), Vector256.Load(x + i + 16), s2);
            s3 = Fma.MultiplyAdd(ScaledHalf(w + i + 24), Vector256.Load(x + i + 24), s3);
        }
        return FinishScaled(s0, s1, s2, s3, Vector256.GreaterThanOrEqualAny(special, Vector256.Create((ushort)0xF800)), w, x, np, n, out result);
    }

    /// <summary><see cref="F16ScaledAvx2"/> 16 lanes at a time: lanes 0–7 and 8–15 of each accumulator are two of the four 8-wide ones.</summary>
    internal static bool F16ScaledVector512(ushort* w, float* x, int n, out float result)
    {
        int np = n & ~31;
        Vector512<float> a01 = default, a23 = default;
        var special = Vector512<ushort>.Zero;
        var mask = Vector512.Create(unchecked((int)0x8FFFFFFF));
        for (int i = 0; i < np; i += 32)
        {
            var h = Vector512.Load(w + i);
            special = Avx512BW.Max(special, h + h);
            var lo = (Avx512F.ConvertToVector512Int32(Vector256.Load((short*)w + i)) << 13) & mask;
            var hi = (Avx512F.ConvertToVector512Int32(Vector256.Load((short*)w + i + 16)) << 13) & mask;
            a01 = Avx512F.FusedMultiplyAdd(lo.AsSingle(), Vector512.Load(x + i), a01);
            a23 = Avx512F.FusedMultiplyAdd(hi.AsSingle(), Vector512.Load(x + i + 16), a23);
        }
        return FinishScaled(a01.GetLower(), a01.GetUpper(), a23.GetLower(), a23.GetUpper(),
            Vector512.GreaterThanOrEqualAny(special, Vector512.Create((ushort)0xF800)), w, x, np, n, out result);
    }

    // F16Vector256's reduction and leftovers (x recovered exactly as x'·2^−112).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool FinishScaled(Vector256<float> s0, Vector256<float> s1, Vector256<float> s2, Vector256<float> s3, bool special,
        ushort* w, float* x, int np, int n, out float result)
    {
        result = 0;
        if (special) return false;
        double sum = Reduce(s0, s1, s2, s3);
        float unscale = BitConverter.Int32BitsToSingle((127 - 112) << 23);
        for (int i = np; i < n; i++) sum += Fp16.ToFloat(w[i]) * (x[i] * unscale);
        result = (float)sum;
        return true;
    }

    /// <summary>
    /// Eight finite fp16 values at <paramref name="p"/> → fp32 times 2^−112, exactly (<see cref="WidenFiniteHalf"/> without
    /// its final scaling).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> ScaledHalf(ushort* p) =>
        ((Avx2.ConvertToVector256Int32((short*)p) << 13) & Vector256.Create(unchecked((int)0x8FFFFFFF))).AsSingle();

    /// <summary>
    /// F16Vector256 for a row already widened to floats (widening is exact): the same products and sums in the same order,
    /// so the result is bit-identical. Lets a mat-mul widen each fp16 row once for all its input vectors.
    /// </summary>
    internal static float F16WidenedVector256(float* w, float* x, int n)
    {
        int np = n & ~31;
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (int i = 0; i < np; i += 32)
        {
            s0 = MulAdd(Vector256.Load(w + i), Vector256.Load(x + i), s0);
            s1 = MulAdd(Vector256.Load(w + i + 8), Vector256.Load(x + i + 8), s1);
            s2 = MulAdd(Vector256.Load(w + i + 16), Vector256.Load(x + i + 16), s2);
            s3 = MulAdd(Vector256.Load(w + i + 24), Vector256.Load(x + i + 24), s3);
        }
        double sum = Reduce(s0, s1, s2, s3);
        for (int i = np; i < n; i++) sum += w[i] * x[i];
        return (float)sum;
    }

    /// <summary>Two <see cref="F16WidenedVector256"/> products of one widened row (each weight load serves both vectors).</summary>
    internal static void F16WidenedVector256x2(float* w, float* x0, float* x1, int n, out float y0, out float y1)
    {
        int np = n & ~31;
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        Vector256<float> u0 = default, u1 = default, u2 = default, u3 = default;
        for (int i = 0; i < np; i += 32)
        {
            var w0 = Vector256.Load(w + i);
            s0 = MulAdd(w0, Vector256.Load(x0 + i), s0);
            u0 = MulAdd(w0, Vector256.Load(x1 + i), u0);
            var w1 = Vector256.Load(w + i + 8);
            s1 = MulAdd(w1, Vector256.Load(x0 + i + 8), s1);
            u1 = MulAdd(w1, Vector256.Load(x1 + i + 8), u1);
            var w2 = Vector256.Load(w + i + 16);
            s2 = MulAdd(w2, Vector256.Load(x0 + i + 16), s2);
            u2 = MulAdd(w2, Vector256.Load(x1 + i + 16), u2);
            var w3 = Vector256.Load(w + i + 24);
            s3 = MulAdd(w3, Vector256.Load(x0 + i + 24), s3);
            u3 = MulAdd(w3, Vector256.Load(x1 + i + 24), u3);
        }
        double sum0 = Reduce(s0, s1, s2, s3), sum1 = Reduce(u0, u1, u2, u3);
        for (int i = np; i < n; i++)
        {
            sum0 += w[i] * x0[i];
            sum1 += w[i] * x1[i];
        }
        y0 = (float)sum0;
        y1 = (float)sum1;
    }

    /// <summary>
    /// Four <see cref="F16WidenedVector256"/> products, two widened rows × two vectors (y[r·2 + t]): each load serves two
    /// products. Its 16 accumulators want the 32 vector registers of AVX-512VL.
    /// </summary>
    internal static void F16WidenedVector256x2x2(float* w0, float* w1, float* x0, float* x1, int n, float* y)
    {
        int np = n & ~31;
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        Vector256<float> t0 = default, t1 = default, t2 = default, t3 = default;
        Vector256<float> u0 = default, u1 = default, u2 = default, u3 = default;
        Vector256<float> v0 = default, v1 = default, v2 = default, v3 = default;
        for (int i = 0; i < np; i += 32)
        {
            var a = Vector256.Load(w0 + i);
            var b = Vector256.Load(w1 + i);
            var p = Vector256.Load(x0 + i);
            var q = Vector256.Load(x1 + i);
            s0 = MulAdd(a, p, s0); t0 = MulAdd(a, q, t0); u0 = MulAdd(b, p, u0); v0 = MulAdd(b, q, v0);
            a = Vector256.Load(w0 + i + 8);
            b = Vector256.Load(w1 + i + 8);
            p = Vector256.Load(x0 + i + 8);
            q = Vector256.Load(x1 + i + 8);
            s1 = MulAdd(a, p, s1); t1 = MulAdd(a, q, t1); u1 = MulAdd(b, p, u1); v1 = MulAdd(b, q, v1);
            a = Vector256.Load(w0 + i + 16);
            b = Vector256.Load(w1 + i + 16);
            p = Vector256.Load(x0 + i + 16);
            q = Vector256.Load(x1 + i + 16);
            s2 = MulAdd(a, p, s2); t2 = MulAdd(a, q, t2); u2 = MulAdd(b, p, u2); v2 = MulAdd(b, q, v2);
            a = Vector256.Load(w0 + i + 24);
            b = Vector256.Load(w1 + i + 24);
            p = Vector256.Load(x0 + i + 24);
            q = Vector256.Load(x1 + i + 24);
            s3 = MulAdd(a, p, s3); t3 = MulAdd(a, q, t3); u3 = MulAdd(b, p, u3); v3 = MulAdd(b, q, v3);
        }
        double r00 = Reduce(s0, s1, s2, s3), r01 = Reduce(t0, t1, t2, t3), r10 = Reduce(u0, u1, u2, u3), r11 = Reduce(v0, v1, v2, v3);
        for (int i = np; i < n; i++)
        {
            r00 += w0[i] * x0[i];
            r01 += w0[i] * x1[i];
            r10 += w1[i] * x0[i];
            r11 += w1[i] * x1[i];
        }
        y[0] = (float)r00;
        y[1] = (float)r01;
        y[2] = (float)r10;
        y[3] = (float)r11;
    }

    /// <summary>
    /// Nine <see cref="F16WidenedVector256"/> products, three widened rows (<paramref name="rowStride"/> floats apart) × three
    /// vectors (<paramref name="xStride"/> floats apart; y[r·3 + t]), with AVX2's sixteen registers: a product's four 8-wide
    /// accumulators (elements i+8k.. of every 32 in accumulator k) are run one k at a time, so nine accumulators, three
    /// rows and three inputs fit at once and each load serves three products; columns go in chunks that stay in L1, the
    /// accumulators parked between chunks. Every accumulator sees its elements in the same order: the same bits.
    /// </summary>
    internal static void F16WidenedVector256x3x3(float* w, long rowStride, float* x, long xStride, int n, float* y)
    {
        const int Chunk = 512;
        int np = n & ~31;
        var acc = stackalloc Vector256<float>[4 * 9];
        for (int i = 0; i < 4 * 9; i++) acc[i] = default;
        float* w1 = w + rowStride, w2 = w1 + rowStride;
        float* x1 = x + xStride, x2 = x1 + xStride;
        for (int c0 = 0; c0 < np; c0 += Chunk)
        {
            int c1 = Math.Min(np, c0 + Chunk);
            for (int k = 0; k < 4; k++)
            {
                var a = acc + 9 * k;
                Vector256<float> s00 = a[0], s01 = a[1], s02 = a[2], s10 = a[3], s11 = a[4], s12 = a[5], s20 = a[6], s21 = a[7], s22 = a[8];
                for (int i = c0 + 8 * k; i < c1; i += 32)
                {
                    var p = Vector256.Load(x + i);
                    var q = Vector256.Load(x1 + i);
                    var r = Vector256.Load(x2 + i);
                    var u = Vector256.Load(w + i);
                    s00 = MulAdd(u, p, s00); s01 = MulAdd(u, q, s01); s02 = MulAdd(u, r, s02);
                    u = Vector256.Load(w1 + i);
                    s10 = MulAdd(u, p, s10); s11 = MulAdd(u, q, s11); s12 = MulAdd(u, r, s12);
                    u = Vector256.Load(w2 + i);
                    s20 = MulAdd(u, p, s20); s21 = MulAdd(u, q, s21); s22 = MulAdd(u, r, s22);
                }
                a[0] = s00; a[1] = s01; a[2] = s02; a[3] = s10; a[4] = s11; a[5] = s12; a[6] = s20; a[7] = s21; a[8] = s22;
            }
        }
        for (int rt = 0; rt < 9; rt++)
        {
            float* wr = w + rt / 3 * rowStride, xt = x + rt % 3 * xStride;
            double sum = Reduce(acc[rt], acc[9 + rt], acc[18 + rt], acc[27 + rt]);
            for (int i = np; i < n; i++) sum += wr[i] * xt[i];
            y[rt] = (float)sum;
        }
    }

    /// <summary>
    /// Eight <see cref="F16WidenedVector256"/> products, four widened rows (<paramref name="rowStride"/> floats apart) × two
    /// vectors (y[r·2 + t]), in 16-lane registers (AVX-512F): lanes 0–7 and 8–15 of one accumulator are two of a product's
    /// four 8-wide ones (elements i..i+15, then i+16..i+31 in the second), so every product keeps its sums and order. Each
    /// weight load serves two products and each input load four.
    /// </summary>
    internal static void F16WidenedVector512x4x2(float* w, long rowStride, float* x0, float* x1, int n, float* y)
    {
        int np = n & ~31;
        float* w1 = w + rowStride, w2 = w1 + rowStride, w3 = w2 + rowStride;
        Vector512<float> a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default, a30 = default, a31 = default;
        Vector512<float> b00 = default, b01 = default, b10 = default, b11 = default, b20 = default, b21 = default, b30 = default, b31 = default;
        for (int i = 0; i < np; i += 32)
        {
            var p = Vector512.Load(x0 + i);
            var q = Vector512.Load(x1 + i);
            var u = Vector512.Load(w + i);
            a00 = Avx512F.FusedMultiplyAdd(u, p, a00); a01 = Avx512F.FusedMultiplyAdd(u, q, a01);
            u = Vector512.Load(w1 + i);
            a10 = Avx512F.FusedMultiplyAdd(u, p, a10); a11 = Avx512F.FusedMultiplyAdd(u, q, a11);
            u = Vector512.Load(w2 + i);
            a20 = Avx512F.FusedMultiplyAdd(u, p, a20); a21 = Avx512F.FusedMultiplyAdd(u, q, a21);
            u = Vector512.Load(w3 + i);
            a30 = Avx512F.FusedMultiplyAdd(u, p, a30); a31 = Avx512F.FusedMultiplyAdd(u, q, a31);
            p = Vector512.Load(x0 + i + 16);
            q = Vector512.Load(x1 + i + 16);
            u = Vector512.Load(w + i + 16);
            b00 = Avx512F.FusedMultiplyAdd(u, p, b00); b01 = Avx512F.FusedMultiplyAdd(u, q, b01);
            u = Vector512.Load(w1 + i + 16);
            b10 = Avx512F.FusedMultiplyAdd(u, p, b10); b11 = Avx512F.FusedMultiplyAdd(u, q, b11);
            u = Vector512.Load(w2 + i + 16);
            b20 = Avx512F.FusedMultiplyAdd(u, p, b20); b21 = Avx512F.FusedMultiplyAdd(u, q, b21);
            u = Vector512.Load(w3 + i + 16);
            b30 = Avx512F.FusedMultiplyAdd(u, p, b30); b31 = Avx512F.FusedMultiplyAdd(u, q, b31);
        }
        y[0] = WidenedResult(a00, b00, w, x0, np, n);
        y[1] = WidenedResult(a01, b01, w, x1, np, n);
        y[2] = WidenedResult(a10, b10, w1, x0, np, n);
        y[3] = WidenedResult(a11, b11, w1, x1, np, n);
        y[4] = WidenedResult(a20, b20, w2, x0, np, n);
        y[5] = WidenedResult(a21, b21, w2, x1, np, n);
        y[6] = WidenedResult(a30, b30, w3, x0, np, n);
        y[7] = WidenedResult(a31, b31, w3, x1, np, n);
    }

    // F16WidenedVector256's reduction of (s0|s1, s2|s3) and its leftovers in double.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float WidenedResult(Vector512<float> s01, Vector512<float> s23, float* w, float* x, int np, int n)
    {
        double sum = Reduce(s01.GetLower(), s01.GetUpper(), s23.GetLower(), s23.GetUpper());
        for (int i = np; i < n; i++) sum += w[i] * x[i];
        return (float)sum;
    }

    /// <summary>
    /// <see cref="F16Vector256"/> with the fp16 → fp32 widening done 16 lanes at a time (decode streams fp16 weights and
    /// the widening is most of its work); the products, the four 8-wide accumulators and their order are unchanged, so
    /// the result is the same bits.
    /// </summary>
    internal static float F16Vector512(ushort* w, float* x, int n)
    {
        int np = n & ~31;
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        var expMask = Vector512.Create((ushort)0x7C00);
        for (int i = 0; i < np; i += 32)
        {
            var h = Vector512.Load(w + i);
            var e = h & expMask;
            if ((Vector512.Equals(e, Vector512<ushort>.Zero) | Vector512.Equals(e, expMask)) == Vector512<ushort>.Zero)
            {
                var lo = WidenNormalHalf(Vector512.WidenLower(h));
                var hi = WidenNormalHalf(Vector512.WidenUpper(h));
                s0 = MulAdd(lo.GetLower(), Vector256.Load(x + i), s0);
                s1 = MulAdd(lo.GetUpper(), Vector256.Load(x + i + 8), s1);
                s2 = MulAdd(hi.GetLower(), Vector256.Load(x + i + 16), s2);
                s3 = MulAdd(hi.GetUpper(), Vector256.Load(x + i + 24), s3);
            }
            else
            {
                var h0 = h.GetLower();
                var h1 = h.GetUpper();
                s0 = MulAdd(Fp16.Widen(Vector256.WidenLower(h0)), Vector256.Load(x + i), s0);
                s1 = MulAdd(Fp16.Widen(Vector256.WidenUpper(h0)), Vector256.Load(x + i + 8), s1);
                s2 = MulAdd(Fp16.Widen(Vector256.WidenLower(h1)), Vector256.Load(x + i + 16), s2);
                s3 = MulAdd(Fp16.Widen(Vector256.WidenUpper(h1)), Vector256.Load(x + i + 24), s3);
            }
        }
        double sum = Reduce(s0, s1, s2, s3);
        for (int i = np; i < n; i++) sum += Fp16.ToFloat(w[i]) * x[i];
        return (float)sum;
    }

    /// <summary>
    /// dst[i] = fp16 w[i] as fp32 (exact): groups of 32 normal numbers with integer ops 16 lanes at a time, anything else
    /// through <see cref="Fp16.ToFloat(ReadOnlySpan{ushort}, Span{float})"/>. Used to widen a row once for many vectors.
    /// </summary>
    internal static void WidenF16Row(ushort* w, float* dst, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var expMask = Vector512.Create((ushort)0x7C00);
            for (; i + 32 <= n; i += 32)
            {
                var h = Vector512.Load(w + i);
                var e = h & expMask;
                if ((Vector512.Equals(e, Vector512<ushort>.Zero) | Vector512.Equals(e, expMask)) == Vector512<ushort>.Zero)
                {
                    WidenNormalHalf(Vector512.WidenLower(h)).Store(dst + i);
                    WidenNormalHalf(Vector512.WidenUpper(h)).Store(dst + i + 16);
                }
                else Fp16.ToFloat(new ReadOnlySpan<ushort>(w + i, 32), new Span<float>(dst + i, 32));
            }
        }
        else if (Avx2.IsSupported)
        {
            for (; i + 32 <= n; i += 32)
            {
                if (AllFinite(Vector256.Load(w + i), Vector256.Load(w + i + 16)))
                {
                    WidenFiniteHalf(w + i).Store(dst + i);
                    WidenFiniteHalf(w + i + 8).Store(dst + i + 8);
                    WidenFiniteHalf(w + i + 16).Store(dst + i + 16);
                    WidenFiniteHalf(w + i + 24).Store(dst + i + 24);
                }
                else Fp16.ToFloat(new ReadOnlySpan<ushort>(w + i, 32), new Span<float>(dst + i, 32));
            }
        }
        Fp16.ToFloat(new ReadOnlySpan<ushort>(w + i, n - i), new Span<float>(dst + i, n - i));
    }

    // True when no lane of a or b is inf or NaN (all-ones exponent).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool AllFinite(Vector256<ushort> a, Vector256<ushort> b)
    {
        var expMask = Vector256.Create((ushort)0x7C00);
        return !Vector256.EqualsAny(Avx2.Max(a & expMask, b & expMask), expMask);
    }

    /// <summary>
    /// Eight finite fp16 values at <paramref name="p"/> → fp32, exactly: sign-extend to 32 bits, shift exponent and mantissa
    /// into place (the sign lands in bit 31; its copies in bits 28..30 are cleared), then scale by 2^112, which rebiases the
    /// exponent of normal numbers and normalises subnormals (every product is exact). Inf and NaN would come out finite.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> WidenFiniteHalf(ushort* p) => ScaledHalf(p) * Vector256.Create((127 + 112) << 23).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> WidenNormalHalf(Vector512<uint> h) =>
        ((((h & Vector512.Create(0x7FFFu)) << 13) + Vector512.Create(0x38000000u)) | ((h & Vector512.Create(0x8000u)) << 16)).AsSingle();

    // True when no lane of a or b has a zero or all-ones exponent (zero, subnormal, inf, NaN).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool AllNormal(Vector256<ushort> a, Vector256<ushort> b)
    {
        var expMask = Vector256.Create((ushort)0x7C00);
        var ea = a & expMask;
        var eb = b & expMask;
        var special = Vector256.Equals(ea, Vector256<ushort>.Zero) | Vector256.Equals(ea, expMask)
                    | Vector256.Equals(eb, Vector256<ushort>.Zero) | Vector256.Equals(eb, expMask);
        return special == Vector256<ushort>.Zero;
    }

    // fp16 → fp32 for normal numbers only: rebias the exponent by 112 and move sign, exponent and mantissa into place.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> WidenNormalHalf(Vector256<uint> h) =>
        ((((h & Vector256.Create(0x7FFFu)) << 13) + Vector256.Create(0x38000000u)) | ((h & Vector256.Create(0x8000u)) << 16)).AsSingle();

    internal static float F16Vector128(ushort* w, float* x, int n)
    {
        int np = n & ~15;
        Vector128<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (int i = 0; i < np; i += 16)
        {
            var h0 = Vector128.Load(w + i);
            var h1 = Vector128.Load(w + i + 8);
            s0 = MulAdd(Fp16.Widen(Vector128.WidenLower(h0)), Vector128.Load(x + i), s0);
            s1 = MulAdd(Fp16.Widen(Vector128.WidenUpper(h0)), Vector128.Load(x + i + 4), s1);
            s2 = MulAdd(Fp16.Widen(Vector128.WidenLower(h1)), Vector128.Load(x + i + 8), s2);
            s3 = MulAdd(Fp16.Widen(Vector128.WidenUpper(h1)), Vector128.Load(x + i + 12), s3);
        }
        double sum = Reduce(s0, s1, s2, s3);
        for (int i = np; i < n; i++) sum += Fp16.ToFloat(w[i]) * x[i];
        return (float)sum;
    }

    internal static float F16Scalar(ushort* w, float* x, int n)
    {
        double sum = 0;
        for (int i = 0; i < n; i++) sum += Fp16.ToFloat(w[i]) * x[i];
        return (float)sum;
    }

    // ---- BF16 (weights widened by a 16-bit shift) ----

    internal static float BF16(ushort* w, float* x, int n)
    {
        if (Vector256.IsHardwareAccelerated) return BF16Vector256(w, x, n);
        if (Vector128.IsHardwareAccelerated) return BF16Vector128(w, x, n);
        return BF16Scalar(w, x, n);
    }

    internal static float BF16Vector256(ushort* w, float* x, int n)
    {
        int np = n & ~31;
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (int i = 0; i < np; i += 32)
        {
            var h0 = Vector256.Load(w + i);
            var h1 = Vector256.Load(w + i + 16);
            s0 = MulAdd((Vector256.WidenLower(h0) << 16).AsSingle(), Vector256.Load(x + i), s0);
            s1 = MulAdd((Vector256.WidenUpper(h0) << 16).AsSingle(), Vector256.Load(x + i + 8), s1);
            s2 = MulAdd((Vector256.WidenLower(h1) << 16).AsSingle(), Vector256.Load(x + i + 16), s2);
            s3 = MulAdd((Vector256.WidenUpper(h1) << 16).AsSingle(), Vector256.Load(x + i + 24), s3);
        }
        double sum = Reduce(s0, s1, s2, s3);
        for (int i = np; i < n; i++) sum += Bf16.ToFloat(w[i]) * x[i];
        return (float)sum;
    }

    internal static float BF16Vector128(ushort* w, float* x, int n)
    {
        int np = n & ~15;
        Vector128<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (int i = 0; i < np; i += 16)
        {
            var h0 = Vector128.Load(w + i);
            var h1 = Vector128.Load(w + i + 8);
            s0 = MulAdd((Vector128.WidenLower(h0) << 16).AsSingle(), Vector128.Load(x + i), s0);
            s1 = MulAdd((Vector128.WidenUpper(h0) << 16).AsSingle(), Vector128.Load(x + i + 4), s1);
            s2 = MulAdd((Vector128.WidenLower(h1) << 16).AsSingle(), Vector128.Load(x + i + 8), s2);
            s3 = MulAdd((Vector128.WidenUpper(h1) << 16).AsSingle(), Vector128.Load(x + i + 12), s3);
        }
        double sum = Reduce(s0, s1, s2, s3);
        for (int i = np; i < n; i++) sum += Bf16.ToFloat(w[i]) * x[i];
        return (float)sum;
    }

    internal static float BF16Scalar(ushort* w, float* x, int n)
    {
        double sum = 0;
        for (int i = 0; i < n; i++) sum += Bf16.ToFloat(w[i]) * x[i];
        return (float)sum;
    }

    // ---- F16 × F16 and BF16 × BF16 (llama.cpp's vec_dot_type for these weights: the activation is rounded first) ----

    /// <summary>Σ w[i]·x[i] with both operands fp16, as ggml_vec_dot_f16 (llama.cpp's F16 mat-mul).</summary>
    public static float F16xF16(ReadOnlySpan<Half> w, ReadOnlySpan<Half> x)
    {
        SameLength(w.Length, x.Length);
        fixed (Half* pw = w) fixed (Half* px = x) return F16xF16((ushort*)pw, (ushort*)px, w.Length);
    }

    /// <summary>Σ w[i]·x[i] with both operands bf16 (bit patterns), as ggml_vec_dot_bf16 (llama.cpp's BF16 mat-mul).</summary>
    public static float BF16xBF16(ReadOnlySpan<ushort> w, ReadOnlySpan<ushort> x)
    {
        SameLength(w.Length, x.Length);
        fixed (ushort* pw = w) fixed (ushort* px = x) return BF16xBF16(pw, px, w.Length);
    }

    internal static float F16xF16(ushort* w, ushort* x, int n) =>
        Vector256.IsHardwareAccelerated ? F16xF16Vector256(w, x, n) : F16xF16Scalar(w, x, n);

    // GGML_F16_STEP 32 with four 8-wide FMA accumulators, GGML_F32Cx8_REDUCE into double, leftovers in double.
    internal static float F16xF16Vector256(ushort* w, ushort* x, int n)
    {
        int np = n & ~31;
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (int i = 0; i < np; i += 32)
        {
            var w0 = Vector256.Load(w + i);
            var w1 = Vector256.Load(w + i + 16);
            var x0 = Vector256.Load(x + i);
            var x1 = Vector256.Load(x + i + 16);
            if (Avx2.IsSupported && AllFinite(w0, w1) && AllFinite(x0, x1))
            {
                s0 = MulAdd(WidenFiniteHalf(w + i), WidenFiniteHalf(x + i), s0);
                s1 = MulAdd(WidenFiniteHalf(w + i + 8), WidenFiniteHalf(x + i + 8), s1);
                s2 = MulAdd(WidenFiniteHalf(w + i + 16), WidenFiniteHalf(x + i + 16), s2);
                s3 = MulAdd(WidenFiniteHalf(w + i + 24), WidenFiniteHalf(x + i + 24), s3);
            }
            else if (AllNormal(w0, w1) && AllNormal(x0, x1))
            {
                s0 = MulAdd(WidenNormalHalf(Vector256.WidenLower(w0)), WidenNormalHalf(Vector256.WidenLower(x0)), s0);
                s1 = MulAdd(WidenNormalHalf(Vector256.WidenUpper(w0)), WidenNormalHalf(Vector256.WidenUpper(x0)), s1);
                s2 = MulAdd(WidenNormalHalf(Vector256.WidenLower(w1)), WidenNormalHalf(Vector256.WidenLower(x1)), s2);
                s3 = MulAdd(WidenNormalHalf(Vector256.WidenUpper(w1)), WidenNormalHalf(Vector256.WidenUpper(x1)), s3);
            }
            else
            {
                s0 = MulAdd(Fp16.Widen(Vector256.WidenLower(w0)), Fp16.Widen(Vector256.WidenLower(x0)), s0);
                s1 = MulAdd(Fp16.Widen(Vector256.WidenUpper(w0)), Fp16.Widen(Vector256.WidenUpper(x0)), s1);
                s2 = MulAdd(Fp16.Widen(Vector256.WidenLower(w1)), Fp16.Widen(Vector256.WidenLower(x1)), s2);
                s3 = MulAdd(Fp16.Widen(Vector256.WidenUpper(w1)), Fp16.Widen(Vector256.WidenUpper(x1)), s3);
            }
        }
        double sum = Reduce(s0, s1, s2, s3);
        for (int i = np; i < n; i++) sum += Fp16.ToFloat(w[i]) * Fp16.ToFloat(x[i]);
        return (float)sum;
    }

    internal static float F16xF16Scalar(ushort* w, ushort* x, int n)
    {
        double sum = 0;
        for (int i = 0; i < n; i++) sum += Fp16.ToFloat(w[i]) * Fp16.ToFloat(x[i]);
        return (float)sum;
    }

    internal static float BF16xBF16(ushort* w, ushort* x, int n) =>
        Vector256.IsHardwareAccelerated ? BF16xBF16Vector256(w, x, n) : BF16xBF16Scalar(w, x, n);

    // ggml_vec_dot_bf16, AVX2 branch: four 8-wide accumulators of (unfused) products, (c1+c3)+(c2+c4), hsum_float_8,
    // then the leftovers in double.
    internal static float BF16xBF16Vector256(ushort* w, ushort* x, int n)
    {
        int i = 0;
        Vector256<float> c1 = default, c2 = default, c3 = default, c4 = default;
        for (; i + 32 <= n; i += 32)
        {
            var w0 = Vector256.Load(w + i);
            var w1 = Vector256.Load(w + i + 16);
            var x0 = Vector256.Load(x + i);
            var x1 = Vector256.Load(x + i + 16);
            c1 = (Vector256.WidenLower(w0) << 16).AsSingle() * (Vector256.WidenLower(x0) << 16).AsSingle() + c1;
            c2 = (Vector256.WidenUpper(w0) << 16).AsSingle() * (Vector256.WidenUpper(x0) << 16).AsSingle() + c2;
            c3 = (Vector256.WidenLower(w1) << 16).AsSingle() * (Vector256.WidenLower(x1) << 16).AsSingle() + c3;
            c4 = (Vector256.WidenUpper(w1) << 16).AsSingle() * (Vector256.WidenUpper(x1) << 16).AsSingle() + c4;
        }
        double sum = VectorMath.HorizontalSum((c1 + c3) + (c2 + c4));
        for (; i < n; i++) sum += Bf16.ToFloat(w[i]) * Bf16.ToFloat(x[i]);
        return (float)sum;
    }

    internal static float BF16xBF16Scalar(ushort* w, ushort* x, int n)
    {
        double sum = 0;
        for (int i = 0; i < n; i++) sum += Bf16.ToFloat(w[i]) * Bf16.ToFloat(x[i]);
        return (float)sum;
    }
}
