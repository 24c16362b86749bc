// Zero-copy reader of one .safetensors file (huggingface/safetensors, "Format"): u64 little-endian header length N,
// N bytes of UTF-8 JSON header, then the data area that the tensors' data_offsets index without holes or overlaps.
using System.Buffers.Binary;
using Pregate.Core;

namespace Pregate.Formats.Safetensors;

/// <summary>
/// A memory-mapped safetensors file. <see cref="Tensors"/> point into the map (no copy) and stay valid until
/// <see cref="Dispose"/>. Tensors are listed in file order.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Largest header accepted, as in the reference implementation (100 MB).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly MappedFile _map;
    private readonly TensorView[] _tensors;
    private readonly Dictionary<string, int> _indexByName;

    /// <summary>The path the file was opened with.</summary>
    public string Path => _map.Path;

    /// <summary>File size in bytes.</summary>
    public long Length => _map.Length;

    /// <summary>File offset of the data area (8 + header length); a tensor's file offset is this plus its begin offset.</summary>
    public long DataOffset { get; }

    /// <summary>All tensors in the order of their bytes in the file.</summary>
    public IReadOnlyList<TensorView> Tensors => _tensors;

    /// <summary>The header's <c>__metadata__</c> map; empty when the file has none.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafetensorsFile(MappedFile map)
    {
        _map = map;
        string file = map.Path;
        long length = map.Length;
        if (length < 8)
            throw new ModelFormatException(file, $"file is {length} bytes, too short for the 8-byte safetensors header length");
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(map.Span(0, 8));
        if (headerLength > (ulong)(length - 8))
            throw new ModelFormatException(file, $"safetensors header length {headerLength} exceeds the {length - 8} bytes that follow it");
        if (headerLength > MaxHeaderBytes)
            throw new ModelFormatException(file, $"safetensors header length {headerLength} exceeds the limit of {MaxHeaderBytes} bytes");
        DataOffset = 8 + (long)headerLength;
        long dataLength = length - DataOffset;

        var (entries, metadata) = SafetensorsHeader.Parse(map.Span(8, (int)headerLength), file);
        Metadata = metadata;

        // Data area rule of the format: the tensors cover it exactly, in some order, without holes or overlaps.
        entries.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long expected = 0;
        string? previous = null;
        foreach (var e in entries)
        {
            if (e.End > dataLength)
                throw new ModelFormatException(file, $"tensor '{e.Name}' data_offsets [{e.Begin}, {e.End}] run past the end of the {dataLength}-byte data area");
            if (e.Begin < expected)
                throw new ModelFormatException(file, $"tensor '{e.Name}' data_offsets [{e.Begin}, {e.End}] overlap tensor '{previous}', which ends at {expected}");
            if (e.Begin > expected)
                throw new ModelFormatException(file, $"bytes [{expected}, {e.Begin}) of the data area belong to no tensor (a hole before '{e.Name}')");
            expected = e.End;
            previous = e.Name;
        }
        if (expected != dataLength)
            throw new ModelFormatException(file, $"bytes [{expected}, {dataLength}) at the end of the data area belong to no tensor");

        _tensors = new TensorView[entries.Count];
        _indexByName = new Dictionary<string, int>(entries.Count, StringComparer.Ordinal);
        byte* data = map.Base + DataOffset;
        for (int i = 0; i < entries.Count; i++)
        {
            var e = entries[i];
            _tensors[i] = new TensorView(e.Name, e.Type, e.Shape, (nint)(data + e.Begin), e.End - e.Begin);
            _indexByName.Add(e.Name, i);
        }
    }

    /// <summary>
    /// Maps and validates <paramref name="path"/>. Throws <see cref="ModelFormatException"/> naming the file when it is
    /// missing, truncated, has a header length beyond the file or above <see cref="MaxHeaderBytes"/>, an invalid header
    /// (UTF-8, JSON, duplicate keys, missing or mistyped fields, unsupported dtype, negative or overflowing shape), or
    /// data offsets that disagree with the shape, leave the data area, overlap, or leave holes.
    /// </summary>
    public static SafetensorsFile Open(string path)
    {
        var map = new MappedFile(path);
        try
        {
            return new SafetensorsFile(map);
        }
        catch
        {
            map.Dispose();
            throw;
        }
    }

    /// <summary>Finds a tensor by exact name.</summary>
    public bool TryGetTensor(string name, out TensorView tensor)
    {
        if (_indexByName.TryGetValue(name, out int i))
        {
            tensor = _tensors[i];
            return true;
        }
        tensor = default;
        return false;
    }

    /// <summary>The tensor called <paramref name="name"/>; throws <see cref="ModelFormatException"/> naming the file and the tensor when absent.</summary>
    public TensorView GetTensor(string name) =>
        TryGetTensor(name, out var t) ? t : throw new ModelFormatException(Path, $"tensor '{name}' not found");

    /// <summary>Whether the file holds a tensor called <paramref name="name"/>.</summary>
    public bool Contains(string name) => _indexByName.ContainsKey(name);

    /// <summary>Absolute file offset of the first byte of tensor <paramref name="name"/> (for direct reads that bypass the map).</summary>
    public long GetFileOffset(string name) => (long)((byte*)GetTensor(name).Pointer - _map.Base);

    public void Dispose() => _map.Dispose();
}
