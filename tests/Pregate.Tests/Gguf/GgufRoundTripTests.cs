// GgufWriter → GgufFile round trips: every metadata type, nested and empty arrays, tensors of every DType and rank,
// alignment, the byte-count contract of tensor callbacks, and progress reporting.
using System.Runtime.InteropServices;
using Pregate.Core;
using Pregate.Formats;
using Pregate.Formats.Gguf;
using Xunit.Abstractions;

namespace Pregate.Tests.Gguf;

public sealed class GgufRoundTripTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static GgufValue Nest(int levels) =>
        levels == 1 ? GgufValue.FromUInt8Array([1, 2, 3]) : GgufValue.FromArray(GgufValueType.Array, [Nest(levels - 1)]);

    /// <summary>One value of every type, with edge cases: extremes, NaN bits, empty and non-ASCII strings, empty and nested arrays.</summary>
    private static List<(string Key, GgufValue Value)> AllValues() =>
    [
        ("u8", GgufValue.FromUInt8(byte.MaxValue)),
        ("i8", GgufValue.FromInt8(sbyte.MinValue)),
        ("u16", GgufValue.FromUInt16(ushort.MaxValue)),
        ("i16", GgufValue.FromInt16(short.MinValue)),
        ("u32", GgufValue.FromUInt32(uint.MaxValue)),
        ("i32", GgufValue.FromInt32(int.MinValue)),
        ("u64", GgufValue.FromUInt64(ulong.MaxValue)),
        ("i64", GgufValue.FromInt64(long.MinValue)),
        ("f32", GgufValue.FromFloat32(-1.5e-7f)),
        ("f32.nan", GgufValue.FromFloat32(BitConverter.UInt32BitsToSingle(0x7FC0_1234))),
        ("f64", GgufValue.FromFloat64(Math.PI)),
        ("bool.true", GgufValue.FromBool(true)),
        ("bool.false", GgufValue.FromBool(false)),
        ("str", GgufValue.FromString("héllo ▁wörld 🦙")),
        ("str.empty", GgufValue.FromString("")),
        ("arr.u8", GgufValue.FromUInt8Array([0, 1, 255])),
        ("arr.i8", GgufValue.FromInt8Array([-128, 0, 127])),
        ("arr.u16", GgufValue.FromUInt16Array([0, 65535])),
        ("arr.i16", GgufValue.FromInt16Array([-32768, 32767])),
        ("arr.u32", GgufValue.FromUInt32Array([0, uint.MaxValue])),
        ("arr.i32", GgufValue.FromInt32Array([int.MinValue, -1, 0, int.MaxValue])),
        ("arr.u64", GgufValue.FromUInt64Array([ulong.MaxValue])),
        ("arr.i64", GgufValue.FromInt64Array([long.MinValue, long.MaxValue])),
        ("arr.f32", GgufValue.FromFloat32Array([0f, -0f, float.PositiveInfinity, 3.25f])),
        ("arr.f64", GgufValue.FromFloat64Array([double.Epsilon, -2.5])),
        ("arr.bool", GgufValue.FromBoolArray([true, false, true])),
        ("arr.str", GgufValue.FromStringArray(["", "a", "<0xFF>", "日本"])),
        ("arr.empty.f32", GgufValue.FromFloat32Array([])),
        ("arr.empty.str", GgufValue.FromStringArray([])),
        ("arr.empty.arr", GgufValue.FromArray(GgufValueType.Array, [])),
        ("arr.nested", GgufValue.FromArray(GgufValueType.Array,
            [GgufValue.FromInt32Array([1, 2]), GgufValue.FromStringArray(["x", ""]), GgufValue.FromFloat32Array([]),
             GgufValue.FromArray(GgufValueType.Array, [GgufValue.FromBoolArray([true])])])),
        ("arr.nested.16", Nest(GgufFile.MaxArrayNesting)),
        ("arr.of.scalars", GgufValue.FromArray(GgufValueType.UInt16, [GgufValue.FromUInt16(5), GgufValue.FromUInt16(6)])),
    ];

    [Fact]
    public void EveryMetadataTypeRoundTripsInOrder()
    {
        var values = AllValues();
        var w = new GgufWriter();
        foreach (var (key, value) in values) w.Add(key, value);
        string path = _dir.File("meta.gguf");
        w.Write(path);

        using var f = GgufFile.Open(path);
        Assert.Equal(3u, f.Version);
        Assert.Equal(values.Select(v => v.Key), f.MetadataKeys);
        Assert.Equal(values.Select(v => v.Key), f.Metadata.Keys);
        foreach (var (key, value) in values)
        {
            GgufValue read = f.Metadata[key];
            output.WriteLine($"{key}: {read.Describe()} {read}");
            Assert.Equal(value, read);
            Assert.Equal(key, read.Key);
        }
        Assert.Empty(f.Tensors);
        Assert.Equal(GgufFile.DefaultAlignment, f.Alignment);
        Assert.False(f.Metadata.ContainsKey(GgufFile.AlignmentKey));
    }

    [Fact]
    public void TypedAccessorsConvertWhereLosslessAndNameTheKeyOtherwise()
    {
        var w = new GgufWriter();
        w.AddUInt8("small", 200);
        w.AddInt64("neg", -5);
        w.AddUInt64("big", ulong.MaxValue);
        w.AddFloat32("f", 0.25f);
        w.AddString("s", "text");
        w.AddUInt16Array("ints", [1, 2, 65535]);
        w.AddInt64Array("longs", [long.MaxValue]);
        w.AddFloat32Array("floats", [1f, 2f]);
        string path = _dir.Write("acc.gguf", GgufTestFiles.ToBytes(w));
        using var f = GgufFile.Open(path);

        Assert.Equal(200, f.GetInt("small"));
        Assert.Equal(200u, f.GetUInt32("small"));
        Assert.Equal(-5L, f.GetLong("neg"));
        Assert.Equal(ulong.MaxValue, f.Metadata["big"].AsUInt64());
        Assert.Equal(0.25f, f.GetFloat("f"));
        Assert.Equal(0.25, f.Metadata["f"].AsDouble());
        Assert.Equal("text", f.GetString("s"));
        Assert.Equal([1, 2, 65535], f.Metadata["ints"].AsIntArray());
        Assert.Equal([1L, 2L, 65535L], f.Metadata["ints"].AsLongArray());
        Assert.Equal([1.0, 2.0], f.Metadata["floats"].AsDoubleArray());
        Assert.Equal(3, f.Metadata["ints"].ArrayLength);
        Assert.True(f.TryGetString("s", out string? s) && s == "text");
        Assert.False(f.TryGetUInt32("absent", out _));

        void Fails(Action read, params string[] fragments)
        {
            var e = Assert.Throws<ModelFormatException>(read);
            output.WriteLine(e.Message);
            Assert.Equal(path, e.FilePath);
            foreach (string fragment in fragments) Assert.Contains(fragment, e.Message);
        }
        Fails(() => f.GetUInt32("neg"), "'neg'", "-5", "UINT32");
        Fails(() => f.GetLong("big"), "'big'", "INT64");
        Fails(() => f.GetInt("s"), "'s'", "STRING", "integer");
        Fails(() => f.GetString("small"), "'small'", "UINT8", "STRING");
        Fails(() => f.GetFloat("small"), "'small'", "FLOAT32");
        Fails(() => f.GetBool("f"), "'f'", "BOOL");
        Fails(() => f.TryGetInt("s", out _), "'s'");
        Fails(() => f.Metadata["ints"].AsStringArray(), "'ints'", "ARRAY of UINT16");
        Fails(() => f.Metadata["longs"].AsIntArray(), "'longs' element 0", "INT32");
        Fails(() => f.Metadata["floats"].AsIntArray(), "'floats'", "ARRAY of FLOAT32");
        Fails(() => f.GetString("absent"), "'absent'", "missing");
        Fails(() => _ = f.Metadata["s"].ArrayLength, "'s'", "array");
    }

    public static TheoryData<DType> AllTypes() =>
        [DType.F32, DType.F16, DType.BF16, DType.Q8_0, DType.Q4_0, DType.Q4_K, DType.Q6_K, DType.I8, DType.I16, DType.I32, DType.I64, DType.F64];

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void TensorsOfEveryTypeAndRankRoundTripByteExact(DType type)
    {
        int block = DTypes.BlockSize(type);
        long[][] shapes = [[2 * block], [3, block], [2, 3, block], [2, 1, 3, 2 * block]];
        var w = new GgufWriter();
        var expected = new Dictionary<string, (long[] Shape, byte[] Bytes)>();
        for (int i = 0; i < shapes.Length; i++)
        {
            string name = $"{DTypes.Name(type)}.rank{shapes[i].Length}";
            long elements = shapes[i].Aggregate(1L, (a, d) => a * d);
            byte[] bytes = GgufTestFiles.RandomBytes(100 + i, DTypes.ByteCount(type, elements));
            expected[name] = (shapes[i], bytes);
            w.AddTensor(TensorData.FromBytes(name, type, shapes[i], bytes));
        }
        string path = _dir.File("tensors.gguf");
        w.Write(path);

        using var f = GgufFile.Open(path);
        Assert.Equal(expected.Keys, f.Tensors.Select(t => t.Name));
        foreach (TensorView t in f.Tensors)
        {
            var (shape, bytes) = expected[t.Name];
            output.WriteLine($"{t} at file offset {f.GetFileOffset(t)}");
            Assert.Equal(type, t.Type);
            Assert.Equal(shape, t.Shape);
            Assert.Equal(bytes.Length, t.ByteLength);
            Assert.True(t.Bytes.SequenceEqual(bytes));
            Assert.Equal(0, (f.GetFileOffset(t) - f.DataOffset) % f.Alignment);
            Assert.Equal(f.GetTensor(t.Name).Pointer, t.Pointer);
        }
    }

    [Fact]
    public void ShapesAreStoredFastestDimensionFirstAsLlamaCppExpects()
    {
        // A [out=3, in=5] F32 matrix must appear in the file as ne = {5, 3}: n_dims, ne0, ne1 follow the name.
        var w = new GgufWriter();
        w.AddTensor(TensorData.FromBytes("m", DType.F32, [3, 5], new byte[60]));
        byte[] file = GgufTestFiles.ToBytes(w);
        int at = GgufTestFiles.After(file, "m");
        Assert.Equal(2u, BitConverter.ToUInt32(file, at));
        Assert.Equal(5L, BitConverter.ToInt64(file, at + 4));
        Assert.Equal(3L, BitConverter.ToInt64(file, at + 12));
    }

    [Theory]
    [InlineData(64u)]
    [InlineData(1u)]
    [InlineData(4096u)]
    public void ExplicitAlignmentIsWrittenAndHonoured(uint alignment)
    {
        var w = new GgufWriter { Alignment = alignment };
        w.AddString("general.name", "aligned");
        w.AddTensor(TensorData.FromBytes("a", DType.F32, [3], GgufTestFiles.RandomBytes(1, 12)));
        w.AddTensor(TensorData.FromBytes("b", DType.Q8_0, [1, 32], GgufTestFiles.RandomBytes(2, 34)));
        w.AddTensor(TensorData.FromBytes("c", DType.I8, [7], GgufTestFiles.RandomBytes(3, 7)));
        string path = _dir.File("aligned.gguf");
        w.Write(path);

        using var f = GgufFile.Open(path);
        Assert.Equal(alignment, f.Alignment);
        Assert.Equal(alignment, f.GetUInt32(GgufFile.AlignmentKey));
        Assert.Equal(0, f.DataOffset % alignment);
        foreach (TensorView t in f.Tensors)
        {
            long offset = f.GetFileOffset(t);
            output.WriteLine($"{t.Name}: offset {offset}");
            Assert.Equal(0, offset % alignment);
        }
        Assert.True(f.GetTensor("b").Bytes.SequenceEqual(GgufTestFiles.RandomBytes(2, 34)));
        Assert.True(f.GetTensor("c").Bytes.SequenceEqual(GgufTestFiles.RandomBytes(3, 7)));
    }

    [Fact]
    public void AlignmentMustBeAPowerOfTwo()
    {
        var w = new GgufWriter();
        Assert.Throws<ArgumentException>(() => w.Alignment = 48);
        Assert.Throws<ArgumentException>(() => w.Alignment = 0);
        Assert.Throws<ArgumentException>(() => w.AddUInt64(GgufFile.AlignmentKey, 64));
        Assert.Equal(GgufFile.DefaultAlignment, w.Alignment);
        Assert.Empty(w.Keys);
    }

    [Fact]
    public void FileAndStreamOutputAreIdenticalAndProgressReachesTheEnd()
    {
        byte[] expected = GgufTestFiles.SmallValidFile();
        var w = new GgufWriter();
        using (var f = GgufFile.Open(_dir.Write("small.gguf", expected)))
        {
            foreach (var (key, value) in f.Metadata) w.Add(key, value);
            foreach (TensorView t in f.Tensors) w.AddTensor(TensorData.FromBytes(t.Name, t.Type, t.Shape, t.Bytes.ToArray()));
        }
        var reports = new List<long>();
        string path = _dir.File("copy.gguf");
        w.Write(path, new SynchronousProgress(reports.Add));
        byte[] written = File.ReadAllBytes(path);
        Assert.Equal(expected, written);
        Assert.Equal(written.Length, reports[^1]);
        Assert.Equal(reports.Order(), reports);
        Assert.Empty(Directory.GetFiles(_dir.Path, "*.tmp"));
    }

    [Fact]
    public void CallbackWritingTooFewBytesFailsAndLeavesNoFile()
    {
        var w = new GgufWriter();
        w.AddTensor(new TensorData("short", DType.F32, [4], s => s.Write(new byte[15])));
        string path = _dir.File("short.gguf");
        var e = Assert.Throws<InvalidOperationException>(() => w.Write(path));
        output.WriteLine(e.Message);
        Assert.Contains("'short'", e.Message);
        Assert.Contains("15", e.Message);
        Assert.False(File.Exists(path));
        Assert.Empty(Directory.GetFiles(_dir.Path));
    }

    [Fact]
    public void CallbackWritingTooManyBytesFails()
    {
        var w = new GgufWriter();
        w.AddTensor(new TensorData("long", DType.F16, [4], s => { s.Write(new byte[8]); s.WriteByte(0); }));
        var e = Assert.Throws<InvalidOperationException>(() => GgufTestFiles.ToBytes(w));
        output.WriteLine(e.Message);
        Assert.Contains("'long'", e.Message);
    }

    [Fact]
    public void CallbackMayWriteInPiecesAndDisposeTheStream()
    {
        byte[] data = GgufTestFiles.RandomBytes(5, 4 * 64);
        var w = new GgufWriter();
        w.AddTensor(new TensorData("pieces", DType.F32, [64], s =>
        {
            using (s)
                for (int i = 0; i < data.Length; i += 10) s.Write(data, i, Math.Min(10, data.Length - i));
        }));
        w.AddTensor(TensorData.FromBytes("after", DType.I8, [3], [1, 2, 3]));
        using var f = GgufFile.Open(_dir.Write("pieces.gguf", GgufTestFiles.ToBytes(w)));
        Assert.True(f.GetTensor("pieces").Bytes.SequenceEqual(data));
        Assert.Equal([1, 2, 3], f.GetTensor("after").Bytes.ToArray());
    }

    [Fact]
    public void WriterRejectsInvalidTensorsAndDuplicateKeys()
    {
        var w = new GgufWriter();
        w.AddString("k", "v");
        Assert.Throws<ArgumentException>(() => w.AddString("k", "again"));
        w.Set("k", GgufValue.FromUInt32(5));
        Assert.Equal(["k"], w.Keys);
        Assert.Throws<ArgumentException>(() => w.AddString("bad", "\uD800"));
        w.AddTensor(TensorData.FromBytes("t", DType.F32, [1], new byte[4]));
        Assert.Throws<ArgumentException>(() => w.AddTensor(TensorData.FromBytes("t", DType.F32, [1], new byte[4])));
        Assert.Throws<ArgumentException>(() => w.AddTensor(TensorData.FromBytes("", DType.F32, [1], new byte[4])));
        Assert.Throws<ArgumentException>(() => w.AddTensor(TensorData.FromBytes(new string('x', 64), DType.F32, [1], new byte[4])));
        Assert.Throws<ArgumentException>(() => w.AddTensor(TensorData.FromBytes("r0", DType.F32, [], new byte[4])));
        Assert.Throws<ArgumentException>(() => w.AddTensor(TensorData.FromBytes("r5", DType.F32, [1, 1, 1, 1, 1], new byte[4])));
        Assert.Throws<ArgumentException>(() => w.AddTensor(TensorData.FromBytes("zero", DType.F32, [0], [])));
        Assert.Throws<ArgumentException>(() => w.AddTensor(TensorData.FromBytes("q", DType.Q8_0, [2, 16], new byte[34])));
        Assert.Throws<ArgumentException>(() => w.AddTensor(TensorData.FromBytes("q1", (DType)3, [32], new byte[20])));
        Assert.Single(w.Tensors);
        Assert.Throws<ArgumentException>(() => GgufValue.FromArray(GgufValueType.UInt8, [GgufValue.FromInt8(1)]));
    }

    [Fact]
    public void LargeVocabularyArraysReadBack()
    {
        const int n = 150_000;
        string[] tokens = Enumerable.Range(0, n).Select(i => $"tok{i}▁").ToArray();
        float[] scores = Enumerable.Range(0, n).Select(i => -(float)i).ToArray();
        var w = new GgufWriter();
        w.AddStringArray("tokenizer.ggml.tokens", tokens);
        w.AddFloat32Array("tokenizer.ggml.scores", scores);
        string path = _dir.File("vocab.gguf");
        w.Write(path);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var f = GgufFile.Open(path);
        output.WriteLine($"opened {new FileInfo(path).Length} bytes with a {n}-token vocabulary in {sw.Elapsed.TotalMilliseconds:F1} ms");
        Assert.Equal(tokens, f.Metadata["tokenizer.ggml.tokens"].AsStringArray());
        Assert.True(MemoryMarshal.AsBytes(f.Metadata["tokenizer.ggml.scores"].AsFloatArray().AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(scores.AsSpan())));
    }

    [Fact]
    public void Version2FilesAreAccepted()
    {
        byte[] file = GgufTestFiles.SmallValidFile();
        GgufTestFiles.PutU32(file, 4, 2);
        using var f = GgufFile.Open(_dir.Write("v2.gguf", file));
        Assert.Equal(2u, f.Version);
        Assert.Equal(3, f.Tensors.Count);
    }

    /// <summary>IProgress that reports on the calling thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SynchronousProgress(Action<long> report) : IProgress<long>
    {
        public void Report(long value) => report(value);
    }
}
