// A Hugging Face byte-level BPE tokenizer (tokenizer.json, tokenizer_config.json) as GGUF tokenizer.ggml.* metadata, the way
// llama.cpp's convert_hf_to_gguf.py writes a "gpt2" vocabulary: tokens by id (gaps padded as unused [PAD{id}]), token types
// (added special tokens are control, other added tokens user-defined), merges as "left right", the pre-tokenizer named by
// its regex, bos/eos from tokenizer_config.json, add_bos_token and the chat template.
using System.Text.Json;
using Pregate.Core;
using Pregate.Formats.Gguf;
using Pregate.Formats.Tokenizers;

namespace Pregate.Formats.Export;

public static class HfTokenizerGguf
{
    /// <summary>
    /// Adds the tokenizer of the Hugging Face folder <paramref name="directory"/> to <paramref name="w"/>, padded to
    /// <paramref name="vocabSize"/> tokens (the model's embedding rows). Returns the bos and eos ids it found, if any.
    /// </summary>
    /// <exception cref="ModelFormatException">tokenizer.json is missing or malformed, is not a byte-level BPE, has a
    /// pre-tokenizer llama.cpp cannot name, or has more tokens than the model's vocabulary.</exception>
    public static (int? Bos, int? Eos) Write(GgufWriter w, string directory, int vocabSize)
    {
        string file = Path.Combine(directory, "tokenizer.json");
        if (!File.Exists(file)) throw new ModelFormatException(directory, "folder has no tokenizer.json (converting needs the tokenizer)");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(file)); }
        catch (JsonException e) { throw new ModelFormatException(file, $"invalid JSON: {e.Message}"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(file, "no \"model\" object");
            string type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "BPE";
            if (type != "BPE") throw new ModelFormatException(file, $"tokenizer model {type}: only byte-level BPE tokenizers convert");
            if (model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True)
                throw new ModelFormatException(file, "a SentencePiece-style BPE (byte_fallback) does not convert; only byte-level BPE tokenizers do");
            string pre = PreTokenizerName(root, file);

            var tokens = new string?[vocabSize];
            var types = new int[vocabSize];
            if (!model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(file, "model.vocab is missing");
            foreach (var p in vocab.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
                    throw new ModelFormatException(file, $"token '{p.Name}' has an invalid id");
                if (id >= vocabSize) throw new ModelFormatException(file, $"token '{p.Name}' has id {id}, beyond the model's {vocabSize} embedding rows");
                tokens[id] = p.Name;
                types[id] = GgufTokenType.Normal;
            }
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
                foreach (var a in added.EnumerateArray())
                {
                    if (!a.TryGetProperty("id", out var idEl) || !idEl.TryGetInt32(out int id) || id < 0 || !a.TryGetProperty("content", out var content))
                        throw new ModelFormatException(file, "an added token lacks an id or content");
                    if (id >= vocabSize) throw new ModelFormatException(file, $"added token id {id} is beyond the model's {vocabSize} embedding rows");
                    tokens[id] = content.GetString();
                    types[id] = a.TryGetProperty("special", out var sp) && sp.ValueKind == JsonValueKind.True ? GgufTokenType.Control : GgufTokenType.UserDefined;
                }
            for (int i = 0; i < vocabSize; i++)
                if (tokens[i] is null)
                {
                    tokens[i] = $"[PAD{i}]";
                    types[i] = GgufTokenType.Unused;
                }

            var merges = new List<string>();
            if (model.TryGetProperty("merges", out var m) && m.ValueKind == JsonValueKind.Array)
                foreach (var merge in m.EnumerateArray())
                {
                    if (merge.ValueKind == JsonValueKind.String) merges.Add(merge.GetString()!);
                    else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2)
                        merges.Add(merge[0].GetString() + " " + merge[1].GetString());
                    else throw new ModelFormatException(file, "a merge is neither \"a b\" nor [\"a\", \"b\"]");
                }

            var tokenIds = new Dictionary<string, int>(StringComparer.Ordinal);
            for (int i = 0; i < vocabSize; i++) tokenIds.TryAdd(tokens[i]!, i);
            var cfg = ReadConfig(directory);
            int? bos = TokenId(cfg, "bos_token", tokenIds), eos = TokenId(cfg, "eos_token", tokenIds);

            w.AddString("tokenizer.ggml.model", "gpt2");
            w.AddString("tokenizer.ggml.pre", pre);
            w.AddStringArray("tokenizer.ggml.tokens", tokens!);
            w.AddInt32Array("tokenizer.ggml.token_type", types);
            w.AddStringArray("tokenizer.ggml.merges", merges);
            if (cfg is { } c && c.TryGetProperty("add_bos_token", out var ab) && ab.ValueKind is JsonValueKind.True or JsonValueKind.False)
                w.AddBool("tokenizer.ggml.add_bos_token", ab.GetBoolean());
            if (cfg is { } c2 && c2.TryGetProperty("chat_template", out var tpl) && tpl.ValueKind == JsonValueKind.String)
                w.AddString("tokenizer.chat_template", tpl.GetString()!);
            return (bos, eos);
        }
    }

    // llama.cpp's name for the pre-tokenizer (tokenizer.ggml.pre), recognised by its split regex.
    private static string PreTokenizerName(JsonElement root, string file)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(file, "no pre_tokenizer: not a byte-level BPE");
        string? pattern = null;
        bool byteLevelRegex = false;
        void Visit(JsonElement e)
        {
            string? kind = e.TryGetProperty("type", out var k) ? k.GetString() : null;
            if (kind == "Sequence" && e.TryGetProperty("pretokenizers", out var list))
                foreach (var inner in list.EnumerateArray()) Visit(inner);
            else if (kind == "Split" && e.TryGetProperty("pattern", out var p) && p.TryGetProperty("Regex", out var rx))
                pattern ??= rx.GetString();
            else if (kind == "ByteLevel")
                byteLevelRegex |= !e.TryGetProperty("use_regex", out var u) || u.ValueKind != JsonValueKind.False;
        }
        Visit(pre);
        if (pattern is null && byteLevelRegex) return "gpt-2";
        if (pattern == CodePointRegex.Gpt2Pattern) return "gpt-2";
        if (pattern == CodePointRegex.Qwen2Pattern) return "qwen2";
        if (pattern == CodePointRegex.Llama3Pattern) return "llama-bpe";
        throw new ModelFormatException(file, $"pre-tokenizer {(pattern is null ? "without a split regex" : $"regex '{pattern}'")} is not one llama.cpp names (gpt-2, qwen2, llama-bpe)");
    }

    private static JsonElement? ReadConfig(string directory)
    {
        string file = Path.Combine(directory, "tokenizer_config.json");
        if (!File.Exists(file)) return null;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(file));
            return doc.RootElement.ValueKind == JsonValueKind.Object ? doc.RootElement.Clone() : null;
        }
        catch (JsonException e) { throw new ModelFormatException(file, $"invalid JSON: {e.Message}"); }
    }

    // bos_token / eos_token: a string or {"content": "..."}; null when absent or unknown.
    private static int? TokenId(JsonElement? cfg, string key, Dictionary<string, int> ids)
    {
        if (cfg is not { } c || !c.TryGetProperty(key, out var v)) return null;
        string? text = v.ValueKind == JsonValueKind.String ? v.GetString()
            : v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var content) ? content.GetString() : null;
        return text is not null && ids.TryGetValue(text, out int id) ? id : null;
    }
}
