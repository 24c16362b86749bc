// llama.cpp's embedded vocabulary (GGUF tokenizer.ggml.* keys) as plain arrays, so the tokenizer does not
// depend on the GGUF reader. Field meanings follow llama.cpp's llama-vocab.cpp.
namespace Pregate.Formats.Tokenizers;

/// <summary>Token types of tokenizer.ggml.token_type (llama.cpp llama_token_type).</summary>
public static class GgufTokenType
{
    public const int Undefined = 0;
    public const int Normal = 1;
    public const int Unknown = 2;
    public const int Control = 3;
    public const int UserDefined = 4;
    public const int Unused = 5;
    public const int Byte = 6;
}

/// <summary>
/// A GGUF vocabulary: <see cref="Model"/> "llama" (SentencePiece BPE by <see cref="Scores"/>, byte tokens "&lt;0xXX&gt;")
/// or "gpt2" (byte-level BPE by <see cref="Merges"/>, pre-tokenizer named by <see cref="Pre"/>).
/// </summary>
public sealed record GgufVocabulary
{
    /// <summary>tokenizer.ggml.model: "llama" or "gpt2".</summary>
    public required string Model { get; init; }

    /// <summary>tokenizer.ggml.tokens, indexed by id.</summary>
    public required IReadOnlyList<string> Tokens { get; init; }

    /// <summary>tokenizer.ggml.scores (merge priority for "llama"); absent means all 0.</summary>
    public IReadOnlyList<float>? Scores { get; init; }

    /// <summary>tokenizer.ggml.token_type, values of <see cref="GgufTokenType"/>; absent means all normal.</summary>
    public IReadOnlyList<int>? TokenTypes { get; init; }

    /// <summary>tokenizer.ggml.merges, "left right" by rank (required for "gpt2").</summary>
    public IReadOnlyList<string>? Merges { get; init; }

    /// <summary>tokenizer.ggml.pre for "gpt2": "gpt-2", "olmo", "llama-bpe"/"llama3", "qwen2".</summary>
    public string? Pre { get; init; }

    /// <summary>tokenizer.ggml.bos_token_id; absent for "llama": 1 (llama.cpp's default).</summary>
    public int? BosId { get; init; }
    /// <summary>tokenizer.ggml.eos_token_id; absent for "llama": 2 (llama.cpp's default).</summary>
    public int? EosId { get; init; }
    /// <summary>tokenizer.ggml.eot_token_id (end of turn), also ends generation.</summary>
    public int? EotId { get; init; }
    /// <summary>tokenizer.ggml.eom_token_id (end of message), also ends generation.</summary>
    public int? EomId { get; init; }
    /// <summary>tokenizer.ggml.unknown_token_id; absent: the first token of type unknown.</summary>
    public int? UnknownId { get; init; }

    /// <summary>tokenizer.ggml.add_bos_token; absent: true for "llama" and Llama-3 pre-tokenizers, else false.</summary>
    public bool? AddBosToken { get; init; }

    /// <summary>tokenizer.ggml.add_space_prefix; absent: true for "llama", false for "gpt2".</summary>
    public bool? AddSpacePrefix { get; init; }

    /// <summary>tokenizer.ggml.remove_extra_whitespaces; absent: false.</summary>
    public bool? RemoveExtraWhitespaces { get; init; }
}
