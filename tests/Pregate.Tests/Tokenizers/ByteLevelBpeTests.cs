// Byte-level BPE (GPT-2 / Qwen / OLMoE style): a tokenizer.json trained by ByteLevelBpeTrainer, variants with
// Qwen2 / Llama-3 pre-tokenizers and NFC, all checked id-for-id against the Hugging Face Rust tokenizers.
using System.Diagnostics;
using System.Text.Json.Nodes;
using Pregate.Formats.Tokenizers;
using Xunit.Abstractions;
using static Pregate.Tests.Tokenizers.TokenizerTestSupport;

namespace Pregate.Tests.Tokenizers;

public sealed class ByteLevelBpeTests(ITestOutputHelper output) : IDisposable
{
    private static readonly string[] Specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

    private static readonly string[] SpecialSamples =
    [
        "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n",
        "text<|endoftext|>more text<|endoftext|>",
        "<|endoftext|>",
        "a<|im_end|><|im_start|>b",
        "broken <|im_sta rt|> marker and <|endoftext",
    ];

    private readonly string _dir = TempDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // Training text that also covers the samples, so merges span multi-byte characters and word boundaries matter.
    private static TrainedByteLevelBpe TrainCovering(int vocabSize) =>
        ByteLevelBpeTrainer.Train(ByteLevelBpeTrainer.BuiltInText + string.Concat(Enumerable.Repeat(string.Join("\n", Samples), 3)), vocabSize, Specials);

    private int CompareWithHuggingFace(string tokenizerJson, string name, IEnumerable<string> texts)
    {
        string path = WriteTemp(_dir, name, tokenizerJson);
        var hf = new global::Tokenizers.DotNet.Tokenizer(path);
        TextTokenizer mine = TokenizerLoader.FromHuggingFaceJson(path, null);
        int mismatches = 0;
        foreach (string text in texts)
        {
            int[] expected = HfEncode(hf, text);
            int[] actual = mine.Encode(text, addBos: false).ToArray();
            if (!expected.SequenceEqual(actual))
            {
                mismatches++;
                output.WriteLine($"MISMATCH {name} '{Escape(text)}'\n  hf   {Show(expected)}\n  ours {Show(actual)}");
            }
            string hfText = hf.Decode(expected.Select(x => (uint)x).ToArray());
            Assert.Equal(hfText, mine.Decode(actual, skipSpecialTokens: true));
        }
        return mismatches;
    }

    [Fact]
    public void TrainedTokenizer_MatchesHuggingFaceIds()
    {
        TrainedByteLevelBpe trained = TrainCovering(1200);
        int n = 0, mismatches = CompareWithHuggingFace(trained.ToTokenizerJson(), "trained.json", Samples.Concat(SpecialSamples));
        n += Samples.Length + SpecialSamples.Length;
        output.WriteLine($"{n} texts, {mismatches} id mismatches against HF tokenizers (tolerance 0)");
        Assert.Equal(0, mismatches);
    }

    [Fact]
    public void Qwen2StyleSplitWithNfc_MatchesHuggingFaceIds()
    {
        JsonObject json = JsonNode.Parse(TrainCovering(1200).ToTokenizerJson())!.AsObject();
        json["normalizer"] = new JsonObject { ["type"] = "NFC" };
        json["pre_tokenizer"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = CodePointRegex.Qwen2Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false }),
        };
        string[] nfdInputs = ["cafe\u0301", "A\u030Angstr\u00F6m \u212B", "\u1100\u1161\u11A8 \uAC01", "a\u0301\u0328 q\u0307\u0323", "\u0915\u093C \u0958"];
        int mismatches = CompareWithHuggingFace(json.ToJsonString(), "qwen2-style.json", Samples.Concat(SpecialSamples).Concat(nfdInputs));
        output.WriteLine($"Qwen2-style (NFC + Split + ByteLevel): {mismatches} id mismatches (tolerance 0)");
        Assert.Equal(0, mismatches);
    }

    [Fact]
    public void Llama3StyleIgnoreMergesAndPrefixSpace_MatchHuggingFaceIds()
    {
        JsonObject json = JsonNode.Parse(TrainCovering(1500).ToTokenizerJson())!.AsObject();
        json["pre_tokenizer"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = CodePointRegex.Llama3Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = false, ["use_regex"] = false }),
        };
        json["model"]!["ignore_merges"] = true;
        int mismatches = CompareWithHuggingFace(json.ToJsonString(), "llama3-style.json", Samples.Concat(SpecialSamples));
        output.WriteLine($"Llama3-style (Split + ByteLevel prefix space, ignore_merges): {mismatches} id mismatches (tolerance 0)");
        Assert.Equal(0, mismatches);
    }

    [Fact]
    public void DecodeOfEncode_IsIdentity_IncludingSpecialTokens()
    {
        TextTokenizer tok = TrainCovering(800).CreateTokenizer(null, "<|endoftext|>");
        foreach (string text in Samples.Concat(SpecialSamples))
        {
            Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: false)));
        }
    }

    [Fact]
    public void SpecialTokens_AreSingleIdsAndFlagged()
    {
        TrainedByteLevelBpe trained = TrainCovering(800);
        TextTokenizer tok = trained.CreateTokenizer(null, "<|im_end|>");
        int start = tok.TokenToId("<|im_start|>")!.Value, end = tok.TokenToId("<|im_end|>")!.Value;
        IReadOnlyList<int> ids = tok.Encode("<|im_start|>x<|im_end|>", addBos: false);
        Assert.Equal(start, ids[0]);
        Assert.Equal(end, ids[^1]);
        Assert.True(tok.IsSpecial(start));
        Assert.False(tok.IsSpecial(ids[1]));
        Assert.Equal([end], tok.EosIds);
        Assert.True(tok.IsEndOfGeneration(end));
        Assert.Null(tok.BosId);
        Assert.False(tok.AddBosToken);
        Assert.Equal("x", tok.Decode(ids, skipSpecialTokens: true));
        Assert.Equal("<|im_start|>", tok.TokenText(start));
        Assert.Equal(trained.VocabSize, tok.VocabSize);
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.TokenText(tok.VocabSize));
    }

    [Fact]
    public void BosFromConfig_IsAddedOnRequest()
    {
        TextTokenizer tok = TrainCovering(800).CreateTokenizer("<|endoftext|>", "<|im_end|>");
        int bos = tok.TokenToId("<|endoftext|>")!.Value;
        Assert.Equal(bos, tok.BosId);
        Assert.True(tok.AddBosToken);
        Assert.Equal(bos, tok.Encode("hi", addBos: true)[0]);
        Assert.NotEqual(bos, tok.Encode("hi", addBos: false)[0]);
        Assert.Equal([bos], tok.Encode("", addBos: true));
        Assert.Empty(tok.Encode("", addBos: false));
    }

    [Fact]
    public void StreamDecoder_EmitsExactlyTheText_WithMultiByteCharactersSplitAcrossTokens()
    {
        TextTokenizer tok = ByteLevelBpeTrainer.Train(ByteLevelBpeTrainer.BuiltInText, 600, Specials).CreateTokenizer(null, null);
        int heldBack = 0;
        foreach (string text in Samples.Concat(SpecialSamples))
        {
            IReadOnlyList<int> ids = tok.Encode(text, addBos: false);
            TokenStreamDecoder stream = tok.CreateStreamDecoder();
            var pieces = new List<string>();
            foreach (int id in ids)
            {
                string piece = stream.Append(id);
                Assert.DoesNotContain('\uFFFD', piece);
                if (piece.Length == 0) heldBack++;
                pieces.Add(piece);
            }
            pieces.Add(stream.Flush());
            Assert.Equal(text, string.Concat(pieces));
        }
        output.WriteLine($"{heldBack} tokens completed no character (bytes held until the character was whole)");
        Assert.True(heldBack > 10);
    }

    [Fact]
    public void StreamDecoder_FlushEmitsReplacementForAnUnfinishedCharacter()
    {
        TextTokenizer tok = ByteLevelBpeTrainer.Train(ByteLevelBpeTrainer.BuiltInText, 400, []).CreateTokenizer(null, null);
        IReadOnlyList<int> ids = tok.Encode("🧪", addBos: false);
        Assert.Equal(4, ids.Count); // four byte tokens: nothing in the sample text merges them
        TokenStreamDecoder stream = tok.CreateStreamDecoder();
        Assert.Equal("", stream.Append(ids[0]) + stream.Append(ids[1]));
        Assert.Equal("\uFFFD", stream.Flush());
        Assert.Equal("\uFFFD", tok.Decode(ids.Take(2)));
    }

    [Fact]
    public void GgufGpt2Vocabulary_FromTheSameTraining_GivesTheSameIds()
    {
        TrainedByteLevelBpe trained = TrainCovering(1200);
        TextTokenizer fromJson = trained.CreateTokenizer(null, "<|endoftext|>");
        TextTokenizer fromGguf = TokenizerLoader.FromGgufVocab(trained.ToGgufVocabulary(null, "<|endoftext|>"), "synthetic.gguf");
        foreach (string text in Samples.Concat(SpecialSamples))
        {
            IReadOnlyList<int> ids = fromJson.Encode(text, addBos: false);
            Assert.Equal(ids, fromGguf.Encode(text, addBos: false));
            Assert.Equal(fromJson.Decode(ids), fromGguf.Decode(ids));
        }
        Assert.Contains(fromJson.TokenToId("<|endoftext|>")!.Value, fromGguf.EosIds);
        Assert.True(fromGguf.IsSpecial(fromGguf.TokenToId("<|im_start|>")!.Value));
        Assert.Equal(fromJson.VocabSize, fromGguf.VocabSize);
    }

    [Fact]
    public void PaddedGgufVocabulary_TokenizesTheSame_AndPadsDecodeToNothing()
    {
        TrainedByteLevelBpe trained = ByteLevelBpeTrainer.Train(ByteLevelBpeTrainer.BuiltInText, 100_000, ["<|endoftext|>"]);
        output.WriteLine($"the built-in text supports {trained.Merges.Count} merges: vocabulary {trained.VocabSize}");
        GgufVocabulary padded = trained.ToGgufVocabulary(null, "<|endoftext|>", padToVocabSize: 4096);
        Assert.Equal(4096, padded.Tokens.Count);
        Assert.Equal($"[PAD{trained.VocabSize}]", padded.Tokens[trained.VocabSize]);
        TextTokenizer gguf = TokenizerLoader.FromGgufVocab(padded, "padded.gguf");
        TextTokenizer json = trained.CreateTokenizer(null, "<|endoftext|>");
        Assert.Equal(4096, gguf.VocabSize);
        foreach (string text in Samples) Assert.Equal(json.Encode(text, false), gguf.Encode(text, false));
        Assert.Equal("ab", gguf.Decode([97, 4000, 98]));
        Assert.Equal("[PAD4000]", gguf.TokenText(4000));
        Assert.Throws<ArgumentOutOfRangeException>(() => trained.ToGgufVocabulary(null, null, padToVocabSize: 10));
    }

    [Fact]
    public void Trainer_IsDeterministic_AndReportsItsShape()
    {
        TrainedByteLevelBpe a = ByteLevelBpeTrainer.Train(ByteLevelBpeTrainer.BuiltInText, 1024, ["<|endoftext|>"]);
        TrainedByteLevelBpe b = ByteLevelBpeTrainer.Train(ByteLevelBpeTrainer.BuiltInText, 1024, ["<|endoftext|>"]);
        Assert.Equal(a.ToTokenizerJson(), b.ToTokenizerJson());
        Assert.Equal(1024, a.VocabSize);
        Assert.Equal(1023, a.SpecialTokenIds[0]);
        Assert.Equal(1024 - 256 - 1, a.Merges.Count);
        Assert.Equal(ByteLevelAlphabet.ByteToChar((byte)' ').ToString(), a.Tokens[32]);
        Assert.All(a.Merges, m => Assert.Equal(2, m.Split(' ').Length));
        Assert.Equal(GgufTokenType.Control, a.GgufTokenTypes[1023]);

        // A vocabulary larger than the text can fill stops when no pair is left.
        TrainedByteLevelBpe small = ByteLevelBpeTrainer.Train("abab abab", 5000, []);
        Assert.True(small.VocabSize < 270, $"vocab {small.VocabSize}");
        Assert.Throws<ArgumentOutOfRangeException>(() => ByteLevelBpeTrainer.Train("x", 256, ["<s>"]));
        Assert.Throws<ArgumentException>(() => ByteLevelBpeTrainer.Train("x", 300, ["<s>", "<s>"]));
    }

    [Fact]
    public void Trainer_On100KB_PrintsItsTime()
    {
        // ~100 KB of text: the built-in sample's words reshuffled with a fixed seed.
        var rng = new Random(1234);
        string[] words = ByteLevelBpeTrainer.BuiltInText.Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
        var sb = new System.Text.StringBuilder();
        while (sb.Length < 100_000) sb.Append(words[rng.Next(words.Length)]).Append(rng.Next(12) == 0 ? "\n" : " ");
        var sw = Stopwatch.StartNew();
        TrainedByteLevelBpe trained = ByteLevelBpeTrainer.Train(sb.ToString(), 3000, ["<|endoftext|>"]);
        sw.Stop();
        output.WriteLine($"trained {trained.Merges.Count} merges on {sb.Length} chars in {sw.Elapsed.TotalMilliseconds:F0} ms");
        Assert.True(trained.Merges.Count > 500);

        // Encoding throughput on the same text (first run fills the word cache; second is the cached rate).
        TextTokenizer tok = trained.CreateTokenizer(null, "<|endoftext|>");
        string text = sb.ToString();
        for (int run = 0; run < 2; run++)
        {
            sw.Restart();
            int count = tok.Encode(text, addBos: false).Count;
            sw.Stop();
            output.WriteLine($"encode run {run}: {count} tokens in {sw.Elapsed.TotalMilliseconds:F1} ms ({count / sw.Elapsed.TotalSeconds / 1e6:F2} M tokens/s)");
            Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: false)));
        }
    }

    [Fact]
    public void SaveWritesTheJsonAtomically_AndItLoads()
    {
        TrainedByteLevelBpe trained = ByteLevelBpeTrainer.Train(ByteLevelBpeTrainer.BuiltInText, 512, ["<|endoftext|>"]);
        string path = Path.Combine(_dir, "sub", "tokenizer.json");
        trained.Save(path);
        trained.SaveTokenizerConfig(Path.Combine(_dir, "sub", "tokenizer_config.json"), null, "<|endoftext|>");
        Assert.Equal(trained.ToTokenizerJson(), File.ReadAllText(path));
        TextTokenizer tok = TokenizerLoader.FromHuggingFaceDirectory(Path.Combine(_dir, "sub"));
        Assert.Equal([511], tok.EosIds);
        Assert.Equal(["tokenizer.json", "tokenizer_config.json"], Directory.GetFiles(Path.Combine(_dir, "sub")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }
}
