// Quantized block formats, byte-for-byte ggml's (ggml-common.h: block_q8_0, block_q4_0, block_q4_K, block_q6_K, block_q8_K).
// Blittable: a span of blocks can be reinterpreted straight from a memory-mapped GGUF tensor.
using System.Runtime.InteropServices;

namespace Pregate.Core;

/// <summary>A quantized block: <see cref="Elements"/> weights and their decoding.</summary>
public interface IQuantBlock<TSelf> where TSelf : unmanaged, IQuantBlock<TSelf>
{
    /// <summary>Weights per block.</summary>
    static abstract int Elements { get; }

    /// <summary>Writes the block's <see cref="Elements"/> values to <paramref name="dst"/> (at least that long).</summary>
    static abstract void Dequantize(in TSelf block, Span<float> dst);
}

/// <summary>Q8_0: 32 weights, x = d·q with q ∈ [−127, 127]. 34 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct BlockQ8_0 : IQuantBlock<BlockQ8_0>
{
    public const int Size = 32;
    public Half D;
    public fixed sbyte Qs[Size];

    public static int Elements => Size;

    public static void Dequantize(in BlockQ8_0 block, Span<float> dst)
    {
        float d = Fp16.ToFloat(block.D);
        for (int j = 0; j < Size; j++) dst[j] = block.Qs[j] * d;
    }
}

/// <summary>Q4_0: 32 weights, x = d·(q − 8); element j is the low nibble of Qs[j], element j+16 the high nibble. 18 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct BlockQ4_0 : IQuantBlock<BlockQ4_0>
{
    public const int Size = 32;
    public Half D;
    public fixed byte Qs[Size / 2];

    public static int Elements => Size;

    public static void Dequantize(in BlockQ4_0 block, Span<float> dst)
    {
        float d = Fp16.ToFloat(block.D);
        for (int j = 0; j < Size / 2; j++)
        {
            dst[j] = ((block.Qs[j] & 0x0F) - 8) * d;
            dst[j + Size / 2] = ((block.Qs[j] >> 4) - 8) * d;
        }
    }
}

/// <summary>
/// Q4_K: 256 weights in 8 sub-blocks of 32; sub-block j has a 6-bit scale sc_j and min m_j packed in <see cref="Scales"/>
/// (see <see cref="ScaleMin"/>); x = d·sc_j·q − dmin·m_j with q a nibble. Qs holds 4 groups of 64: low nibbles are the first 32,
/// high nibbles the next 32. 144 bytes.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct BlockQ4_K : IQuantBlock<BlockQ4_K>
{
    public const int Size = 256;
    public Half D;
    public Half DMin;
    public fixed byte Scales[12];
    public fixed byte Qs[Size / 2];

    public static int Elements => Size;

    /// <summary>Sub-block <paramref name="j"/>'s 6-bit scale and min (ggml's get_scale_min_k4).</summary>
    public static void ScaleMin(int j, ReadOnlySpan<byte> scales, out byte scale, out byte min)
    {
        if (j < 4)
        {
            scale = (byte)(scales[j] & 63);
            min = (byte)(scales[j + 4] & 63);
        }
        else
        {
            scale = (byte)((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4));
            min = (byte)((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
        }
    }

    public static void Dequantize(in BlockQ4_K block, Span<float> dst)
    {
        fixed (byte* sc = block.Scales)
        fixed (byte* qs = block.Qs)
        {
            var scales = new ReadOnlySpan<byte>(sc, 12);
            float d = Fp16.ToFloat(block.D);
            float dmin = Fp16.ToFloat(block.DMin);
            byte* q = qs;
            int y = 0;
            for (int j = 0, isb = 0; j < Size; j += 64, isb += 2, q += 32)
            {
                ScaleMin(isb, scales, out byte s1, out byte m1);
                ScaleMin(isb + 1, scales, out byte s2, out byte m2);
                float d1 = d * s1, mm1 = dmin * m1;
                float d2 = d * s2, mm2 = dmin * m2;
                for (int l = 0; l < 32; l++) dst[y++] = d1 * (q[l] & 0xF) - mm1;
                for (int l = 0; l < 32; l++) dst[y++] = d2 * (q[l] >> 4) - mm2;
            }
        }
    }
}

/// <summary>
/// Q6_K: 256 weights in 16 sub-blocks of 16 with int8 scales; x = d·sc·(q − 32), q a 6-bit value whose low 4 bits are in
/// <see cref="Ql"/> and high 2 bits in <see cref="Qh"/> (layout of ggml's dequantize_row_q6_K). 210 bytes.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct BlockQ6_K : IQuantBlock<BlockQ6_K>
{
    public const int Size = 256;
    public fixed byte Ql[Size / 2];
    public fixed byte Qh[Size / 4];
    public fixed sbyte Scales[Size / 16];
    public Half D;

    public static int Elements => Size;

    public static void Dequantize(in BlockQ6_K block, Span<float> dst)
    {
        float d = Fp16.ToFloat(block.D);
        fixed (byte* qlBase = block.Ql)
        fixed (byte* qhBase = block.Qh)
        fixed (sbyte* scBase = block.Scales)
        {
            byte* ql = qlBase, qh = qhBase;
            sbyte* sc = scBase;
            for (int n = 0; n < Size; n += 128, ql += 64, qh += 32, sc += 8)
            {
                for (int l = 0; l < 32; l++)
                {
                    int isb = l / 16;
                    int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    dst[n + l] = d * sc[isb] * q1;
                    dst[n + l + 32] = d * sc[isb + 2] * q2;
                    dst[n + l + 64] = d * sc[isb + 4] * q3;
                    dst[n + l + 96] = d * sc[isb + 6] * q4;
                }
            }
        }
    }
}

/// <summary>
/// Q8_K: the activation format k-quant dot products use. 256 int8 values, a float scale, and the sums of each group of
/// 16 quants (<see cref="BSums"/>), x = d·q. 292 bytes.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct BlockQ8_K : IQuantBlock<BlockQ8_K>
{
    public const int Size = 256;
    public float D;
    public fixed sbyte Qs[Size];
    public fixed short BSums[Size / 16];

    public static int Elements => Size;

    public static void Dequantize(in BlockQ8_K block, Span<float> dst)
    {
        for (int j = 0; j < Size; j++) dst[j] = block.D * block.Qs[j];
    }
}
