// Writer → reader round trips of safetensors files and sharded checkpoints: bytes, shapes, dtypes and metadata survive.
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Pregate.Core;
using Pregate.Formats;
using Pregate.Formats.Safetensors;
using Xunit.Abstractions;
using static Pregate.Tests.Safetensors.SafetensorsTestFiles;

namespace Pregate.Tests.Safetensors;

public sealed class SafetensorsRoundTripTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempFolder _dir = new();

    public void Dispose() => _dir.Dispose();

    public static TheoryData<DType> AllTypes => new() { DType.F32, DType.F16, DType.BF16, DType.F64, DType.I64, DType.I32, DType.I16, DType.I8 };

    private static readonly long[][] Shapes = [[], [7], [3, 5], [2, 3, 4], [2, 1, 3, 5], [0], [4, 0, 2]];

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void EveryDtypeAndRankSurvivesARoundTrip(DType type)
    {
        var tensors = Shapes.Select((s, i) => RandomTensor($"t{i}.rank{s.Length}", type, s, seed: 100 + i)).ToList();
        string path = _dir.File($"{DTypes.Name(type)}.safetensors");
        SafetensorsWriter.WriteFile(path, tensors.Select(t => t.Data).ToList());

        using var file = SafetensorsFile.Open(path);
        Assert.Equal(tensors.Count, file.Tensors.Count);
        Assert.Empty(file.Metadata);
        Assert.Equal(0, file.DataOffset % 8);
        for (int i = 0; i < tensors.Count; i++)
        {
            var view = file.GetTensor(tensors[i].Data.Name);
            Assert.Equal(type, view.Type);
            Assert.Equal(tensors[i].Data.Shape, view.Shape);
            Assert.Equal(tensors[i].Bytes, view.Bytes.ToArray());
            Assert.Equal(tensors[i].Data.Name, file.Tensors[i].Name); // file order is write order
        }
        output.WriteLine($"{DTypes.Name(type)}: {tensors.Count} tensors, header {file.DataOffset - 8} bytes, file {file.Length} bytes");
    }

    [Fact]
    public void MixedDtypesInOneFileKeepTheirBytes()
    {
        DType[] types = [DType.I8, DType.F32, DType.BF16, DType.I64, DType.F16];
        var tensors = types.Select((t, i) => RandomTensor($"mixed.{i}", t, [3, 3], seed: i)).ToList();
        string path = _dir.File("mixed.safetensors");
        SafetensorsWriter.WriteFile(path, tensors.Select(t => t.Data).ToList());
        using var file = SafetensorsFile.Open(path);
        foreach (var (data, bytes) in tensors)
        {
            Assert.True(file.TryGetTensor(data.Name, out var view));
            Assert.Equal(data.Type, view.Type);
            Assert.Equal(bytes, view.Bytes.ToArray());
        }
    }

    [Fact]
    public void MetadataSurvivesARoundTrip()
    {
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcödé \"quoted\" \\ slash", ["empty"] = "" };
        var (t, bytes) = RandomTensor("w", DType.F32, [2, 2], 1);
        string path = _dir.File("meta.safetensors");
        SafetensorsWriter.WriteFile(path, [t], metadata);
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(metadata.OrderBy(p => p.Key), file.Metadata.OrderBy(p => p.Key));
        Assert.Equal(bytes, file.GetTensor("w").Bytes.ToArray());
    }

    [Fact]
    public void EmptyMetadataAndNoTensorsMakeAValidFile()
    {
        string path = _dir.File("empty.safetensors");
        SafetensorsWriter.WriteFile(path, [], new Dictionary<string, string>());
        using var file = SafetensorsFile.Open(path);
        Assert.Empty(file.Tensors);
        Assert.Empty(file.Metadata);
        Assert.Equal(file.Length, file.DataOffset);
    }

    [Fact]
    public void HeaderIsPaddedWithSpacesToAMultipleOf8()
    {
        var (t, _) = RandomTensor("abc", DType.F16, [3], 2);
        string path = _dir.File("pad.safetensors");
        SafetensorsWriter.WriteFile(path, [t]);
        byte[] raw = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(raw);
        Assert.Equal(0, n % 8);
        string header = Encoding.UTF8.GetString(raw, 8, (int)n);
        string json = header.TrimEnd(' ');
        Assert.True(header.Length - json.Length < 8);
        using var doc = JsonDocument.Parse(json);
        Assert.Equal("F16", doc.RootElement.GetProperty("abc").GetProperty("dtype").GetString());
        output.WriteLine($"header: '{header}'");
    }

    [Fact]
    public void FileOffsetPointsAtTheTensorBytes()
    {
        var a = RandomTensor("a", DType.F32, [5], 3);
        var b = RandomTensor("b", DType.I16, [3], 4);
        string path = _dir.File("offsets.safetensors");
        SafetensorsWriter.WriteFile(path, [a.Data, b.Data]);
        byte[] raw = File.ReadAllBytes(path);
        using var file = SafetensorsFile.Open(path);
        long off = file.GetFileOffset("b");
        Assert.Equal(b.Bytes, raw.AsSpan((int)off, b.Bytes.Length).ToArray());
        Assert.Equal(file.DataOffset + a.Bytes.Length, off);
    }

    [Fact]
    public void ProgressReportsTheRunningFileSize()
    {
        var tensors = Enumerable.Range(0, 4).Select(i => RandomTensor($"p{i}", DType.F32, [10], i).Data).ToList();
        var reports = new List<long>();
        string path = _dir.File("progress.safetensors");
        SafetensorsWriter.WriteFile(path, tensors, null, new SynchronousProgress(reports));
        Assert.Equal(5, reports.Count); // header, then one per tensor
        Assert.Equal(new FileInfo(path).Length, reports[^1]);
        Assert.True(reports.Zip(reports.Skip(1)).All(p => p.First < p.Second));
    }

    [Fact]
    public void SmallShardLimitWritesSeveralShardsAndAnIndexThatReadBackEqual()
    {
        // 12 tensors of 64..(64+11*8) bytes with a 300-byte limit: several shards, none above the limit.
        var tensors = Enumerable.Range(0, 12)
            .Select(i => RandomTensor($"model.layers.{i}.weight", i % 2 == 0 ? DType.F32 : DType.BF16, [16 + 2 * i], seed: 50 + i))
            .ToList();
        var reports = new List<long>();
        var written = SafetensorsWriter.WriteCheckpoint(_dir.Path, tensors.Select(t => t.Data).ToList(), maxShardBytes: 300,
            bytesWritten: new SynchronousProgress(reports));
        output.WriteLine(string.Join(", ", written));

        Assert.Contains(SafetensorsCheckpoint.IndexFileName, written);
        Assert.False(File.Exists(_dir.File(SafetensorsCheckpoint.SingleFileName)));
        int shards = written.Count - 1;
        Assert.True(shards > 2, $"expected several shards, got {shards}");
        for (int s = 1; s <= shards; s++)
            Assert.Contains($"model-{s:D5}-of-{shards:D5}.safetensors", written);

        using var checkpoint = SafetensorsCheckpoint.Open(_dir.Path);
        Assert.Equal(shards, checkpoint.Files.Count);
        Assert.Equal(tensors.Count, checkpoint.Tensors.Count);
        foreach (var (data, bytes) in tensors)
        {
            var view = checkpoint.GetTensor(data.Name);
            Assert.Equal(data.Type, view.Type);
            Assert.Equal(data.Shape, view.Shape);
            Assert.Equal(bytes, view.Bytes.ToArray());
        }
        foreach (var f in checkpoint.Files)
        {
            Assert.True(f.Tensors.Sum(t => t.ByteLength) <= 300);
            Assert.Equal("pt", f.Metadata["format"]);
        }

        using var index = JsonDocument.Parse(File.ReadAllText(_dir.File(SafetensorsCheckpoint.IndexFileName)));
        long total = index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64();
        Assert.Equal(tensors.Sum(t => (long)t.Bytes.Length), total);
        Assert.Equal(tensors.Count, index.RootElement.GetProperty("weight_map").EnumerateObject().Count());
        long onDisk = written.Where(n => n.EndsWith(".safetensors")).Sum(n => new FileInfo(_dir.File(n)).Length);
        Assert.Equal(onDisk, reports[^1]);
    }

    [Fact]
    public void ATensorLargerThanTheShardLimitGetsAShardOfItsOwn()
    {
        var small = RandomTensor("small", DType.F32, [4], 1);
        var big = RandomTensor("big", DType.F32, [100], 2);
        var small2 = RandomTensor("small2", DType.F32, [4], 3);
        var written = SafetensorsWriter.WriteCheckpoint(_dir.Path, [small.Data, big.Data, small2.Data], maxShardBytes: 64);
        Assert.Equal(4, written.Count);
        using var checkpoint = SafetensorsCheckpoint.Open(_dir.Path);
        Assert.Equal(["small"], checkpoint.Files[0].Tensors.Select(t => t.Name));
        Assert.Equal(["big"], checkpoint.Files[1].Tensors.Select(t => t.Name));
        Assert.Equal(["small2"], checkpoint.Files[2].Tensors.Select(t => t.Name));
        Assert.Same(checkpoint.Files[1], checkpoint.GetFile("big"));
    }

    [Fact]
    public void EverythingWithinTheLimitWritesOneModelSafetensors()
    {
        var tensors = Enumerable.Range(0, 3).Select(i => RandomTensor($"w{i}", DType.F16, [8], i)).ToList();
        var written = SafetensorsWriter.WriteCheckpoint(_dir.Path, tensors.Select(t => t.Data).ToList(), maxShardBytes: 1 << 20,
            new Dictionary<string, string> { ["origin"] = "test" });
        Assert.Equal([SafetensorsCheckpoint.SingleFileName], written);
        Assert.False(File.Exists(_dir.File(SafetensorsCheckpoint.IndexFileName)));
        using var checkpoint = SafetensorsCheckpoint.Open(_dir.Path);
        Assert.Null(checkpoint.IndexPath);
        Assert.Equal("test", checkpoint.Files[0].Metadata["origin"]);
        Assert.Equal("pt", checkpoint.Files[0].Metadata["format"]);
        foreach (var (data, bytes) in tensors) Assert.Equal(bytes, checkpoint.GetTensor(data.Name).Bytes.ToArray());
        Assert.False(checkpoint.TryGetTensor("absent", out _));
        var e = Assert.Throws<ModelFormatException>(() => checkpoint.GetTensor("absent"));
        Assert.Contains("'absent'", e.Message);
    }

    [Fact]
    public void RewritingAFolderInTheOtherLayoutLeavesNoStaleEntryFile()
    {
        var tensors = Enumerable.Range(0, 4).Select(i => RandomTensor($"w{i}", DType.F32, [16], i).Data).ToList();
        SafetensorsWriter.WriteCheckpoint(_dir.Path, tensors, maxShardBytes: 1 << 20);
        SafetensorsWriter.WriteCheckpoint(_dir.Path, tensors, maxShardBytes: 64);
        Assert.False(File.Exists(_dir.File(SafetensorsCheckpoint.SingleFileName)));
        using (var sharded = SafetensorsCheckpoint.Open(_dir.Path)) Assert.Equal(4, sharded.Files.Count);
        SafetensorsWriter.WriteCheckpoint(_dir.Path, tensors, maxShardBytes: 1 << 20);
        Assert.False(File.Exists(_dir.File(SafetensorsCheckpoint.IndexFileName)));
        using var single = SafetensorsCheckpoint.Open(_dir.Path);
        Assert.Single(single.Files);
    }

    [Fact]
    public void CheckpointOpensASingleFileGivenByPath()
    {
        var (t, bytes) = RandomTensor("x", DType.I32, [6], 9);
        string path = _dir.File("custom-name.safetensors");
        SafetensorsWriter.WriteFile(path, [t]);
        using var checkpoint = SafetensorsCheckpoint.Open(path);
        Assert.Equal(bytes, checkpoint.GetTensor("x").Bytes.ToArray());
    }

    [Fact]
    public void WriteCheckpointWorksInsideAnAtomicDirectory()
    {
        var tensors = Enumerable.Range(0, 6).Select(i => RandomTensor($"w{i}", DType.F32, [32], i)).ToList();
        string target = _dir.File("ckpt");
        AtomicFile.WriteDirectory(target, tmp => SafetensorsWriter.WriteCheckpoint(tmp, tensors.Select(t => t.Data).ToList(), 256));
        using var checkpoint = SafetensorsCheckpoint.Open(target);
        Assert.Equal(6, checkpoint.Tensors.Count);
        Assert.True(checkpoint.Files.Count > 1);
    }

    [Fact]
    public void MissingTensorErrorNamesTheFileAndTheTensor()
    {
        var (t, _) = RandomTensor("present", DType.F32, [1], 0);
        string path = _dir.File("one.safetensors");
        SafetensorsWriter.WriteFile(path, [t]);
        using var file = SafetensorsFile.Open(path);
        var e = Assert.Throws<ModelFormatException>(() => file.GetTensor("model.absent.weight"));
        Assert.Contains("model.absent.weight", e.Message);
        Assert.Equal(path, e.FilePath);
    }

    [Fact]
    public void WriterRejectsDuplicateNames()
    {
        var (t, _) = RandomTensor("dup", DType.F32, [1], 0);
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.WriteFile(_dir.File("x.safetensors"), [t, t]));
        Assert.False(File.Exists(_dir.File("x.safetensors")));
    }

    [Fact]
    public void WriterRejectsQuantizedTypes()
    {
        var t = TensorData.FromBytes("q", DType.Q8_0, [32], new byte[34]);
        var e = Assert.Throws<ArgumentException>(() => SafetensorsWriter.WriteFile(_dir.File("q.safetensors"), [t]));
        Assert.Contains("q8_0", e.Message);
    }

    [Fact]
    public void WriterRejectsTheReservedMetadataName()
    {
        var t = TensorData.FromBytes("__metadata__", DType.F32, [1], new byte[4]);
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.WriteFile(_dir.File("m.safetensors"), [t]));
    }

    [Fact]
    public void WriterFailsAndLeavesNoFileWhenACallbackWritesTooFewBytes()
    {
        var t = new TensorData("short", DType.F32, [4], s => s.Write(new byte[12]));
        string path = _dir.File("short.safetensors");
        var e = Assert.Throws<InvalidOperationException>(() => SafetensorsWriter.WriteFile(path, [t]));
        Assert.Contains("short", e.Message);
        Assert.Empty(Directory.GetFiles(_dir.Path));
    }

    [Fact]
    public void WriterFailsAndLeavesNoFileWhenACallbackWritesTooManyBytes()
    {
        var t = new TensorData("long", DType.F32, [4], s => { s.Write(new byte[16]); s.WriteByte(0); });
        string path = _dir.File("long.safetensors");
        Assert.Throws<InvalidOperationException>(() => SafetensorsWriter.WriteFile(path, [t]));
        Assert.Empty(Directory.GetFiles(_dir.Path));
    }

    [Fact]
    public void WriterRejectsANonPositiveShardLimit()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => SafetensorsWriter.WriteCheckpoint(_dir.Path, [], 0));
    }

    /// <summary>Progress that records reports on the calling thread (Progress&lt;T&gt; posts them asynchronously).</summary>
    private sealed class SynchronousProgress(List<long> reports) : IProgress<long>
    {
        public void Report(long value) => reports.Add(value);
    }
}
