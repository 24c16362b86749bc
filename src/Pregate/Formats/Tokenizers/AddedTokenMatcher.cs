// Finds added/special tokens inside text before the model sees it (HF tokenizers AddedVocabulary:
// leftmost-longest match, with the lstrip / rstrip / single_word options of each token).
namespace Pregate.Formats.Tokenizers;

/// <summary>A token matched verbatim in the input text instead of going through the model.</summary>
internal sealed record AddedToken(int Id, string Content, bool LStrip = false, bool RStrip = false, bool SingleWord = false);

/// <summary>A piece of text: either a matched token (<see cref="TokenId"/> ≥ 0) or plain text for the model.</summary>
internal readonly record struct TextSegment(int Start, int Length, int TokenId)
{
    public bool IsToken => TokenId >= 0;
}

internal sealed class AddedTokenMatcher
{
    private readonly Dictionary<char, AddedToken[]> _byFirstChar; // each list longest content first

    public int Count { get; }

    public AddedTokenMatcher(IEnumerable<AddedToken> tokens)
    {
        var groups = new Dictionary<char, List<AddedToken>>();
        foreach (AddedToken t in tokens)
        {
            if (t.Content.Length == 0) continue;
            if (!groups.TryGetValue(t.Content[0], out List<AddedToken>? list)) groups[t.Content[0]] = list = [];
            if (list.Exists(x => x.Content == t.Content)) continue;
            list.Add(t);
            Count++;
        }
        _byFirstChar = groups.ToDictionary(
            g => g.Key,
            g => g.Value.OrderByDescending(t => t.Content.Length).ThenBy(t => t.Content, StringComparer.Ordinal).ToArray());
    }

    /// <summary>Splits <paramref name="text"/> into plain-text and token segments, in order; empty text segments are dropped.</summary>
    public void Split(string text, List<TextSegment> output)
    {
        if (_byFirstChar.Count == 0)
        {
            if (text.Length > 0) output.Add(new TextSegment(0, text.Length, -1));
            return;
        }
        int textStart = 0;
        int i = 0;
        while (i < text.Length)
        {
            AddedToken? match = FindAt(text, i);
            if (match is null)
            {
                i++;
                continue;
            }
            int start = i, end = i + match.Content.Length;
            if (match.LStrip)
            {
                while (start > textStart && char.IsWhiteSpace(text[start - 1])) start--;
            }
            if (match.RStrip)
            {
                while (end < text.Length && char.IsWhiteSpace(text[end])) end++;
            }
            if (start > textStart) output.Add(new TextSegment(textStart, start - textStart, -1));
            output.Add(new TextSegment(start, end - start, match.Id));
            textStart = i = end;
        }
        if (textStart < text.Length) output.Add(new TextSegment(textStart, text.Length - textStart, -1));
    }

    private AddedToken? FindAt(string text, int i)
    {
        if (!_byFirstChar.TryGetValue(text[i], out AddedToken[]? candidates)) return null;
        foreach (AddedToken t in candidates)
        {
            if (i + t.Content.Length > text.Length || string.CompareOrdinal(text, i, t.Content, 0, t.Content.Length) != 0) continue;
            if (t.SingleWord && !IsWordBoundary(text, i, i + t.Content.Length)) continue;
            return t;
        }
        return null;
    }

    // single_word: the match must not touch a word character on either side.
    private static bool IsWordBoundary(string text, int start, int end) =>
        (start == 0 || !IsWordChar(text[start - 1])) && (end == text.Length || !IsWordChar(text[end]));

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';
}
