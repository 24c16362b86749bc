// Malformed or unsupported tokenizer files must fail with a ModelFormatException that names the file and the
// problem — never another exception, a hang, or a silent fallback.
using System.Text;
using System.Text.Json.Nodes;
using Pregate.Core;
using Pregate.Formats.Tokenizers;
using Xunit.Abstractions;
using static Pregate.Tests.Tokenizers.TokenizerTestSupport;

namespace Pregate.Tests.Tokenizers;

public sealed class MalformedTokenizerTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = TempDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string ValidJson() => ByteLevelBpeTrainer.Train(ByteLevelBpeTrainer.BuiltInText, 300, ["<|endoftext|>"]).ToTokenizerJson();

    private ModelFormatException Rejects(string json, string expectedInMessage, string? config = null)
    {
        string path = WriteTemp(_dir, "tokenizer.json", json);
        string? configPath = config is null ? null : WriteTemp(_dir, "tokenizer_config.json", config);
        var e = Assert.Throws<ModelFormatException>(() => TokenizerLoader.FromHuggingFaceJson(path, configPath));
        output.WriteLine(e.Message);
        Assert.Contains(expectedInMessage, e.Message);
        Assert.Equal(config is null ? path : configPath, e.FilePath);
        return e;
    }

    private static string Edit(Action<JsonObject> change)
    {
        JsonObject root = JsonNode.Parse(ValidJson())!.AsObject();
        change(root);
        return root.ToJsonString();
    }

    [Fact]
    public void InvalidJson() => Rejects(ValidJson()[..500], "invalid JSON");

    [Fact]
    public void NotAnObject() => Rejects("[1, 2, 3]", "not a JSON object");

    [Fact]
    public void MissingModel() => Rejects(Edit(r => r.Remove("model")), "no \"model\" section");

    [Theory]
    [InlineData("WordPiece")]
    [InlineData("Unigram")]
    [InlineData("WordLevel")]
    public void UnsupportedModelType(string type) => Rejects(Edit(r => r["model"]!["type"] = type), $"tokenizer model type '{type}' is not supported");

    [Fact]
    public void MergeReferencingUnknownToken() =>
        Rejects(Edit(r => r["model"]!["merges"]!.AsArray().Add("Ġzzzz Ġqqqq")), "refers to unknown token 'Ġzzzz'");

    [Fact]
    public void MergeMakingUnknownToken() => Rejects(Edit(r => r["model"]!["merges"]!.AsArray().Add("q z")), "which is not in the vocabulary");

    [Fact]
    public void MalformedMerge() => Rejects(Edit(r => r["model"]!["merges"]!.AsArray().Add("qz")), "is not two tokens separated by one space");

    [Fact]
    public void NegativeVocabId() => Rejects(Edit(r => r["model"]!["vocab"]!["zz-new"] = -4), "non-negative 32-bit integer");

    [Fact]
    public void DuplicateVocabId() => Rejects(Edit(r => r["model"]!["vocab"]!["zz-new"] = 5), "vocabulary id 5 is given to both");

    [Fact]
    public void HugeTokenId() => Rejects(Edit(r => r["model"]!["vocab"]!["zz-new"] = 2_000_000_000), "far beyond");

    [Fact]
    public void MissingDecoder() => Rejects(Edit(r => r.Remove("decoder")), "no \"decoder\" section");

    [Fact]
    public void UnsupportedNormalizer() => Rejects(Edit(r => r["normalizer"] = new JsonObject { ["type"] = "NFKC" }), "normalizer 'NFKC' is not supported");

    [Fact]
    public void UnsupportedPreTokenizer() => Rejects(Edit(r => r["pre_tokenizer"] = new JsonObject { ["type"] = "Whitespace" }), "pre-tokenizer 'Whitespace' is not supported");

    [Fact]
    public void BadSplitRegex() => Rejects(Edit(r => r["pre_tokenizer"] = new JsonObject
    {
        ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = "(?<" }, ["behavior"] = "Isolated", ["invert"] = false,
    }), "is not supported");

    [Fact]
    public void UnknownTokenNotInVocabulary() => Rejects(Edit(r => r["model"]!["unk_token"] = "<nope>"), "unk_token '<nope>'");

    [Fact]
    public void ConfigNamingAnUnknownBos() => Rejects(ValidJson(), "bos_token '<s>' is not a token", config: """{"bos_token": "<s>"}""");

    [Fact]
    public void ConfigWithInvalidJson() => Rejects(ValidJson(), "invalid JSON", config: """{"bos_token": """);

    [Fact]
    public void MutatedJson_EitherLoadsOrFailsCleanly()
    {
        byte[] valid = Encoding.UTF8.GetBytes(ValidJson());
        var rng = new Random(42);
        int rejected = 0, loaded = 0;
        for (int trial = 0; trial < 200; trial++)
        {
            byte[] bytes = (byte[])valid.Clone();
            if (trial % 2 == 0) bytes = bytes[..rng.Next(bytes.Length)];
            else for (int k = 0; k < 3; k++) bytes[rng.Next(bytes.Length)] = (byte)"0123456789{}[]\":,-ab \\"[rng.Next(22)];
            string path = Path.Combine(_dir, "mutated.json");
            File.WriteAllBytes(path, bytes);
            try
            {
                TextTokenizer t = TokenizerLoader.FromHuggingFaceJson(path, null);
                t.Decode(t.Encode("Hello wörld 👍 <|endoftext|>", addBos: true));
                loaded++;
            }
            catch (ModelFormatException e)
            {
                Assert.Equal(path, e.FilePath);
                rejected++;
            }
        }
        output.WriteLine($"200 mutated tokenizer.json files: {rejected} rejected with ModelFormatException, {loaded} loaded; no other exception");
        Assert.True(rejected > 100);
    }

    [Fact]
    public void StructurallyMutatedJson_EitherLoadsOrFailsCleanly()
    {
        // Replace one random node of the document (any section, vocab entry, merge, added token field) by a value
        // of another shape: the loader's type and range checks must catch what the JSON parser cannot.
        string valid = SentencePieceStyleJson.Build(metaspace: false);
        var rng = new Random(99);
        JsonNode?[] replacements =
        [
            null, 0, -1, 1.5, int.MaxValue, 3_000_000_000L, true, "", "x y", "<0xZZ>", "\u2581", new JsonArray(), new JsonArray("a", "b", "c"), new JsonObject(),
            new JsonObject { ["type"] = "Mystery" }, new JsonObject { ["type"] = "Sequence" }, new JsonObject { ["String"] = 4 },
        ];
        int rejected = 0, loaded = 0;
        for (int trial = 0; trial < 300; trial++)
        {
            JsonObject root = JsonNode.Parse(valid)!.AsObject();
            var nodes = new List<JsonNode>();
            Collect(root, nodes);
            JsonNode target = nodes[rng.Next(nodes.Count)];
            JsonNode? value = replacements[rng.Next(replacements.Length)]?.DeepClone();
            switch (target.Parent)
            {
                case JsonObject parent:
                    parent[target.GetPropertyName()] = value;
                    break;
                case JsonArray array:
                    array[target.GetElementIndex()] = value;
                    break;
            }
            string path = WriteTemp(_dir, "structural.json", root.ToJsonString());
            try
            {
                TextTokenizer t = TokenizerLoader.FromHuggingFaceJson(path, null);
                t.Decode(t.Encode("Hello wörld 👍 <s> the test</s>", addBos: true));
                loaded++;
            }
            catch (ModelFormatException e)
            {
                Assert.Equal(path, e.FilePath);
                rejected++;
            }
        }
        output.WriteLine($"300 structurally mutated tokenizer.json files: {rejected} rejected with ModelFormatException, {loaded} loaded; no other exception");
        Assert.True(rejected > 150, $"only {rejected} rejected");

        static void Collect(JsonNode node, List<JsonNode> nodes)
        {
            if (node.Parent is not null) nodes.Add(node);
            if (node is JsonObject o) foreach (var kv in o) { if (kv.Value is not null) Collect(kv.Value, nodes); }
            if (node is JsonArray a) foreach (JsonNode? item in a) { if (item is not null) Collect(item, nodes); }
        }
    }

    private ModelFormatException RejectsGguf(GgufVocabulary v, string expected)
    {
        var e = Assert.Throws<ModelFormatException>(() => TokenizerLoader.FromGgufVocab(v, "model.gguf"));
        output.WriteLine(e.Message);
        Assert.Contains(expected, e.Message);
        Assert.Equal("model.gguf", e.FilePath);
        return e;
    }

    [Fact]
    public void GgufVocabularyProblems()
    {
        GgufVocabulary gpt2 = ByteLevelBpeTrainer.Train(ByteLevelBpeTrainer.BuiltInText, 300, ["<|endoftext|>"]).ToGgufVocabulary(null, "<|endoftext|>");
        RejectsGguf(gpt2 with { Model = "bert" }, "tokenizer model 'bert' is not supported");
        RejectsGguf(gpt2 with { Tokens = [] }, "tokenizer.ggml.tokens is empty");
        RejectsGguf(gpt2 with { Scores = [1f, 2f] }, "tokenizer.ggml.scores has 2 entries");
        RejectsGguf(gpt2 with { TokenTypes = [1] }, "tokenizer.ggml.token_type has 1 entries");
        RejectsGguf(gpt2 with { EosId = 300 }, "tokenizer.ggml.eos_token_id 300 is outside the vocabulary");
        RejectsGguf(gpt2 with { BosId = -1 }, "tokenizer.ggml.bos_token_id -1 is outside the vocabulary");
        RejectsGguf(gpt2 with { Merges = null }, "tokenizer.ggml.merges is missing");
        RejectsGguf(gpt2 with { Merges = [.. gpt2.Merges!, "Ġzzz Ġqqq"] }, "refers to unknown token 'Ġzzz'");
        RejectsGguf(gpt2 with { Pre = "falcon" }, "pre-tokenizer 'falcon' is not supported");
        RejectsGguf(gpt2 with { Pre = null }, "tokenizer.ggml.pre is missing");
        RejectsGguf(gpt2 with { Tokens = [.. gpt2.Tokens.Take(299), "a"] }, "token 'a' appears twice");
        RejectsGguf(new GgufVocabulary { Model = "llama", Tokens = ["<unk>", "<0xZZ>"], TokenTypes = [2, 6] }, "byte token 1 '<0xZZ>' is not of the form <0xXX>");
    }
}
