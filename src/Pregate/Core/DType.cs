// Element types of weights and tensors. Numeric values are ggml's type ids (ggml.h, enum ggml_type),
// so a GGUF tensor info's type field casts directly.
namespace Pregate.Core;

public enum DType : uint
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q8_0 = 8,
    Q4_K = 12,
    Q6_K = 14,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    BF16 = 30,
}

/// <summary>Block geometry of a <see cref="DType"/>: <c>BlockSize</c> elements stored in <c>BlockBytes</c> bytes.</summary>
public static class DTypes
{
    /// <summary>True for the types Pregate can read and compute with.</summary>
    public static bool IsKnown(DType t) => t switch
    {
        DType.F32 or DType.F16 or DType.BF16 or DType.Q4_0 or DType.Q8_0 or DType.Q4_K or DType.Q6_K
            or DType.I8 or DType.I16 or DType.I32 or DType.I64 or DType.F64 => true,
        _ => false,
    };

    /// <summary>Elements per block (1 for plain types, 32 for Q8_0/Q4_0, 256 for k-quants).</summary>
    public static int BlockSize(DType t) => t switch
    {
        DType.Q4_0 or DType.Q8_0 => 32,
        DType.Q4_K or DType.Q6_K => 256,
        _ when IsKnown(t) => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unknown dtype"),
    };

    /// <summary>Bytes per block.</summary>
    public static int BlockBytes(DType t) => t switch
    {
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 or DType.I16 => 2,
        DType.I8 => 1,
        DType.I64 or DType.F64 => 8,
        DType.Q4_0 => 18,   // f16 d + 16 bytes of nibbles
        DType.Q8_0 => 34,   // f16 d + 32 int8
        DType.Q4_K => 144,  // f16 d, f16 dmin, 12 bytes scales, 128 bytes nibbles
        DType.Q6_K => 210,  // 128 ql + 64 qh + 16 int8 scales + f16 d
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unknown dtype"),
    };

    public static bool IsQuantized(DType t) => BlockSize(t) > 1;

    /// <summary>Bytes of <paramref name="elements"/> elements; null when the count is not a whole number of blocks or overflows.</summary>
    public static long? TryByteCount(DType t, long elements)
    {
        if (elements < 0) return null;
        int bs = BlockSize(t);
        if (elements % bs != 0) return null;
        long blocks = elements / bs;
        long bb = BlockBytes(t);
        if (blocks > long.MaxValue / bb) return null;
        return blocks * bb;
    }

    /// <summary>Bytes of <paramref name="elements"/> elements; throws when they are not whole blocks.</summary>
    public static long ByteCount(DType t, long elements) =>
        TryByteCount(t, elements) ?? throw new ArgumentException($"{elements} elements is not a whole number of {Name(t)} blocks of {BlockSize(t)}");

    /// <summary>Lower-case name as used on the command line and in GGUF dumps: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k…</summary>
    public static string Name(DType t) => t.ToString().ToLowerInvariant();

    public static bool TryParse(string s, out DType t)
    {
        foreach (var v in Enum.GetValues<DType>())
            if (string.Equals(Name(v), s, StringComparison.OrdinalIgnoreCase)) { t = v; return true; }
        t = default;
        return false;
    }
}
