// A GGUF metadata value of any type, nested arrays included (ggml/src/gguf.cpp, enum gguf_type).
// Arrays keep their elements in typed CLR arrays so a 150k-token vocabulary is one allocation, not 150k objects.
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Pregate.Core;

namespace Pregate.Formats.Gguf;

/// <summary>GGUF value types; the numeric values are the on-disk type ids.</summary>
public enum GgufValueType : uint
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
}

/// <summary>
/// An immutable GGUF metadata value. Scalars, strings and arrays (including arrays of arrays) are built with the
/// <c>From…</c> factories. The <c>As…</c> accessors convert where no information is lost (any integer type to
/// <see cref="AsInt"/> when the value fits, FLOAT32 to <see cref="AsDouble"/>) and otherwise throw
/// <see cref="ModelFormatException"/> naming the metadata <see cref="Key"/> and the file the value came from.
/// </summary>
public sealed class GgufValue : IEquatable<GgufValue>
{
    private const int MaxItemsShown = 8;

    // Integers (signed ones sign-extended), bool (0/1), or the IEEE bits of FLOAT32/FLOAT64.
    private readonly ulong _bits;
    // string for STRING; for ARRAY a typed CLR array: byte[], sbyte[], ushort[], short[], uint[], int[], float[],
    // bool[], string[], ulong[], long[], double[] or GgufValue[] (arrays of arrays).
    private readonly object? _payload;
    private readonly string? _file;

    public GgufValueType Type { get; }

    /// <summary>The element type when <see cref="Type"/> is <see cref="GgufValueType.Array"/>, else null.</summary>
    public GgufValueType? ElementType { get; }

    /// <summary>The metadata key this value was read under (<c>key[i]</c> for elements of nested arrays); null for values built in code.</summary>
    public string? Key { get; }

    private GgufValue(GgufValueType type, ulong bits, object? payload, GgufValueType? elementType, string? key, string? file)
    {
        Type = type;
        _bits = bits;
        _payload = payload;
        ElementType = elementType;
        Key = key;
        _file = file;
    }

    internal ulong Bits => _bits;
    internal object? Payload => _payload;

    /// <summary>Number of elements of an array value; throws for scalars.</summary>
    public int ArrayLength => Type == GgufValueType.Array ? ((Array)_payload!).Length : throw Mismatch("an array");

    /// <summary>True for the eight integer types.</summary>
    public static bool IsInteger(GgufValueType t) => t is GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.UInt16
        or GgufValueType.Int16 or GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.UInt64 or GgufValueType.Int64;

    /// <summary>Bytes one element of type <paramref name="t"/> occupies on disk; null for STRING and ARRAY (variable size).</summary>
    public static int? FixedSize(GgufValueType t) => t switch
    {
        GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
        GgufValueType.UInt16 or GgufValueType.Int16 => 2,
        GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
        GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 => 8,
        _ => null,
    };

    // ---- factories ----

    public static GgufValue FromUInt8(byte v) => Scalar(GgufValueType.UInt8, v);
    public static GgufValue FromInt8(sbyte v) => Scalar(GgufValueType.Int8, (ulong)(long)v);
    public static GgufValue FromUInt16(ushort v) => Scalar(GgufValueType.UInt16, v);
    public static GgufValue FromInt16(short v) => Scalar(GgufValueType.Int16, (ulong)(long)v);
    public static GgufValue FromUInt32(uint v) => Scalar(GgufValueType.UInt32, v);
    public static GgufValue FromInt32(int v) => Scalar(GgufValueType.Int32, (ulong)(long)v);
    public static GgufValue FromUInt64(ulong v) => Scalar(GgufValueType.UInt64, v);
    public static GgufValue FromInt64(long v) => Scalar(GgufValueType.Int64, (ulong)v);
    public static GgufValue FromFloat32(float v) => Scalar(GgufValueType.Float32, BitConverter.SingleToUInt32Bits(v));
    public static GgufValue FromFloat64(double v) => Scalar(GgufValueType.Float64, BitConverter.DoubleToUInt64Bits(v));
    public static GgufValue FromBool(bool v) => Scalar(GgufValueType.Bool, v ? 1UL : 0UL);

    /// <summary>A STRING value; <paramref name="v"/> must be valid UTF-16 (no lone surrogates), else <see cref="ArgumentException"/>.</summary>
    public static GgufValue FromString(string v)
    {
        ArgumentNullException.ThrowIfNull(v);
        CheckEncodable(v);
        return new GgufValue(GgufValueType.String, 0, v, null, null, null);
    }

    public static GgufValue FromUInt8Array(ReadOnlySpan<byte> v) => TypedArray(GgufValueType.UInt8, v.ToArray());
    public static GgufValue FromInt8Array(ReadOnlySpan<sbyte> v) => TypedArray(GgufValueType.Int8, v.ToArray());
    public static GgufValue FromUInt16Array(ReadOnlySpan<ushort> v) => TypedArray(GgufValueType.UInt16, v.ToArray());
    public static GgufValue FromInt16Array(ReadOnlySpan<short> v) => TypedArray(GgufValueType.Int16, v.ToArray());
    public static GgufValue FromUInt32Array(ReadOnlySpan<uint> v) => TypedArray(GgufValueType.UInt32, v.ToArray());
    public static GgufValue FromInt32Array(ReadOnlySpan<int> v) => TypedArray(GgufValueType.Int32, v.ToArray());
    public static GgufValue FromUInt64Array(ReadOnlySpan<ulong> v) => TypedArray(GgufValueType.UInt64, v.ToArray());
    public static GgufValue FromInt64Array(ReadOnlySpan<long> v) => TypedArray(GgufValueType.Int64, v.ToArray());
    public static GgufValue FromFloat32Array(ReadOnlySpan<float> v) => TypedArray(GgufValueType.Float32, v.ToArray());
    public static GgufValue FromFloat64Array(ReadOnlySpan<double> v) => TypedArray(GgufValueType.Float64, v.ToArray());
    public static GgufValue FromBoolArray(ReadOnlySpan<bool> v) => TypedArray(GgufValueType.Bool, v.ToArray());

    /// <summary>An ARRAY of STRING; every string must be valid UTF-16, else <see cref="ArgumentException"/>.</summary>
    public static GgufValue FromStringArray(IEnumerable<string> v)
    {
        string[] items = v.ToArray();
        foreach (string s in items)
        {
            ArgumentNullException.ThrowIfNull(s, nameof(v));
            CheckEncodable(s);
        }
        return TypedArray(GgufValueType.String, items);
    }

    /// <summary>
    /// An ARRAY whose elements are the given values, all of type <paramref name="elementType"/>. With
    /// <paramref name="elementType"/> = <see cref="GgufValueType.Array"/> this builds arrays of arrays (the inner
    /// arrays may have different element types). Throws <see cref="ArgumentException"/> on a type mismatch.
    /// </summary>
    public static GgufValue FromArray(GgufValueType elementType, IReadOnlyList<GgufValue> items)
    {
        if (!Enum.IsDefined(elementType)) throw new ArgumentOutOfRangeException(nameof(elementType), elementType, "unknown GGUF value type");
        for (int i = 0; i < items.Count; i++)
            if (items[i].Type != elementType)
                throw new ArgumentException($"element {i} is {items[i].Describe()}, the array holds {elementType}", nameof(items));
        object payload = elementType switch
        {
            GgufValueType.UInt8 => items.Select(x => (byte)x._bits).ToArray(),
            GgufValueType.Int8 => items.Select(x => (sbyte)(long)x._bits).ToArray(),
            GgufValueType.UInt16 => items.Select(x => (ushort)x._bits).ToArray(),
            GgufValueType.Int16 => items.Select(x => (short)(long)x._bits).ToArray(),
            GgufValueType.UInt32 => items.Select(x => (uint)x._bits).ToArray(),
            GgufValueType.Int32 => items.Select(x => (int)(long)x._bits).ToArray(),
            GgufValueType.UInt64 => items.Select(x => x._bits).ToArray(),
            GgufValueType.Int64 => items.Select(x => (long)x._bits).ToArray(),
            GgufValueType.Float32 => items.Select(x => BitConverter.UInt32BitsToSingle((uint)x._bits)).ToArray(),
            GgufValueType.Float64 => items.Select(x => BitConverter.UInt64BitsToDouble(x._bits)).ToArray(),
            GgufValueType.Bool => items.Select(x => x._bits != 0).ToArray(),
            GgufValueType.String => items.Select(x => (string)x._payload!).ToArray(),
            GgufValueType.Array => items.Select(x => x.WithKey(null, null)).ToArray(),
            _ => throw new ArgumentOutOfRangeException(nameof(elementType)),
        };
        return new GgufValue(GgufValueType.Array, 0, payload, elementType, null, null);
    }

    internal static GgufValue ReadScalar(GgufValueType type, ulong bits, string key, string file) => new(type, bits, null, null, key, file);
    internal static GgufValue ReadString(string v, string key, string file) => new(GgufValueType.String, 0, v, null, key, file);
    internal static GgufValue ReadArray(GgufValueType elementType, Array items, string key, string file) =>
        new(GgufValueType.Array, 0, items, elementType, key, file);

    private static GgufValue Scalar(GgufValueType t, ulong bits) => new(t, bits, null, null, null, null);
    private static GgufValue TypedArray(GgufValueType elementType, Array items) => new(GgufValueType.Array, 0, items, elementType, null, null);

    private GgufValue WithKey(string? key, string? file) => new(Type, _bits, _payload, ElementType, key, file);

    /// <summary>Throws <see cref="ArgumentException"/> when <paramref name="s"/> has lone surrogates (no UTF-8 form).</summary>
    internal static void CheckEncodable(string s)
    {
        if (!s.AsSpan().ContainsAnyInRange('\uD800', '\uDFFF')) return;
        try { GgufStrings.StrictUtf8.GetByteCount(s); }
        catch (EncoderFallbackException e) { throw new ArgumentException($"string is not valid UTF-16 (lone surrogate): {e.Message}", e); }
    }

    // ---- scalar accessors ----

    /// <summary>The value of any integer type, widened; throws when this is not an integer.</summary>
    public Int128 AsInteger() => Type switch
    {
        GgufValueType.UInt8 or GgufValueType.UInt16 or GgufValueType.UInt32 or GgufValueType.UInt64 => _bits,
        GgufValueType.Int8 or GgufValueType.Int16 or GgufValueType.Int32 or GgufValueType.Int64 => (long)_bits,
        _ => throw Mismatch("an integer"),
    };

    /// <summary>Any integer type whose value lies in 0..2³²−1.</summary>
    public uint AsUInt32() => (uint)InRange(uint.MinValue, uint.MaxValue, "UINT32");

    /// <summary>Any integer type whose value lies in −2³¹..2³¹−1.</summary>
    public int AsInt() => (int)InRange(int.MinValue, int.MaxValue, "INT32");

    /// <summary>Any integer type whose value lies in −2⁶³..2⁶³−1.</summary>
    public long AsLong() => (long)InRange(long.MinValue, long.MaxValue, "INT64");

    /// <summary>Any integer type whose value lies in 0..2⁶⁴−1.</summary>
    public ulong AsUInt64() => (ulong)InRange(ulong.MinValue, ulong.MaxValue, "UINT64");

    /// <summary>A FLOAT32, or a FLOAT64 (rounded to the nearest float).</summary>
    public float AsFloat() => Type switch
    {
        GgufValueType.Float32 => BitConverter.UInt32BitsToSingle((uint)_bits),
        GgufValueType.Float64 => (float)BitConverter.UInt64BitsToDouble(_bits),
        _ => throw Mismatch("FLOAT32"),
    };

    /// <summary>A FLOAT64 or FLOAT32 (exactly widened).</summary>
    public double AsDouble() => Type switch
    {
        GgufValueType.Float32 => BitConverter.UInt32BitsToSingle((uint)_bits),
        GgufValueType.Float64 => BitConverter.UInt64BitsToDouble(_bits),
        _ => throw Mismatch("FLOAT64"),
    };

    public bool AsBool() => Type == GgufValueType.Bool ? _bits != 0 : throw Mismatch("BOOL");

    public string AsString() => Type == GgufValueType.String ? (string)_payload! : throw Mismatch("STRING");

    // ---- array accessors (each returns a fresh copy) ----

    public string[] AsStringArray() => ElementType == GgufValueType.String ? (string[])((string[])_payload!).Clone() : throw Mismatch("an ARRAY of STRING");

    /// <summary>An ARRAY of FLOAT32 (or FLOAT64, rounded).</summary>
    public float[] AsFloatArray() => _payload switch
    {
        float[] a when Type == GgufValueType.Array => (float[])a.Clone(),
        double[] a when Type == GgufValueType.Array => Array.ConvertAll(a, x => (float)x),
        _ => throw Mismatch("an ARRAY of FLOAT32"),
    };

    /// <summary>An ARRAY of FLOAT64 or FLOAT32.</summary>
    public double[] AsDoubleArray() => _payload switch
    {
        double[] a when Type == GgufValueType.Array => (double[])a.Clone(),
        float[] a when Type == GgufValueType.Array => Array.ConvertAll(a, x => (double)x),
        _ => throw Mismatch("an ARRAY of FLOAT64"),
    };

    public bool[] AsBoolArray() => ElementType == GgufValueType.Bool ? (bool[])((bool[])_payload!).Clone() : throw Mismatch("an ARRAY of BOOL");

    /// <summary>An ARRAY of any integer type whose elements all fit in an int.</summary>
    public int[] AsIntArray() => IntegerArray(int.MinValue, int.MaxValue, "INT32", v => (int)v);

    /// <summary>An ARRAY of any integer type whose elements all fit in a long.</summary>
    public long[] AsLongArray() => IntegerArray(long.MinValue, long.MaxValue, "INT64", v => (long)v);

    /// <summary>An ARRAY of any integer type whose elements all fit in a uint.</summary>
    public uint[] AsUInt32Array() => IntegerArray(uint.MinValue, uint.MaxValue, "UINT32", v => (uint)v);

    /// <summary>An ARRAY of UINT8 or INT8 as raw bytes.</summary>
    public byte[] AsByteArray() => _payload switch
    {
        byte[] a when Type == GgufValueType.Array => (byte[])a.Clone(),
        sbyte[] a when Type == GgufValueType.Array => MemoryMarshal.AsBytes(a.AsSpan()).ToArray(),
        _ => throw Mismatch("an ARRAY of UINT8"),
    };

    /// <summary>The elements of any array as values (for nested arrays and generic dumps). Elements of nested arrays carry the key <c>key[i]</c>.</summary>
    public IReadOnlyList<GgufValue> AsArray()
    {
        if (Type != GgufValueType.Array) throw Mismatch("an array");
        if (_payload is GgufValue[] nested) return nested;
        var items = (Array)_payload!;
        var result = new GgufValue[items.Length];
        for (int i = 0; i < result.Length; i++) result[i] = Element(i);
        return result;
    }

    private GgufValue Element(int i)
    {
        string? key = Key is null ? null : $"{Key}[{i}]";
        return _payload switch
        {
            byte[] a => new(GgufValueType.UInt8, a[i], null, null, key, _file),
            sbyte[] a => new(GgufValueType.Int8, (ulong)(long)a[i], null, null, key, _file),
            ushort[] a => new(GgufValueType.UInt16, a[i], null, null, key, _file),
            short[] a => new(GgufValueType.Int16, (ulong)(long)a[i], null, null, key, _file),
            uint[] a => new(GgufValueType.UInt32, a[i], null, null, key, _file),
            int[] a => new(GgufValueType.Int32, (ulong)(long)a[i], null, null, key, _file),
            ulong[] a => new(GgufValueType.UInt64, a[i], null, null, key, _file),
            long[] a => new(GgufValueType.Int64, (ulong)a[i], null, null, key, _file),
            float[] a => new(GgufValueType.Float32, BitConverter.SingleToUInt32Bits(a[i]), null, null, key, _file),
            double[] a => new(GgufValueType.Float64, BitConverter.DoubleToUInt64Bits(a[i]), null, null, key, _file),
            bool[] a => new(GgufValueType.Bool, a[i] ? 1UL : 0UL, null, null, key, _file),
            string[] a => new(GgufValueType.String, 0, a[i], null, key, _file),
            _ => throw new InvalidOperationException("unreachable: array payload of unknown type"),
        };
    }

    private Int128 InRange(Int128 min, Int128 max, string target)
    {
        Int128 v = AsInteger();
        if (v < min || v > max) throw new ModelFormatException(_file, $"{Name} = {v} does not fit in {target}");
        return v;
    }

    private T[] IntegerArray<T>(Int128 min, Int128 max, string target, Func<Int128, T> convert)
    {
        if (Type != GgufValueType.Array || ElementType is not GgufValueType et || !IsInteger(et))
            throw Mismatch("an ARRAY of integers");
        var items = (Array)_payload!;
        var result = new T[items.Length];
        for (int i = 0; i < result.Length; i++)
        {
            Int128 v = _payload switch
            {
                byte[] a => a[i],
                sbyte[] a => a[i],
                ushort[] a => a[i],
                short[] a => a[i],
                uint[] a => a[i],
                int[] a => a[i],
                ulong[] a => a[i],
                long[] a => a[i],
                _ => throw new InvalidOperationException("unreachable: integer array payload of unknown type"),
            };
            if (v < min || v > max) throw new ModelFormatException(_file, $"{Name} element {i} = {v} does not fit in {target}");
            result[i] = convert(v);
        }
        return result;
    }

    private string Name => Key is null ? "metadata value" : $"metadata key '{Key}'";

    private ModelFormatException Mismatch(string expected) => new(_file, $"{Name} is {Describe()}, expected {expected}");

    /// <summary>"UINT32", "ARRAY of FLOAT32", "ARRAY of ARRAY"…</summary>
    public string Describe() => Type == GgufValueType.Array ? $"ARRAY of {TypeName(ElementType!.Value)}" : TypeName(Type);

    /// <summary>The GGUF spelling of a type name: UINT8 … FLOAT64.</summary>
    public static string TypeName(GgufValueType t) => t.ToString().ToUpperInvariant();

    // ---- equality (bitwise for floats, so NaN payloads round-trip) ----

    public bool Equals(GgufValue? other)
    {
        if (other is null) return false;
        if (ReferenceEquals(this, other)) return true;
        if (Type != other.Type || ElementType != other.ElementType || _bits != other._bits) return false;
        return (_payload, other._payload) switch
        {
            (null, null) => true,
            (string a, string b) => string.Equals(a, b, StringComparison.Ordinal),
            (string[] a, string[] b) => a.AsSpan().SequenceEqual(b),
            (GgufValue[] a, GgufValue[] b) => a.AsSpan().SequenceEqual(b),
            (Array a, Array b) when a.GetType() == b.GetType() => RawBytes(a).SequenceEqual(RawBytes(b)),
            _ => false,
        };
    }

    public override bool Equals(object? obj) => obj is GgufValue v && Equals(v);

    public override int GetHashCode() => HashCode.Combine(Type, ElementType, _bits, _payload switch
    {
        string s => s.GetHashCode(StringComparison.Ordinal),
        Array a => a.Length,
        _ => 0,
    });

    /// <summary>The bytes of a primitive CLR array (little-endian on the platforms .NET runs on).</summary>
    internal static ReadOnlySpan<byte> RawBytes(Array a) =>
        MemoryMarshal.CreateReadOnlySpan(ref MemoryMarshal.GetArrayDataReference(a), Buffer.ByteLength(a));

    /// <summary>A short human-readable form: scalars in full, arrays as their type, length and first elements.</summary>
    public override string ToString()
    {
        if (Type == GgufValueType.Array)
        {
            var sb = new StringBuilder();
            sb.Append('[').Append(TypeName(ElementType!.Value)).Append(" × ").Append(ArrayLength).Append(']');
            if (ArrayLength > 0)
            {
                IReadOnlyList<GgufValue> shown = ArrayLength <= MaxItemsShown ? AsArray() : Enumerable.Range(0, MaxItemsShown).Select(ElementForDisplay).ToArray();
                sb.Append(' ').Append(string.Join(", ", shown.Select(v => v.ToString())));
                if (ArrayLength > MaxItemsShown) sb.Append(", …");
            }
            return sb.ToString();
        }
        return Type switch
        {
            GgufValueType.String => $"\"{_payload}\"",
            GgufValueType.Bool => _bits != 0 ? "true" : "false",
            GgufValueType.Float32 or GgufValueType.Float64 => AsDouble().ToString("R", CultureInfo.InvariantCulture),
            _ => AsInteger().ToString(CultureInfo.InvariantCulture),
        };
    }

    private GgufValue ElementForDisplay(int i) => _payload is GgufValue[] nested ? nested[i] : Element(i);
}

/// <summary>UTF-8 helpers shared by the GGUF reader and writer.</summary>
internal static class GgufStrings
{
    /// <summary>UTF-8 without BOM that throws on invalid input instead of substituting U+FFFD.</summary>
    public static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
}
