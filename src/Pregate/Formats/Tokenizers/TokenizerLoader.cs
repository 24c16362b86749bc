// Builds a TextTokenizer from a Hugging Face tokenizer.json (+ tokenizer_config.json), a SentencePiece
// tokenizer.model, or a GGUF embedded vocabulary (llama.cpp semantics, see llama-vocab.cpp).
using System.Text;
using Pregate.Core;

namespace Pregate.Formats.Tokenizers;

public static class TokenizerLoader
{
    private const long MaxFileBytes = 1L << 30;

    // llama.cpp (llama-vocab.cpp) also ends generation at tokens with these texts.
    private static readonly string[] EndOfGenerationTexts =
    [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>",
        "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
    ];

    /// <summary>
    /// Loads a Hugging Face tokenizer.json with a BPE model: byte-level (ByteLevel / Split+ByteLevel pre-tokenizer,
    /// ByteLevel decoder) or SentencePiece-style (Prepend+Replace normalizer or Metaspace, byte_fallback,
    /// Replace/ByteFallback/Fuse/Strip decoder). bos/eos come from tokenizer_config.json (bos_token, eos_token,
    /// add_bos_token) and generation_config.json (eos_token_id, int or list) when given.
    /// </summary>
    /// <exception cref="ModelFormatException">A file is malformed or uses an unsupported model, normalizer, pre-tokenizer or decoder.</exception>
    /// <exception cref="IOException">A file cannot be read.</exception>
    public static TextTokenizer FromHuggingFaceJson(string tokenizerJsonPath, string? tokenizerConfigJsonPath, string? generationConfigJsonPath = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizerJsonPath);
        return HuggingFaceTokenizerJson.Load(
            new(ReadFile(tokenizerJsonPath), tokenizerJsonPath),
            tokenizerConfigJsonPath is null ? null : new(ReadFile(tokenizerConfigJsonPath), tokenizerConfigJsonPath),
            generationConfigJsonPath is null ? null : new(ReadFile(generationConfigJsonPath), generationConfigJsonPath));
    }

    /// <summary>
    /// Loads the tokenizer of a Hugging Face checkpoint folder: tokenizer.json (with tokenizer_config.json and
    /// generation_config.json when present), else tokenizer.model.
    /// </summary>
    /// <exception cref="ModelFormatException">No tokenizer file, or a malformed one.</exception>
    public static TextTokenizer FromHuggingFaceDirectory(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        string json = Path.Combine(directory, "tokenizer.json");
        string? IfExists(string name) => File.Exists(Path.Combine(directory, name)) ? Path.Combine(directory, name) : null;
        if (File.Exists(json)) return FromHuggingFaceJson(json, IfExists("tokenizer_config.json"), IfExists("generation_config.json"));
        string model = Path.Combine(directory, "tokenizer.model");
        if (File.Exists(model)) return FromSentencePieceModel(model);
        throw new ModelFormatException(directory, "no tokenizer.json or tokenizer.model in the folder");
    }

    /// <summary>Loads a tokenizer.json given as text (<paramref name="sourceName"/> names it in errors).</summary>
    /// <exception cref="ModelFormatException">The JSON is malformed or unsupported.</exception>
    public static TextTokenizer FromHuggingFaceJsonText(string tokenizerJson, string? tokenizerConfigJson, string sourceName)
    {
        ArgumentNullException.ThrowIfNull(tokenizerJson);
        return HuggingFaceTokenizerJson.Load(
            new(Encoding.UTF8.GetBytes(tokenizerJson), sourceName),
            tokenizerConfigJson is null ? null : new(Encoding.UTF8.GetBytes(tokenizerConfigJson), sourceName + " (tokenizer_config)"),
            null);
    }

    /// <summary>
    /// Loads a SentencePiece tokenizer.model (BPE model type, e.g. Llama / Mistral / Mixtral). Encoding follows
    /// llama.cpp: control, user-defined and unknown pieces are matched in the text; each plain-text run gets the
    /// dummy space prefix; characters outside the vocabulary become byte pieces (byte_fallback) or unk.
    /// </summary>
    /// <exception cref="ModelFormatException">Not a ModelProto, a Unigram/word/char model, or a normalizer with a charsmap.</exception>
    public static TextTokenizer FromSentencePieceModel(string tokenizerModelPath)
    {
        ArgumentNullException.ThrowIfNull(tokenizerModelPath);
        byte[] data = ReadFile(tokenizerModelPath);
        SentencePieceModelProto proto = SentencePieceModelProto.Parse(data, tokenizerModelPath);
        string file = tokenizerModelPath;
        if (proto.Pieces.Count == 0) throw new ModelFormatException(file, "the SentencePiece model has no pieces");
        if (proto.ModelType != SentencePieceModelProto.ModelTypeBpe)
        {
            string name = proto.ModelType switch
            {
                SentencePieceModelProto.ModelTypeUnigram => "UNIGRAM",
                SentencePieceModelProto.ModelTypeWord => "WORD",
                SentencePieceModelProto.ModelTypeChar => "CHAR",
                _ => proto.ModelType.ToString(System.Globalization.CultureInfo.InvariantCulture),
            };
            throw new ModelFormatException(file, $"SentencePiece model type {name} is not supported (only BPE)");
        }
        if (proto.PrecompiledCharsmapLength > 0)
        {
            throw new ModelFormatException(file, $"SentencePiece normalizer '{proto.NormalizerName}' with a precompiled charsmap is not supported (only identity)");
        }
        if (proto.TreatWhitespaceAsSuffix) throw new ModelFormatException(file, "SentencePiece treat_whitespace_as_suffix is not supported");
        int n = proto.Pieces.Count;
        int? Id(int id) => id >= 0 && id < n ? id : null;
        return BuildSentencePiece(file, proto.Pieces, proto.Scores, proto.Types,
            bosId: Id(proto.BosId), eosIds: Id(proto.EosId) is int eos ? [eos] : [], unknownId: Id(proto.UnknownId),
            addBosToken: true, addSpacePrefix: proto.AddDummyPrefix, escapeWhitespace: proto.EscapeWhitespaces,
            removeExtraWhitespace: proto.RemoveExtraWhitespaces);
    }

    /// <summary>
    /// Builds the tokenizer llama.cpp would build from a GGUF vocabulary. <paramref name="sourceName"/> (e.g. the
    /// GGUF path) names it in errors. End-of-generation ids: eos, eot, eom, and tokens llama.cpp recognises by text
    /// ("&lt;|im_end|&gt;", "&lt;|endoftext|&gt;", "&lt;|eot_id|&gt;", ...).
    /// </summary>
    /// <exception cref="ModelFormatException">Arrays of different lengths, ids out of range, unknown merges, duplicate tokens, or an unsupported model / pre-tokenizer.</exception>
    public static TextTokenizer FromGgufVocab(GgufVocabulary vocabulary, string? sourceName = null)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        string file = sourceName ?? "GGUF vocabulary";
        int n = vocabulary.Tokens.Count;
        if (n == 0) throw new ModelFormatException(file, "tokenizer.ggml.tokens is empty");
        if (vocabulary.Scores is { } scores && scores.Count != n) throw new ModelFormatException(file, $"tokenizer.ggml.scores has {scores.Count} entries for {n} tokens");
        if (vocabulary.TokenTypes is { } types && types.Count != n) throw new ModelFormatException(file, $"tokenizer.ggml.token_type has {types.Count} entries for {n} tokens");
        int? CheckId(int? id, string key) =>
            id is int v && (v < 0 || v >= n) ? throw new ModelFormatException(file, $"{key} {v} is outside the vocabulary (size {n})") : id;
        int? bos = CheckId(vocabulary.BosId, "tokenizer.ggml.bos_token_id");
        int? eos = CheckId(vocabulary.EosId, "tokenizer.ggml.eos_token_id");
        int? eot = CheckId(vocabulary.EotId, "tokenizer.ggml.eot_token_id");
        int? eom = CheckId(vocabulary.EomId, "tokenizer.ggml.eom_token_id");
        int? unk = CheckId(vocabulary.UnknownId, "tokenizer.ggml.unknown_token_id");

        var eosIds = new List<int>();
        foreach (int? id in new[] { eos, eot, eom }) if (id is int v) eosIds.Add(v);
        var textToId = new Dictionary<string, int>(n, StringComparer.Ordinal);
        for (int i = 0; i < n; i++) textToId[vocabulary.Tokens[i]] = i;
        foreach (string text in EndOfGenerationTexts)
        {
            if (textToId.TryGetValue(text, out int id)) eosIds.Add(id);
        }

        switch (vocabulary.Model)
        {
            case "llama":
                // llama.cpp's defaults for an SPM vocabulary: unk 0, bos 1, eos 2.
                bos ??= n > 1 ? 1 : null;
                if (vocabulary.EosId is null && n > 2) eosIds.Insert(0, 2);
                unk ??= FirstOfType(vocabulary.TokenTypes, GgufTokenType.Unknown);
                return BuildSentencePiece(file, vocabulary.Tokens, vocabulary.Scores ?? new float[n], vocabulary.TokenTypes ?? Enumerable.Repeat(GgufTokenType.Normal, n).ToArray(),
                    bos, eosIds.Distinct().ToArray(), unk, vocabulary.AddBosToken ?? true, vocabulary.AddSpacePrefix ?? true,
                    escapeWhitespace: true, vocabulary.RemoveExtraWhitespaces ?? false);
            case "gpt2":
                return BuildGpt2(file, vocabulary, bos, eosIds.Distinct().ToArray());
            default:
                throw new ModelFormatException(file, $"tokenizer model '{vocabulary.Model}' is not supported (only \"llama\" and \"gpt2\")");
        }
    }

    private static byte[] ReadFile(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"{path}: file not found", path);
        if (info.Length > MaxFileBytes) throw new ModelFormatException(path, $"{info.Length} bytes is too large for a tokenizer file");
        return File.ReadAllBytes(path);
    }

    private static int? FirstOfType(IReadOnlyList<int>? types, int type)
    {
        if (types is null) return null;
        for (int i = 0; i < types.Count; i++)
        {
            if (types[i] == type) return i;
        }
        return null;
    }

    private static Dictionary<string, int> UniqueTokens(IReadOnlyList<string> tokens, string file)
    {
        var map = new Dictionary<string, int>(tokens.Count, StringComparer.Ordinal);
        for (int i = 0; i < tokens.Count; i++)
        {
            string t = tokens[i] ?? throw new ModelFormatException(file, $"token {i} is null");
            if (!map.TryAdd(t, i)) throw new ModelFormatException(file, $"token '{t}' appears twice (ids {map[t]} and {i})");
        }
        return map;
    }

    // SentencePiece / llama.cpp SPM: pieces merged by score; control, user-defined and unknown pieces matched in text.
    private static TextTokenizer BuildSentencePiece(string file, IReadOnlyList<string> tokens, IReadOnlyList<float> scores, IReadOnlyList<int> types,
        int? bosId, IReadOnlyList<int> eosIds, int? unknownId, bool addBosToken, bool addSpacePrefix, bool escapeWhitespace, bool removeExtraWhitespace)
    {
        int n = tokens.Count;
        Dictionary<string, int> tokenToId = UniqueTokens(tokens, file);
        var byteIds = new int[256];
        for (int b = 0; b < 256; b++) byteIds[b] = tokenToId.TryGetValue(BpeModel.ByteTokenName((byte)b), out int id) ? id : -1;
        var model = new SentencePieceBpe(tokenToId, scores.ToArray(), byteIds, unknownId);

        var idToToken = new string?[n];
        var special = new bool[n];
        var pieces = new byte[]?[n];
        var matched = new List<AddedToken>();
        for (int i = 0; i < n; i++)
        {
            string t = tokens[i];
            idToToken[i] = t;
            int type = types[i];
            special[i] = type is GgufTokenType.Control or GgufTokenType.Unknown;
            if (type is GgufTokenType.Control or GgufTokenType.UserDefined or GgufTokenType.Unknown && t.Length > 0) matched.Add(new AddedToken(i, t));
            pieces[i] = type switch
            {
                GgufTokenType.Byte when PieceDecoder.TryParseByteToken(t, out byte b) => [b],
                GgufTokenType.Byte => throw new ModelFormatException(file, $"byte token {i} '{t}' is not of the form <0xXX>"),
                GgufTokenType.Control or GgufTokenType.UserDefined or GgufTokenType.Unknown => Encoding.UTF8.GetBytes(t),
                GgufTokenType.Unused => [],
                _ => Encoding.UTF8.GetBytes(escapeWhitespace ? t.Replace(SentencePieceEncoder.SpaceMarker, ' ') : t),
            };
        }
        var encoder = new SentencePieceEncoder(model, addSpacePrefix, escapeWhitespace, removeExtraWhitespace);
        var decoder = new PieceDecoder(pieces, null, addSpacePrefix ? 1 : 0, ' ');
        return new TextTokenizer(idToToken, tokenToId, special, new AddedTokenMatcher(matched), encoder, decoder, bosId, eosIds, addBosToken);
    }

    // llama.cpp BPE vocabulary: byte-level BPE after the pre-tokenizer regex named by tokenizer.ggml.pre.
    private static TextTokenizer BuildGpt2(string file, GgufVocabulary vocabulary, int? bosId, IReadOnlyList<int> eosIds)
    {
        (string pattern, bool ignoreMerges, bool addBosDefault) = vocabulary.Pre switch
        {
            "gpt-2" or "gpt2" or "olmo" => (CodePointRegex.Gpt2Pattern, false, false),
            "llama3" or "llama-v3" or "llama-bpe" => (CodePointRegex.Llama3Pattern, true, true),
            "qwen2" or "deepseek-r1-qwen" => (CodePointRegex.Qwen2Pattern, false, false),
            null => throw new ModelFormatException(file, "tokenizer.ggml.pre is missing for a gpt2 vocabulary"),
            string other => throw new ModelFormatException(file, $"pre-tokenizer '{other}' is not supported (gpt-2, olmo, llama-bpe, qwen2)"),
        };
        IReadOnlyList<string> tokens = vocabulary.Tokens;
        int n = tokens.Count;
        IReadOnlyList<int> types = vocabulary.TokenTypes ?? Enumerable.Repeat(GgufTokenType.Normal, n).ToArray();
        Dictionary<string, int> tokenToId = UniqueTokens(tokens, file);
        IReadOnlyList<string> mergeTexts = vocabulary.Merges ?? throw new ModelFormatException(file, "tokenizer.ggml.merges is missing for a gpt2 vocabulary");
        var merges = new List<(int, int, int)>(mergeTexts.Count);
        for (int rank = 0; rank < mergeTexts.Count; rank++)
        {
            string m = mergeTexts[rank] ?? throw new ModelFormatException(file, $"merge #{rank} is null");
            int space = m.Length > 1 ? m.IndexOf(' ', 1) : -1; // llama.cpp: the first space after the first character
            if (space < 0) throw new ModelFormatException(file, $"merge #{rank} ('{m}') has no space");
            string left = m[..space], right = m[(space + 1)..];
            int l = tokenToId.TryGetValue(left, out int li) ? li : throw new ModelFormatException(file, $"merge #{rank} ('{m}') refers to unknown token '{left}'");
            int r = tokenToId.TryGetValue(right, out int ri) ? ri : throw new ModelFormatException(file, $"merge #{rank} ('{m}') refers to unknown token '{right}'");
            int merged = tokenToId.TryGetValue(left + right, out int mi) ? mi : throw new ModelFormatException(file, $"merge #{rank} ('{m}') makes '{left + right}', which is not a token");
            merges.Add((l, r, merged));
        }
        var model = new BpeModel(tokenToId, merges, unknownId: null, fuseUnknown: false, byteFallback: false, ignoreMerges);

        var idToToken = new string?[n];
        var special = new bool[n];
        var pieces = new byte[]?[n];
        var matched = new List<AddedToken>();
        for (int i = 0; i < n; i++)
        {
            string t = tokens[i];
            idToToken[i] = t;
            int type = types[i];
            special[i] = type is GgufTokenType.Control or GgufTokenType.Unknown;
            if (type is GgufTokenType.Control or GgufTokenType.UserDefined or GgufTokenType.Unknown && t.Length > 0) matched.Add(new AddedToken(i, t));
            pieces[i] = type switch
            {
                GgufTokenType.Control or GgufTokenType.UserDefined or GgufTokenType.Unknown => Encoding.UTF8.GetBytes(t),
                GgufTokenType.Unused => [],
                GgufTokenType.Byte when PieceDecoder.TryParseByteToken(t, out byte b) => [b],
                _ => ByteLevelAlphabet.TryDecode(t) ?? Encoding.UTF8.GetBytes(t),
            };
        }
        var preTokenizers = new PreTokenizerStep[]
        {
            new SplitPreTokenizer(new CodePointRegex(pattern), null, SplitBehavior.Isolated, invert: false),
            new ByteLevelPreTokenizer(addPrefixSpace: false, regex: null),
        };
        var encoder = new HuggingFaceBpeEncoder(null, null, preTokenizers, model);
        var decoder = new PieceDecoder(pieces, null, 0, ' ');
        return new TextTokenizer(idToToken, tokenToId, special, new AddedTokenMatcher(matched), encoder, decoder,
            bosId, eosIds, vocabulary.AddBosToken ?? addBosDefault);
    }
}
