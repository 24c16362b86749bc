// The engine's tokenizer: text → ids (special tokens matched in the text, as HF tokenizers does by default)
// and ids → text, whole or streamed. Built by TokenizerLoader from tokenizer.json, tokenizer.model or a GGUF vocabulary.
namespace Pregate.Formats.Tokenizers;

/// <summary>
/// A loaded tokenizer (byte-level BPE or SentencePiece-style BPE). Immutable and thread-safe;
/// stream decoders carry the per-sequence state.
/// </summary>
public sealed class TextTokenizer
{
    private readonly string?[] _idToToken;          // [VocabSize] null where no token has the id
    private readonly Dictionary<string, int> _tokenToId;
    private readonly bool[] _special;               // [VocabSize]
    private readonly AddedTokenMatcher _addedTokens;
    private readonly SegmentEncoder _encoder;

    internal PieceDecoder Pieces { get; }

    internal TextTokenizer(
        string?[] idToToken,
        Dictionary<string, int> tokenToId,
        bool[] special,
        AddedTokenMatcher addedTokens,
        SegmentEncoder encoder,
        PieceDecoder pieces,
        int? bosId,
        IReadOnlyList<int> eosIds,
        bool addBosToken)
    {
        _idToToken = idToToken;
        _tokenToId = tokenToId;
        _special = special;
        _addedTokens = addedTokens;
        _encoder = encoder;
        Pieces = pieces;
        BosId = bosId;
        EosIds = eosIds;
        AddBosToken = addBosToken && bosId is not null;
    }

    /// <summary>One more than the largest token id (ids below it may still be unassigned).</summary>
    public int VocabSize => _idToToken.Length;

    /// <summary>The beginning-of-sequence token, if the tokenizer has one.</summary>
    public int? BosId { get; }

    /// <summary>Tokens that end generation (eos, and end-of-turn tokens the model files name).</summary>
    public IReadOnlyList<int> EosIds { get; }

    /// <summary>Whether the model expects <see cref="BosId"/> before a prompt (tokenizer_config add_bos_token, GGUF add_bos_token).</summary>
    public bool AddBosToken { get; }

    /// <summary>
    /// Token ids of <paramref name="text"/>. Added and special tokens written in the text (e.g. "&lt;|im_start|&gt;")
    /// become their single id. With <paramref name="addBos"/>, <see cref="BosId"/> (when there is one) comes first.
    /// </summary>
    public IReadOnlyList<int> Encode(string text, bool addBos)
    {
        ArgumentNullException.ThrowIfNull(text);
        var output = new List<int>(text.Length / 3 + 2);
        if (addBos && BosId is int bos) output.Add(bos);
        var segments = new List<TextSegment>();
        _addedTokens.Split(text, segments);
        foreach (TextSegment s in segments)
        {
            if (s.IsToken) output.Add(s.TokenId);
            else _encoder.Encode(text.Substring(s.Start, s.Length), s.Start == 0, output);
        }
        return output.ToArray();
    }

    /// <summary>
    /// The text of <paramref name="ids"/>. Special tokens render as their text unless <paramref name="skipSpecialTokens"/>;
    /// ids without a token are skipped (as HF tokenizers does); invalid UTF-8 becomes U+FFFD.
    /// </summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var stream = new TokenStreamDecoder(this, skipSpecialTokens);
        var sb = new System.Text.StringBuilder();
        foreach (int id in ids) sb.Append(stream.Append(id));
        sb.Append(stream.Flush());
        return sb.ToString();
    }

    /// <summary>A decoder for one generated sequence: ids in, completed text out.</summary>
    public TokenStreamDecoder CreateStreamDecoder(bool skipSpecialTokens = false) => new(this, skipSpecialTokens);

    /// <summary>Whether <paramref name="id"/> is a special (control) token: HF added tokens with special=true, GGUF/SentencePiece control and unknown tokens.</summary>
    public bool IsSpecial(int id) => (uint)id < (uint)_special.Length && _special[id];

    /// <summary>Whether generation should stop at <paramref name="id"/>.</summary>
    public bool IsEndOfGeneration(int id)
    {
        foreach (int eos in EosIds)
        {
            if (eos == id) return true;
        }
        return false;
    }

    /// <summary>The vocabulary string of token <paramref name="id"/> (e.g. "Ġthe", "▁the", "&lt;0x0A&gt;", "&lt;|endoftext|&gt;").</summary>
    /// <exception cref="ArgumentOutOfRangeException">No token has this id.</exception>
    public string TokenText(int id) =>
        (uint)id < (uint)_idToToken.Length && _idToToken[id] is string s
            ? s
            : throw new ArgumentOutOfRangeException(nameof(id), id, $"no token has id {id} (vocabulary size {VocabSize})");

    /// <summary>The id of the vocabulary string <paramref name="token"/> (exact match), or null.</summary>
    public int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        return _tokenToId.TryGetValue(token, out int id) ? id : null;
    }
}
