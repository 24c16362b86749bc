// Reads a Hugging Face tokenizer.json (tokenizers' serialization: model BPE, added_tokens, normalizer,
// pre_tokenizer, decoder, post_processor) plus tokenizer_config.json / generation_config.json for bos/eos.
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Pregate.Core;

namespace Pregate.Formats.Tokenizers;

internal static class HuggingFaceTokenizerJson
{
    /// <summary>A JSON document and the name errors about it should carry.</summary>
    internal readonly record struct Source(byte[] Json, string Name);

    private sealed record DecoderRules(
        bool ByteLevel, IReadOnlyList<(string From, string To)> Replacements, bool ByteFallback,
        char? Metaspace, bool MetaspaceStripsFirst, int StripCount, char StripChar);

    private sealed record AddedTokenEntry(int Id, string Content, bool Special, bool LStrip, bool RStrip, bool SingleWord, bool Normalized);

    public static TextTokenizer Load(Source tokenizer, Source? config, Source? generationConfig)
    {
        using JsonDocument doc = Parse(tokenizer);
        string file = tokenizer.Name;
        JsonElement root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw Fail(file, "the top level is not a JSON object");
        if (!root.TryGetProperty("model", out JsonElement model) || model.ValueKind != JsonValueKind.Object)
        {
            throw Fail(file, "no \"model\" section");
        }

        string type = GetString(model, "type", file)
            ?? (model.TryGetProperty("merges", out _) && model.TryGetProperty("vocab", out _) ? "BPE" : throw Fail(file, "\"model\" has no \"type\""));
        if (type != "BPE")
        {
            throw Fail(file, $"tokenizer model type '{type}' is not supported (only BPE: byte-level or SentencePiece-style)");
        }

        Dictionary<string, int> vocab = ReadVocab(model, file);
        List<AddedTokenEntry> added = ReadAddedTokens(root, file);
        JsonDocument? configDoc = config is Source c ? Parse(c) : null;
        using JsonDocument? configDispose = configDoc;
        if (configDoc is not null) AddConfigDecoderTokens(configDoc.RootElement, config!.Value.Name, added);

        // Id table: model vocabulary, then added tokens (which win for their ids and strings).
        int entries = vocab.Count + added.Count;
        int maxId = -1;
        foreach (int id in vocab.Values) maxId = Math.Max(maxId, id);
        foreach (AddedTokenEntry a in added) maxId = Math.Max(maxId, a.Id);
        if (maxId >= 2 * entries + 65536) throw Fail(file, $"token id {maxId} is far beyond the {entries} tokens defined");
        var idToToken = new string?[maxId + 1];
        foreach ((string token, int id) in vocab)
        {
            if (idToToken[id] is string other) throw Fail(file, $"vocabulary id {id} is given to both '{other}' and '{token}'");
            idToToken[id] = token;
        }
        var tokenToId = new Dictionary<string, int>(vocab, StringComparer.Ordinal);
        var special = new bool[maxId + 1];
        foreach (AddedTokenEntry a in added)
        {
            idToToken[a.Id] = a.Content;
            tokenToId[a.Content] = a.Id;
            special[a.Id] |= a.Special;
        }

        BpeModel bpe = ReadBpe(model, vocab, file);
        TextNormalizer? normalizer = root.TryGetProperty("normalizer", out JsonElement n) ? ReadNormalizer(n, file) : null;
        var preTokenizers = new List<PreTokenizerStep>();
        if (root.TryGetProperty("pre_tokenizer", out JsonElement p)) ReadPreTokenizer(p, file, preTokenizers);
        DecoderRules rules = ReadDecoder(root.TryGetProperty("decoder", out JsonElement d) ? d : default, file);

        var rawTokens = new AddedTokenMatcher(added.Where(a => !a.Normalized).Select(ToAddedToken));
        var normalizedTokens = new AddedTokenMatcher(added.Where(a => a.Normalized).Select(a =>
            ToAddedToken(a) with { Content = normalizer?.Normalize(a.Content) ?? a.Content }));
        var encoder = new HuggingFaceBpeEncoder(normalizer, normalizedTokens, preTokenizers, bpe);
        PieceDecoder pieces = BuildPieces(idToToken, rules);

        // bos / eos: tokenizer_config.json names them; the post-processor template shows whether bos is added.
        string? templateBos = root.TryGetProperty("post_processor", out JsonElement post) ? TemplateBos(post) : null;
        int? bosId = null;
        bool? addBos = null;
        var eosIds = new List<int>();
        if (configDoc is not null)
        {
            string configName = config!.Value.Name;
            JsonElement cfg = configDoc.RootElement;
            if (cfg.ValueKind != JsonValueKind.Object) throw Fail(configName, "the top level is not a JSON object");
            if (ConfigToken(cfg, "bos_token", configName) is string bos) bosId = ResolveToken(tokenToId, bos, configName, "bos_token");
            if (ConfigToken(cfg, "eos_token", configName) is string eos) eosIds.Add(ResolveToken(tokenToId, eos, configName, "eos_token"));
            if (cfg.TryGetProperty("add_bos_token", out JsonElement ab) && ab.ValueKind is JsonValueKind.True or JsonValueKind.False) addBos = ab.GetBoolean();
        }
        if (bosId is null && templateBos is not null && tokenToId.TryGetValue(templateBos, out int tb)) bosId = tb;
        addBos ??= templateBos is not null;
        if (generationConfig is Source g) ReadGenerationConfig(g, idToToken.Length, eosIds);

        return new TextTokenizer(idToToken, tokenToId, special, rawTokens, encoder, pieces, bosId, eosIds.Distinct().ToArray(), addBos.Value);
    }

    private static JsonDocument Parse(Source source)
    {
        // JsonDocument checks UTF-8 only when a string is read; check it all before anything is read.
        if (!System.Text.Unicode.Utf8.IsValid(source.Json)) throw new ModelFormatException(source.Name, "the file is not valid UTF-8");
        try
        {
            return JsonDocument.Parse(source.Json, new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(source.Name, $"invalid JSON: {e.Message}", e);
        }
    }

    private static ModelFormatException Fail(string file, string message) => new(file, message);

    private static string? GetString(JsonElement obj, string name, string file)
    {
        if (!obj.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw Fail(file, $"\"{name}\" is not a string");
    }

    private static bool GetBool(JsonElement obj, string name, bool fallback, string file)
    {
        if (!obj.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null) return fallback;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Fail(file, $"\"{name}\" is not true or false"),
        };
    }

    private static int GetCount(JsonElement obj, string name, string file) =>
        !obj.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null ? 0 : GetId(v, $"\"{name}\"", file);

    private static int GetId(JsonElement v, string what, string file) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int id) && id >= 0
            ? id
            : throw Fail(file, $"{what} is not a non-negative 32-bit integer");

    private static Dictionary<string, int> ReadVocab(JsonElement model, string file)
    {
        if (!model.TryGetProperty("vocab", out JsonElement v) || v.ValueKind != JsonValueKind.Object)
        {
            throw Fail(file, "the BPE model has no \"vocab\" object");
        }
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (JsonProperty entry in v.EnumerateObject())
        {
            vocab[entry.Name] = GetId(entry.Value, $"the id of vocabulary token '{entry.Name}'", file);
        }
        return vocab;
    }

    private static List<AddedTokenEntry> ReadAddedTokens(JsonElement root, string file)
    {
        var result = new List<AddedTokenEntry>();
        if (!root.TryGetProperty("added_tokens", out JsonElement list) || list.ValueKind == JsonValueKind.Null) return result;
        if (list.ValueKind != JsonValueKind.Array) throw Fail(file, "\"added_tokens\" is not an array");
        int index = 0;
        foreach (JsonElement t in list.EnumerateArray())
        {
            if (t.ValueKind != JsonValueKind.Object) throw Fail(file, $"added token #{index} is not an object");
            if (!t.TryGetProperty("id", out JsonElement idElement)) throw Fail(file, $"added token #{index} has no id");
            int id = GetId(idElement, $"the id of added token #{index}", file);
            string content = GetString(t, "content", file) ?? throw Fail(file, $"added token #{index} has no content");
            if (content.Length == 0) throw Fail(file, $"added token #{index} has empty content");
            bool special = GetBool(t, "special", false, file);
            result.Add(new AddedTokenEntry(id, content, special, GetBool(t, "lstrip", false, file), GetBool(t, "rstrip", false, file),
                GetBool(t, "single_word", false, file), GetBool(t, "normalized", !special, file)));
            index++;
        }
        return result;
    }

    // tokenizer_config.json "added_tokens_decoder": {"151643": {"content": ..., "special": true, ...}} adds tokens not in tokenizer.json.
    private static void AddConfigDecoderTokens(JsonElement config, string file, List<AddedTokenEntry> added)
    {
        if (config.ValueKind != JsonValueKind.Object || !config.TryGetProperty("added_tokens_decoder", out JsonElement map)) return;
        if (map.ValueKind != JsonValueKind.Object) throw Fail(file, "\"added_tokens_decoder\" is not an object");
        foreach (JsonProperty entry in map.EnumerateObject())
        {
            if (!int.TryParse(entry.Name, out int id) || id < 0) throw Fail(file, $"added_tokens_decoder key '{entry.Name}' is not a token id");
            if (entry.Value.ValueKind != JsonValueKind.Object) throw Fail(file, $"added_tokens_decoder entry {id} is not an object");
            string content = GetString(entry.Value, "content", file) ?? throw Fail(file, $"added_tokens_decoder entry {id} has no content");
            if (content.Length == 0 || added.Exists(a => a.Id == id || a.Content == content)) continue;
            bool special = GetBool(entry.Value, "special", false, file);
            added.Add(new AddedTokenEntry(id, content, special, GetBool(entry.Value, "lstrip", false, file), GetBool(entry.Value, "rstrip", false, file),
                GetBool(entry.Value, "single_word", false, file), GetBool(entry.Value, "normalized", !special, file)));
        }
    }

    private static AddedToken ToAddedToken(AddedTokenEntry a) => new(a.Id, a.Content, a.LStrip, a.RStrip, a.SingleWord);

    private static BpeModel ReadBpe(JsonElement model, Dictionary<string, int> vocab, string file)
    {
        if (model.TryGetProperty("dropout", out JsonElement dropout) && dropout.ValueKind != JsonValueKind.Null
            && (dropout.ValueKind != JsonValueKind.Number || dropout.GetDouble() != 0))
        {
            throw Fail(file, "BPE dropout is not supported");
        }
        if (!string.IsNullOrEmpty(GetString(model, "continuing_subword_prefix", file)) || !string.IsNullOrEmpty(GetString(model, "end_of_word_suffix", file)))
        {
            throw Fail(file, "BPE continuing_subword_prefix / end_of_word_suffix are not supported");
        }
        int? unknownId = null;
        if (GetString(model, "unk_token", file) is string unk)
        {
            unknownId = vocab.TryGetValue(unk, out int u) ? u : throw Fail(file, $"unk_token '{unk}' is not in the vocabulary");
        }

        var merges = new List<(int, int, int)>();
        if (model.TryGetProperty("merges", out JsonElement list) && list.ValueKind != JsonValueKind.Null)
        {
            if (list.ValueKind != JsonValueKind.Array) throw Fail(file, "\"merges\" is not an array");
            int rank = 0;
            foreach (JsonElement m in list.EnumerateArray())
            {
                (string left, string right) = ReadMerge(m, rank, file);
                int l = vocab.TryGetValue(left, out int li) ? li : throw Fail(file, $"merge #{rank} ('{left} {right}') refers to unknown token '{left}'");
                int r = vocab.TryGetValue(right, out int ri) ? ri : throw Fail(file, $"merge #{rank} ('{left} {right}') refers to unknown token '{right}'");
                string mergedText = left + right;
                int merged = vocab.TryGetValue(mergedText, out int mi) ? mi : throw Fail(file, $"merge #{rank} ('{left} {right}') makes '{mergedText}', which is not in the vocabulary");
                merges.Add((l, r, merged));
                rank++;
            }
        }
        return new BpeModel(vocab, merges, unknownId,
            fuseUnknown: GetBool(model, "fuse_unk", false, file),
            byteFallback: GetBool(model, "byte_fallback", false, file),
            ignoreMerges: GetBool(model, "ignore_merges", false, file));
    }

    // A merge is "left right" (one space) or ["left", "right"].
    private static (string, string) ReadMerge(JsonElement m, int rank, string file)
    {
        if (m.ValueKind == JsonValueKind.String)
        {
            string s = m.GetString()!;
            int space = s.IndexOf(' ');
            if (space <= 0 || space == s.Length - 1 || s.IndexOf(' ', space + 1) >= 0) throw Fail(file, $"merge #{rank} ('{s}') is not two tokens separated by one space");
            return (s[..space], s[(space + 1)..]);
        }
        if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2 && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
        {
            return (m[0].GetString()!, m[1].GetString()!);
        }
        throw Fail(file, $"merge #{rank} is neither \"a b\" nor [\"a\", \"b\"]");
    }

    private static string TypeOf(JsonElement e, string section, string file)
    {
        if (e.ValueKind != JsonValueKind.Object) throw Fail(file, $"\"{section}\" is not an object");
        return GetString(e, "type", file) ?? throw Fail(file, $"\"{section}\" entry has no type");
    }

    private static TextNormalizer? ReadNormalizer(JsonElement e, string file)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = TypeOf(e, "normalizer", file);
        switch (type)
        {
            case "Sequence":
                if (!e.TryGetProperty("normalizers", out JsonElement list) || list.ValueKind != JsonValueKind.Array) throw Fail(file, "normalizer Sequence has no \"normalizers\" array");
                return new SequenceNormalizer(list.EnumerateArray().Select(x => ReadNormalizer(x, file)).OfType<TextNormalizer>().ToArray());
            case "NFC": return new NfcNormalizer();
            case "NFD": return new NfdNormalizer();
            case "Lowercase": return new LowercaseNormalizer();
            case "Strip": return new StripNormalizer(GetBool(e, "strip_left", true, file), GetBool(e, "strip_right", true, file));
            case "Prepend": return new PrependNormalizer(GetString(e, "prepend", file) ?? throw Fail(file, "Prepend normalizer has no \"prepend\""));
            case "Replace":
                (string? literal, Regex? regex) = ReadPattern(e, "Replace normalizer", file);
                return new ReplaceNormalizer(literal, regex, GetString(e, "content", file) ?? throw Fail(file, "Replace normalizer has no \"content\""));
            default:
                throw Fail(file, $"normalizer '{type}' is not supported");
        }
    }

    private static (string? Literal, Regex? Regex) ReadPattern(JsonElement e, string what, string file)
    {
        if (!e.TryGetProperty("pattern", out JsonElement pattern) || pattern.ValueKind != JsonValueKind.Object) throw Fail(file, $"{what} has no \"pattern\"");
        if (GetString(pattern, "String", file) is string literal) return (literal, null);
        if (GetString(pattern, "Regex", file) is string regex)
        {
            try
            {
                return (null, new Regex(regex, RegexOptions.CultureInvariant));
            }
            catch (ArgumentException ex)
            {
                throw Fail(file, $"{what} regex '{regex}' is not supported: {ex.Message}");
            }
        }
        throw Fail(file, $"{what} pattern is neither String nor Regex");
    }

    private static void ReadPreTokenizer(JsonElement e, string file, List<PreTokenizerStep> steps)
    {
        if (e.ValueKind == JsonValueKind.Null) return;
        string type = TypeOf(e, "pre_tokenizer", file);
        switch (type)
        {
            case "Sequence":
                if (!e.TryGetProperty("pretokenizers", out JsonElement list) || list.ValueKind != JsonValueKind.Array) throw Fail(file, "pre_tokenizer Sequence has no \"pretokenizers\" array");
                foreach (JsonElement x in list.EnumerateArray()) ReadPreTokenizer(x, file, steps);
                break;
            case "ByteLevel":
                steps.Add(new ByteLevelPreTokenizer(GetBool(e, "add_prefix_space", true, file),
                    GetBool(e, "use_regex", true, file) ? new CodePointRegex(CodePointRegex.Gpt2Pattern) : null));
                break;
            case "Split":
                steps.Add(ReadSplit(e, file));
                break;
            case "Metaspace":
                (char replacement, PrependScheme scheme) = ReadMetaspace(e, file);
                steps.Add(new MetaspacePreTokenizer(replacement, scheme, GetBool(e, "split", true, file)));
                break;
            case "Digits":
                steps.Add(new DigitsPreTokenizer(GetBool(e, "individual_digits", false, file)));
                break;
            default:
                throw Fail(file, $"pre-tokenizer '{type}' is not supported");
        }
    }

    private static SplitPreTokenizer ReadSplit(JsonElement e, string file)
    {
        if (!e.TryGetProperty("pattern", out JsonElement pattern) || pattern.ValueKind != JsonValueKind.Object) throw Fail(file, "Split pre-tokenizer has no \"pattern\"");
        string behaviorName = GetString(e, "behavior", file) ?? throw Fail(file, "Split pre-tokenizer has no \"behavior\"");
        SplitBehavior behavior = behaviorName switch
        {
            "Removed" => SplitBehavior.Removed,
            "Isolated" => SplitBehavior.Isolated,
            "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
            "MergedWithNext" => SplitBehavior.MergedWithNext,
            "Contiguous" => SplitBehavior.Contiguous,
            _ => throw Fail(file, $"Split behavior '{behaviorName}' is not supported"),
        };
        bool invert = GetBool(e, "invert", false, file);
        if (GetString(pattern, "String", file) is string literal) return new SplitPreTokenizer(null, literal, behavior, invert);
        if (GetString(pattern, "Regex", file) is string regex)
        {
            try
            {
                return new SplitPreTokenizer(new CodePointRegex(regex), null, behavior, invert);
            }
            catch (ArgumentException ex)
            {
                throw Fail(file, $"Split regex '{regex}' is not supported: {ex.Message}");
            }
        }
        throw Fail(file, "Split pattern is neither String nor Regex");
    }

    // Metaspace: "replacement" plus "prepend_scheme" (always / first / never) or the older "add_prefix_space".
    private static (char, PrependScheme) ReadMetaspace(JsonElement e, string file)
    {
        string replacement = GetString(e, "replacement", file) ?? "\u2581";
        if (replacement.Length != 1) throw Fail(file, $"Metaspace replacement '{replacement}' is not one character");
        PrependScheme scheme = GetString(e, "prepend_scheme", file) switch
        {
            "always" => PrependScheme.Always,
            "first" => PrependScheme.First,
            "never" => PrependScheme.Never,
            null => GetBool(e, "add_prefix_space", true, file) ? PrependScheme.Always : PrependScheme.Never,
            string other => throw Fail(file, $"Metaspace prepend_scheme '{other}' is not supported"),
        };
        return (replacement[0], scheme);
    }

    private static DecoderRules ReadDecoder(JsonElement e, string file)
    {
        if (e.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) throw Fail(file, "no \"decoder\" section");
        var steps = new List<JsonElement>();
        if (TypeOf(e, "decoder", file) == "Sequence")
        {
            if (!e.TryGetProperty("decoders", out JsonElement list) || list.ValueKind != JsonValueKind.Array) throw Fail(file, "decoder Sequence has no \"decoders\" array");
            steps.AddRange(list.EnumerateArray());
        }
        else
        {
            steps.Add(e);
        }

        bool byteLevel = false, byteFallback = false, fused = false;
        var replacements = new List<(string, string)>();
        char? metaspace = null;
        bool metaspaceStripsFirst = false;
        int stripCount = 0;
        char stripChar = ' ';
        foreach (JsonElement step in steps)
        {
            string type = TypeOf(step, "decoder", file);
            switch (type)
            {
                case "ByteLevel":
                    byteLevel = true;
                    break;
                case "Replace":
                    (string? literal, _) = ReadPattern(step, "Replace decoder", file);
                    if (literal is null) throw Fail(file, "Replace decoder with a Regex pattern is not supported");
                    if (byteFallback || fused) throw Fail(file, "Replace decoder after ByteFallback/Fuse is not supported");
                    replacements.Add((literal, GetString(step, "content", file) ?? throw Fail(file, "Replace decoder has no \"content\"")));
                    break;
                case "ByteFallback":
                    byteFallback = true;
                    break;
                case "Fuse":
                    fused = true;
                    break;
                case "Strip":
                    string content = GetString(step, "content", file) ?? " ";
                    int start = GetCount(step, "start", file);
                    int stop = GetCount(step, "stop", file);
                    if (content.Length != 1 || stop != 0 || !fused || stripCount > 0) throw Fail(file, "Strip decoder is supported only after Fuse, stripping one character from the start");
                    stripCount = start;
                    stripChar = content[0];
                    break;
                case "Metaspace":
                    (char replacement, PrependScheme scheme) = ReadMetaspace(step, file);
                    metaspace = replacement;
                    metaspaceStripsFirst = scheme != PrependScheme.Never;
                    break;
                default:
                    throw Fail(file, $"decoder '{type}' is not supported");
            }
        }
        if (byteLevel && (byteFallback || replacements.Count > 0 || metaspace is not null || stripCount > 0))
        {
            throw Fail(file, "a ByteLevel decoder combined with other decoders is not supported");
        }
        return new DecoderRules(byteLevel, replacements, byteFallback, metaspace, metaspaceStripsFirst, stripCount, stripChar);
    }

    private static PieceDecoder BuildPieces(string?[] idToToken, DecoderRules rules)
    {
        var pieces = new byte[]?[idToToken.Length];
        byte[]?[]? first = rules.Metaspace is not null && rules.MetaspaceStripsFirst ? new byte[]?[idToToken.Length] : null;
        for (int id = 0; id < idToToken.Length; id++)
        {
            if (idToToken[id] is not string token) continue;
            if (rules.ByteLevel)
            {
                pieces[id] = ByteLevelAlphabet.TryDecode(token) ?? Encoding.UTF8.GetBytes(token);
                continue;
            }
            if (rules.ByteFallback && PieceDecoder.TryParseByteToken(token, out byte b))
            {
                pieces[id] = [b];
                if (first is not null) first[id] = [b];
                continue;
            }
            string text = token;
            foreach ((string from, string to) in rules.Replacements) text = text.Replace(from, to, StringComparison.Ordinal);
            if (rules.Metaspace is char m)
            {
                if (first is not null) first[id] = Encoding.UTF8.GetBytes(text.Replace(m.ToString(), "", StringComparison.Ordinal));
                text = text.Replace(m, ' ');
            }
            pieces[id] = Encoding.UTF8.GetBytes(text);
        }
        return new PieceDecoder(pieces, first, rules.StripCount, rules.StripChar);
    }

    // TemplateProcessing "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}] → "<s>" is prepended.
    private static string? TemplateBos(JsonElement post)
    {
        if (post.ValueKind != JsonValueKind.Object || !post.TryGetProperty("type", out JsonElement type) || type.ValueKind != JsonValueKind.String) return null;
        if (type.GetString() == "Sequence" && post.TryGetProperty("processors", out JsonElement list) && list.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement p in list.EnumerateArray())
            {
                if (TemplateBos(p) is string bos) return bos;
            }
            return null;
        }
        if (type.GetString() != "TemplateProcessing" || !post.TryGetProperty("single", out JsonElement single) || single.ValueKind != JsonValueKind.Array) return null;
        foreach (JsonElement item in single.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Object) return null;
            if (item.TryGetProperty("SpecialToken", out JsonElement st) && st.ValueKind == JsonValueKind.Object
                && st.TryGetProperty("id", out JsonElement id) && id.ValueKind == JsonValueKind.String)
            {
                return id.GetString();
            }
            return null; // the sequence comes first: nothing is prepended
        }
        return null;
    }

    // "bos_token": "<s>" or {"content": "<s>", ...} or null.
    private static string? ConfigToken(JsonElement cfg, string name, string file)
    {
        if (!cfg.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        if (v.ValueKind == JsonValueKind.Object) return GetString(v, "content", file) ?? throw Fail(file, $"\"{name}\" has no content");
        throw Fail(file, $"\"{name}\" is neither a string nor a token object");
    }

    private static int ResolveToken(Dictionary<string, int> tokenToId, string token, string file, string what) =>
        tokenToId.TryGetValue(token, out int id) ? id : throw Fail(file, $"{what} '{token}' is not a token of the tokenizer");

    // generation_config.json "eos_token_id": 2 or [151645, 151643].
    private static void ReadGenerationConfig(Source source, int vocabSize, List<int> eosIds)
    {
        using JsonDocument doc = Parse(source);
        JsonElement root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw Fail(source.Name, "the top level is not a JSON object");
        if (!root.TryGetProperty("eos_token_id", out JsonElement eos) || eos.ValueKind == JsonValueKind.Null) return;
        IEnumerable<JsonElement> items = eos.ValueKind == JsonValueKind.Array ? eos.EnumerateArray() : [eos];
        foreach (JsonElement item in items)
        {
            int id = GetId(item, "eos_token_id", source.Name);
            if (id >= vocabSize) throw Fail(source.Name, $"eos_token_id {id} is outside the vocabulary (size {vocabSize})");
            eosIds.Add(id);
        }
    }
}
