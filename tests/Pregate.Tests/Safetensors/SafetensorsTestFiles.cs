// Helpers for the safetensors tests: a self-deleting temp folder and a builder of raw files from header text and data.
using System.Buffers.Binary;
using System.Text;
using Pregate.Core;
using Pregate.Formats;

namespace Pregate.Tests.Safetensors;

/// <summary>A fresh folder under the temp directory, deleted on dispose.</summary>
internal sealed class TempFolder : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("pregate-st-").FullName;

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

internal static class SafetensorsTestFiles
{
    /// <summary>8-byte little-endian header length, the header text as UTF-8, then the data.</summary>
    public static byte[] Raw(string header, byte[]? data = null, ulong? headerLength = null) =>
        Raw(Encoding.UTF8.GetBytes(header), data, headerLength);

    public static byte[] Raw(byte[] header, byte[]? data = null, ulong? headerLength = null)
    {
        data ??= [];
        var bytes = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + header.Length);
        return bytes;
    }

    /// <summary>Seeded random bytes.</summary>
    public static byte[] RandomBytes(int seed, long count)
    {
        var bytes = new byte[count];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    /// <summary>A tensor of random bytes whose size follows from its type and shape.</summary>
    public static (TensorData Data, byte[] Bytes) RandomTensor(string name, DType type, long[] shape, int seed)
    {
        long elements = shape.Aggregate(1L, (a, d) => a * d);
        byte[] bytes = RandomBytes(seed, DTypes.ByteCount(type, elements));
        return (TensorData.FromBytes(name, type, shape, bytes), bytes);
    }
}
