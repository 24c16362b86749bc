// A tensor to be written: its name, type, shape and a callback that streams exactly its bytes.
using Pregate.Core;

namespace Pregate.Formats;

/// <summary>
/// A tensor for the GGUF and safetensors writers. <see cref="Shape"/> is row-major, slowest dimension first
/// (as <see cref="TensorView"/>). <see cref="Write"/> must write exactly <see cref="ByteLength"/> bytes; it is
/// called once, in file order, so large models stream without being held in memory.
/// </summary>
public sealed record TensorData(string Name, DType Type, long[] Shape, Action<Stream> Write)
{
    public long ElementCount => Shape.Aggregate(1L, (a, d) => checked(a * d));
    public long ByteLength => DTypes.ByteCount(Type, ElementCount);

    /// <summary>A tensor whose bytes are already in memory.</summary>
    public static TensorData FromBytes(string name, DType type, long[] shape, byte[] bytes) =>
        new(name, type, shape, s => s.Write(bytes));
}
