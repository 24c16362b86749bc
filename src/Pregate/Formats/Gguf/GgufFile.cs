// Zero-copy reader for GGUF v2/v3 files (layout of ggml/src/gguf.cpp): header, metadata, tensor infos, aligned data.
// Every count and length is checked against the bytes left in the file before anything is allocated.
using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Unicode;
using Pregate.Core;

namespace Pregate.Formats.Gguf;

/// <summary>
/// A memory-mapped GGUF file. <see cref="Tensors"/> point straight into the mapping and stay valid until
/// <see cref="Dispose"/>. Shapes are row-major, slowest dimension first (GGUF's ne order reversed), so a linear
/// weight stored as ne = {in, out} reads as [out, in].
/// </summary>
public sealed unsafe class GgufFile : IDisposable
{
    /// <summary>Tensor data alignment when <c>general.alignment</c> is absent.</summary>
    public const uint DefaultAlignment = 32;
    /// <summary>Most dimensions a GGUF tensor may have (GGML_MAX_DIMS).</summary>
    public const int MaxDims = 4;
    /// <summary>Deepest nesting of arrays inside arrays the reader accepts (bounds recursion on hostile input).</summary>
    public const int MaxArrayNesting = 16;
    public const string AlignmentKey = "general.alignment";

    private readonly MappedFile _map;
    private readonly OrderedDictionary<string, GgufValue> _metadata;
    private readonly TensorView[] _tensors;
    private readonly Dictionary<string, int> _tensorIndex;

    /// <summary>The file as passed to <see cref="Open"/>.</summary>
    public string Path { get; }
    public long FileLength => _map.Length;
    /// <summary>GGUF format version (2 or 3).</summary>
    public uint Version { get; }
    /// <summary>Metadata in file order (enumeration and <c>Keys</c> follow the order of the file).</summary>
    public IReadOnlyDictionary<string, GgufValue> Metadata => _metadata;
    /// <summary>Metadata keys in file order.</summary>
    public IReadOnlyList<string> MetadataKeys => _metadata.Keys;
    /// <summary><c>general.alignment</c>, or 32; always a power of two.</summary>
    public uint Alignment { get; }
    /// <summary>File offset of the tensor data section (end of the tensor infos rounded up to <see cref="Alignment"/>).</summary>
    public long DataOffset { get; }
    /// <summary>Tensors in file order.</summary>
    public IReadOnlyList<TensorView> Tensors => _tensors;

    private GgufFile(string path, MappedFile map, uint version, OrderedDictionary<string, GgufValue> metadata, uint alignment,
        long dataOffset, TensorView[] tensors, Dictionary<string, int> tensorIndex)
    {
        Path = path;
        _map = map;
        Version = version;
        _metadata = metadata;
        Alignment = alignment;
        DataOffset = dataOffset;
        _tensors = tensors;
        _tensorIndex = tensorIndex;
    }

    /// <summary>
    /// Maps and parses <paramref name="path"/>. Throws <see cref="ModelFormatException"/> naming the file for a
    /// missing or unreadable file, wrong magic, unsupported version, truncation, impossible counts or lengths,
    /// unknown value or tensor types, bad dimensions, misaligned, overlapping or out-of-file tensor data,
    /// duplicate keys or tensor names, and invalid UTF-8.
    /// </summary>
    public static GgufFile Open(string path)
    {
        var map = new MappedFile(path);
        try
        {
            return Parse(path, map);
        }
        catch
        {
            map.Dispose();
            throw;
        }
    }

    private static GgufFile Parse(string path, MappedFile map)
    {
        var r = new Cursor(map.Base, map.Length, path);

        ReadOnlySpan<byte> magic = r.Bytes(4, "magic");
        if (!magic.SequenceEqual("GGUF"u8))
            throw new ModelFormatException(path, $"not a GGUF file (magic {Convert.ToHexString(magic)}, expected 47475546 \"GGUF\")");
        uint version = r.U32("version");
        if (version is not (2 or 3))
        {
            string hint = version == 1 ? " (GGUF v1 used 32-bit counts and is obsolete)"
                : BinaryPrimitives.ReverseEndianness(version) is 2 or 3 ? " (a big-endian file?)" : "";
            throw new ModelFormatException(path, $"unsupported GGUF version {version}{hint}; only versions 2 and 3 are read");
        }
        ulong tensorCount = r.U64("tensor count");
        ulong kvCount = r.U64("metadata count");

        // Smallest possible entries: a KV is key length (8) + type (4) + a 1-byte value; a tensor info is
        // name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
        const int minKvBytes = 8 + 4 + 1, minTensorInfoBytes = 8 + 4 + 8 + 4 + 8;
        if (kvCount > (ulong)(r.Remaining / minKvBytes))
            throw new ModelFormatException(path, $"metadata count {kvCount} cannot fit in the {r.Remaining} bytes left after the header");
        if (tensorCount > (ulong)(r.Remaining / minTensorInfoBytes) || tensorCount > int.MaxValue)
            throw new ModelFormatException(path, $"tensor count {tensorCount} cannot fit in the {r.Remaining} bytes left after the header");

        var metadata = new OrderedDictionary<string, GgufValue>(StringComparer.Ordinal);
        for (ulong i = 0; i < kvCount; i++)
        {
            long at = r.Position;
            string key = r.String("metadata key");
            var type = r.ValueType($"type of metadata key '{key}'");
            GgufValue value = ReadValue(ref r, type, key, 0);
            if (!metadata.TryAdd(key, value))
                throw new ModelFormatException(path, $"duplicate metadata key '{key}' at offset {at}");
        }

        uint alignment = DefaultAlignment;
        if (metadata.TryGetValue(AlignmentKey, out GgufValue? alignValue))
        {
            alignment = alignValue.AsUInt32();
            if (!BitOperations.IsPow2(alignment))
                throw new ModelFormatException(path, $"{AlignmentKey} = {alignment} is not a power of two");
        }

        var infos = new (string Name, DType Type, long[] Shape, ulong Offset, long Bytes)[(int)tensorCount];
        var tensorIndex = new Dictionary<string, int>((int)tensorCount, StringComparer.Ordinal);
        for (int i = 0; i < infos.Length; i++)
        {
            string name = r.String($"name of tensor {i}");
            if (name.Length == 0) throw new ModelFormatException(path, $"tensor {i} has an empty name");
            if (!tensorIndex.TryAdd(name, i)) throw new ModelFormatException(path, $"duplicate tensor name '{name}'");
            uint nDims = r.U32($"dimension count of tensor '{name}'");
            if (nDims is 0 or > MaxDims)
                throw new ModelFormatException(path, $"tensor '{name}' has {nDims} dimensions (1..{MaxDims} allowed)");
            var shape = new long[nDims];
            long elements = 1;
            for (int d = 0; d < nDims; d++)
            {
                long ne = r.I64($"dimension {d} of tensor '{name}'");
                if (ne <= 0) throw new ModelFormatException(path, $"tensor '{name}' has dimension ne[{d}] = {ne} (must be positive)");
                if (elements > long.MaxValue / ne)
                    throw new ModelFormatException(path, $"tensor '{name}' element count overflows 64 bits");
                elements *= ne;
                shape[nDims - 1 - d] = ne; // ne0 is the fastest dimension: it becomes the last, row-major
            }
            uint rawType = r.U32($"type of tensor '{name}'");
            var type = (DType)rawType;
            if (!DTypes.IsKnown(type))
                throw new ModelFormatException(path, $"tensor '{name}' has unsupported ggml type {rawType}");
            int blockSize = DTypes.BlockSize(type);
            if (shape[^1] % blockSize != 0)
                throw new ModelFormatException(path, $"tensor '{name}' ({DTypes.Name(type)}) has row length {shape[^1]}, not a multiple of the block size {blockSize}");
            long bytes = DTypes.TryByteCount(type, elements)
                ?? throw new ModelFormatException(path, $"tensor '{name}' byte size overflows 64 bits");
            ulong offset = r.U64($"data offset of tensor '{name}'");
            infos[i] = (name, type, shape, offset, bytes);
        }

        long dataOffset = AlignUp(r.Position, alignment);
        long dataBytes = map.Length - dataOffset; // negative when the padding runs past the end of the file
        var tensors = new TensorView[infos.Length];
        for (int i = 0; i < infos.Length; i++)
        {
            var (name, type, shape, offset, bytes) = infos[i];
            if (offset % alignment != 0)
                throw new ModelFormatException(path, $"tensor '{name}' data offset {offset} is not a multiple of the alignment {alignment}");
            if (dataBytes < 0 || offset > (ulong)dataBytes || bytes > dataBytes - (long)offset)
                throw new ModelFormatException(path,
                    $"tensor '{name}' data [{offset}, {offset + (ulong)bytes}) relative to the data section at {dataOffset} lies outside the file ({map.Length} bytes)");
            tensors[i] = new TensorView(name, type, shape, (nint)(map.Base + dataOffset + (long)offset), bytes);
        }

        int[] byOffset = Enumerable.Range(0, infos.Length).OrderBy(i => infos[i].Offset).ToArray();
        for (int k = 1; k < byOffset.Length; k++)
        {
            var prev = infos[byOffset[k - 1]];
            var cur = infos[byOffset[k]];
            if (prev.Offset + (ulong)prev.Bytes > cur.Offset)
                throw new ModelFormatException(path,
                    $"tensors '{prev.Name}' [{prev.Offset}, {prev.Offset + (ulong)prev.Bytes}) and '{cur.Name}' [{cur.Offset}, …) overlap");
        }

        return new GgufFile(path, map, version, metadata, alignment, dataOffset, tensors, tensorIndex);
    }

    private static long AlignUp(long x, uint alignment) => (x + (alignment - 1)) & ~((long)alignment - 1);

    private static GgufValue ReadValue(ref Cursor r, GgufValueType type, string key, int depth)
    {
        string file = r.Path;
        switch (type)
        {
            case GgufValueType.UInt8: return GgufValue.ReadScalar(type, r.Bytes(1, key)[0], key, file);
            case GgufValueType.Int8: return GgufValue.ReadScalar(type, (ulong)(long)(sbyte)r.Bytes(1, key)[0], key, file);
            case GgufValueType.UInt16: return GgufValue.ReadScalar(type, BinaryPrimitives.ReadUInt16LittleEndian(r.Bytes(2, key)), key, file);
            case GgufValueType.Int16: return GgufValue.ReadScalar(type, (ulong)(long)BinaryPrimitives.ReadInt16LittleEndian(r.Bytes(2, key)), key, file);
            case GgufValueType.UInt32: return GgufValue.ReadScalar(type, r.U32(key), key, file);
            case GgufValueType.Int32: return GgufValue.ReadScalar(type, (ulong)(long)(int)r.U32(key), key, file);
            case GgufValueType.UInt64: return GgufValue.ReadScalar(type, r.U64(key), key, file);
            case GgufValueType.Int64: return GgufValue.ReadScalar(type, r.U64(key), key, file);
            case GgufValueType.Float32: return GgufValue.ReadScalar(type, r.U32(key), key, file);
            case GgufValueType.Float64: return GgufValue.ReadScalar(type, r.U64(key), key, file);
            case GgufValueType.Bool: return GgufValue.ReadScalar(type, r.Bool(key), key, file);
            case GgufValueType.String: return GgufValue.ReadString(r.String(key), key, file);
            case GgufValueType.Array: return ReadArray(ref r, key, depth);
            default: throw new InvalidOperationException("unreachable: value type validated by Cursor.ValueType");
        }
    }

    private static GgufValue ReadArray(ref Cursor r, string key, int depth)
    {
        string file = r.Path;
        if (depth >= MaxArrayNesting)
            throw new ModelFormatException(file, $"metadata key '{key}' nests arrays deeper than {MaxArrayNesting} levels");
        var elementType = r.ValueType($"element type of metadata array '{key}'");
        ulong count = r.U64($"length of metadata array '{key}'");
        // STRING elements take at least their 8-byte length, ARRAY elements their type and length (12 bytes).
        int minElementBytes = GgufValue.FixedSize(elementType) ?? (elementType == GgufValueType.String ? 8 : 12);
        if (count > (ulong)(r.Remaining / minElementBytes) || count > (ulong)Array.MaxLength)
            throw new ModelFormatException(file,
                $"metadata array '{key}' claims {count} {GgufValue.TypeName(elementType)} elements, more than the {r.Remaining} bytes left can hold");
        if (count * (ulong)minElementBytes > int.MaxValue)
            throw new ModelFormatException(file, $"metadata array '{key}' of {count} {GgufValue.TypeName(elementType)} elements is too large (over 2 GiB)");
        int n = (int)count;
        Array items;
        switch (elementType)
        {
            case GgufValueType.UInt8: items = r.Bytes(n, key).ToArray(); break;
            case GgufValueType.Int8: items = Copy<sbyte>(ref r, n, key); break;
            case GgufValueType.UInt16: items = Copy<ushort>(ref r, n, key); break;
            case GgufValueType.Int16: items = Copy<short>(ref r, n, key); break;
            case GgufValueType.UInt32: items = Copy<uint>(ref r, n, key); break;
            case GgufValueType.Int32: items = Copy<int>(ref r, n, key); break;
            case GgufValueType.UInt64: items = Copy<ulong>(ref r, n, key); break;
            case GgufValueType.Int64: items = Copy<long>(ref r, n, key); break;
            case GgufValueType.Float32: items = Copy<float>(ref r, n, key); break;
            case GgufValueType.Float64: items = Copy<double>(ref r, n, key); break;
            case GgufValueType.Bool:
            {
                ReadOnlySpan<byte> raw = r.Bytes(n, key);
                int bad = raw.IndexOfAnyExcept((byte)0, (byte)1);
                if (bad >= 0) throw new ModelFormatException(file, $"metadata array '{key}' element {bad} is not a valid BOOL (byte {raw[bad]})");
                items = MemoryMarshal.Cast<byte, bool>(raw).ToArray();
                break;
            }
            case GgufValueType.String:
            {
                var strings = new string[n];
                for (int i = 0; i < n; i++) strings[i] = r.String(key);
                items = strings;
                break;
            }
            case GgufValueType.Array:
            {
                var nested = new GgufValue[n];
                // Each element is an array body (element type, length, items); its own type is the outer element type.
                for (int i = 0; i < n; i++) nested[i] = ReadArray(ref r, $"{key}[{i}]", depth + 1);
                items = nested;
                break;
            }
            default: throw new InvalidOperationException("unreachable: value type validated by Cursor.ValueType");
        }
        return GgufValue.ReadArray(elementType, items, key, file);
    }

    private static T[] Copy<T>(ref Cursor r, int n, string key) where T : unmanaged =>
        MemoryMarshal.Cast<byte, T>(r.Bytes(n * sizeof(T), key)).ToArray();

    // ---- lookups ----

    /// <summary>The tensor called <paramref name="name"/>, if present.</summary>
    public bool TryGetTensor(string name, out TensorView tensor)
    {
        if (_tensorIndex.TryGetValue(name, out int i)) { tensor = _tensors[i]; return true; }
        tensor = default;
        return false;
    }

    /// <summary>The tensor called <paramref name="name"/>; throws <see cref="ModelFormatException"/> naming the file and the tensor when absent.</summary>
    public TensorView GetTensor(string name) =>
        TryGetTensor(name, out TensorView t) ? t : throw new ModelFormatException(Path, $"tensor '{name}' is missing");

    public bool HasTensor(string name) => _tensorIndex.ContainsKey(name);

    /// <summary>Offset of <paramref name="tensor"/>'s first byte in the file (for direct, unmapped reads).</summary>
    public long GetFileOffset(in TensorView tensor)
    {
        long offset = (long)((byte*)tensor.Pointer - _map.Base);
        if (offset < DataOffset || offset > FileLength - tensor.ByteLength)
            throw new ArgumentException($"tensor '{tensor.Name}' does not belong to {Path}", nameof(tensor));
        return offset;
    }

    public bool TryGetValue(string key, [MaybeNullWhen(false)] out GgufValue value) => _metadata.TryGetValue(key, out value);

    /// <summary>The value under <paramref name="key"/>; throws <see cref="ModelFormatException"/> when the key is missing.</summary>
    public GgufValue GetValue(string key) =>
        _metadata.TryGetValue(key, out GgufValue? v) ? v : throw new ModelFormatException(Path, $"metadata key '{key}' is missing");

    // Typed lookups. Get… throw ModelFormatException when the key is missing; TryGet… return false then.
    // Both throw ModelFormatException when the key holds a value of another type or out of range.

    public string GetString(string key) => GetValue(key).AsString();
    public uint GetUInt32(string key) => GetValue(key).AsUInt32();
    public int GetInt(string key) => GetValue(key).AsInt();
    public long GetLong(string key) => GetValue(key).AsLong();
    public float GetFloat(string key) => GetValue(key).AsFloat();
    public bool GetBool(string key) => GetValue(key).AsBool();

    public bool TryGetString(string key, [MaybeNullWhen(false)] out string value) => TryGet(key, v => v.AsString(), out value);
    public bool TryGetUInt32(string key, out uint value) => TryGet(key, v => v.AsUInt32(), out value);
    public bool TryGetInt(string key, out int value) => TryGet(key, v => v.AsInt(), out value);
    public bool TryGetLong(string key, out long value) => TryGet(key, v => v.AsLong(), out value);
    public bool TryGetFloat(string key, out float value) => TryGet(key, v => v.AsFloat(), out value);
    public bool TryGetBool(string key, out bool value) => TryGet(key, v => v.AsBool(), out value);

    private bool TryGet<T>(string key, Func<GgufValue, T> read, [MaybeNullWhen(false)] out T value)
    {
        if (_metadata.TryGetValue(key, out GgufValue? v)) { value = read(v); return true; }
        value = default;
        return false;
    }

    public void Dispose() => _map.Dispose();

    /// <summary>Bounds-checked little-endian reads over the mapping; every failure names the file, the field and the offset.</summary>
    private ref struct Cursor
    {
        private readonly byte* _base;
        private readonly long _length;
        private long _pos;
        public readonly string Path;

        public Cursor(byte* basePtr, long length, string path)
        {
            _base = basePtr;
            _length = length;
            _pos = 0;
            Path = path;
        }

        public readonly long Position => _pos;
        public readonly long Remaining => _length - _pos;

        public ReadOnlySpan<byte> Bytes(int n, string what)
        {
            if (n > Remaining)
                throw new ModelFormatException(Path, $"truncated: {what} at offset {_pos} needs {n} bytes, only {Remaining} left");
            var span = new ReadOnlySpan<byte>(_base + _pos, n);
            _pos += n;
            return span;
        }

        public uint U32(string what) => BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4, what));
        public ulong U64(string what) => BinaryPrimitives.ReadUInt64LittleEndian(Bytes(8, what));
        public long I64(string what) => BinaryPrimitives.ReadInt64LittleEndian(Bytes(8, what));

        public ulong Bool(string what)
        {
            byte b = Bytes(1, what)[0];
            if (b > 1) throw new ModelFormatException(Path, $"{what}: byte {b} at offset {_pos - 1} is not a valid BOOL");
            return b;
        }

        public GgufValueType ValueType(string what)
        {
            uint t = U32(what);
            if (t > (uint)GgufValueType.Float64)
                throw new ModelFormatException(Path, $"{what}: unknown GGUF value type {t} at offset {_pos - 4}");
            return (GgufValueType)t;
        }

        public string String(string what)
        {
            ulong len = U64($"length of {what}");
            if (len > (ulong)Remaining)
                throw new ModelFormatException(Path, $"{what}: string length {len} at offset {_pos - 8} exceeds the {Remaining} bytes left");
            if (len > int.MaxValue)
                throw new ModelFormatException(Path, $"{what}: string length {len} at offset {_pos - 8} is too long");
            long at = _pos;
            ReadOnlySpan<byte> utf8 = Bytes((int)len, what);
            if (!Utf8.IsValid(utf8))
                throw new ModelFormatException(Path, $"{what}: string at offset {at} is not valid UTF-8");
            return Encoding.UTF8.GetString(utf8);
        }
    }
}
