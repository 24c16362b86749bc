// Sharded checkpoints with a broken model.safetensors.index.json or inconsistent shards must fail naming the index.
using System.Text.Json;
using Pregate.Core;
using Pregate.Formats.Safetensors;
using Xunit.Abstractions;
using static Pregate.Tests.Safetensors.SafetensorsTestFiles;

namespace Pregate.Tests.Safetensors;

public sealed class SafetensorsCheckpointTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempFolder _dir = new();

    public void Dispose() => _dir.Dispose();

    private string IndexPath => _dir.File(SafetensorsCheckpoint.IndexFileName);

    /// <summary>Two shards: s1 holds a and b, s2 holds c.</summary>
    private void WriteShards()
    {
        SafetensorsWriter.WriteFile(_dir.File("s1.safetensors"),
            [RandomTensor("a", DType.F32, [2], 1).Data, RandomTensor("b", DType.F32, [3], 2).Data]);
        SafetensorsWriter.WriteFile(_dir.File("s2.safetensors"), [RandomTensor("c", DType.F16, [4], 3).Data]);
    }

    private void WriteIndex(string weightMapJson) =>
        File.WriteAllText(IndexPath, "{\"metadata\": {\"total_size\": 28}, \"weight_map\": " + weightMapJson + "}");

    private void Rejected(string expected)
    {
        var e = Assert.Throws<ModelFormatException>(() => SafetensorsCheckpoint.Open(_dir.Path).Dispose());
        output.WriteLine(e.Message);
        Assert.Contains(expected, e.Message);
    }

    private void RejectedNamingIndex(string expected)
    {
        var e = Assert.Throws<ModelFormatException>(() => SafetensorsCheckpoint.Open(_dir.Path).Dispose());
        output.WriteLine(e.Message);
        Assert.Equal(IndexPath, e.FilePath);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void HandWrittenIndexOpens()
    {
        WriteShards();
        WriteIndex("""{"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"}""");
        using var ckpt = SafetensorsCheckpoint.Open(_dir.Path);
        Assert.Equal(2, ckpt.Files.Count);
        Assert.Equal(["a", "b", "c"], ckpt.Tensors.Select(t => t.Name));
        Assert.Equal(IndexPath, ckpt.IndexPath);
        Assert.EndsWith("s2.safetensors", ckpt.GetFile("c").Path);
    }

    [Fact]
    public void ModelSafetensorsIsPreferredOverAnIndex()
    {
        SafetensorsWriter.WriteFile(_dir.File(SafetensorsCheckpoint.SingleFileName), [RandomTensor("only", DType.F32, [1], 1).Data]);
        WriteIndex("""{"a": "missing.safetensors"}""");
        using var ckpt = SafetensorsCheckpoint.Open(_dir.Path);
        Assert.Equal(["only"], ckpt.Tensors.Select(t => t.Name));
    }

    [Fact]
    public void EmptyFolder() => Rejected("neither model.safetensors nor model.safetensors.index.json");

    [Fact]
    public void PathDoesNotExist()
    {
        var e = Assert.Throws<ModelFormatException>(() => SafetensorsCheckpoint.Open(_dir.File("nowhere")));
        Assert.Contains("no such file or folder", e.Message);
    }

    [Fact]
    public void MissingShard()
    {
        WriteShards();
        WriteIndex("""{"a": "s1.safetensors", "b": "s1.safetensors", "c": "s3.safetensors"}""");
        RejectedNamingIndex("shard 's3.safetensors' does not exist");
    }

    [Fact]
    public void IndexedTensorNotInItsShard()
    {
        WriteShards();
        WriteIndex("""{"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors", "d": "s2.safetensors"}""");
        RejectedNamingIndex("tensor 'd' is listed in shard 's2.safetensors', which does not contain it");
    }

    [Fact]
    public void IndexedTensorListedInTheWrongShard()
    {
        WriteShards();
        WriteIndex("""{"a": "s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"}""");
        RejectedNamingIndex("tensor 'b' is listed in shard 's2.safetensors'");
    }

    [Fact]
    public void ShardHoldsATensorTheIndexDoesNotList()
    {
        WriteShards();
        WriteIndex("""{"a": "s1.safetensors", "c": "s2.safetensors"}""");
        RejectedNamingIndex("holds tensor 'b', which the index does not list");
    }

    [Fact]
    public void TensorPresentInTwoShards()
    {
        WriteShards();
        SafetensorsWriter.WriteFile(_dir.File("s3.safetensors"), [RandomTensor("a", DType.F32, [2], 9).Data, RandomTensor("d", DType.F32, [1], 8).Data]);
        WriteIndex("""{"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors", "d": "s3.safetensors"}""");
        RejectedNamingIndex("appears in two shards");
    }

    [Fact]
    public void TensorListedTwiceInTheWeightMap()
    {
        WriteShards();
        WriteIndex("""{"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors", "a": "s2.safetensors"}""");
        RejectedNamingIndex("lists tensor 'a' twice");
    }

    [Theory]
    [InlineData("../s1.safetensors")]
    [InlineData("sub/../../s1.safetensors")]
    [InlineData("..\\s1.safetensors")]
    [InlineData("/etc/passwd")]
    [InlineData("")]
    public void ShardNameLeavingTheFolder(string shard)
    {
        WriteShards();
        WriteIndex("{\"a\": " + JsonSerializer.Serialize(shard) + "}");
        RejectedNamingIndex("must be a file name inside the checkpoint folder");
    }

    [Fact]
    public void ShardInASubfolderIsAllowed()
    {
        Directory.CreateDirectory(_dir.File("shards"));
        SafetensorsWriter.WriteFile(_dir.File("shards/s.safetensors"), [RandomTensor("a", DType.F32, [2], 1).Data]);
        WriteIndex("""{"a": "shards/s.safetensors"}""");
        using var ckpt = SafetensorsCheckpoint.Open(_dir.Path);
        Assert.Single(ckpt.Tensors);
    }

    [Fact]
    public void IndexIsNotJson()
    {
        File.WriteAllText(IndexPath, "{\"weight_map\": {\"a\": ");
        RejectedNamingIndex("not valid JSON");
    }

    [Fact]
    public void IndexIsNotAnObject()
    {
        File.WriteAllText(IndexPath, "[]");
        RejectedNamingIndex("not a JSON object");
    }

    [Fact]
    public void IndexLacksWeightMap()
    {
        File.WriteAllText(IndexPath, "{\"metadata\": {}}");
        RejectedNamingIndex("lacks 'weight_map'");
    }

    [Fact]
    public void WeightMapIsEmpty()
    {
        WriteIndex("{}");
        RejectedNamingIndex("lists no tensors");
    }

    [Fact]
    public void WeightMapIsNotAnObject()
    {
        WriteIndex("[\"s1.safetensors\"]");
        RejectedNamingIndex("'weight_map' must be an object");
    }

    [Fact]
    public void WeightMapValueIsNotAString()
    {
        WriteIndex("{\"a\": 1}");
        RejectedNamingIndex("must be a shard file name string");
    }

    [Fact]
    public void CorruptShardNamesTheShard()
    {
        WriteShards();
        File.WriteAllBytes(_dir.File("s2.safetensors"), [1, 2, 3]);
        WriteIndex("""{"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"}""");
        var e = Assert.Throws<ModelFormatException>(() => SafetensorsCheckpoint.Open(_dir.Path).Dispose());
        output.WriteLine(e.Message);
        Assert.EndsWith("s2.safetensors", e.FilePath);
    }
}
