// Per-element access to ggml quant blocks (layouts of ggml-common.h, decoding of ggml-quants.c dequantize_row_*): the affine
// map x = a·q + b each stored level q goes through, and reading or writing one element's level in place. Used by GPTQ to pick
// levels column by column once a block's scales are fixed.
namespace Pregate.Core;

public static class BlockGrid
{
    /// <summary>True for the block types whose levels can be set one element at a time (Q8_0, Q4_0, Q4_K, Q6_K).</summary>
    public static bool Supports(DType t) => t is DType.Q8_0 or DType.Q4_0 or DType.Q4_K or DType.Q6_K;

    /// <summary>The smallest and largest level of <paramref name="t"/> (Q8_0 uses ±127 as ggml's quantizer does).</summary>
    public static (int Min, int Max) Levels(DType t) => t switch
    {
        DType.Q8_0 => (-127, 127),
        DType.Q4_0 or DType.Q4_K => (0, 15),
        DType.Q6_K => (0, 63),
        _ => throw new ArgumentException($"no per-element grid for {DTypes.Name(t)}", nameof(t)),
    };

    /// <summary>Element <paramref name="p"/> of <paramref name="block"/> decodes as a·q + b: returns (a, b).</summary>
    /// <exception cref="ArgumentException">Unsupported type.</exception>
    public static (float A, float B) Affine(DType t, ReadOnlySpan<byte> block, int p)
    {
        switch (t)
        {
            case DType.Q8_0:
                return (Half16(block, 0), 0f);
            case DType.Q4_0:
                {
                    float d = Half16(block, 0);
                    return (d, -8f * d);
                }
            case DType.Q4_K:
                {
                    float d = Half16(block, 0), dmin = Half16(block, 2);
                    int sub = p / 32;
                    BlockQ4_K.ScaleMin(sub, block.Slice(4, 12), out byte sc, out byte m);
                    return (d * sc, -(dmin * m));
                }
            case DType.Q6_K:
                {
                    float d = Half16(block, 208);
                    (int h, int quarter, int l) = (p / 128, p % 128 / 32, p % 32);
                    float a = d * (sbyte)block[192 + 8 * h + l / 16 + 2 * quarter];
                    return (a, -32f * a);
                }
            default: throw new ArgumentException($"no per-element grid for {DTypes.Name(t)}", nameof(t));
        }
    }

    /// <summary>The stored level of element <paramref name="p"/>.</summary>
    public static int GetLevel(DType t, ReadOnlySpan<byte> block, int p) => t switch
    {
        DType.Q8_0 => (sbyte)block[2 + p],
        DType.Q4_0 => p < 16 ? block[2 + p] & 0xF : block[2 + p - 16] >> 4,
        DType.Q4_K => Q4K(block, p),
        DType.Q6_K => Q6K(block, p),
        _ => throw new ArgumentException($"no per-element grid for {DTypes.Name(t)}", nameof(t)),
    };

    /// <summary>Stores level <paramref name="q"/> (within <see cref="Levels"/>) for element <paramref name="p"/>.</summary>
    public static void SetLevel(DType t, Span<byte> block, int p, int q)
    {
        switch (t)
        {
            case DType.Q8_0: block[2 + p] = (byte)(sbyte)q; break;
            case DType.Q4_0:
                if (p < 16) block[2 + p] = (byte)((block[2 + p] & 0xF0) | q);
                else block[2 + p - 16] = (byte)((block[2 + p - 16] & 0x0F) | (q << 4));
                break;
            case DType.Q4_K:
                {
                    Q4KNibble(p, out int i, out bool high);
                    block[i] = high ? (byte)((block[i] & 0x0F) | (q << 4)) : (byte)((block[i] & 0xF0) | q);
                    break;
                }
            case DType.Q6_K:
                {
                    (int h, int quarter, int l) = (p / 128, p % 128 / 32, p % 32);
                    int ql = 64 * h + l + (quarter % 2 == 1 ? 32 : 0), qh = 128 + 32 * h + l, shift = 2 * quarter;
                    block[ql] = quarter >= 2 ? (byte)((block[ql] & 0x0F) | ((q & 0xF) << 4)) : (byte)((block[ql] & 0xF0) | (q & 0xF));
                    block[qh] = (byte)((block[qh] & ~(3 << shift)) | ((q >> 4) << shift));
                    break;
                }
            default: throw new ArgumentException($"no per-element grid for {DTypes.Name(t)}", nameof(t));
        }
    }

    // Q4_K: the byte (offset in the block) and nibble of element p — groups of 64, low nibbles the first 32, high the next.
    private static void Q4KNibble(int p, out int index, out bool high)
    {
        int group = p / 64, within = p % 64;
        index = 16 + group * 32 + within % 32;
        high = within >= 32;
    }

    private static int Q4K(ReadOnlySpan<byte> block, int p)
    {
        Q4KNibble(p, out int i, out bool high);
        return high ? block[i] >> 4 : block[i] & 0xF;
    }

    private static int Q6K(ReadOnlySpan<byte> block, int p)
    {
        (int h, int quarter, int l) = (p / 128, p % 128 / 32, p % 32);
        int ql = 64 * h + l + (quarter % 2 == 1 ? 32 : 0), qh = 128 + 32 * h + l;
        int low = quarter >= 2 ? block[ql] >> 4 : block[ql] & 0xF;
        return low | (((block[qh] >> (2 * quarter)) & 3) << 4);
    }

    private static float Half16(ReadOnlySpan<byte> block, int offset) =>
        (float)BitConverter.UInt16BitsToHalf((ushort)(block[offset] | (block[offset + 1] << 8)));
}
