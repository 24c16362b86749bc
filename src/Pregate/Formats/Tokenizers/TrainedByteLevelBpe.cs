// The result of ByteLevelBpeTrainer: vocabulary and merges, written as a standard Hugging Face tokenizer.json
// (model BPE, ByteLevel pre-tokenizer with the GPT-2 regex, ByteLevel decoder) or as a GGUF "gpt2" vocabulary.
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Pregate.Formats.Tokenizers;

/// <summary>A trained byte-level BPE vocabulary: the same tokens and merges for tokenizer.json and GGUF.</summary>
public sealed class TrainedByteLevelBpe
{
    internal TrainedByteLevelBpe(IReadOnlyList<string> tokens, IReadOnlyList<(string Left, string Right)> merges, IReadOnlyList<int> specialTokenIds)
    {
        Tokens = tokens;
        MergePairs = merges;
        SpecialTokenIds = specialTokenIds;
    }

    /// <summary>Token strings by id, in GPT-2's byte-level spelling (ids 0..255 are the bytes); special tokens last.</summary>
    public IReadOnlyList<string> Tokens { get; }

    /// <summary>Merges by rank as (left, right) token strings.</summary>
    public IReadOnlyList<(string Left, string Right)> MergePairs { get; }

    /// <summary>Merges by rank as "left right" (the tokenizer.json / GGUF spelling; byte-level tokens contain no space).</summary>
    public IReadOnlyList<string> Merges => MergePairs.Select(m => m.Left + " " + m.Right).ToArray();

    /// <summary>Ids of the special tokens, in the order they were given.</summary>
    public IReadOnlyList<int> SpecialTokenIds { get; }

    public int VocabSize => Tokens.Count;

    /// <summary>GGUF token types (tokenizer.ggml.token_type): control for special tokens, normal otherwise.</summary>
    public IReadOnlyList<int> GgufTokenTypes
    {
        get
        {
            var types = Enumerable.Repeat(GgufTokenType.Normal, Tokens.Count).ToArray();
            foreach (int id in SpecialTokenIds) types[id] = GgufTokenType.Control;
            return types;
        }
    }

    /// <summary>The Hugging Face tokenizer.json text.</summary>
    public string ToTokenizerJson()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteNull("truncation");
            w.WriteNull("padding");
            w.WriteStartArray("added_tokens");
            foreach (int id in SpecialTokenIds)
            {
                w.WriteStartObject();
                w.WriteNumber("id", id);
                w.WriteString("content", Tokens[id]);
                w.WriteBoolean("single_word", false);
                w.WriteBoolean("lstrip", false);
                w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", false);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNull("normalizer");
            WriteByteLevel(w, "pre_tokenizer", addPrefixSpace: false, trimOffsets: true);
            WriteByteLevel(w, "post_processor", addPrefixSpace: true, trimOffsets: false);
            WriteByteLevel(w, "decoder", addPrefixSpace: true, trimOffsets: true);
            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            w.WriteNull("dropout");
            w.WriteNull("unk_token");
            w.WriteNull("continuing_subword_prefix");
            w.WriteNull("end_of_word_suffix");
            w.WriteBoolean("fuse_unk", false);
            w.WriteBoolean("byte_fallback", false);
            w.WriteBoolean("ignore_merges", false);
            w.WriteStartObject("vocab");
            for (int id = 0; id < Tokens.Count; id++) w.WriteNumber(Tokens[id], id);
            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach (string m in Merges) w.WriteStringValue(m);
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>
    /// A tokenizer_config.json naming bos/eos (each null or one of the special tokens); add_bos_token is true when a bos is named.
    /// </summary>
    /// <exception cref="ArgumentException">A named token is not one of the special tokens.</exception>
    public string ToTokenizerConfigJson(string? bosToken, string? eosToken)
    {
        CheckSpecial(bosToken, nameof(bosToken));
        CheckSpecial(eosToken, nameof(eosToken));
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteBoolean("add_bos_token", bosToken is not null);
            w.WriteBoolean("add_eos_token", false);
            w.WriteStartObject("added_tokens_decoder");
            foreach (int id in SpecialTokenIds)
            {
                w.WriteStartObject(id.ToString(System.Globalization.CultureInfo.InvariantCulture));
                w.WriteString("content", Tokens[id]);
                w.WriteBoolean("lstrip", false);
                w.WriteBoolean("normalized", false);
                w.WriteBoolean("rstrip", false);
                w.WriteBoolean("single_word", false);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndObject();
            if (bosToken is null) w.WriteNull("bos_token"); else w.WriteString("bos_token", bosToken);
            if (eosToken is null) w.WriteNull("eos_token"); else w.WriteString("eos_token", eosToken);
            w.WriteBoolean("clean_up_tokenization_spaces", false);
            w.WriteString("tokenizer_class", "PreTrainedTokenizerFast");
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>Writes tokenizer.json to <paramref name="path"/> atomically.</summary>
    public void Save(string path) => AtomicFile.WriteAllText(path, ToTokenizerJson());

    /// <summary>Writes tokenizer_config.json to <paramref name="path"/> atomically (see <see cref="ToTokenizerConfigJson"/>).</summary>
    public void SaveTokenizerConfig(string path, string? bosToken, string? eosToken) => AtomicFile.WriteAllText(path, ToTokenizerConfigJson(bosToken, eosToken));

    /// <summary>
    /// The same vocabulary as a GGUF "gpt2" vocabulary (pre "gpt-2"), so both copies of a model tokenize alike.
    /// llama.cpp needs one token per embedding row: <paramref name="padToVocabSize"/> appends unused tokens
    /// "[PAD{id}]" (as llama.cpp's converter does) up to the model's vocabulary size.
    /// </summary>
    /// <exception cref="ArgumentException">A named token is not one of the special tokens.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="padToVocabSize"/> is below <see cref="VocabSize"/>.</exception>
    public GgufVocabulary ToGgufVocabulary(string? bosToken, string? eosToken, int? padToVocabSize = null)
    {
        CheckSpecial(bosToken, nameof(bosToken));
        CheckSpecial(eosToken, nameof(eosToken));
        int size = padToVocabSize ?? VocabSize;
        if (size < VocabSize) throw new ArgumentOutOfRangeException(nameof(padToVocabSize), size, $"must be at least the trained vocabulary size {VocabSize}");
        var tokens = Tokens.ToList();
        var types = GgufTokenTypes.ToList();
        for (int id = VocabSize; id < size; id++)
        {
            tokens.Add($"[PAD{id}]");
            types.Add(GgufTokenType.Unused);
        }
        return new GgufVocabulary
        {
            Model = "gpt2",
            Pre = "gpt-2",
            Tokens = tokens,
            TokenTypes = types,
            Merges = Merges,
            BosId = bosToken is null ? null : IdOf(bosToken),
            EosId = eosToken is null ? null : IdOf(eosToken),
            AddBosToken = bosToken is not null,
        };
    }

    /// <summary>The tokenizer this vocabulary defines, built from its tokenizer.json and tokenizer_config.json.</summary>
    public TextTokenizer CreateTokenizer(string? bosToken, string? eosToken) =>
        TokenizerLoader.FromHuggingFaceJsonText(ToTokenizerJson(), ToTokenizerConfigJson(bosToken, eosToken), "trained byte-level BPE");

    private int IdOf(string special) => SpecialTokenIds.First(id => Tokens[id] == special);

    private void CheckSpecial(string? token, string name)
    {
        if (token is not null && !SpecialTokenIds.Any(id => Tokens[id] == token)) throw new ArgumentException($"'{token}' is not one of the special tokens", name);
    }

    private static void WriteByteLevel(Utf8JsonWriter w, string name, bool addPrefixSpace, bool trimOffsets)
    {
        w.WriteStartObject(name);
        w.WriteString("type", "ByteLevel");
        w.WriteBoolean("add_prefix_space", addPrefixSpace);
        w.WriteBoolean("trim_offsets", trimOffsets);
        w.WriteBoolean("use_regex", true);
        w.WriteEndObject();
    }
}
