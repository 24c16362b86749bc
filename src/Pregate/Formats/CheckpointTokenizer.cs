// The tokenizer that belongs to a checkpoint: the vocabulary embedded in a GGUF file (tokenizer.ggml.*), or the
// tokenizer.json / tokenizer.model of a Hugging Face folder.
using Pregate.Core;
using Pregate.Formats.Gguf;
using Pregate.Formats.Tokenizers;

namespace Pregate.Formats;

public static class CheckpointTokenizer
{
    /// <exception cref="ModelFormatException">The checkpoint has no tokenizer, or it is malformed.</exception>
    public static TextTokenizer Load(Checkpoint ck)
    {
        if (ck.Format == CheckpointFormat.HuggingFace) return TokenizerLoader.FromHuggingFaceDirectory(ck.Path);
        return TokenizerLoader.FromGgufVocab(ReadGgufVocabulary(ck.Gguf!), ck.Path);
    }

    /// <summary>The tokenizer.ggml.* keys of <paramref name="f"/>.</summary>
    public static GgufVocabulary ReadGgufVocabulary(GgufFile f)
    {
        if (!f.TryGetString("tokenizer.ggml.model", out var model))
            throw new ModelFormatException(f.Path, "the file has no embedded tokenizer (tokenizer.ggml.model is missing)");
        if (!f.TryGetValue("tokenizer.ggml.tokens", out var tokens))
            throw new ModelFormatException(f.Path, "tokenizer.ggml.tokens is missing");
        int? Int(string key) => f.TryGetInt(key, out int v) ? v : null;
        bool? Bool(string key) => f.TryGetBool(key, out bool v) ? v : null;
        return new GgufVocabulary
        {
            Model = model,
            Tokens = tokens.AsStringArray(),
            Scores = f.TryGetValue("tokenizer.ggml.scores", out var s) ? s.AsFloatArray() : null,
            TokenTypes = f.TryGetValue("tokenizer.ggml.token_type", out var t) ? t.AsIntArray() : null,
            Merges = f.TryGetValue("tokenizer.ggml.merges", out var m) ? m.AsStringArray() : null,
            Pre = f.TryGetString("tokenizer.ggml.pre", out var pre) ? pre : null,
            BosId = Int(GgufModelConfig.BosTokenKey),
            EosId = Int(GgufModelConfig.EosTokenKey),
            EotId = Int(GgufModelConfig.EotTokenKey),
            EomId = Int("tokenizer.ggml.eom_token_id"),
            UnknownId = Int("tokenizer.ggml.unknown_token_id"),
            AddBosToken = Bool("tokenizer.ggml.add_bos_token"),
            AddSpacePrefix = Bool("tokenizer.ggml.add_space_prefix"),
            RemoveExtraWhitespaces = Bool("tokenizer.ggml.remove_extra_whitespaces"),
        };
    }
}
