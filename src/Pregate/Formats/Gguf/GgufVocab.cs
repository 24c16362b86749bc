// A minimal SentencePiece ("llama") vocabulary block for synthetic GGUF models that llama.cpp loads without
// warnings: <unk>, <s>, </s>, the 256 byte-fallback tokens <0x00>…<0xFF>, then the caller's tokens.
using System.Globalization;

namespace Pregate.Formats.Gguf;

/// <summary>Writes llama.cpp tokenizer metadata (<c>tokenizer.ggml.*</c>) for synthetic models.</summary>
public static class GgufVocab
{
    public const string ModelKey = "tokenizer.ggml.model";
    public const string TokensKey = "tokenizer.ggml.tokens";
    public const string ScoresKey = "tokenizer.ggml.scores";
    public const string TokenTypeKey = "tokenizer.ggml.token_type";
    public const string UnknownTokenKey = "tokenizer.ggml.unknown_token_id";

    public const int UnknownId = 0;
    public const int BosId = 1;
    public const int EosId = 2;
    /// <summary>Id of <c>&lt;0x00&gt;</c>; byte b is token <c>FirstByteId + b</c>.</summary>
    public const int FirstByteId = 3;
    /// <summary>Tokens before the caller's: 3 specials and 256 bytes.</summary>
    public const int ReservedCount = FirstByteId + 256;

    /// <summary>llama.cpp token types (llama_token_type / llama_token_attr in GGUF).</summary>
    public enum TokenType
    {
        Normal = 1,
        Unknown = 2,
        Control = 3,
        UserDefined = 4,
        Unused = 5,
        Byte = 6,
    }

    /// <summary>Size of the vocabulary <see cref="WriteLlamaSpmVocab"/> writes for <paramref name="normalTokenCount"/> tokens.</summary>
    public static int LlamaSpmVocabSize(int normalTokenCount) => ReservedCount + normalTokenCount;

    /// <summary>
    /// Adds <c>tokenizer.ggml.model = "llama"</c>, <c>tokens</c>, <c>scores</c> (FLOAT32: 0 for specials and bytes,
    /// −i for the i-th normal token, so earlier tokens are preferred merges), <c>token_type</c> (INT32: unknown,
    /// control, control, 256 × byte, then normal) and <c>unknown_token_id</c> = 0. Normal tokens use
    /// SentencePiece spelling (▁ for a leading space). Bos/eos ids (1 and 2) belong to the model config
    /// (<see cref="GgufModelConfig.Write"/>). Returns the vocabulary size. Throws <see cref="ArgumentException"/>
    /// for an empty or duplicate token.
    /// </summary>
    public static int WriteLlamaSpmVocab(GgufWriter w, IReadOnlyList<string> normalTokens)
    {
        int n = LlamaSpmVocabSize(normalTokens.Count);
        var tokens = new string[n];
        var scores = new float[n];
        var types = new int[n];
        tokens[UnknownId] = "<unk>";
        types[UnknownId] = (int)TokenType.Unknown;
        tokens[BosId] = "<s>";
        types[BosId] = (int)TokenType.Control;
        tokens[EosId] = "</s>";
        types[EosId] = (int)TokenType.Control;
        for (int b = 0; b < 256; b++)
        {
            tokens[FirstByteId + b] = string.Create(CultureInfo.InvariantCulture, $"<0x{b:X2}>");
            types[FirstByteId + b] = (int)TokenType.Byte;
        }
        var seen = new HashSet<string>(tokens.Take(ReservedCount), StringComparer.Ordinal);
        for (int i = 0; i < normalTokens.Count; i++)
        {
            string t = normalTokens[i];
            if (string.IsNullOrEmpty(t)) throw new ArgumentException($"normal token {i} is empty", nameof(normalTokens));
            if (!seen.Add(t)) throw new ArgumentException($"token '{t}' appears twice in the vocabulary", nameof(normalTokens));
            tokens[ReservedCount + i] = t;
            scores[ReservedCount + i] = -i;
            types[ReservedCount + i] = (int)TokenType.Normal;
        }
        w.AddString(ModelKey, "llama");
        w.AddStringArray(TokensKey, tokens);
        w.AddFloat32Array(ScoresKey, scores);
        w.AddInt32Array(TokenTypeKey, types);
        w.AddUInt32(UnknownTokenKey, UnknownId);
        return n;
    }
}
