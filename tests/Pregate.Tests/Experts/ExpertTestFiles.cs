// Helpers for the expert offloading tests: a self-deleting folder on the working directory's (disk) filesystem, seeded
// random files, aligned native buffers, and a GGUF-like file of stacked expert tensors at unaligned offsets.
using System.Runtime.InteropServices;
using Pregate.Experts;

namespace Pregate.Tests.Experts;

/// <summary>
/// A fresh folder under the current directory (a disk filesystem that honours O_DIRECT, unlike some /tmp mounts),
/// deleted on dispose.
/// </summary>
internal sealed class DiskFolder : IDisposable
{
    public string Path { get; } = Directory.CreateDirectory(
        System.IO.Path.Combine(Directory.GetCurrentDirectory(), "pregate-experts-" + Guid.NewGuid().ToString("N"))).FullName;

    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>Writes <paramref name="length"/> seeded random bytes to <paramref name="name"/> and returns them.</summary>
    public byte[] WriteRandom(string name, long length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        System.IO.File.WriteAllBytes(File(name), bytes);
        return bytes;
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

/// <summary>4096-aligned native memory, freed on dispose.</summary>
internal sealed unsafe class AlignedBuffer : IDisposable
{
    public AlignedBuffer(long length)
    {
        Length = length;
        Pointer = (byte*)NativeMemory.AlignedAlloc((nuint)length, DirectFileReader.Alignment);
    }

    public byte* Pointer { get; private set; }
    public long Length { get; }

    public Span<byte> Span(long offset, long length) => new(Pointer + offset, checked((int)length));

    public void Dispose()
    {
        if (Pointer != null) NativeMemory.AlignedFree(Pointer);
        Pointer = null;
    }
}

/// <summary>
/// A model-like file: a header of <c>headerBytes</c> random bytes, then per layer three stacked tensors (gate, up, down)
/// of <c>experts × partBytes[p]</c> bytes each, every tensor starting on a 32-byte boundary (GGUF's default alignment),
/// so expert parts sit at offsets that are not multiples of 4096.
/// </summary>
internal sealed class StackedExpertFile
{
    public StackedExpertFile(DiskFolder folder, string name, int layers, int experts, long[] partBytes, int headerBytes, int seed)
    {
        Path = folder.File(name);
        Layers = layers;
        Experts = experts;
        var tensors = new List<IReadOnlyList<StackedTensor>>();
        long offset = headerBytes;
        for (int l = 0; l < layers; l++)
        {
            var layer = new List<StackedTensor>();
            foreach (long bytes in partBytes)
            {
                offset = (offset + 31) / 32 * 32;
                layer.Add(new StackedTensor(Path, offset, bytes));
                offset += experts * bytes;
            }
            tensors.Add(layer);
        }
        Bytes = folder.WriteRandom(name, offset + 777, seed); // a tail after the last tensor, as real files have
        Layout = ExpertLayout.FromStacked(experts, tensors);
    }

    public string Path { get; }
    public int Layers { get; }
    public int Experts { get; }
    public byte[] Bytes { get; }
    public ExpertLayout Layout { get; }

    /// <summary>The file bytes of part <paramref name="part"/> of <paramref name="key"/>.</summary>
    public ReadOnlySpan<byte> Expected(ExpertKey key, int part)
    {
        ExpertPart p = Layout.Extent(key).Parts[part];
        return Bytes.AsSpan(checked((int)p.Offset), checked((int)p.Length));
    }

    /// <summary>Number of part bytes of <paramref name="lease"/> that differ from the file.</summary>
    public long CountMismatches(ExpertLease lease)
    {
        long bad = 0;
        for (int p = 0; p < lease.PartCount; p++)
        {
            ReadOnlySpan<byte> got = lease.PartBytes(p), want = Expected(lease.Key, p);
            if (got.Length != want.Length) return long.MaxValue;
            for (int i = 0; i < got.Length; i++)
                if (got[i] != want[i]) bad++;
        }
        return bad;
    }
}
