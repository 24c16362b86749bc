// Named malformed-file cases: each must raise ModelFormatException naming the file and the problem.
// Files are built valid with GgufWriter, then one field is patched (or the file cut) at a located position.
using Pregate.Core;
using Pregate.Formats;
using Pregate.Formats.Gguf;
using Xunit.Abstractions;
using static Pregate.Tests.Gguf.GgufTestFiles;

namespace Pregate.Tests.Gguf;

public sealed class GgufCorruptFileTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Opens <paramref name="file"/> and asserts a ModelFormatException whose message names the file and contains every fragment.</summary>
    private void Rejects(byte[] file, params string[] fragments)
    {
        string path = _dir.Write("bad.gguf", file);
        var e = Assert.Throws<ModelFormatException>(() => GgufFile.Open(path).Dispose());
        output.WriteLine(e.Message);
        Assert.Equal(path, e.FilePath);
        Assert.StartsWith(path, e.Message);
        foreach (string fragment in fragments) Assert.Contains(fragment, e.Message, StringComparison.OrdinalIgnoreCase);
    }

    private static byte[] TwoTensorFile(DType type = DType.F32, long[]? shape = null)
    {
        var w = new GgufWriter();
        w.AddString("general.architecture", "test");
        long[] s = shape ?? [16];
        long bytes = DTypes.ByteCount(type, s.Aggregate(1L, (a, d) => a * d));
        w.AddTensor(TensorData.FromBytes("first", type, s, RandomBytes(1, bytes)));
        w.AddTensor(TensorData.FromBytes("second", type, s, RandomBytes(2, bytes)));
        return ToBytes(w);
    }

    // Positions in a tensor info, after its name: n_dims (u32), ne[n_dims] (i64 each), type (u32), offset (u64).
    private static int DimsAt(byte[] f, string tensor) => After(f, tensor);
    private static int NeAt(byte[] f, string tensor, int d) => After(f, tensor) + 4 + 8 * d;
    private static int TypeAt(byte[] f, string tensor, int nDims) => After(f, tensor) + 4 + 8 * nDims;
    private static int OffsetAt(byte[] f, string tensor, int nDims) => TypeAt(f, tensor, nDims) + 4;

    // ---- header ----

    [Fact] public void MissingFile() =>
        Assert.Throws<ModelFormatException>(() => GgufFile.Open(_dir.File("absent.gguf")));

    [Fact] public void EmptyFile() => Rejects([], "truncated", "magic");

    [Fact] public void WrongMagic()
    {
        byte[] f = SmallValidFile();
        f[0] = (byte)'X';
        Rejects(f, "not a GGUF file");
    }

    [Fact] public void SafetensorsLikeHeaderIsNotGguf() => Rejects([0x10, 0, 0, 0, 0, 0, 0, 0, (byte)'{', (byte)'}'], "not a GGUF file");

    [Fact] public void Version1() { byte[] f = SmallValidFile(); PutU32(f, 4, 1); Rejects(f, "version 1", "obsolete"); }

    [Fact] public void Version4() { byte[] f = SmallValidFile(); PutU32(f, 4, 4); Rejects(f, "unsupported GGUF version 4"); }

    [Fact] public void BigEndianVersion() { byte[] f = SmallValidFile(); PutU32(f, 4, 0x0300_0000); Rejects(f, "big-endian"); }

    [Fact] public void TruncatedInHeader() => Rejects(SmallValidFile()[..12], "truncated", "tensor count");

    // ---- counts larger than the remaining bytes, caught before allocating ----

    [Fact] public void HugeMetadataCount() { byte[] f = SmallValidFile(); PutU64(f, 16, ulong.MaxValue); Rejects(f, "metadata count"); }

    [Fact] public void MetadataCountOneTooMany() { byte[] f = SmallValidFile(); PutU64(f, 16, BitConverter.ToUInt64(f, 16) + 1); Rejects(f); }

    [Fact] public void HugeTensorCount() { byte[] f = SmallValidFile(); PutU64(f, 8, 1UL << 40); Rejects(f, "tensor count"); }

    [Fact] public void HugeArrayLength()
    {
        byte[] f = SmallValidFile();
        PutU64(f, After(f, "test.scores") + 4 + 4, 1UL << 61); // key, value type ARRAY, element type, count
        Rejects(f, "'test.scores'", "claims");
    }

    [Fact] public void HugeStringArrayLength()
    {
        byte[] f = SmallValidFile();
        PutU64(f, After(f, "test.tokens") + 8, ulong.MaxValue);
        Rejects(f, "'test.tokens'");
    }

    [Fact] public void HugeStringLength()
    {
        byte[] f = SmallValidFile();
        PutU64(f, IndexOf(f, "general.architecture") - 8, long.MaxValue);
        Rejects(f, "string length");
    }

    [Fact] public void HugeStringValueLength()
    {
        byte[] f = SmallValidFile();
        PutU64(f, After(f, "general.architecture") + 4, 1UL << 62); // after the value type: the string's length
        Rejects(f, "string length");
    }

    // ---- truncation inside each section ----

    [Fact] public void TruncatedInMetadataKey() => Rejects(SmallValidFile()[..(IndexOf(SmallValidFile(), "test.nested") + 3)], "metadata key", "string length");

    [Fact] public void TruncatedInMetadataValue()
    {
        var w = new GgufWriter();
        w.AddUInt64("a.rather.long.key", 12345);
        byte[] f = ToBytes(w);
        Rejects(f[..(After(f, "a.rather.long.key") + 4 + 4)], "truncated", "a.rather.long.key");
    }

    [Fact] public void TruncatedInArrayElements() =>
        Rejects(SmallValidFile()[..(After(SmallValidFile(), "test.scores") + 4 + 4 + 8 + 6)], "'test.scores'", "claims 3");

    [Fact] public void TruncatedInStringArray() => Rejects(SmallValidFile()[..(IndexOf(SmallValidFile(), "▁d") + 1)], "test.tokens");

    [Fact] public void TruncatedInTensorInfo() => Rejects(SmallValidFile()[..(After(SmallValidFile(), "t.q8") + 10)], "truncated", "t.q8");

    [Fact] public void TruncatedTensorData()
    {
        byte[] f = SmallValidFile();
        Rejects(f[..(f.Length - 40)], "t.f16", "outside the file");
    }

    [Fact] public void TruncatedBeforeDataSection()
    {
        byte[] f = SmallValidFile();
        Rejects(f[..(OffsetAt(f, "t.f16", 1) + 8)], "outside the file");
    }

    // ---- value types ----

    [Fact] public void UnknownValueType() { byte[] f = SmallValidFile(); PutU32(f, After(f, "test.count"), 13); Rejects(f, "unknown GGUF value type 13"); }

    [Fact] public void UnknownArrayElementType() { byte[] f = SmallValidFile(); PutU32(f, After(f, "test.scores") + 4, 99); Rejects(f, "unknown GGUF value type 99"); }

    [Fact] public void InvalidBool() { byte[] f = SmallValidFile(); f[After(f, "test.flag") + 4] = 2; Rejects(f, "BOOL"); }

    [Fact] public void InvalidBoolInArray()
    {
        var w = new GgufWriter();
        w.AddBoolArray("flags", [true, false]);
        byte[] f = ToBytes(w);
        f[After(f, "flags") + 4 + 4 + 8 + 1] = 7; // value type, element type, count, then the second element
        Rejects(f, "'flags'", "BOOL");
    }

    [Fact] public void ArraysNestedTooDeep()
    {
        GgufValue v = GgufValue.FromUInt8Array([1]);
        for (int i = 1; i <= GgufFile.MaxArrayNesting; i++) v = GgufValue.FromArray(GgufValueType.Array, [v]);
        var w = new GgufWriter();
        w.Add("deep", v);
        Rejects(ToBytes(w), "nests arrays deeper");
    }

    // ---- tensor infos ----

    [Fact] public void UnknownTensorTypeId() { byte[] f = TwoTensorFile(); PutU32(f, TypeAt(f, "second", 1), 99); Rejects(f, "'second'", "unsupported ggml type 99"); }

    [Fact] public void UnsupportedGgmlTypeQ4_1() { byte[] f = TwoTensorFile(); PutU32(f, TypeAt(f, "second", 1), 3); Rejects(f, "unsupported ggml type 3"); }

    [Fact] public void ZeroDimensionCount() { byte[] f = TwoTensorFile(); PutU32(f, DimsAt(f, "first"), 0); Rejects(f, "'first'", "0 dimensions"); }

    [Fact] public void FiveDimensions() { byte[] f = TwoTensorFile(); PutU32(f, DimsAt(f, "first"), 5); Rejects(f, "5 dimensions"); }

    [Fact] public void ZeroDimension() { byte[] f = TwoTensorFile(); PutI64(f, NeAt(f, "first", 0), 0); Rejects(f, "ne[0] = 0"); }

    [Fact] public void NegativeDimension() { byte[] f = TwoTensorFile(shape: [2, 8]); PutI64(f, NeAt(f, "first", 1), -2); Rejects(f, "ne[1] = -2"); }

    [Fact] public void ElementCountOverflow()
    {
        byte[] f = TwoTensorFile(shape: [1, 1, 16]);
        PutI64(f, NeAt(f, "first", 0), 1L << 31);
        PutI64(f, NeAt(f, "first", 1), 1L << 31);
        PutI64(f, NeAt(f, "first", 2), 1L << 31);
        Rejects(f, "element count overflows");
    }

    [Fact] public void ByteCountOverflow()
    {
        byte[] f = TwoTensorFile(shape: [16]);
        PutI64(f, NeAt(f, "first", 0), 1L << 62); // 2^62 F32 elements = 2^64 bytes
        Rejects(f, "byte size overflows");
    }

    [Fact] public void TwoToThe60ElementsDoNotFitTheFile()
    {
        byte[] f = TwoTensorFile(shape: [1, 16]);
        PutI64(f, NeAt(f, "first", 0), 1L << 30);
        PutI64(f, NeAt(f, "first", 1), 1L << 30);
        Rejects(f, "'first'", "outside the file");
    }

    [Fact] public void RowNotMultipleOfBlockSize()
    {
        byte[] f = TwoTensorFile(DType.Q8_0, [2, 32]);
        PutI64(f, NeAt(f, "first", 0), 33);
        Rejects(f, "'first'", "row length 33", "block size 32");
    }

    [Fact] public void KQuantRowNotMultipleOf256()
    {
        byte[] f = TwoTensorFile(DType.Q4_K, [256]);
        PutI64(f, NeAt(f, "second", 0), 128);
        Rejects(f, "'second'", "block size 256");
    }

    [Fact] public void MisalignedOffset() { byte[] f = TwoTensorFile(); PutU64(f, OffsetAt(f, "second", 1), 65); Rejects(f, "'second'", "not a multiple of the alignment 32"); }

    [Fact] public void OffsetOutsideFile() { byte[] f = TwoTensorFile(); PutU64(f, OffsetAt(f, "second", 1), 1UL << 40); Rejects(f, "'second'", "outside the file"); }

    [Fact] public void OffsetNearUInt64Max() { byte[] f = TwoTensorFile(); PutU64(f, OffsetAt(f, "second", 1), ulong.MaxValue - 31); Rejects(f, "'second'", "outside the file"); }

    [Fact] public void DataEndsPastTheFile() { byte[] f = TwoTensorFile(); PutU64(f, OffsetAt(f, "second", 1), 96); Rejects(f, "'second'", "outside the file"); }

    [Fact] public void OverlappingTensors() { byte[] f = TwoTensorFile(); PutU64(f, OffsetAt(f, "second", 1), 32); Rejects(f, "'first'", "'second'", "overlap"); }

    [Fact] public void IdenticalOffsets() { byte[] f = TwoTensorFile(); PutU64(f, OffsetAt(f, "second", 1), 0); Rejects(f, "overlap"); }

    [Fact] public void DuplicateTensorName()
    {
        var w = new GgufWriter();
        w.AddTensor(TensorData.FromBytes("dup.a", DType.F32, [4], new byte[16]));
        w.AddTensor(TensorData.FromBytes("dup.b", DType.F32, [4], new byte[16]));
        byte[] f = ToBytes(w);
        f[After(f, "dup.b") - 1] = (byte)'a';
        Rejects(f, "duplicate tensor name 'dup.a'");
    }

    [Fact] public void EmptyTensorName()
    {
        var w = new GgufWriter();
        w.AddTensor(TensorData.FromBytes("x", DType.F32, [4], new byte[16]));
        byte[] f = ToBytes(w);
        int at = IndexOf(f, "x");
        // Drop the name's one byte and record length 0; the rest of the file shifts by one.
        byte[] cut = [.. f[..(at - 8)], .. new byte[8], .. f[(at + 1)..]];
        Rejects(cut, "empty name");
    }

    [Fact] public void DuplicateMetadataKey()
    {
        var w = new GgufWriter();
        w.AddUInt32("key.a", 1);
        w.AddUInt32("key.b", 2);
        byte[] f = ToBytes(w);
        f[After(f, "key.b") - 1] = (byte)'a';
        Rejects(f, "duplicate metadata key 'key.a'");
    }

    // ---- UTF-8 ----

    [Fact] public void InvalidUtf8InKey() { byte[] f = SmallValidFile(); f[IndexOf(f, "test.count")] = 0xFF; Rejects(f, "not valid UTF-8"); }

    [Fact] public void InvalidUtf8InStringValue() { byte[] f = SmallValidFile(); f[After(f, "general.architecture") + 12] = 0xC0; Rejects(f, "general.architecture", "not valid UTF-8"); }

    [Fact] public void InvalidUtf8InStringArray() { byte[] f = SmallValidFile(); f[IndexOf(f, "▁d")] = 0x80; Rejects(f, "test.tokens", "not valid UTF-8"); }

    [Fact] public void InvalidUtf8InTensorName() { byte[] f = SmallValidFile(); f[IndexOf(f, "t.q8") + 1] = 0xFE; Rejects(f, "tensor 1", "not valid UTF-8"); }

    [Fact] public void TruncatedUtf8Sequence() { byte[] f = SmallValidFile(); f[IndexOf(f, "▁d") + 2] = (byte)'d'; Rejects(f, "not valid UTF-8"); }

    // ---- alignment ----

    [Theory]
    [InlineData(0u)]
    [InlineData(48u)]
    [InlineData(0x8000_0001u)]
    public void AlignmentNotAPowerOfTwo(uint alignment)
    {
        var w = new GgufWriter { Alignment = 64 };
        w.AddTensor(TensorData.FromBytes("t", DType.F32, [4], new byte[16]));
        byte[] f = ToBytes(w);
        PutU32(f, After(f, GgufFile.AlignmentKey) + 4, alignment);
        Rejects(f, GgufFile.AlignmentKey, "power of two");
    }

    [Fact] public void AlignmentOfWrongType()
    {
        var w = new GgufWriter();
        w.AddString("general.alignmenX", "32");
        byte[] f = ToBytes(w);
        f[After(f, "general.alignmenX") - 1] = (byte)'t';
        Rejects(f, GgufFile.AlignmentKey, "STRING");
    }

    [Fact] public void AlignmentLargerThanFile()
    {
        var w = new GgufWriter { Alignment = 1u << 30 };
        w.AddTensor(TensorData.FromBytes("t", DType.F32, [4], new byte[16]));
        // Drop the gigabyte of padding: keep the header, then the 16 data bytes.
        using var ms = new MemoryStream();
        var sink = new HeaderOnlyStream(ms, 4096);
        Assert.ThrowsAny<Exception>(() => w.WriteTo(sink));
        Rejects(ms.ToArray(), "outside the file");
    }

    /// <summary>Keeps the first <c>limit</c> bytes and then aborts the write.</summary>
    private sealed class HeaderOnlyStream(Stream inner, int limit) : Stream
    {
        public override void Write(byte[] buffer, int offset, int count)
        {
            int keep = (int)Math.Min(count, limit - inner.Length);
            inner.Write(buffer, offset, keep);
            if (keep < count) throw new IOException("enough");
        }

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => inner.Length;
        public override long Position { get => inner.Length; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
