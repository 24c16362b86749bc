// Shared fixtures for the GGUF tests: a temporary folder, a small valid file, byte patching by field position.
using System.Buffers.Binary;
using System.Text;
using Pregate.Core;
using Pregate.Formats;
using Pregate.Formats.Gguf;

namespace Pregate.Tests.Gguf;

/// <summary>A temporary folder deleted on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("pregate-gguf-").FullName;

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public string Write(string name, byte[] bytes)
    {
        string p = File(name);
        System.IO.File.WriteAllBytes(p, bytes);
        return p;
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

internal static class GgufTestFiles
{
    /// <summary>Seeded random bytes.</summary>
    public static byte[] RandomBytes(int seed, long n)
    {
        var bytes = new byte[n];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    public static byte[] ToBytes(GgufWriter w)
    {
        using var ms = new MemoryStream();
        w.WriteTo(ms);
        return ms.ToArray();
    }

    /// <summary>
    /// A small valid file (about 1.5 KB): scalars, a string, string/float/nested arrays, and three tensors
    /// (F32 [2, 3], Q8_0 [2, 32], F16 [4]) with seeded random bytes.
    /// </summary>
    public static byte[] SmallValidFile()
    {
        var w = new GgufWriter();
        w.AddString("general.architecture", "test");
        w.AddUInt32("test.count", 7);
        w.AddFloat32("test.eps", 1e-5f);
        w.AddBool("test.flag", true);
        w.AddStringArray("test.tokens", ["a", "bc", "▁d", ""]);
        w.AddFloat32Array("test.scores", [0f, -1f, -2f]);
        w.AddArray("test.nested", GgufValueType.Array,
            [GgufValue.FromInt32Array([1, 2]), GgufValue.FromStringArray(["x"]), GgufValue.FromUInt8Array([])]);
        w.AddTensor(TensorData.FromBytes("t.f32", DType.F32, [2, 3], RandomBytes(1, 24)));
        w.AddTensor(TensorData.FromBytes("t.q8", DType.Q8_0, [2, 32], RandomBytes(2, 68)));
        w.AddTensor(TensorData.FromBytes("t.f16", DType.F16, [4], RandomBytes(3, 8)));
        return ToBytes(w);
    }

    /// <summary>Index of the first occurrence of <paramref name="text"/>'s UTF-8 bytes; throws when absent.</summary>
    public static int IndexOf(byte[] file, string text)
    {
        int i = file.AsSpan().IndexOf(Encoding.UTF8.GetBytes(text));
        if (i < 0) throw new InvalidOperationException($"'{text}' not found in the test file");
        return i;
    }

    /// <summary>Offset just after the first occurrence of <paramref name="text"/> (where the field following a key or tensor name starts).</summary>
    public static int After(byte[] file, string text) => IndexOf(file, text) + Encoding.UTF8.GetByteCount(text);

    public static void PutU32(byte[] file, int at, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(at), v);
    public static void PutU64(byte[] file, int at, ulong v) => BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(at), v);
    public static void PutI64(byte[] file, int at, long v) => BinaryPrimitives.WriteInt64LittleEndian(file.AsSpan(at), v);
}
