// The HF tokenizers pre-tokenizers Pregate supports (tokenizer.json "pre_tokenizer"): ByteLevel, Split,
// Metaspace, Digits and Sequence. Each step splits the current pieces further, in order.
namespace Pregate.Formats.Tokenizers;

/// <summary>A piece of pre-tokenized text; <see cref="AtTextStart"/> when it begins at offset 0 of the original input.</summary>
internal readonly record struct PreToken(string Text, bool AtTextStart);

internal abstract class PreTokenizerStep
{
    /// <summary>Replaces <paramref name="pieces"/> with their further split (empty pieces dropped).</summary>
    public abstract void Apply(List<PreToken> pieces);
}

internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>Split: cuts each piece at the matches of a pattern, keeping matches as told by the behavior.</summary>
internal sealed class SplitPreTokenizer(CodePointRegex? regex, string? literal, SplitBehavior behavior, bool invert) : PreTokenizerStep
{
    public override void Apply(List<PreToken> pieces)
    {
        var result = new List<PreToken>(pieces.Count * 4);
        var matches = new List<(int Start, int Length)>();
        foreach (PreToken piece in pieces)
        {
            matches.Clear();
            if (regex is not null) regex.Matches(piece.Text, matches);
            else FindLiteral(piece.Text, literal!, matches);
            SplitOne(piece, matches, behavior, invert, result);
        }
        pieces.Clear();
        pieces.AddRange(result);
    }

    private static void FindLiteral(string text, string literal, List<(int, int)> matches)
    {
        if (literal.Length == 0) return;
        for (int i = text.IndexOf(literal, StringComparison.Ordinal); i >= 0; i = text.IndexOf(literal, i + literal.Length, StringComparison.Ordinal))
        {
            matches.Add((i, literal.Length));
        }
    }

    internal static void SplitOne(PreToken piece, List<(int Start, int Length)> matches, SplitBehavior behavior, bool invert, List<PreToken> output)
    {
        string text = piece.Text;
        // Spans covering the text, each flagged as a (possibly inverted) match.
        var spans = new List<(int Start, int End, bool IsMatch)>();
        int pos = 0;
        foreach ((int start, int length) in matches)
        {
            if (start > pos) spans.Add((pos, start, invert));
            spans.Add((start, start + length, !invert));
            pos = start + length;
        }
        if (pos < text.Length) spans.Add((pos, text.Length, invert));

        var merged = new List<(int Start, int End)>();
        switch (behavior)
        {
            case SplitBehavior.Removed:
                foreach (var s in spans) if (!s.IsMatch) merged.Add((s.Start, s.End));
                break;
            case SplitBehavior.Isolated:
                foreach (var s in spans) merged.Add((s.Start, s.End));
                break;
            case SplitBehavior.MergedWithPrevious:
                foreach (var s in spans)
                {
                    if (s.IsMatch && merged.Count > 0) merged[^1] = (merged[^1].Start, s.End);
                    else merged.Add((s.Start, s.End));
                }
                break;
            case SplitBehavior.MergedWithNext:
                bool pendingMatch = false;
                foreach (var s in spans)
                {
                    if (pendingMatch) merged[^1] = (merged[^1].Start, s.End);
                    else merged.Add((s.Start, s.End));
                    pendingMatch = s.IsMatch;
                }
                break;
            case SplitBehavior.Contiguous:
                bool previousMatch = false;
                foreach (var s in spans)
                {
                    if (s.IsMatch && previousMatch) merged[^1] = (merged[^1].Start, s.End);
                    else merged.Add((s.Start, s.End));
                    previousMatch = s.IsMatch;
                }
                break;
        }
        foreach ((int start, int end) in merged)
        {
            if (end > start) output.Add(new PreToken(text[start..end], piece.AtTextStart && start == 0));
        }
    }
}

/// <summary>ByteLevel: optional prefix space, optional GPT-2 regex split, then each UTF-8 byte spelled in GPT-2's alphabet.</summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, CodePointRegex? regex) : PreTokenizerStep
{
    public override void Apply(List<PreToken> pieces)
    {
        var result = new List<PreToken>(pieces.Count * 4);
        var matches = new List<(int Start, int Length)>();
        foreach (PreToken original in pieces)
        {
            PreToken piece = addPrefixSpace && !original.Text.StartsWith(' ') ? original with { Text = " " + original.Text } : original;
            if (regex is null)
            {
                result.Add(piece);
                continue;
            }
            matches.Clear();
            regex.Matches(piece.Text, matches);
            SplitPreTokenizer.SplitOne(piece, matches, SplitBehavior.Isolated, invert: false, result);
        }
        pieces.Clear();
        foreach (PreToken p in result)
        {
            if (p.Text.Length > 0) pieces.Add(p with { Text = ByteLevelAlphabet.Encode(p.Text) });
        }
    }
}

internal enum PrependScheme { Always, First, Never }

/// <summary>Metaspace: spaces become the replacement character ('▁'), a prefix is added per the scheme, optional split before each '▁'.</summary>
internal sealed class MetaspacePreTokenizer(char replacement, PrependScheme scheme, bool split) : PreTokenizerStep
{
    public override void Apply(List<PreToken> pieces)
    {
        var result = new List<PreToken>(pieces.Count * 4);
        var matches = new List<(int Start, int Length)>();
        foreach (PreToken piece in pieces)
        {
            string text = piece.Text.Replace(' ', replacement);
            bool prepend = scheme == PrependScheme.Always || (scheme == PrependScheme.First && piece.AtTextStart);
            if (prepend && !text.StartsWith(replacement)) text = replacement + text;
            var replaced = new PreToken(text, piece.AtTextStart);
            if (!split)
            {
                if (text.Length > 0) result.Add(replaced);
                continue;
            }
            matches.Clear();
            for (int i = text.IndexOf(replacement); i >= 0; i = text.IndexOf(replacement, i + 1)) matches.Add((i, 1));
            SplitPreTokenizer.SplitOne(replaced, matches, SplitBehavior.MergedWithNext, invert: false, result);
        }
        pieces.Clear();
        pieces.AddRange(result);
    }
}

/// <summary>Digits: isolates each numeric character, or each run of them.</summary>
internal sealed class DigitsPreTokenizer(bool individualDigits) : PreTokenizerStep
{
    public override void Apply(List<PreToken> pieces)
    {
        var result = new List<PreToken>(pieces.Count * 2);
        var matches = new List<(int Start, int Length)>();
        foreach (PreToken piece in pieces)
        {
            matches.Clear();
            string text = piece.Text;
            for (int i = 0; i < text.Length; i++)
            {
                if (!char.IsNumber(text[i])) continue;
                int start = i;
                if (!individualDigits)
                {
                    while (i + 1 < text.Length && char.IsNumber(text[i + 1])) i++;
                }
                matches.Add((start, i - start + 1));
            }
            SplitPreTokenizer.SplitOne(piece, matches, SplitBehavior.Isolated, invert: false, result);
        }
        pieces.Clear();
        pieces.AddRange(result);
    }
}
