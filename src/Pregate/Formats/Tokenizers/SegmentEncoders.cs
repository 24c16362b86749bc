// What turns a run of plain text (between added/special tokens) into ids: the HF pipeline
// (normalizer → normalized added tokens → pre-tokenizers → BPE) or SentencePiece's (prefix, escape, BPE by score).
namespace Pregate.Formats.Tokenizers;

internal abstract class SegmentEncoder
{
    /// <summary>Appends the ids of <paramref name="text"/>; <paramref name="atTextStart"/> when it begins the whole input.</summary>
    public abstract void Encode(string text, bool atTextStart, List<int> output);
}

/// <summary>HF tokenizers' order: normalize, split out normalized added tokens, pre-tokenize, BPE each word.</summary>
internal sealed class HuggingFaceBpeEncoder(
    TextNormalizer? normalizer,
    AddedTokenMatcher? normalizedAddedTokens,
    IReadOnlyList<PreTokenizerStep> preTokenizers,
    BpeModel model) : SegmentEncoder
{
    public override void Encode(string text, bool atTextStart, List<int> output)
    {
        string normalized = normalizer?.Normalize(text) ?? text;
        if (normalizedAddedTokens is null || normalizedAddedTokens.Count == 0)
        {
            EncodePlain(normalized, atTextStart, output);
            return;
        }
        var segments = new List<TextSegment>();
        normalizedAddedTokens.Split(normalized, segments);
        foreach (TextSegment s in segments)
        {
            if (s.IsToken) output.Add(s.TokenId);
            else EncodePlain(normalized.Substring(s.Start, s.Length), atTextStart && s.Start == 0, output);
        }
    }

    private void EncodePlain(string text, bool atTextStart, List<int> output)
    {
        if (text.Length == 0) return;
        if (preTokenizers.Count == 0)
        {
            model.Encode(text, output);
            return;
        }
        var pieces = new List<PreToken> { new(text, atTextStart) };
        foreach (PreTokenizerStep step in preTokenizers) step.Apply(pieces);
        foreach (PreToken piece in pieces) model.Encode(piece.Text, output);
    }
}

/// <summary>SentencePiece / llama.cpp SPM: optional extra-space removal, a dummy space prefix, spaces escaped as '▁', BPE by score.</summary>
internal sealed class SentencePieceEncoder(SentencePieceBpe model, bool addSpacePrefix, bool escapeWhitespace, bool removeExtraWhitespace) : SegmentEncoder
{
    public const char SpaceMarker = '\u2581';

    public override void Encode(string text, bool atTextStart, List<int> output)
    {
        if (removeExtraWhitespace) text = CollapseSpaces(text);
        if (text.Length == 0) return;
        if (addSpacePrefix) text = " " + text;
        if (escapeWhitespace) text = text.Replace(' ', SpaceMarker);
        model.Encode(text, output);
    }

    // SentencePiece remove_extra_whitespaces: no leading or trailing spaces, runs of spaces become one.
    private static string CollapseSpaces(string text)
    {
        var sb = new System.Text.StringBuilder(text.Length);
        bool pendingSpace = false;
        foreach (char c in text)
        {
            if (c == ' ')
            {
                pendingSpace = sb.Length > 0;
                continue;
            }
            if (pendingSpace) sb.Append(' ');
            pendingSpace = false;
            sb.Append(c);
        }
        return sb.ToString();
    }
}
