// K-quant reference quantizers, bit-exact ports of ggml-quants.c: quantize_row_q4_K_ref (make_qkx2_quants) and
// quantize_row_q6_K_ref (make_qx_quants, rmse_type 1, no importance weights). Float evaluation order follows the C source.
using System.Runtime.InteropServices;

namespace Pregate.Core;

public static partial class Quantize
{
    private const float GroupMaxEps = 1e-15f;

    /// <summary>Q4_K as ggml's quantize_row_q4_K_ref (8 sub-blocks of 32 with a fitted scale and min each, 6-bit packed).</summary>
    public static unsafe void QuantizeQ4_K(ReadOnlySpan<float> src, Span<byte> dst)
    {
        var y = Blocks<BlockQ4_K>(src, dst, DType.Q4_K);
        Span<byte> L = stackalloc byte[256];
        Span<byte> laux = stackalloc byte[32];
        Span<float> weights = stackalloc float[32];
        Span<float> mins = stackalloc float[8];
        Span<float> scales = stackalloc float[8];
        for (int i = 0; i < y.Length; i++)
        {
            var x = src.Slice(i * 256, 256);
            float maxScale = 0, maxMin = 0;
            for (int j = 0; j < 8; j++)
            {
                var xs = x.Slice(32 * j, 32);
                float sumX2 = 0;
                for (int l = 0; l < 32; l++) sumX2 += xs[l] * xs[l];
                float avX = MathF.Sqrt(sumX2 / 32);
                for (int l = 0; l < 32; l++) weights[l] = avX + MathF.Abs(xs[l]);
                scales[j] = MakeQkx2Quants(32, 15, xs, weights, L.Slice(32 * j, 32), out mins[j], laux, -1f, 0.1f, 20, false);
                if (scales[j] > maxScale) maxScale = scales[j];
                if (mins[j] > maxMin) maxMin = mins[j];
            }

            float invScale = maxScale > 0 ? 63f / maxScale : 0f;
            float invMin = maxMin > 0 ? 63f / maxMin : 0f;
            ref BlockQ4_K b = ref y[i];
            for (int j = 0; j < 8; j++)
            {
                byte ls = (byte)NearestInt(invScale * scales[j]);
                byte lm = (byte)NearestInt(invMin * mins[j]);
                ls = Math.Min((byte)63, ls);
                lm = Math.Min((byte)63, lm);
                if (j < 4)
                {
                    b.Scales[j] = ls;
                    b.Scales[j + 4] = lm;
                }
                else
                {
                    b.Scales[j + 4] = (byte)((ls & 0xF) | ((lm & 0xF) << 4));
                    b.Scales[j - 4] |= (byte)((ls >> 4) << 6);
                    b.Scales[j] |= (byte)((lm >> 4) << 6);
                }
            }
            b.D = Fp16.FromFloat(maxScale / 63f);
            b.DMin = Fp16.FromFloat(maxMin / 63f);

            fixed (byte* sc = b.Scales)
            {
                var packed = new ReadOnlySpan<byte>(sc, 12);
                for (int j = 0; j < 8; j++)
                {
                    BlockQ4_K.ScaleMin(j, packed, out byte s, out byte m);
                    float d = Fp16.ToFloat(b.D) * s;
                    if (d == 0) continue;
                    float dm = Fp16.ToFloat(b.DMin) * m;
                    for (int ii = 0; ii < 32; ii++)
                    {
                        int l = NearestInt((x[32 * j + ii] + dm) / d);
                        L[32 * j + ii] = (byte)Math.Max(0, Math.Min(15, l));
                    }
                }
            }

            for (int j = 0, q = 0; j < 256; j += 64, q += 32)
                for (int l = 0; l < 32; l++) b.Qs[q + l] = (byte)(L[j + l] | (L[j + l + 32] << 4));
        }
    }

    /// <summary>Q6_K as ggml's quantize_row_q6_K_ref (16 sub-blocks of 16, int8 scales, 6-bit quants).</summary>
    public static unsafe void QuantizeQ6_K(ReadOnlySpan<float> src, Span<byte> dst)
    {
        var y = Blocks<BlockQ6_K>(src, dst, DType.Q6_K);
        Span<sbyte> L = stackalloc sbyte[256];
        Span<float> scales = stackalloc float[16];
        for (int i = 0; i < y.Length; i++)
        {
            var x = src.Slice(i * 256, 256);
            float maxScale = 0, maxAbsScale = 0;
            for (int ib = 0; ib < 16; ib++)
            {
                float scale = MakeQxQuants(16, 32, x.Slice(16 * ib, 16), L.Slice(16 * ib, 16));
                scales[ib] = scale;
                float absScale = MathF.Abs(scale);
                if (absScale > maxAbsScale)
                {
                    maxAbsScale = absScale;
                    maxScale = scale;
                }
            }

            ref BlockQ6_K b = ref y[i];
            if (maxAbsScale < GroupMaxEps)
            {
                b = default;
                continue;
            }

            float iscale = -128f / maxScale;
            b.D = Fp16.FromFloat(1 / iscale);
            for (int ib = 0; ib < 16; ib++) b.Scales[ib] = (sbyte)Math.Min(127, NearestInt(iscale * scales[ib]));

            for (int j = 0; j < 16; j++)
            {
                float d = Fp16.ToFloat(b.D) * b.Scales[j];
                if (d == 0) continue;
                for (int ii = 0; ii < 16; ii++)
                {
                    int l = NearestInt(x[16 * j + ii] / d);
                    l = Math.Max(-32, Math.Min(31, l));
                    L[16 * j + ii] = (sbyte)(l + 32);
                }
            }

            for (int j = 0, ql = 0, qh = 0; j < 256; j += 128, ql += 64, qh += 32)
            {
                for (int l = 0; l < 32; l++)
                {
                    int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                    b.Ql[ql + l] = (byte)(q1 | (q3 << 4));
                    b.Ql[ql + l + 32] = (byte)(q2 | (q4 << 4));
                    b.Qh[qh + l] = (byte)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
                }
            }
        }
    }

    /// <summary>ggml's make_qkx2_quants: fits x ≈ scale·L + min (min ≤ 0) with L ∈ [0, nmax], searching nstep+1 scales.</summary>
    private static float MakeQkx2Quants(int n, int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<byte> L,
        out float theMin, Span<byte> laux, float rmin, float rdelta, int nstep, bool useMad)
    {
        float min = x[0], max = x[0];
        float sumW = weights[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < min) min = x[i];
            if (x[i] > max) max = x[i];
            float w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }
        if (min > 0) min = 0;
        if (max == min)
        {
            L[..n].Clear();
            theMin = -min;
            return 0f;
        }
        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            int l = NearestInt(iscale * (x[i] - min));
            L[i] = (byte)Math.Max(0, Math.Min(nmax, l));
            float diff = scale * L[i] + min - x[i];
            diff = useMad ? MathF.Abs(diff) : diff * diff;
            bestError += weights[i] * diff;
        }
        if (nstep < 1)
        {
            theMin = -min;
            return scale;
        }
        for (int step = 0; step <= nstep; step++)
        {
            iscale = (rmin + rdelta * step + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < n; i++)
            {
                int l = NearestInt(iscale * (x[i] - min));
                l = Math.Max(0, Math.Min(nmax, l));
                laux[i] = (byte)l;
                float w = weights[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXL += w * l * x[i];
            }
            float D = sumW * sumL2 - sumL * sumL;
            if (D > 0)
            {
                float thisScale = (sumW * sumXL - sumX * sumL) / D;
                float thisMin = (sumL2 * sumX - sumL * sumXL) / D;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXL / sumL2;
                }
                float curError = 0;
                for (int i = 0; i < n; i++)
                {
                    float diff = thisScale * laux[i] + thisMin - x[i];
                    diff = useMad ? MathF.Abs(diff) : diff * diff;
                    curError += weights[i] * diff;
                }
                if (curError < bestError)
                {
                    laux[..n].CopyTo(L);
                    bestError = curError;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        theMin = -min;
        return scale;
    }

    /// <summary>
    /// ggml's make_qx_quants with rmse_type 1 and no importance weights: symmetric L ∈ [−nmax, nmax−1] (stored +nmax),
    /// weighted by x², trying 18 scales around nmax/max.
    /// </summary>
    private static float MakeQxQuants(int n, int nmax, ReadOnlySpan<float> x, Span<sbyte> L)
    {
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax)
            {
                amax = ax;
                max = x[i];
            }
        }
        if (amax < GroupMaxEps)
        {
            L[..n].Clear();
            return 0f;
        }
        float iscale = -nmax / max;
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int l = NearestInt(iscale * x[i]);
            l = Math.Max(-nmax, Math.Min(nmax - 1, l));
            L[i] = (sbyte)(l + nmax);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
        float best = scale * sumlx;
        for (int step = -9; step <= 9; step++)
        {
            if (step == 0) continue;
            iscale = -(nmax + 0.1f * step) / max;
            sumlx = suml2 = 0;
            for (int i = 0; i < n; i++)
            {
                int l = NearestInt(iscale * x[i]);
                l = Math.Max(-nmax, Math.Min(nmax - 1, l));
                float w = x[i] * x[i];
                sumlx += w * x[i] * l;
                suml2 += w * l * l;
            }
            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                for (int i = 0; i < n; i++)
                {
                    int l = NearestInt(iscale * x[i]);
                    L[i] = (sbyte)(nmax + Math.Max(-nmax, Math.Min(nmax - 1, l)));
                }
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }
}
