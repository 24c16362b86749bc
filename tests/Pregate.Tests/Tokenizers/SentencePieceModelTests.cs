// SentencePiece BPE by score: tokenizer.model (a ModelProto written here) and the GGUF "llama" vocabulary,
// checked against Microsoft.ML.Tokenizers' SentencePiece implementation and against hand-worked cases.
using System.Text;
using Microsoft.ML.Tokenizers;
using Pregate.Core;
using Pregate.Formats.Tokenizers;
using Xunit.Abstractions;
using static Pregate.Tests.Tokenizers.TokenizerTestSupport;

namespace Pregate.Tests.Tokenizers;

public sealed class SentencePieceModelTests(ITestOutputHelper output) : IDisposable
{
    private const char Space = '\u2581';
    private readonly string _dir = TempDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Llama-like layout: unk, bos, eos, 256 byte pieces, then normal pieces with seeded random scores.</summary>
    internal static List<(string Piece, float Score, int Type)> RandomScoredPieces(int seed)
    {
        var pieces = new List<(string, float, int)>
        {
            ("<unk>", 0, GgufTokenType.Unknown), ("<s>", 0, GgufTokenType.Control), ("</s>", 0, GgufTokenType.Control),
        };
        for (int b = 0; b < 256; b++) pieces.Add(($"<0x{b:X2}>", 0, GgufTokenType.Byte));
        var seen = new HashSet<string>(pieces.Select(p => p.Item1));
        var rng = new Random(seed);
        foreach (char c in Space + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?'日本中文é")
        {
            if (seen.Add(c.ToString())) pieces.Add((c.ToString(), -1000 - pieces.Count, GgufTokenType.Normal));
        }
        // Substrings of escaped text, so merges compete: many overlapping pairs with random priorities.
        string corpus = Space + (ByteLevelBpeTrainer.BuiltInText[..2000] + " " + string.Join(" ", Samples)).Replace(' ', Space);
        for (int i = 0; i + 4 < corpus.Length; i += 1)
        {
            int len = 2 + rng.Next(4);
            string s = corpus.Substring(i, len);
            if (s.Any(char.IsSurrogate) || s.Any(c => c is '\n' or '\t' or '\r')) continue;
            if (rng.Next(3) == 0 && seen.Add(s)) pieces.Add((s, (float)(-rng.NextDouble() * 100), GgufTokenType.Normal));
        }
        return pieces;
    }

    [Fact]
    public void TokenizerModel_MatchesMicrosoftMlSentencePiece()
    {
        List<(string Piece, float Score, int Type)> pieces = RandomScoredPieces(seed: 7);
        byte[] proto = SentencePieceProtoWriter.Build(pieces);
        string path = Path.Combine(_dir, "tokenizer.model");
        File.WriteAllBytes(path, proto);
        TextTokenizer mine = TokenizerLoader.FromSentencePieceModel(path);
        using var stream = new MemoryStream(proto);
        LlamaTokenizer reference = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);

        int mismatches = 0, total = 0;
        foreach (string text in Samples.Append(ByteLevelBpeTrainer.BuiltInText[..1500]))
        {
            int[] expected = reference.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false).ToArray();
            int[] actual = mine.Encode(text, addBos: false).ToArray();
            total += actual.Length;
            if (!expected.SequenceEqual(actual))
            {
                mismatches++;
                output.WriteLine($"MISMATCH '{Escape(text)}'\n  ml.tokenizers {Show(expected)}\n  ours          {Show(actual)}");
            }
            Assert.Equal(reference.Decode(expected), mine.Decode(actual, skipSpecialTokens: true));
        }
        output.WriteLine($"{pieces.Count} pieces, {total} tokens, {mismatches} texts differ from Microsoft.ML.Tokenizers (tolerance 0)");
        Assert.Equal(0, mismatches);
        Assert.Equal(1, mine.BosId);
        Assert.Equal([2], mine.EosIds);
        Assert.True(mine.AddBosToken);
    }

    [Fact]
    public void GgufLlamaVocabulary_TokenizesLikeTheTokenizerModel()
    {
        List<(string Piece, float Score, int Type)> pieces = RandomScoredPieces(seed: 11);
        string path = Path.Combine(_dir, "tokenizer.model");
        File.WriteAllBytes(path, SentencePieceProtoWriter.Build(pieces));
        TextTokenizer fromModel = TokenizerLoader.FromSentencePieceModel(path);
        TextTokenizer fromGguf = TokenizerLoader.FromGgufVocab(new GgufVocabulary
        {
            Model = "llama",
            Tokens = pieces.Select(p => p.Piece).ToArray(),
            Scores = pieces.Select(p => p.Score).ToArray(),
            TokenTypes = pieces.Select(p => p.Type).ToArray(),
            BosId = 1,
            EosId = 2,
            UnknownId = 0,
        }, "test.gguf");
        foreach (string text in Samples.Append("<s>system</s> text <unk>"))
        {
            IReadOnlyList<int> ids = fromModel.Encode(text, addBos: true);
            Assert.Equal(ids, fromGguf.Encode(text, addBos: true));
            Assert.Equal(fromModel.Decode(ids), fromGguf.Decode(ids));
            if (!text.Contains('<')) Assert.Equal(text, fromGguf.Decode(ids, skipSpecialTokens: true));
        }
    }

    // Hand-worked llama.cpp SPM cases over a tiny vocabulary.
    private static TextTokenizer TinyLlama(bool? addSpacePrefix = null)
    {
        var tokens = new List<string> { "<unk>", "<s>", "</s>" };
        var types = new List<int> { GgufTokenType.Unknown, GgufTokenType.Control, GgufTokenType.Control };
        var scores = new List<float> { 0, 0, 0 };
        for (int b = 0; b < 256; b++)
        {
            tokens.Add($"<0x{b:X2}>");
            types.Add(GgufTokenType.Byte);
            scores.Add(0);
        }
        // id: 259 ▁, 260 a, 261 b, 262 c, 263 ab, 264 bc, 265 abc, 266 ▁a, 267 <|tool|> (user-defined), 268 unused
        (string, float, int)[] rest =
        [
            (Space.ToString(), -10, 1), ("a", -10, 1), ("b", -10, 1), ("c", -10, 1), ("ab", -2, 1), ("bc", -1, 1), ("abc", -0.5f, 1),
            (Space + "a", -5, 1), ("<|tool|>", 0, GgufTokenType.UserDefined), ("xyz", 0, GgufTokenType.Unused),
        ];
        foreach ((string t, float s, int ty) in rest)
        {
            tokens.Add(t);
            scores.Add(s);
            types.Add(ty);
        }
        return TokenizerLoader.FromGgufVocab(new GgufVocabulary
        {
            Model = "llama", Tokens = tokens, Scores = scores, TokenTypes = types, AddSpacePrefix = addSpacePrefix,
        }, "tiny.gguf");
    }

    [Fact]
    public void GgufLlama_HandWorkedPieces()
    {
        TextTokenizer tok = TinyLlama();
        string[] Pieces(string text, bool bos = false) => tok.Encode(text, bos).Select(tok.TokenText).ToArray();

        // "▁abc": bc (-1) beats ab (-2) and ▁a (-5); then a+bc = abc (-0.5) beats ▁+a.
        Assert.Equal([Space.ToString(), "abc"], Pieces("abc"));
        // "▁ab": ▁a (-5) vs ab (-2): ab wins, and ▁ab is not a piece.
        Assert.Equal([Space.ToString(), "ab"], Pieces("ab"));
        // "▁a" merges; "€" has no piece: bytes E2 82 AC.
        Assert.Equal([Space + "a", "<0xE2>", "<0x82>", "<0xAC>"], Pieces("a€"));
        // Control and user-defined pieces are matched in the text; each text run gets the space prefix (llama.cpp),
        // so the single space between </s> and <|tool|> becomes "▁▁".
        Assert.Equal(["<s>", Space + "a", "</s>", Space.ToString(), Space.ToString(), "<|tool|>", Space.ToString(), "abc"], Pieces("<s>a</s> <|tool|>abc"));
        Assert.Equal(["<s>", Space.ToString(), "abc"], Pieces("abc", bos: true));
        // A character outside the vocabulary becomes its bytes: 'd' → <0x64>; of "▁▁a" only "▁a" is a piece.
        Assert.Equal([Space.ToString(), "<0x64>", Space.ToString(), Space + "a"], Pieces("d  a"));
        Assert.Empty(Pieces(""));

        Assert.Equal(1, tok.BosId);
        Assert.Equal([2], tok.EosIds);
        Assert.True(tok.IsSpecial(1) && tok.IsSpecial(0));
        Assert.False(tok.IsSpecial(tok.TokenToId("<|tool|>")!.Value));
        Assert.Equal("abc€ d", tok.Decode(tok.Encode("abc€ d", addBos: true), skipSpecialTokens: true));
        Assert.Equal("<s> abc", tok.Decode(tok.Encode("abc", addBos: true)));
        Assert.Equal("", tok.Decode([tok.TokenToId("xyz")!.Value]));

        TextTokenizer noPrefix = TinyLlama(addSpacePrefix: false);
        Assert.Equal(["abc"], noPrefix.Encode("abc", false).Select(noPrefix.TokenText));
    }

    [Fact]
    public void UnsupportedOrBrokenTokenizerModel_IsAModelFormatException()
    {
        List<(string Piece, float Score, int Type)> pieces = RandomScoredPieces(seed: 3);
        string Write(string name, byte[] data)
        {
            string p = Path.Combine(_dir, name);
            File.WriteAllBytes(p, data);
            return p;
        }
        string unigram = Write("unigram.model", SentencePieceProtoWriter.Build(pieces, modelType: 1));
        var e = Assert.Throws<ModelFormatException>(() => TokenizerLoader.FromSentencePieceModel(unigram));
        Assert.Contains("UNIGRAM", e.Message);
        Assert.Equal(unigram, e.FilePath);

        string charsmap = Write("nfkc.model", SentencePieceProtoWriter.Build(pieces, charsmap: [1, 2, 3, 4]));
        Assert.Contains("charsmap", Assert.Throws<ModelFormatException>(() => TokenizerLoader.FromSentencePieceModel(charsmap)).Message);

        byte[] valid = SentencePieceProtoWriter.Build(pieces);
        var rng = new Random(5);
        int rejected = 0, accepted = 0;
        for (int trial = 0; trial < 300; trial++)
        {
            byte[] broken = (byte[])valid.Clone();
            if (trial % 2 == 0) broken = broken[..rng.Next(broken.Length)];
            else for (int k = 0; k < 4; k++) broken[rng.Next(broken.Length)] = (byte)rng.Next(256);
            string p = Write("broken.model", broken);
            try
            {
                TextTokenizer t = TokenizerLoader.FromSentencePieceModel(p);
                t.Encode("hello world café 日本", addBos: true);
                accepted++;
            }
            catch (ModelFormatException ex)
            {
                Assert.Equal(p, ex.FilePath);
                rejected++;
            }
        }
        output.WriteLine($"300 mutated tokenizer.model files: {rejected} rejected with ModelFormatException, {accepted} still loadable; no other exception");
    }
}

/// <summary>Writes a SentencePiece ModelProto (sentencepiece_model.proto field numbers).</summary>
internal static class SentencePieceProtoWriter
{
    public static byte[] Build(IReadOnlyList<(string Piece, float Score, int Type)> pieces, int modelType = 2, bool byteFallback = true, byte[]? charsmap = null)
    {
        var model = new MemoryStream();
        foreach ((string piece, float score, int type) in pieces)
        {
            var p = new MemoryStream();
            WriteBytes(p, 1, Encoding.UTF8.GetBytes(piece));
            WriteKey(p, 2, 5);
            p.Write(BitConverter.GetBytes(score));
            WriteVarintField(p, 3, (ulong)type);
            WriteBytes(model, 1, p.ToArray());
        }
        var trainer = new MemoryStream();
        WriteVarintField(trainer, 3, (ulong)modelType);
        WriteVarintField(trainer, 4, (ulong)pieces.Count);
        WriteVarintField(trainer, 35, byteFallback ? 1UL : 0UL);
        WriteVarintField(trainer, 40, 0);
        WriteVarintField(trainer, 41, 1);
        WriteVarintField(trainer, 42, 2);
        WriteVarintField(trainer, 43, unchecked((ulong)(long)-1));
        WriteBytes(model, 2, trainer.ToArray());
        var normalizer = new MemoryStream();
        WriteBytes(normalizer, 1, Encoding.UTF8.GetBytes(charsmap is null ? "identity" : "nmt_nfkc"));
        if (charsmap is not null) WriteBytes(normalizer, 2, charsmap);
        WriteVarintField(normalizer, 3, 1);
        WriteVarintField(normalizer, 4, 0);
        WriteVarintField(normalizer, 5, 1);
        WriteBytes(model, 3, normalizer.ToArray());
        return model.ToArray();
    }

    private static void WriteKey(Stream s, int field, int wire) => WriteVarint(s, (ulong)((field << 3) | wire));

    private static void WriteVarintField(Stream s, int field, ulong value)
    {
        WriteKey(s, field, 0);
        WriteVarint(s, value);
    }

    private static void WriteBytes(Stream s, int field, byte[] data)
    {
        WriteKey(s, field, 2);
        WriteVarint(s, (ulong)data.Length);
        s.Write(data);
    }

    private static void WriteVarint(Stream s, ulong v)
    {
        while (v >= 0x80)
        {
            s.WriteByte((byte)(v | 0x80));
            v >>= 7;
        }
        s.WriteByte((byte)v);
    }
}
