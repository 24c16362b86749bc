// A typed, shaped window onto native memory (usually a memory-mapped model file). Owns nothing.
namespace Pregate.Core;

/// <summary>
/// A tensor stored at <see cref="Pointer"/>: <see cref="Shape"/> is row-major, slowest dimension first
/// (PyTorch order: a linear weight is [out, in], stacked experts [E, out, in]). GGUF lists dims fastest first;
/// readers reverse them. Valid only while the owning mapping is alive.
/// </summary>
public readonly unsafe struct TensorView
{
    public string Name { get; }
    public DType Type { get; }
    public long[] Shape { get; }
    public nint Pointer { get; }
    public long ByteLength { get; }

    public TensorView(string name, DType type, long[] shape, nint pointer, long byteLength)
    {
        Name = name;
        Type = type;
        Shape = shape;
        Pointer = pointer;
        ByteLength = byteLength;
    }

    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (long d in Shape) n *= d;
            return n;
        }
    }

    public int Rank => Shape.Length;

    /// <summary>Bytes of one row (the last dimension).</summary>
    public long RowBytes => DTypes.ByteCount(Type, Shape.Length == 0 ? 1 : Shape[^1]);

    /// <summary>The raw bytes. Throws when the tensor is larger than a span can index.</summary>
    public ReadOnlySpan<byte> Bytes => new((void*)Pointer, checked((int)ByteLength));

    /// <summary>The elements as <typeparamref name="T"/> (F32 → float, F16 → Half, BF16 → ushort, I32 → int …).</summary>
    public ReadOnlySpan<T> AsSpan<T>() where T : unmanaged => new((void*)Pointer, checked((int)(ByteLength / sizeof(T))));

    public override string ToString() => $"{Name} {DTypes.Name(Type)} [{string.Join(", ", Shape)}]";
}
