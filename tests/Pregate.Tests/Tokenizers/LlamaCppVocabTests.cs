// GGUF vocabularies checked against llama.cpp itself (LLamaSharp, vocab-only load of a GGUF written here with
// no tensors): token ids for the "gpt2" (byte-level BPE) and "llama" (SentencePiece) models, and per-token pieces.
using System.Text;
using LLama;
using LLama.Common;
using Pregate.Formats.Tokenizers;
using Xunit.Abstractions;
using static Pregate.Tests.Tokenizers.TokenizerTestSupport;

namespace Pregate.Tests.Tokenizers;

public sealed class LlamaCppVocabTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = TempDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly string[] SpecialSamples =
    [
        "<|im_start|>user\nHello<|im_end|>\n",
        "a<|endoftext|>b",
        "<s>system</s> text",
    ];

    private void CompareWithLlamaCpp(GgufVocabulary vocab, string name)
    {
        string path = Path.Combine(_dir, name);
        VocabOnlyGguf.Write(path, vocab);
        TextTokenizer mine = TokenizerLoader.FromGgufVocab(vocab, path);
        using LLamaWeights weights = LLamaWeights.LoadFromFile(new ModelParams(path) { VocabOnly = true, GpuLayerCount = 0 });
        int mismatches = 0, pieceMismatches = 0, tokens = 0;
        foreach (string text in Samples.Concat(SpecialSamples))
        {
            int[] expected = weights.Tokenize(text, add_bos: false, special: true, Encoding.UTF8).Select(t => (int)t).ToArray();
            int[] actual = mine.Encode(text, addBos: false).ToArray();
            tokens += actual.Length;
            if (!expected.SequenceEqual(actual))
            {
                mismatches++;
                output.WriteLine($"MISMATCH {name} '{Escape(text)}'\n  llama.cpp {Show(expected)}\n  ours      {Show(actual)}");
            }
            foreach (int id in actual)
            {
                var buffer = new byte[256];
                uint n = weights.NativeHandle.TokenToSpan(id, buffer, lstrip: 0, special: true);
                mine.Pieces.TryGetBytes(id, isFirst: false, out byte[] ours);
                if (!buffer.AsSpan(0, (int)n).SequenceEqual(ours))
                {
                    pieceMismatches++;
                    output.WriteLine($"PIECE {id} '{Escape(mine.TokenText(id))}': llama.cpp {Convert.ToHexString(buffer, 0, (int)n)} ours {Convert.ToHexString(ours)}");
                }
            }
        }
        output.WriteLine($"{name}: {tokens} tokens, {mismatches} texts with different ids, {pieceMismatches} different pieces (tolerance 0)");
        Assert.Equal(0, mismatches);
        Assert.Equal(0, pieceMismatches);
    }

    [Fact]
    public void Gpt2Vocabulary_MatchesLlamaCpp()
    {
        TrainedByteLevelBpe trained = ByteLevelBpeTrainer.Train(
            ByteLevelBpeTrainer.BuiltInText + string.Join("\n", Samples), 700, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
        CompareWithLlamaCpp(trained.ToGgufVocabulary(null, "<|endoftext|>"), "gpt2-vocab.gguf");
    }

    [Fact]
    public void LlamaVocabulary_MatchesLlamaCpp()
    {
        List<(string Piece, float Score, int Type)> pieces = SentencePieceModelTests.RandomScoredPieces(seed: 21);
        CompareWithLlamaCpp(new GgufVocabulary
        {
            Model = "llama",
            Tokens = pieces.Select(p => p.Piece).ToArray(),
            Scores = pieces.Select(p => p.Score).ToArray(),
            TokenTypes = pieces.Select(p => p.Type).ToArray(),
            BosId = 1,
            EosId = 2,
            UnknownId = 0,
        }, "llama-vocab.gguf");
    }
}

/// <summary>Writes a GGUF v3 file with llama hyper-parameters and a tokenizer, and no tensors (for vocab-only loads).</summary>
internal static class VocabOnlyGguf
{
    private const uint TypeUInt32 = 4, TypeInt32 = 5, TypeFloat32 = 6, TypeBool = 7, TypeString = 8, TypeArray = 9;

    public static void Write(string path, GgufVocabulary v)
    {
        var kvs = new List<Action<BinaryWriter>>();
        void Kv(string key, uint type, Action<BinaryWriter> value) => kvs.Add(w => { Str(w, key); w.Write(type); value(w); });
        Kv("general.architecture", TypeString, w => Str(w, "llama"));
        Kv("llama.context_length", TypeUInt32, w => w.Write(64u));
        Kv("llama.embedding_length", TypeUInt32, w => w.Write(16u));
        Kv("llama.block_count", TypeUInt32, w => w.Write(1u));
        Kv("llama.feed_forward_length", TypeUInt32, w => w.Write(32u));
        Kv("llama.attention.head_count", TypeUInt32, w => w.Write(2u));
        Kv("llama.attention.head_count_kv", TypeUInt32, w => w.Write(2u));
        Kv("llama.attention.layer_norm_rms_epsilon", TypeFloat32, w => w.Write(1e-5f));
        Kv("tokenizer.ggml.model", TypeString, w => Str(w, v.Model));
        if (v.Pre is not null) Kv("tokenizer.ggml.pre", TypeString, w => Str(w, v.Pre));
        Kv("tokenizer.ggml.tokens", TypeArray, w => { w.Write(TypeString); w.Write((ulong)v.Tokens.Count); foreach (string t in v.Tokens) Str(w, t); });
        if (v.Scores is not null) Kv("tokenizer.ggml.scores", TypeArray, w => { w.Write(TypeFloat32); w.Write((ulong)v.Scores.Count); foreach (float s in v.Scores) w.Write(s); });
        if (v.TokenTypes is not null) Kv("tokenizer.ggml.token_type", TypeArray, w => { w.Write(TypeInt32); w.Write((ulong)v.TokenTypes.Count); foreach (int t in v.TokenTypes) w.Write(t); });
        if (v.Merges is not null) Kv("tokenizer.ggml.merges", TypeArray, w => { w.Write(TypeString); w.Write((ulong)v.Merges.Count); foreach (string m in v.Merges) Str(w, m); });
        if (v.BosId is int bos) Kv("tokenizer.ggml.bos_token_id", TypeUInt32, w => w.Write((uint)bos));
        if (v.EosId is int eos) Kv("tokenizer.ggml.eos_token_id", TypeUInt32, w => w.Write((uint)eos));
        if (v.UnknownId is int unk) Kv("tokenizer.ggml.unknown_token_id", TypeUInt32, w => w.Write((uint)unk));
        if (v.AddBosToken is bool addBos) Kv("tokenizer.ggml.add_bos_token", TypeBool, w => w.Write(addBos));

        using var fs = File.Create(path);
        using var writer = new BinaryWriter(fs, Encoding.UTF8);
        writer.Write("GGUF"u8);
        writer.Write(3u);
        writer.Write(0UL); // tensors
        writer.Write((ulong)kvs.Count);
        foreach (Action<BinaryWriter> kv in kvs) kv(writer);
        while (fs.Position % 32 != 0) writer.Write((byte)0);
    }

    private static void Str(BinaryWriter w, string s)
    {
        byte[] b = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)b.Length);
        w.Write(b);
    }
}
