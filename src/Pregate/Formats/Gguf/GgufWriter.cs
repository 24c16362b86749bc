// Streaming GGUF v3 writer (layout of ggml/src/gguf.cpp, gguf_write_to_buf): metadata in insertion order,
// tensor infos, then each tensor's bytes padded to the alignment. Tensor bytes come from callbacks, never buffered.
using System.Numerics;
using System.Text;
using Pregate.Core;

namespace Pregate.Formats.Gguf;

/// <summary>
/// Collects metadata and tensors, then writes a GGUF v3 file. Tensor data offsets are multiples of
/// <see cref="Alignment"/> (default 32; <c>general.alignment</c> is written only when set explicitly).
/// Tensors are written in the order added; each <see cref="TensorData.Write"/> callback runs once and must write
/// exactly <see cref="TensorData.ByteLength"/> bytes.
/// </summary>
public sealed class GgufWriter
{
    public const uint Version = 3;
    /// <summary>Longest tensor name llama.cpp accepts, in UTF-8 bytes (GGML_MAX_NAME − 1).</summary>
    public const int MaxTensorNameBytes = 63;
    private const long ProgressStep = 4 << 20;

    private readonly List<string> _keys = [];
    private readonly Dictionary<string, GgufValue> _metadata = new(StringComparer.Ordinal);
    private readonly List<TensorData> _tensors = [];
    private readonly HashSet<string> _tensorNames = new(StringComparer.Ordinal);

    /// <summary>Tensor data alignment, a power of two. Setting it adds (or updates) <c>general.alignment</c>.</summary>
    public uint Alignment
    {
        get => _metadata.TryGetValue(GgufFile.AlignmentKey, out GgufValue? v) ? (uint)v.Bits : GgufFile.DefaultAlignment;
        set => Set(GgufFile.AlignmentKey, GgufValue.FromUInt32(value));
    }

    /// <summary>Metadata keys in the order they will be written.</summary>
    public IReadOnlyList<string> Keys => _keys;
    public IReadOnlyList<TensorData> Tensors => _tensors;
    public bool ContainsKey(string key) => _metadata.ContainsKey(key);

    /// <summary>Adds a key; throws <see cref="ArgumentException"/> when it already exists (or for an invalid <c>general.alignment</c>).</summary>
    public void Add(string key, GgufValue value)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (_metadata.ContainsKey(key)) throw new ArgumentException($"metadata key '{key}' was already added", nameof(key));
        Set(key, value);
    }

    /// <summary>Adds a key, or replaces its value in place (keeping its position).</summary>
    public void Set(string key, GgufValue value)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentNullException.ThrowIfNull(value);
        GgufValue.CheckEncodable(key);
        if (key == GgufFile.AlignmentKey && (value.Type != GgufValueType.UInt32 || !BitOperations.IsPow2(value.Bits)))
            throw new ArgumentException($"{GgufFile.AlignmentKey} must be a UINT32 power of two, got {value.Describe()} {value}", nameof(value));
        if (!_metadata.ContainsKey(key)) _keys.Add(key);
        _metadata[key] = value;
    }

    /// <summary>Removes a key; false when it was not there.</summary>
    public bool Remove(string key) => _metadata.Remove(key) && _keys.Remove(key);

    public void AddUInt8(string key, byte v) => Add(key, GgufValue.FromUInt8(v));
    public void AddInt8(string key, sbyte v) => Add(key, GgufValue.FromInt8(v));
    public void AddUInt16(string key, ushort v) => Add(key, GgufValue.FromUInt16(v));
    public void AddInt16(string key, short v) => Add(key, GgufValue.FromInt16(v));
    public void AddUInt32(string key, uint v) => Add(key, GgufValue.FromUInt32(v));
    public void AddInt32(string key, int v) => Add(key, GgufValue.FromInt32(v));
    public void AddUInt64(string key, ulong v) => Add(key, GgufValue.FromUInt64(v));
    public void AddInt64(string key, long v) => Add(key, GgufValue.FromInt64(v));
    public void AddFloat32(string key, float v) => Add(key, GgufValue.FromFloat32(v));
    public void AddFloat64(string key, double v) => Add(key, GgufValue.FromFloat64(v));
    public void AddBool(string key, bool v) => Add(key, GgufValue.FromBool(v));
    public void AddString(string key, string v) => Add(key, GgufValue.FromString(v));

    public void AddUInt8Array(string key, ReadOnlySpan<byte> v) => Add(key, GgufValue.FromUInt8Array(v));
    public void AddInt8Array(string key, ReadOnlySpan<sbyte> v) => Add(key, GgufValue.FromInt8Array(v));
    public void AddUInt16Array(string key, ReadOnlySpan<ushort> v) => Add(key, GgufValue.FromUInt16Array(v));
    public void AddInt16Array(string key, ReadOnlySpan<short> v) => Add(key, GgufValue.FromInt16Array(v));
    public void AddUInt32Array(string key, ReadOnlySpan<uint> v) => Add(key, GgufValue.FromUInt32Array(v));
    public void AddInt32Array(string key, ReadOnlySpan<int> v) => Add(key, GgufValue.FromInt32Array(v));
    public void AddUInt64Array(string key, ReadOnlySpan<ulong> v) => Add(key, GgufValue.FromUInt64Array(v));
    public void AddInt64Array(string key, ReadOnlySpan<long> v) => Add(key, GgufValue.FromInt64Array(v));
    public void AddFloat32Array(string key, ReadOnlySpan<float> v) => Add(key, GgufValue.FromFloat32Array(v));
    public void AddFloat64Array(string key, ReadOnlySpan<double> v) => Add(key, GgufValue.FromFloat64Array(v));
    public void AddBoolArray(string key, ReadOnlySpan<bool> v) => Add(key, GgufValue.FromBoolArray(v));
    public void AddStringArray(string key, IEnumerable<string> v) => Add(key, GgufValue.FromStringArray(v));

    /// <summary>An array of values of one type; with <see cref="GgufValueType.Array"/> an array of arrays.</summary>
    public void AddArray(string key, GgufValueType elementType, IReadOnlyList<GgufValue> items) =>
        Add(key, GgufValue.FromArray(elementType, items));

    /// <summary>
    /// Queues a tensor. Throws <see cref="ArgumentException"/> for a duplicate or empty name, a name over
    /// <see cref="MaxTensorNameBytes"/> UTF-8 bytes, a type Pregate does not know, rank outside 1..4, a
    /// non-positive dimension, or a row length that is not a whole number of quantization blocks.
    /// </summary>
    public void AddTensor(TensorData tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        string name = tensor.Name;
        if (string.IsNullOrEmpty(name)) throw new ArgumentException("tensor name is empty", nameof(tensor));
        GgufValue.CheckEncodable(name);
        if (Encoding.UTF8.GetByteCount(name) > MaxTensorNameBytes)
            throw new ArgumentException($"tensor name '{name}' is longer than {MaxTensorNameBytes} UTF-8 bytes", nameof(tensor));
        if (!DTypes.IsKnown(tensor.Type)) throw new ArgumentException($"tensor '{name}' has unknown type {tensor.Type}", nameof(tensor));
        if (tensor.Shape.Length is 0 or > GgufFile.MaxDims)
            throw new ArgumentException($"tensor '{name}' has rank {tensor.Shape.Length} (1..{GgufFile.MaxDims} allowed)", nameof(tensor));
        if (tensor.Shape.Any(d => d <= 0))
            throw new ArgumentException($"tensor '{name}' has a non-positive dimension [{string.Join(", ", tensor.Shape)}]", nameof(tensor));
        int block = DTypes.BlockSize(tensor.Type);
        if (tensor.Shape[^1] % block != 0)
            throw new ArgumentException($"tensor '{name}' ({DTypes.Name(tensor.Type)}) row length {tensor.Shape[^1]} is not a multiple of the block size {block}", nameof(tensor));
        _ = tensor.ByteLength; // throws on overflow
        if (!_tensorNames.Add(name)) throw new ArgumentException($"tensor '{name}' was already added", nameof(tensor));
        _tensors.Add(tensor);
    }

    /// <summary>Writes the file atomically (temporary sibling, then rename); <paramref name="bytesWritten"/> receives the running byte count.</summary>
    public void Write(string path, IProgress<long>? bytesWritten = null) =>
        AtomicFile.Write(path, fs => WriteTo(fs, bytesWritten));

    /// <summary>
    /// Writes the whole file to <paramref name="destination"/> (which need not be seekable). Throws
    /// <see cref="InvalidOperationException"/> when a tensor callback writes more or fewer bytes than its
    /// <see cref="TensorData.ByteLength"/>.
    /// </summary>
    public void WriteTo(Stream destination, IProgress<long>? bytesWritten = null)
    {
        ArgumentNullException.ThrowIfNull(destination);
        uint alignment = Alignment;
        var output = new CountingStream(destination, bytesWritten);
        using (var w = new BinaryWriter(output, GgufStrings.StrictUtf8, leaveOpen: true))
        {
            w.Write("GGUF"u8);
            w.Write(Version);
            w.Write((ulong)_tensors.Count);
            w.Write((ulong)_keys.Count);
            foreach (string key in _keys)
            {
                WriteString(w, key);
                GgufValue v = _metadata[key];
                w.Write((uint)v.Type);
                WriteValue(w, v);
            }
            long offset = 0;
            foreach (TensorData t in _tensors)
            {
                WriteString(w, t.Name);
                w.Write((uint)t.Shape.Length);
                for (int d = t.Shape.Length - 1; d >= 0; d--) w.Write(t.Shape[d]); // ne0 = fastest = last row-major dim
                w.Write((uint)t.Type);
                w.Write((ulong)offset);
                offset += AlignUp(t.ByteLength, alignment);
            }
        }
        WritePadding(output, alignment);

        foreach (TensorData t in _tensors)
        {
            output.BeginTensor(t.Name, t.ByteLength);
            t.Write(output);
            output.EndTensor();
            WritePadding(output, alignment);
        }
        output.ReportProgress();
    }

    private static long AlignUp(long x, uint alignment) => (x + (alignment - 1)) & ~((long)alignment - 1);

    private static void WritePadding(CountingStream output, uint alignment)
    {
        long pad = AlignUp(output.Count, alignment) - output.Count;
        Span<byte> zeros = stackalloc byte[256];
        zeros.Clear();
        while (pad > 0)
        {
            int n = (int)Math.Min(pad, zeros.Length);
            output.Write(zeros[..n]);
            pad -= n;
        }
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] utf8 = GgufStrings.StrictUtf8.GetBytes(s);
        w.Write((ulong)utf8.Length);
        w.Write(utf8);
    }

    private static void WriteValue(BinaryWriter w, GgufValue v)
    {
        switch (v.Type)
        {
            case GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool: w.Write((byte)v.Bits); break;
            case GgufValueType.UInt16 or GgufValueType.Int16: w.Write((ushort)v.Bits); break;
            case GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32: w.Write((uint)v.Bits); break;
            case GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64: w.Write(v.Bits); break;
            case GgufValueType.String: WriteString(w, (string)v.Payload!); break;
            case GgufValueType.Array: WriteArrayBody(w, v); break;
            default: throw new InvalidOperationException($"unreachable: value type {v.Type}");
        }
    }

    // An array body: element type, count, elements. Elements of an array of arrays are array bodies themselves.
    private static void WriteArrayBody(BinaryWriter w, GgufValue v)
    {
        w.Write((uint)v.ElementType!.Value);
        var items = (Array)v.Payload!;
        w.Write((ulong)items.Length);
        switch (items)
        {
            case string[] strings:
                foreach (string s in strings) WriteString(w, s);
                break;
            case GgufValue[] nested:
                foreach (GgufValue inner in nested) WriteArrayBody(w, inner);
                break;
            default:
                w.Write(GgufValue.RawBytes(items));
                break;
        }
    }

    /// <summary>Counts bytes on their way to the destination, reports progress, and holds each tensor callback to its byte count.</summary>
    private sealed class CountingStream(Stream inner, IProgress<long>? progress) : Stream
    {
        private long _lastReported;
        private string? _tensor;
        private long _tensorStart, _tensorBytes;

        public long Count { get; private set; }

        public void BeginTensor(string name, long bytes)
        {
            _tensor = name;
            _tensorStart = Count;
            _tensorBytes = bytes;
        }

        public void EndTensor()
        {
            long written = Count - _tensorStart;
            string name = _tensor!;
            _tensor = null;
            if (written != _tensorBytes)
                throw new InvalidOperationException($"tensor '{name}' callback wrote {written} bytes, expected {_tensorBytes}");
        }

        public void ReportProgress()
        {
            _lastReported = Count;
            progress?.Report(Count);
        }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (_tensor is not null && Count - _tensorStart + buffer.Length > _tensorBytes)
                throw new InvalidOperationException(
                    $"tensor '{_tensor}' callback wrote more than its {_tensorBytes} bytes ({Count - _tensorStart + buffer.Length} so far)");
            inner.Write(buffer);
            Count += buffer.Length;
            if (progress is not null && Count - _lastReported >= ProgressStep) ReportProgress();
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void WriteByte(byte value) => Write([value]);
        public override void Flush() => inner.Flush();

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => Count;
        public override long Position { get => Count; set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        // Disposing the wrapper (e.g. a callback's `using`) must not close the destination.
        protected override void Dispose(bool disposing) { }
    }
}
