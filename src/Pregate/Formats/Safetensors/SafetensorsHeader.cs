// Parser of the safetensors JSON header: {"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}.
// Streams through the JSON once so duplicate keys (which JsonDocument accepts silently) are caught.
using System.Text.Json;
using System.Text.Unicode;
using Pregate.Core;

namespace Pregate.Formats.Safetensors;

/// <summary>One tensor entry of a header. Offsets are relative to the start of the data area.</summary>
internal readonly record struct SafetensorsEntry(string Name, DType Type, long[] Shape, long Begin, long End);

internal static class SafetensorsHeader
{
    public const string MetadataKey = "__metadata__";

    /// <summary>More dimensions than any real tensor has; bounds the work a hostile header can ask for.</summary>
    public const int MaxRank = 16;

    /// <summary>
    /// Parses <paramref name="header"/> (the bytes after the length field). Throws <see cref="ModelFormatException"/>
    /// naming <paramref name="file"/> for invalid UTF-8, invalid JSON, duplicate keys, missing or mistyped fields,
    /// unsupported dtypes, negative or overflowing shapes, and byte ranges that disagree with the shape.
    /// </summary>
    public static (List<SafetensorsEntry> Entries, Dictionary<string, string> Metadata) Parse(ReadOnlySpan<byte> header, string file)
    {
        if (header.Length == 0) throw new ModelFormatException(file, "safetensors header is empty");
        if (header[0] != (byte)'{') throw new ModelFormatException(file, $"safetensors header does not start with '{{' (first byte 0x{header[0]:X2})");
        if (!Utf8.IsValid(header)) throw new ModelFormatException(file, "safetensors header is not valid UTF-8");

        var entries = new List<SafetensorsEntry>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        try
        {
            var reader = new Utf8JsonReader(header, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow, MaxDepth = 8 });
            reader.Read(); // StartObject, checked by the first byte
            var names = new HashSet<string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            while (Next(ref reader, file) == JsonTokenType.PropertyName)
            {
                string name = reader.GetString()!;
                Next(ref reader, file);
                if (name == MetadataKey)
                {
                    if (sawMetadata) throw new ModelFormatException(file, $"duplicate key '{MetadataKey}' in the safetensors header");
                    sawMetadata = true;
                    ReadMetadata(ref reader, metadata, file);
                    continue;
                }
                if (!names.Add(name)) throw new ModelFormatException(file, $"tensor '{name}' appears twice in the safetensors header");
                entries.Add(ReadEntry(ref reader, name, file));
            }
            // The root object is closed; anything but whitespace after it makes Read throw.
            if (reader.Read()) throw new ModelFormatException(file, "safetensors header has content after its JSON object");
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(file, $"safetensors header is not valid JSON: {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            // Utf8JsonReader.GetString on escapes that decode to invalid UTF-16 (lone surrogates).
            throw new ModelFormatException(file, $"safetensors header has an invalid string: {e.Message}", e);
        }
        return (entries, metadata);
    }

    private static JsonTokenType Next(ref Utf8JsonReader reader, string file)
    {
        if (!reader.Read()) throw new ModelFormatException(file, "safetensors header JSON ends early");
        return reader.TokenType;
    }

    private static void ReadMetadata(ref Utf8JsonReader reader, Dictionary<string, string> metadata, string file)
    {
        if (reader.TokenType == JsonTokenType.Null) return;
        if (reader.TokenType != JsonTokenType.StartObject)
            throw new ModelFormatException(file, $"'{MetadataKey}' must be an object of strings, found {Describe(reader.TokenType)}");
        while (Next(ref reader, file) == JsonTokenType.PropertyName)
        {
            string key = reader.GetString()!;
            if (Next(ref reader, file) != JsonTokenType.String)
                throw new ModelFormatException(file, $"'{MetadataKey}' value of '{key}' must be a string, found {Describe(reader.TokenType)}");
            if (!metadata.TryAdd(key, reader.GetString()!))
                throw new ModelFormatException(file, $"'{MetadataKey}' has the key '{key}' twice");
        }
    }

    private static SafetensorsEntry ReadEntry(ref Utf8JsonReader reader, string name, string file)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
            throw new ModelFormatException(file, $"header entry of tensor '{name}' must be an object, found {Describe(reader.TokenType)}");
        string? dtype = null;
        long[]? shape = null;
        long[]? offsets = null;
        while (Next(ref reader, file) == JsonTokenType.PropertyName)
        {
            string field = reader.GetString()!;
            Next(ref reader, file);
            switch (field)
            {
                case "dtype":
                    if (dtype is not null) throw Duplicate(file, name, field);
                    if (reader.TokenType != JsonTokenType.String)
                        throw new ModelFormatException(file, $"tensor '{name}': 'dtype' must be a string, found {Describe(reader.TokenType)}");
                    dtype = reader.GetString()!;
                    break;
                case "shape":
                    if (shape is not null) throw Duplicate(file, name, field);
                    shape = ReadIntegers(ref reader, name, field, MaxRank, file);
                    break;
                case "data_offsets":
                    if (offsets is not null) throw Duplicate(file, name, field);
                    offsets = ReadIntegers(ref reader, name, field, 2, file);
                    if (offsets.Length != 2)
                        throw new ModelFormatException(file, $"tensor '{name}': 'data_offsets' must hold 2 numbers [begin, end], found {offsets.Length}");
                    break;
                default:
                    reader.Skip(); // unknown fields are ignored, as the reference implementation does
                    break;
            }
        }
        if (dtype is null) throw Missing(file, name, "dtype");
        if (shape is null) throw Missing(file, name, "shape");
        if (offsets is null) throw Missing(file, name, "data_offsets");
        if (!SafetensorsDType.TryParse(dtype, out DType type))
            throw new ModelFormatException(file, $"tensor '{name}' has dtype '{dtype}', which is not supported (supported: F32, F16, BF16, F64, I64, I32, I16, I8)");

        long elements = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new ModelFormatException(file, $"tensor '{name}' has a negative dimension in shape [{string.Join(", ", shape)}]");
            if (d != 0 && elements > long.MaxValue / d)
                throw new ModelFormatException(file, $"tensor '{name}': shape [{string.Join(", ", shape)}] has more elements than fit in 64 bits");
            elements *= d;
        }
        long bytes = DTypes.TryByteCount(type, elements)
            ?? throw new ModelFormatException(file, $"tensor '{name}': {elements} {dtype} elements do not fit in 64-bit byte offsets");
        long begin = offsets[0], end = offsets[1];
        if (begin < 0 || end < 0) throw new ModelFormatException(file, $"tensor '{name}' has negative data_offsets [{begin}, {end}]");
        if (begin > end) throw new ModelFormatException(file, $"tensor '{name}' has data_offsets [{begin}, {end}] with begin after end");
        if (end - begin != bytes)
            throw new ModelFormatException(file, $"tensor '{name}' spans {end - begin} bytes but its shape [{string.Join(", ", shape)}] of {dtype} needs {bytes}");
        return new SafetensorsEntry(name, type, shape, begin, end);
    }

    /// <summary>Reads an array of at most <paramref name="maxCount"/> non-negative integers that fit in a long.</summary>
    private static long[] ReadIntegers(ref Utf8JsonReader reader, string name, string field, int maxCount, string file)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new ModelFormatException(file, $"tensor '{name}': '{field}' must be an array of integers, found {Describe(reader.TokenType)}");
        var values = new List<long>();
        while (Next(ref reader, file) != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.Number)
                throw new ModelFormatException(file, $"tensor '{name}': '{field}' must hold integers, found {Describe(reader.TokenType)}");
            if (!reader.TryGetInt64(out long v))
                throw new ModelFormatException(file, $"tensor '{name}': '{field}' holds {System.Text.Encoding.UTF8.GetString(reader.ValueSpan)}, which is not an integer in 64-bit range");
            if (values.Count == maxCount)
                throw new ModelFormatException(file, $"tensor '{name}': '{field}' has more than {maxCount} entries");
            values.Add(v);
        }
        return values.ToArray();
    }

    private static ModelFormatException Duplicate(string file, string name, string field) =>
        new(file, $"tensor '{name}' has the field '{field}' twice");

    private static ModelFormatException Missing(string file, string name, string field) =>
        new(file, $"tensor '{name}' lacks the field '{field}'");

    private static string Describe(JsonTokenType t) => t switch
    {
        JsonTokenType.StartObject => "an object",
        JsonTokenType.StartArray => "an array",
        JsonTokenType.String => "a string",
        JsonTokenType.Number => "a number",
        JsonTokenType.True or JsonTokenType.False => "a boolean",
        JsonTokenType.Null => "null",
        _ => t.ToString(),
    };
}
