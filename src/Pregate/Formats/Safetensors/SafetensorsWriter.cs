// Writer of safetensors files and Hugging Face sharded checkpoints (model-00001-of-0000N.safetensors plus
// model.safetensors.index.json, as transformers' save_pretrained names them). Tensors stream; nothing is buffered.
using System.Buffers;
using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;
using Pregate.Core;

namespace Pregate.Formats.Safetensors;

public static class SafetensorsWriter
{
    /// <summary>
    /// Writes <paramref name="tensors"/> to <paramref name="path"/> atomically, in the given order, each right after the
    /// previous one. The JSON header is padded with spaces so the data area starts at a multiple of 8.
    /// <paramref name="bytesWritten"/> receives the running total of file bytes after the header and after each tensor.
    /// Throws <see cref="ArgumentException"/> for duplicate or reserved names, negative dimensions, or a dtype
    /// safetensors cannot store (quantized types); <see cref="InvalidOperationException"/> when a tensor's callback
    /// writes a different number of bytes than its shape needs (the partial file is discarded).
    /// </summary>
    public static void WriteFile(string path, IReadOnlyList<TensorData> tensors,
        IReadOnlyDictionary<string, string>? metadata = null, IProgress<long>? bytesWritten = null)
    {
        long[] sizes = CheckTensors(tensors);
        byte[] header = BuildHeader(tensors, sizes, metadata);
        AtomicFile.Write(path, fs => WriteBody(fs, header, tensors, sizes, 0, bytesWritten));
    }

    /// <summary>
    /// Writes a Hugging Face checkpoint into <paramref name="directory"/> (created if needed; existing files of the same
    /// names are replaced, and the entry file of the other layout is removed so readers cannot pick a stale one):
    /// <c>model.safetensors</c> when all tensor bytes fit in <paramref name="maxShardBytes"/>,
    /// otherwise shards <c>model-00001-of-0000N.safetensors</c>… filled in tensor order (a tensor larger than the limit
    /// gets a shard of its own) plus <c>model.safetensors.index.json</c> with <c>metadata.total_size</c>. Each file's
    /// <c>__metadata__</c> is <paramref name="metadata"/> with <c>"format": "pt"</c> added when absent (transformers
    /// refuses files without it). Returns the file names written. Exceptions as <see cref="WriteFile"/>, plus
    /// <see cref="ArgumentOutOfRangeException"/> when <paramref name="maxShardBytes"/> is not positive.
    /// </summary>
    public static IReadOnlyList<string> WriteCheckpoint(string directory, IReadOnlyList<TensorData> tensors, long maxShardBytes,
        IReadOnlyDictionary<string, string>? metadata = null, IProgress<long>? bytesWritten = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        long[] sizes = CheckTensors(tensors);
        var fileMetadata = new Dictionary<string, string>(StringComparer.Ordinal);
        if (metadata is not null)
            foreach (var (k, v) in metadata) fileMetadata[k] = v;
        fileMetadata.TryAdd("format", "pt");

        // Greedy fill in order: a new shard starts when the next tensor would overflow a non-empty one.
        var shards = new List<(int Start, int Count)>();
        long current = 0;
        for (int i = 0; i < tensors.Count; i++)
        {
            if (shards.Count == 0 || (shards[^1].Count > 0 && current + sizes[i] > maxShardBytes))
            {
                shards.Add((i, 0));
                current = 0;
            }
            shards[^1] = (shards[^1].Start, shards[^1].Count + 1);
            current += sizes[i];
        }
        if (shards.Count == 0) shards.Add((0, 0));

        Directory.CreateDirectory(directory);
        long done = 0;
        if (shards.Count == 1)
        {
            string name = SafetensorsCheckpoint.SingleFileName;
            WriteShard(directory, name, tensors, sizes, shards[0], fileMetadata, bytesWritten, ref done);
            File.Delete(Path.Combine(directory, SafetensorsCheckpoint.IndexFileName)); // a stale index of an earlier sharded write
            return [name];
        }

        var names = new List<string>();
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int s = 0; s < shards.Count; s++)
        {
            string name = $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
            WriteShard(directory, name, tensors, sizes, shards[s], fileMetadata, bytesWritten, ref done);
            for (int i = shards[s].Start; i < shards[s].Start + shards[s].Count; i++) weightMap.Add(tensors[i].Name, name);
            names.Add(name);
        }
        AtomicFile.WriteAllText(Path.Combine(directory, SafetensorsCheckpoint.IndexFileName), BuildIndex(weightMap, sizes.Sum()));
        names.Add(SafetensorsCheckpoint.IndexFileName);
        File.Delete(Path.Combine(directory, SafetensorsCheckpoint.SingleFileName)); // readers prefer it over the index
        return names;
    }

    private static void WriteShard(string directory, string name, IReadOnlyList<TensorData> tensors, long[] sizes,
        (int Start, int Count) shard, IReadOnlyDictionary<string, string> metadata, IProgress<long>? progress, ref long done)
    {
        var part = new TensorData[shard.Count];
        var partSizes = new long[shard.Count];
        for (int i = 0; i < shard.Count; i++)
        {
            part[i] = tensors[shard.Start + i];
            partSizes[i] = sizes[shard.Start + i];
        }
        byte[] header = BuildHeader(part, partSizes, metadata);
        long before = done;
        AtomicFile.Write(Path.Combine(directory, name), fs => WriteBody(fs, header, part, partSizes, before, progress));
        done = before + header.Length + partSizes.Sum();
    }

    /// <summary>Byte sizes of the tensors after checking names, shapes and dtypes.</summary>
    private static long[] CheckTensors(IReadOnlyList<TensorData> tensors)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        var sizes = new long[tensors.Count];
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            if (t.Name == SafetensorsHeader.MetadataKey)
                throw new ArgumentException($"'{SafetensorsHeader.MetadataKey}' is reserved and cannot name a tensor", nameof(tensors));
            if (!names.Add(t.Name))
                throw new ArgumentException($"tensor '{t.Name}' is listed twice", nameof(tensors));
            if (SafetensorsDType.TryGetName(t.Type) is null)
                throw new ArgumentException($"tensor '{t.Name}': safetensors cannot store {DTypes.Name(t.Type)}", nameof(tensors));
            if (t.Shape.Length > SafetensorsHeader.MaxRank)
                throw new ArgumentException($"tensor '{t.Name}' has rank {t.Shape.Length}, more than {SafetensorsHeader.MaxRank}", nameof(tensors));
            long elements = 1;
            foreach (long d in t.Shape)
            {
                if (d < 0) throw new ArgumentException($"tensor '{t.Name}' has a negative dimension", nameof(tensors));
                if (d != 0 && elements > long.MaxValue / d)
                    throw new ArgumentException($"tensor '{t.Name}' has more elements than fit in 64 bits", nameof(tensors));
                elements *= d;
            }
            sizes[i] = DTypes.TryByteCount(t.Type, elements)
                ?? throw new ArgumentException($"tensor '{t.Name}' has more bytes than fit in 64 bits", nameof(tensors));
        }
        return sizes;
    }

    /// <summary>Length field plus JSON header, padded with spaces to a multiple of 8 bytes.</summary>
    private static byte[] BuildHeader(IReadOnlyList<TensorData> tensors, long[] sizes, IReadOnlyDictionary<string, string>? metadata)
    {
        var json = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(json, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject(SafetensorsHeader.MetadataKey);
                foreach (var (k, v) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal)) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            for (int i = 0; i < tensors.Count; i++)
            {
                w.WriteStartObject(tensors[i].Name);
                w.WriteString("dtype", SafetensorsDType.TryGetName(tensors[i].Type));
                w.WriteStartArray("shape");
                foreach (long d in tensors[i].Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + sizes[i]);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += sizes[i];
            }
            w.WriteEndObject();
        }
        int padded = (json.WrittenCount + 7) / 8 * 8;
        if (padded > SafetensorsFile.MaxHeaderBytes)
            throw new ArgumentException($"the safetensors header would be {padded} bytes, more than the {SafetensorsFile.MaxHeaderBytes}-byte limit readers accept", nameof(tensors));
        var header = new byte[8 + padded];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)padded);
        json.WrittenSpan.CopyTo(header.AsSpan(8));
        header.AsSpan(8 + json.WrittenCount).Fill((byte)' ');
        return header;
    }

    private static void WriteBody(FileStream fs, byte[] header, IReadOnlyList<TensorData> tensors, long[] sizes, long before, IProgress<long>? progress)
    {
        fs.Write(header);
        long total = header.Length;
        progress?.Report(before + total);
        for (int i = 0; i < tensors.Count; i++)
        {
            var counted = new ExactLengthStream(fs, tensors[i].Name, sizes[i]);
            tensors[i].Write(counted);
            counted.CheckComplete();
            total += sizes[i];
            progress?.Report(before + total);
        }
    }

    private static string BuildIndex(SortedDictionary<string, string> weightMap, long totalSize)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteStartObject("metadata");
            w.WriteNumber("total_size", totalSize);
            w.WriteEndObject();
            w.WriteStartObject("weight_map");
            foreach (var (tensor, shard) in weightMap) w.WriteString(tensor, shard);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan) + "\n";
    }

    /// <summary>Forwards writes to the file and fails as soon as a tensor writes more bytes than its shape needs.</summary>
    private sealed class ExactLengthStream(Stream inner, string name, long expected) : Stream
    {
        private long _written;

        public void CheckComplete()
        {
            if (_written != expected)
                throw new InvalidOperationException($"tensor '{name}' wrote {_written} bytes but its shape needs {expected}");
        }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (buffer.Length > expected - _written)
                throw new InvalidOperationException($"tensor '{name}' wrote more than the {expected} bytes its shape needs");
            inner.Write(buffer);
            _written += buffer.Length;
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void WriteByte(byte value) => Write([value]);
        public override void Flush() => inner.Flush();
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _written;
        public override long Position { get => _written; set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
