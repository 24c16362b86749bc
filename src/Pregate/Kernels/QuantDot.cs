// Integer dot products of quantized weight rows with quantized activations, ports of ggml-cpu: the AVX2 bodies follow
// arch/x86/quants.c (ggml_vec_dot_q8_0_q8_0, _q4_0_q8_0, _q4_K_q8_K, _q6_K_q8_K: vpmaddubsw with the sign trick, vpmaddwd,
// convert, one FMA per block, hsum_float_8; Q6_K subtracts its −32 offset once per block through the Q8_K block sums)
// and give bit-identical results to llama.cpp's AVX2 build; the scalar versions are ggml's *_generic references.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Pregate.Core;

namespace Pregate.Kernels;

public static unsafe partial class VecDot
{
    /// <summary>Σ over blocks of d_w·d_x·Σ q_w·q_x, Q8_0 weights × Q8_0 activation.</summary>
    public static float Q8_0(ReadOnlySpan<BlockQ8_0> w, ReadOnlySpan<BlockQ8_0> x)
    {
        SameLength(w.Length, x.Length);
        fixed (BlockQ8_0* pw = w) fixed (BlockQ8_0* px = x) return Q8_0(pw, px, w.Length);
    }

    /// <summary>Σ over blocks of d_w·d_x·Σ (q_w−8)·q_x, Q4_0 weights × Q8_0 activation.</summary>
    public static float Q4_0(ReadOnlySpan<BlockQ4_0> w, ReadOnlySpan<BlockQ8_0> x)
    {
        SameLength(w.Length, x.Length);
        fixed (BlockQ4_0* pw = w) fixed (BlockQ8_0* px = x) return Q4_0(pw, px, w.Length);
    }

    /// <summary>Q4_K weights × Q8_K activation (one activation block per weight block).</summary>
    public static float Q4_K(ReadOnlySpan<BlockQ4_K> w, ReadOnlySpan<BlockQ8_K> x)
    {
        SameLength(w.Length, x.Length);
        fixed (BlockQ4_K* pw = w) fixed (BlockQ8_K* px = x) return Q4_K(pw, px, w.Length);
    }

    /// <summary>Q6_K weights × Q8_K activation (one activation block per weight block).</summary>
    public static float Q6_K(ReadOnlySpan<BlockQ6_K> w, ReadOnlySpan<BlockQ8_K> x)
    {
        SameLength(w.Length, x.Length);
        fixed (BlockQ6_K* pw = w) fixed (BlockQ8_K* px = x) return Q6_K(pw, px, w.Length);
    }

    internal static bool UseAvx2 => Avx2.IsSupported && Fma.IsSupported;

    private static float HorizontalSum(Vector256<float> x) => VectorMath.HorizontalSum(x);

    // mul_sum_i8_pairs_float: eight int32 sums of four adjacent int8 products, as floats.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> MulSumI8Pairs(Vector256<sbyte> x, Vector256<sbyte> y)
    {
        var ax = Avx2.Sign(x, x).AsByte();
        var sy = Avx2.Sign(y, x);
        var dot = Avx2.MultiplyAddAdjacent(ax, sy);
        return Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(dot, Vector256.Create((short)1)));
    }

    // ---- Q8_0 × Q8_0 ----

    internal static float Q8_0(BlockQ8_0* w, BlockQ8_0* x, int nb) => UseAvx2 ? Q8_0Avx2(w, x, nb) : Q8_0Scalar(w, x, nb);

    /// <summary>
    /// Q8_0 row dot; the row's blocks lie <paramref name="stride"/> blocks apart (1: a plain row, 8: a row of an
    /// interleaved group, see <see cref="WeightMatrix.Interleave"/>).
    /// </summary>
    internal static float Q8_0Avx2(BlockQ8_0* w, BlockQ8_0* x, int nb, int stride = 1)
    {
        var acc = Vector256<float>.Zero;
        for (int ib = 0; ib < nb; ib++, w += stride)
        {
            var d = Vector256.Create(Fp16.ToFloat(w->D) * Fp16.ToFloat(x[ib].D));
            var q = MulSumI8Pairs(Avx.LoadVector256(w->Qs), Avx.LoadVector256(x[ib].Qs));
            acc = Fma.MultiplyAdd(d, q, acc);
        }
        return HorizontalSum(acc);
    }

    /// <summary>
    /// y[j] = Q8_0Avx2(row j, x) for the eight rows of an interleaved group (block k of row j at group[8k + j]): eight
    /// accumulators over one sequential stream, each row's operations those of Q8_0Avx2, so the results are the same bits.
    /// </summary>
    internal static void Q8_0Avx2Group8(BlockQ8_0* group, BlockQ8_0* x, int nb, float* y)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        var p = group;
        for (int ib = 0; ib < nb; ib++, p += 8)
        {
            var xq = Avx.LoadVector256(x[ib].Qs);
            float dx = Fp16.ToFloat(x[ib].D);
            a0 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[0].D) * dx), MulSumI8Pairs(Avx.LoadVector256(p[0].Qs), xq), a0);
            a1 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[1].D) * dx), MulSumI8Pairs(Avx.LoadVector256(p[1].Qs), xq), a1);
            a2 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[2].D) * dx), MulSumI8Pairs(Avx.LoadVector256(p[2].Qs), xq), a2);
            a3 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[3].D) * dx), MulSumI8Pairs(Avx.LoadVector256(p[3].Qs), xq), a3);
            a4 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[4].D) * dx), MulSumI8Pairs(Avx.LoadVector256(p[4].Qs), xq), a4);
            a5 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[5].D) * dx), MulSumI8Pairs(Avx.LoadVector256(p[5].Qs), xq), a5);
            a6 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[6].D) * dx), MulSumI8Pairs(Avx.LoadVector256(p[6].Qs), xq), a6);
            a7 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[7].D) * dx), MulSumI8Pairs(Avx.LoadVector256(p[7].Qs), xq), a7);
        }
        StoreSums8(a0, a1, a2, a3, a4, a5, a6, a7, y);
    }

    // Tiles of several (row, vector) dot products sharing their loads. Every product keeps Q8_0Avx2's order exactly
    // (acc = fma(d_w·d_x, Σq, acc) block by block, then the same horizontal sum), so tiles and single dots agree bit for bit.

    /// <summary>
    /// y[i] = Q8_0(w_i, x) for four rows and one vector, prefetching the bytes <paramref name="prefetchOffset"/> past each
    /// block read (the next pass's rows): four interleaved row streams defeat the hardware prefetcher (a mat-vec streaming
    /// from DRAM ran at half speed without this; with it, faster than one row at a time).
    /// </summary>
    internal static void Q8_0Avx2Rows4(BlockQ8_0* w0, BlockQ8_0* w1, BlockQ8_0* w2, BlockQ8_0* w3, BlockQ8_0* x, int nb, long prefetchOffset, float* y, int stride = 1)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int ib = 0; ib < nb; ib++, w0 += stride, w1 += stride, w2 += stride, w3 += stride)
        {
            Sse.Prefetch0((byte*)w0 + prefetchOffset);
            Sse.Prefetch0((byte*)w1 + prefetchOffset);
            Sse.Prefetch0((byte*)w2 + prefetchOffset);
            Sse.Prefetch0((byte*)w3 + prefetchOffset);
            var xq = Avx.LoadVector256(x[ib].Qs);
            var dx = Vector256.Create(Fp16.ToFloat(x[ib].D));
            a0 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(w0->D)) * dx, MulSumI8Pairs(Avx.LoadVector256(w0->Qs), xq), a0);
            a1 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(w1->D)) * dx, MulSumI8Pairs(Avx.LoadVector256(w1->Qs), xq), a1);
            a2 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(w2->D)) * dx, MulSumI8Pairs(Avx.LoadVector256(w2->Qs), xq), a2);
            a3 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(w3->D)) * dx, MulSumI8Pairs(Avx.LoadVector256(w3->Qs), xq), a3);
        }
        y[0] = HorizontalSum(a0);
        y[1] = HorizontalSum(a1);
        y[2] = HorizontalSum(a2);
        y[3] = HorizontalSum(a3);
    }

    /// <summary>y[r·4 + t] = Q8_0(w_r, x_t) for two rows and four vectors.</summary>
    internal static void Q8_0Avx2Tile2x4(BlockQ8_0* w0, BlockQ8_0* w1, BlockQ8_0* x0, BlockQ8_0* x1, BlockQ8_0* x2, BlockQ8_0* x3, int nb, float* y, int stride = 1)
    {
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        for (int ib = 0; ib < nb; ib++, w0 += stride, w1 += stride)
        {
            var q0 = Avx.LoadVector256(w0->Qs);
            var q1 = Avx.LoadVector256(w1->Qs);
            var abs0 = Avx2.Sign(q0, q0).AsByte();
            var abs1 = Avx2.Sign(q1, q1).AsByte();
            var d0 = Vector256.Create(Fp16.ToFloat(w0->D));
            var d1 = Vector256.Create(Fp16.ToFloat(w1->D));

            var xq = Avx.LoadVector256(x0[ib].Qs);
            var dx = Vector256.Create(Fp16.ToFloat(x0[ib].D));
            a00 = Fma.MultiplyAdd(d0 * dx, SumI8Pairs(abs0, Avx2.Sign(xq, q0)), a00);
            a10 = Fma.MultiplyAdd(d1 * dx, SumI8Pairs(abs1, Avx2.Sign(xq, q1)), a10);
            xq = Avx.LoadVector256(x1[ib].Qs);
            dx = Vector256.Create(Fp16.ToFloat(x1[ib].D));
            a01 = Fma.MultiplyAdd(d0 * dx, SumI8Pairs(abs0, Avx2.Sign(xq, q0)), a01);
            a11 = Fma.MultiplyAdd(d1 * dx, SumI8Pairs(abs1, Avx2.Sign(xq, q1)), a11);
            xq = Avx.LoadVector256(x2[ib].Qs);
            dx = Vector256.Create(Fp16.ToFloat(x2[ib].D));
            a02 = Fma.MultiplyAdd(d0 * dx, SumI8Pairs(abs0, Avx2.Sign(xq, q0)), a02);
            a12 = Fma.MultiplyAdd(d1 * dx, SumI8Pairs(abs1, Avx2.Sign(xq, q1)), a12);
            xq = Avx.LoadVector256(x3[ib].Qs);
            dx = Vector256.Create(Fp16.ToFloat(x3[ib].D));
            a03 = Fma.MultiplyAdd(d0 * dx, SumI8Pairs(abs0, Avx2.Sign(xq, q0)), a03);
            a13 = Fma.MultiplyAdd(d1 * dx, SumI8Pairs(abs1, Avx2.Sign(xq, q1)), a13);
        }
        y[0] = HorizontalSum(a00);
        y[1] = HorizontalSum(a01);
        y[2] = HorizontalSum(a02);
        y[3] = HorizontalSum(a03);
        y[4] = HorizontalSum(a10);
        y[5] = HorizontalSum(a11);
        y[6] = HorizontalSum(a12);
        y[7] = HorizontalSum(a13);
    }

    /// <summary>
    /// <see cref="Q8_0Avx2Tile2x4"/> with AVX-VNNI: Σ x·w as vpdpbusd((x + 128) as bytes, w) − 128·Σw, the correction
    /// computed once per weight block and the offset once per activation block. The integer sums are exact either way (the
    /// sign trick never saturates its int16 pairs), so every float operation and the result are the same bits, for every
    /// activation the Q8_0 activation quantizer produces (values in [−127, 127]).
    /// </summary>
    internal static void Q8_0VnniTile2x4(BlockQ8_0* w0, BlockQ8_0* w1, BlockQ8_0* x0, BlockQ8_0* x1, BlockQ8_0* x2, BlockQ8_0* x3, int nb, float* y, int stride = 1)
    {
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        var offset = Vector256.Create((byte)0x80);
        for (int ib = 0; ib < nb; ib++, w0 += stride, w1 += stride)
        {
            var q0 = Avx.LoadVector256(w0->Qs);
            var q1 = Avx.LoadVector256(w1->Qs);
            var c0 = Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, offset, q0);
            var c1 = Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, offset, q1);
            var d0 = Vector256.Create(Fp16.ToFloat(w0->D));
            var d1 = Vector256.Create(Fp16.ToFloat(w1->D));

            var xu = Avx.LoadVector256((byte*)x0[ib].Qs) ^ offset;
            var dx = Vector256.Create(Fp16.ToFloat(x0[ib].D));
            a00 = Fma.MultiplyAdd(d0 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c0, xu, q0)), a00);
            a10 = Fma.MultiplyAdd(d1 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c1, xu, q1)), a10);
            xu = Avx.LoadVector256((byte*)x1[ib].Qs) ^ offset;
            dx = Vector256.Create(Fp16.ToFloat(x1[ib].D));
            a01 = Fma.MultiplyAdd(d0 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c0, xu, q0)), a01);
            a11 = Fma.MultiplyAdd(d1 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c1, xu, q1)), a11);
            xu = Avx.LoadVector256((byte*)x2[ib].Qs) ^ offset;
            dx = Vector256.Create(Fp16.ToFloat(x2[ib].D));
            a02 = Fma.MultiplyAdd(d0 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c0, xu, q0)), a02);
            a12 = Fma.MultiplyAdd(d1 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c1, xu, q1)), a12);
            xu = Avx.LoadVector256((byte*)x3[ib].Qs) ^ offset;
            dx = Vector256.Create(Fp16.ToFloat(x3[ib].D));
            a03 = Fma.MultiplyAdd(d0 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c0, xu, q0)), a03);
            a13 = Fma.MultiplyAdd(d1 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c1, xu, q1)), a13);
        }
        y[0] = HorizontalSum(a00);
        y[1] = HorizontalSum(a01);
        y[2] = HorizontalSum(a02);
        y[3] = HorizontalSum(a03);
        y[4] = HorizontalSum(a10);
        y[5] = HorizontalSum(a11);
        y[6] = HorizontalSum(a12);
        y[7] = HorizontalSum(a13);
    }

    // The second half of MulSumI8Pairs: |w| (unsigned) times sign-adjusted x, pairs summed to int16, then to int32, as floats.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> SumI8Pairs(Vector256<byte> absW, Vector256<sbyte> signedX)
    {
        var dot = Avx2.MultiplyAddAdjacent(absW, signedX);
        return Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(dot, Vector256.Create((short)1)));
    }

    internal static float Q8_0Scalar(BlockQ8_0* w, BlockQ8_0* x, int nb)
    {
        float sumf = 0;
        for (int ib = 0; ib < nb; ib++)
        {
            int sumi = 0;
            for (int j = 0; j < 32; j++) sumi += w[ib].Qs[j] * x[ib].Qs[j];
            sumf += sumi * (Fp16.ToFloat(w[ib].D) * Fp16.ToFloat(x[ib].D));
        }
        return sumf;
    }

    // ---- Q4_0 × Q8_0 ----

    internal static float Q4_0(BlockQ4_0* w, BlockQ8_0* x, int nb) => UseAvx2 ? Q4_0Avx2(w, x, nb) : Q4_0Scalar(w, x, nb);

    /// <summary>Q4_0 row dot; the row's blocks lie <paramref name="stride"/> blocks apart (see <see cref="Q8_0Avx2"/>).</summary>
    internal static float Q4_0Avx2(BlockQ4_0* w, BlockQ8_0* x, int nb, int stride = 1)
    {
        var acc = Vector256<float>.Zero;
        var lowMask = Vector256.Create((byte)0xF);
        var off = Vector256.Create((sbyte)8);
        for (int ib = 0; ib < nb; ib++, w += stride)
        {
            var d = Vector256.Create(Fp16.ToFloat(w->D) * Fp16.ToFloat(x[ib].D));
            // bytes_from_nibbles_32: elements 0..15 are the low nibbles, 16..31 the high nibbles.
            var tmp = Sse2.LoadVector128(w->Qs);
            var nibbles = Vector256.Create(tmp, Sse2.ShiftRightLogical(tmp.AsUInt16(), 4).AsByte()) & lowMask;
            var qx = Avx2.Subtract(nibbles.AsSByte(), off);
            var q = MulSumI8Pairs(qx, Avx.LoadVector256(x[ib].Qs));
            acc = Fma.MultiplyAdd(d, q, acc);
        }
        return HorizontalSum(acc);
    }

    /// <summary>
    /// Q4_0Avx2 of two rows against one vector, each bit-identical to Q4_0Avx2: the same eight int32 lanes per block, from
    /// the unsigned nibbles n (no sign trick: n·x pairs stay within int16) less 8·Σx per lane, computed once per block for
    /// both rows; two accumulators also overlap the rows' FMA chains. Prefetches the bytes
    /// <paramref name="prefetchOffset"/> past each block read (the next pair of rows), as two interleaved row streams
    /// otherwise confuse the hardware prefetcher.
    /// </summary>
    internal static void Q4_0Avx2Rows2(BlockQ4_0* w0, BlockQ4_0* w1, BlockQ8_0* x, int nb, long prefetchOffset, out float y0, out float y1, int stride = 1)
    {
        Vector256<float> a0 = default, a1 = default;
        var eight = Vector256.Create((byte)8);
        var ones = Vector256.Create((short)1);
        for (int ib = 0; ib < nb; ib++, w0 += stride, w1 += stride)
        {
            // One prefetch per row every other block (36 bytes) covers each cache line.
            if ((ib & 1) == 0)
            {
                Sse.Prefetch0((byte*)w0 + prefetchOffset);
                Sse.Prefetch0((byte*)w1 + prefetchOffset);
            }
            var xq = Avx.LoadVector256(x[ib].Qs);
            float dx = Fp16.ToFloat(x[ib].D);
            var offset = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(eight, xq), ones);
            a0 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(w0->D) * dx), Q4_0Lanes(w0->Qs, xq, offset), a0);
            a1 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(w1->D) * dx), Q4_0Lanes(w1->Qs, xq, offset), a1);
        }
        y0 = HorizontalSum(a0);
        y1 = HorizontalSum(a1);
    }

    /// <summary>
    /// y[r·4 + t] = Q4_0Avx2(w_r, x_t) for two rows and four vectors, each bit-identical to Q4_0Avx2 as
    /// <see cref="Q4_0Avx2Rows2"/> is: each row's nibbles are unpacked once for the four vectors, each vector's 8·Σx once
    /// for both rows (with AVX-VNNI, one vpdpbusd per product starting from −8·Σx).
    /// </summary>
    internal static void Q4_0Avx2Tile2x4(BlockQ4_0* w0, BlockQ4_0* w1, BlockQ8_0* x0, BlockQ8_0* x1, BlockQ8_0* x2, BlockQ8_0* x3, int nb, float* y, int stride = 1)
    {
        if (AvxVnni.IsSupported) Q4_0VnniTile2x4(w0, w1, x0, x1, x2, x3, nb, y, stride);
        else Q4_0Fma3Tile2x4(w0, w1, x0, x1, x2, x3, nb, y, stride);
    }

    internal static void Q4_0Fma3Tile2x4(BlockQ4_0* w0, BlockQ4_0* w1, BlockQ8_0* x0, BlockQ8_0* x1, BlockQ8_0* x2, BlockQ8_0* x3, int nb, float* y, int stride)
    {
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        var eight = Vector256.Create((byte)8);
        var ones = Vector256.Create((short)1);
        for (int ib = 0; ib < nb; ib++, w0 += stride, w1 += stride)
        {
            var n0 = Q4_0Nibbles(w0->Qs);
            var n1 = Q4_0Nibbles(w1->Qs);
            var d0 = Vector256.Create(Fp16.ToFloat(w0->D));
            var d1 = Vector256.Create(Fp16.ToFloat(w1->D));

            var xq = Avx.LoadVector256(x0[ib].Qs);
            var dx = Vector256.Create(Fp16.ToFloat(x0[ib].D));
            var off = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(eight, xq), ones);
            a00 = Fma.MultiplyAdd(d0 * dx, NibbleLanes(n0, xq, off, ones), a00);
            a10 = Fma.MultiplyAdd(d1 * dx, NibbleLanes(n1, xq, off, ones), a10);
            xq = Avx.LoadVector256(x1[ib].Qs);
            dx = Vector256.Create(Fp16.ToFloat(x1[ib].D));
            off = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(eight, xq), ones);
            a01 = Fma.MultiplyAdd(d0 * dx, NibbleLanes(n0, xq, off, ones), a01);
            a11 = Fma.MultiplyAdd(d1 * dx, NibbleLanes(n1, xq, off, ones), a11);
            xq = Avx.LoadVector256(x2[ib].Qs);
            dx = Vector256.Create(Fp16.ToFloat(x2[ib].D));
            off = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(eight, xq), ones);
            a02 = Fma.MultiplyAdd(d0 * dx, NibbleLanes(n0, xq, off, ones), a02);
            a12 = Fma.MultiplyAdd(d1 * dx, NibbleLanes(n1, xq, off, ones), a12);
            xq = Avx.LoadVector256(x3[ib].Qs);
            dx = Vector256.Create(Fp16.ToFloat(x3[ib].D));
            off = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(eight, xq), ones);
            a03 = Fma.MultiplyAdd(d0 * dx, NibbleLanes(n0, xq, off, ones), a03);
            a13 = Fma.MultiplyAdd(d1 * dx, NibbleLanes(n1, xq, off, ones), a13);
        }
        StoreSums8(a00, a01, a02, a03, a10, a11, a12, a13, y);
    }

    internal static void Q4_0VnniTile2x4(BlockQ4_0* w0, BlockQ4_0* w1, BlockQ8_0* x0, BlockQ8_0* x1, BlockQ8_0* x2, BlockQ8_0* x3, int nb, float* y, int stride)
    {
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        var eight = Vector256.Create((byte)8);
        for (int ib = 0; ib < nb; ib++, w0 += stride, w1 += stride)
        {
            var n0 = Q4_0Nibbles(w0->Qs);
            var n1 = Q4_0Nibbles(w1->Qs);
            var d0 = Vector256.Create(Fp16.ToFloat(w0->D));
            var d1 = Vector256.Create(Fp16.ToFloat(w1->D));

            var xq = Avx.LoadVector256(x0[ib].Qs);
            var dx = Vector256.Create(Fp16.ToFloat(x0[ib].D));
            var start = Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, eight, xq);
            a00 = Fma.MultiplyAdd(d0 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, n0, xq)), a00);
            a10 = Fma.MultiplyAdd(d1 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, n1, xq)), a10);
            xq = Avx.LoadVector256(x1[ib].Qs);
            dx = Vector256.Create(Fp16.ToFloat(x1[ib].D));
            start = Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, eight, xq);
            a01 = Fma.MultiplyAdd(d0 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, n0, xq)), a01);
            a11 = Fma.MultiplyAdd(d1 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, n1, xq)), a11);
            xq = Avx.LoadVector256(x2[ib].Qs);
            dx = Vector256.Create(Fp16.ToFloat(x2[ib].D));
            start = Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, eight, xq);
            a02 = Fma.MultiplyAdd(d0 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, n0, xq)), a02);
            a12 = Fma.MultiplyAdd(d1 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, n1, xq)), a12);
            xq = Avx.LoadVector256(x3[ib].Qs);
            dx = Vector256.Create(Fp16.ToFloat(x3[ib].D));
            start = Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, eight, xq);
            a03 = Fma.MultiplyAdd(d0 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, n0, xq)), a03);
            a13 = Fma.MultiplyAdd(d1 * dx, Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, n1, xq)), a13);
        }
        StoreSums8(a00, a01, a02, a03, a10, a11, a12, a13, y);
    }

    // Σ n·x less 8·Σx over each group of four values as floats, for nibbles already unpacked.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> NibbleLanes(Vector256<byte> nibbles, Vector256<sbyte> xq, Vector256<int> offset, Vector256<short> ones) =>
        Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(nibbles, xq), ones) - offset);

    /// <summary>
    /// y[j] = Q4_0Avx2(row j, x) for the eight rows of an interleaved group (block k of row j at group[8k + j]), bit-identical
    /// as <see cref="Q4_0Avx2Rows2"/> is: unsigned nibbles times x less 8·Σx (computed once per block), eight accumulators over
    /// one sequential stream. With AVX-VNNI one vpdpbusd starting from −8·Σx gives the same exact int32 lanes.
    /// </summary>
    internal static void Q4_0Avx2Group8(BlockQ4_0* group, BlockQ8_0* x, int nb, float* y)
    {
        if (AvxVnni.IsSupported) Q4_0VnniGroup8(group, x, nb, y);
        else Q4_0Fma3Group8(group, x, nb, y);
    }

    internal static void Q4_0Fma3Group8(BlockQ4_0* group, BlockQ8_0* x, int nb, float* y)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        var eight = Vector256.Create((byte)8);
        var ones = Vector256.Create((short)1);
        var p = group;
        for (int ib = 0; ib < nb; ib++, p += 8)
        {
            var xq = Avx.LoadVector256(x[ib].Qs);
            float dx = Fp16.ToFloat(x[ib].D);
            var offset = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(eight, xq), ones);
            a0 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[0].D) * dx), Q4_0Lanes(p[0].Qs, xq, offset), a0);
            a1 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[1].D) * dx), Q4_0Lanes(p[1].Qs, xq, offset), a1);
            a2 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[2].D) * dx), Q4_0Lanes(p[2].Qs, xq, offset), a2);
            a3 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[3].D) * dx), Q4_0Lanes(p[3].Qs, xq, offset), a3);
            a4 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[4].D) * dx), Q4_0Lanes(p[4].Qs, xq, offset), a4);
            a5 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[5].D) * dx), Q4_0Lanes(p[5].Qs, xq, offset), a5);
            a6 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[6].D) * dx), Q4_0Lanes(p[6].Qs, xq, offset), a6);
            a7 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[7].D) * dx), Q4_0Lanes(p[7].Qs, xq, offset), a7);
        }
        StoreSums8(a0, a1, a2, a3, a4, a5, a6, a7, y);
    }

    internal static void Q4_0VnniGroup8(BlockQ4_0* group, BlockQ8_0* x, int nb, float* y)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        var eight = Vector256.Create((byte)8);
        var p = group;
        for (int ib = 0; ib < nb; ib++, p += 8)
        {
            var xq = Avx.LoadVector256(x[ib].Qs);
            float dx = Fp16.ToFloat(x[ib].D);
            var start = Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, eight, xq);
            a0 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[0].D) * dx), Q4_0LanesVnni(p[0].Qs, xq, start), a0);
            a1 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[1].D) * dx), Q4_0LanesVnni(p[1].Qs, xq, start), a1);
            a2 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[2].D) * dx), Q4_0LanesVnni(p[2].Qs, xq, start), a2);
            a3 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[3].D) * dx), Q4_0LanesVnni(p[3].Qs, xq, start), a3);
            a4 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[4].D) * dx), Q4_0LanesVnni(p[4].Qs, xq, start), a4);
            a5 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[5].D) * dx), Q4_0LanesVnni(p[5].Qs, xq, start), a5);
            a6 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[6].D) * dx), Q4_0LanesVnni(p[6].Qs, xq, start), a6);
            a7 = Fma.MultiplyAdd(Vector256.Create(Fp16.ToFloat(p[7].D) * dx), Q4_0LanesVnni(p[7].Qs, xq, start), a7);
        }
        StoreSums8(a0, a1, a2, a3, a4, a5, a6, a7, y);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreSums8(Vector256<float> a0, Vector256<float> a1, Vector256<float> a2, Vector256<float> a3,
        Vector256<float> a4, Vector256<float> a5, Vector256<float> a6, Vector256<float> a7, float* y)
    {
        y[0] = HorizontalSum(a0);
        y[1] = HorizontalSum(a1);
        y[2] = HorizontalSum(a2);
        y[3] = HorizontalSum(a3);
        y[4] = HorizontalSum(a4);
        y[5] = HorizontalSum(a5);
        y[6] = HorizontalSum(a6);
        y[7] = HorizontalSum(a7);
    }

    // The 32 nibbles of a Q4_0 block as bytes (0..15 the low nibbles, 16..31 the high ones, as bytes_from_nibbles_32): the
    // 16 bytes in both halves, the upper half shifted right by 4, then masked.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Q4_0Nibbles(byte* qs) =>
        Avx2.ShiftRightLogicalVariable(Avx2.BroadcastVector128ToVector256(qs).AsUInt32(), Vector256.Create(0u, 0, 0, 0, 4, 4, 4, 4)).AsByte()
        & Vector256.Create((byte)0xF);

    // Σ (n − 8)·x over each group of four values as floats: nibbles times x, pairs and then groups summed, less the 8·Σx of
    // the group.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Q4_0Lanes(byte* qs, Vector256<sbyte> xq, Vector256<int> offset)
    {
        var sums = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(Q4_0Nibbles(qs), xq), Vector256.Create((short)1));
        return Avx.ConvertToVector256Single(sums - offset);
    }

    // Q4_0Lanes with AVX-VNNI: the four products of each group summed onto −8·Σx of the group in one instruction (exact).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Q4_0LanesVnni(byte* qs, Vector256<sbyte> xq, Vector256<int> start) =>
        Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, Q4_0Nibbles(qs), xq));

    internal static float Q4_0Scalar(BlockQ4_0* w, BlockQ8_0* x, int nb)
    {
        float sumf = 0;
        for (int ib = 0; ib < nb; ib++)
        {
            int sumi0 = 0, sumi1 = 0;
            for (int j = 0; j < 16; j++)
            {
                int v0 = (w[ib].Qs[j] & 0x0F) - 8;
                int v1 = (w[ib].Qs[j] >> 4) - 8;
                sumi0 += v0 * x[ib].Qs[j];
                sumi1 += v1 * x[ib].Qs[j + 16];
            }
            int sumi = sumi0 + sumi1;
            sumf += sumi * Fp16.ToFloat(w[ib].D) * Fp16.ToFloat(x[ib].D);
        }
        return sumf;
    }

    // ---- Q4_K × Q8_K ----

    // The 12 packed bytes → 8 scales (bytes 0..7) and 8 mins (bytes 8..15), as ggml's utmp shuffle.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<uint> UnpackQ4KScales(byte* packed)
    {
        const uint kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
        uint u0 = Unsafe.ReadUnaligned<uint>(packed);
        uint u1 = Unsafe.ReadUnaligned<uint>(packed + 4);
        uint u2 = Unsafe.ReadUnaligned<uint>(packed + 8);
        uint t3 = ((u2 >> 4) & kmask2) | (((u1 >> 6) & kmask3) << 4);
        uint t2 = u1 & kmask1;
        uint t1 = (u2 & kmask2) | (((u0 >> 6) & kmask3) << 4);
        uint t0 = u0 & kmask1;
        return Vector128.Create(t0, t1, t2, t3);
    }

    internal static float Q4_K(BlockQ4_K* w, BlockQ8_K* x, int nb) => UseAvx2 ? Q4_KAvx2(w, x, nb) : Q4_KScalar(w, x, nb);

    internal static float Q4_KAvx2(BlockQ4_K* w, BlockQ8_K* x, int nb)
    {
        var m4 = Vector256.Create((byte)0xF);
        var acc = Vector256<float>.Zero;
        var accM = Vector128<float>.Zero;
        for (int i = 0; i < nb; i++)
        {
            float d = x[i].D * Fp16.ToFloat(w[i].D);
            float dmin = -x[i].D * Fp16.ToFloat(w[i].DMin);

            var unpacked = UnpackQ4KScales(w[i].Scales).AsByte();
            var scales = Vector128.WidenLower(unpacked).AsInt16();   // 8 scales
            var mins = Vector128.WidenUpper(unpacked).AsInt16();     // 8 mins

            short* bsums = x[i].BSums;
            var q8s = Ssse3.HorizontalAdd(Sse2.LoadVector128(bsums), Sse2.LoadVector128(bsums + 8));
            var prod = Sse2.MultiplyAddAdjacent(mins, q8s);
            accM = Fma.MultiplyAdd(Vector128.Create(dmin), Sse2.ConvertToVector128Single(prod), accM);

            byte* q4 = w[i].Qs;
            sbyte* q8 = x[i].Qs;
            var sumi = Vector256<int>.Zero;
            for (int j = 0; j < 4; j++, q4 += 32, q8 += 64)
            {
                var scaleL = Vector256.Create(scales.GetElement(2 * j));
                var scaleH = Vector256.Create(scales.GetElement(2 * j + 1));
                var q4bits = Avx.LoadVector256(q4);
                var q4l = q4bits & m4;
                var q4h = Avx2.ShiftRightLogical(q4bits.AsUInt16(), 4).AsByte() & m4;
                var p16l = Avx2.MultiplyAddAdjacent(scaleL, Avx2.MultiplyAddAdjacent(q4l, Avx.LoadVector256(q8)));
                var p16h = Avx2.MultiplyAddAdjacent(scaleH, Avx2.MultiplyAddAdjacent(q4h, Avx.LoadVector256(q8 + 32)));
                sumi = Avx2.Add(sumi, Avx2.Add(p16l, p16h));
            }
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(sumi), acc);
        }
        accM = Sse.Add(accM, Sse.MoveHighToLow(accM, accM));
        accM = Sse.AddScalar(accM, Sse3.MoveHighAndDuplicate(accM));
        return HorizontalSum(acc) + accM.ToScalar();
    }

    internal static float Q4_KScalar(BlockQ4_K* w, BlockQ8_K* x, int nb)
    {
        sbyte* aux8 = stackalloc sbyte[256];
        float* sums = stackalloc float[8];
        int* aux32 = stackalloc int[8];
        byte* scalesAndMins = stackalloc byte[16];
        for (int l = 0; l < 8; l++) sums[l] = 0;
        float sumf = 0;
        for (int i = 0; i < nb; i++)
        {
            byte* q4 = w[i].Qs;
            sbyte* q8 = x[i].Qs;
            for (int l = 0; l < 8; l++) aux32[l] = 0;
            sbyte* a = aux8;
            for (int j = 0; j < 4; j++, q4 += 32)
            {
                for (int l = 0; l < 32; l++) a[l] = (sbyte)(q4[l] & 0xF);
                a += 32;
                for (int l = 0; l < 32; l++) a[l] = (sbyte)(q4[l] >> 4);
                a += 32;
            }
            UnpackQ4KScales(w[i].Scales).Store((uint*)scalesAndMins);
            byte* scales = scalesAndMins;
            byte* mins = scalesAndMins + 8;

            int sumi = 0;
            for (int j = 0; j < 16; j++) sumi += x[i].BSums[j] * mins[j / 2];
            a = aux8;
            for (int j = 0; j < 8; j++)
            {
                int scale = scales[j];
                for (int k = 0; k < 4; k++, q8 += 8, a += 8)
                    for (int l = 0; l < 8; l++) aux32[l] += scale * (short)(q8[l] * a[l]);
            }
            float d = Fp16.ToFloat(w[i].D) * x[i].D;
            for (int l = 0; l < 8; l++) sums[l] += d * aux32[l];
            float dmin = Fp16.ToFloat(w[i].DMin) * x[i].D;
            sumf -= dmin * sumi;
        }
        for (int l = 0; l < 8; l++) sumf += sums[l];
        return sumf;
    }

    // ---- Q6_K × Q8_K ----

    internal static float Q6_K(BlockQ6_K* w, BlockQ8_K* x, int nb) => UseAvx2 ? Q6_KAvx2(w, x, nb) : Q6_KScalar(w, x, nb);

    internal static float Q6_KAvx2(BlockQ6_K* w, BlockQ8_K* x, int nb)
    {
        var m4 = Vector256.Create((byte)0xF);
        var m2 = Vector256.Create((byte)3);
        var acc = Vector256<float>.Zero;
        for (int i = 0; i < nb; i++)
        {
            float d = x[i].D * Fp16.ToFloat(w[i].D);
            byte* q4 = w[i].Ql;
            byte* qh = w[i].Qh;
            sbyte* q8 = x[i].Qs;
            sbyte* sc = w[i].Scales;

            // The −32 offset applied once per block: 32·Σ scale·bsum, lane k covering sub-blocks 2k and 2k+1.
            var scales16 = Avx2.ConvertToVector256Int16(Sse2.LoadVector128(sc));
            var q8sclsub = Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(Avx.LoadVector256(x[i].BSums), scales16), 5);

            var sumi = Vector256<int>.Zero;
            for (int j = 0; j < 2; j++, q4 += 64, qh += 32, q8 += 128, sc += 8)
            {
                var q4bits1 = Avx.LoadVector256(q4);
                var q4bits2 = Avx.LoadVector256(q4 + 32);
                var q4bitsH = Avx.LoadVector256(qh);

                var q4h0 = Avx2.ShiftLeftLogical((q4bitsH & m2).AsUInt16(), 4).AsByte();
                var q4h1 = Avx2.ShiftLeftLogical((Avx2.ShiftRightLogical(q4bitsH.AsUInt16(), 2).AsByte() & m2).AsUInt16(), 4).AsByte();
                var q4h2 = Avx2.ShiftLeftLogical((Avx2.ShiftRightLogical(q4bitsH.AsUInt16(), 4).AsByte() & m2).AsUInt16(), 4).AsByte();
                var q4h3 = Avx2.ShiftLeftLogical((Avx2.ShiftRightLogical(q4bitsH.AsUInt16(), 6).AsByte() & m2).AsUInt16(), 4).AsByte();

                var q0 = (q4bits1 & m4) | q4h0;
                var q1 = (q4bits2 & m4) | q4h1;
                var q2 = (Avx2.ShiftRightLogical(q4bits1.AsUInt16(), 4).AsByte() & m4) | q4h2;
                var q3 = (Avx2.ShiftRightLogical(q4bits2.AsUInt16(), 4).AsByte() & m4) | q4h3;

                var p0 = Q6Part(q0, Avx.LoadVector256(q8), sc[0], sc[1]);
                var p1 = Q6Part(q1, Avx.LoadVector256(q8 + 32), sc[2], sc[3]);
                var p2 = Q6Part(q2, Avx.LoadVector256(q8 + 64), sc[4], sc[5]);
                var p3 = Q6Part(q3, Avx.LoadVector256(q8 + 96), sc[6], sc[7]);
                sumi = Avx2.Add(sumi, Avx2.Add(p0, p1));
                sumi = Avx2.Add(sumi, Avx2.Add(p2, p3));
            }
            sumi = Avx2.Subtract(sumi, q8sclsub);
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(sumi), acc);
        }
        return HorizontalSum(acc);
    }

    // Σ q·q8 in pairs (q the unsigned 6-bit value), times the sub-block scales (first 16 bytes: s0, last 16: s1).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6Part(Vector256<byte> q, Vector256<sbyte> q8, sbyte s0, sbyte s1)
    {
        var scale = Vector256.Create(Vector128.Create((short)s0), Vector128.Create((short)s1));
        return Avx2.MultiplyAddAdjacent(scale, Avx2.MultiplyAddAdjacent(q, q8));
    }

    internal static float Q6_KScalar(BlockQ6_K* w, BlockQ8_K* x, int nb)
    {
        sbyte* aux8 = stackalloc sbyte[256];
        float* sums = stackalloc float[8];
        int* aux32 = stackalloc int[8];
        for (int l = 0; l < 8; l++) sums[l] = 0;
        float sumf = 0;
        for (int i = 0; i < nb; i++)
        {
            byte* q4 = w[i].Ql;
            byte* qh = w[i].Qh;
            sbyte* q8 = x[i].Qs;
            for (int l = 0; l < 8; l++) aux32[l] = 0;
            sbyte* a = aux8;
            for (int j = 0; j < 256; j += 128, a += 128, q4 += 64, qh += 32)
            {
                for (int l = 0; l < 32; l++)
                {
                    a[l] = (sbyte)(((q4[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
                    a[l + 32] = (sbyte)(((q4[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                    a[l + 64] = (sbyte)(((q4[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                    a[l + 96] = (sbyte)(((q4[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                }
            }
            a = aux8;
            for (int j = 0; j < 16; j++)
            {
                int scale = w[i].Scales[j];
                for (int k = 0; k < 2; k++, q8 += 8, a += 8)
                    for (int l = 0; l < 8; l++) aux32[l] += scale * (short)(q8[l] * a[l]);
            }
            float d = Fp16.ToFloat(w[i].D) * x[i].D;
            for (int l = 0; l < 8; l++) sums[l] += d * aux32[l];
        }
        for (int l = 0; l < 8; l++) sumf += sums[l];
        return sumf;
    }
}
