// The HF tokenizers normalizers Pregate supports (tokenizer.json "normalizer"): NFC, NFD, Lowercase,
// Strip, Prepend, Replace and Sequence. Offsets are not tracked; only the normalized text matters here.
using System.Text.RegularExpressions;

namespace Pregate.Formats.Tokenizers;

internal abstract class TextNormalizer
{
    public abstract string Normalize(string text);
}

internal sealed class SequenceNormalizer(IReadOnlyList<TextNormalizer> steps) : TextNormalizer
{
    public override string Normalize(string text)
    {
        foreach (TextNormalizer step in steps) text = step.Normalize(text);
        return text;
    }
}

internal sealed class NfcNormalizer : TextNormalizer
{
    public override string Normalize(string text) => UnicodeNormalization.ToNfc(text);
}

internal sealed class NfdNormalizer : TextNormalizer
{
    public override string Normalize(string text) => UnicodeNormalization.ToNfd(text);
}

internal sealed class LowercaseNormalizer : TextNormalizer
{
    public override string Normalize(string text) => text.ToLowerInvariant();
}

/// <summary>Strip: removes leading and/or trailing whitespace.</summary>
internal sealed class StripNormalizer(bool left, bool right) : TextNormalizer
{
    public override string Normalize(string text) =>
        left && right ? text.Trim() : left ? text.TrimStart() : right ? text.TrimEnd() : text;
}

/// <summary>Prepend: puts <paramref name="prefix"/> before any non-empty text.</summary>
internal sealed class PrependNormalizer(string prefix) : TextNormalizer
{
    public override string Normalize(string text) => text.Length == 0 ? text : prefix + text;
}

/// <summary>Replace: every occurrence of a literal string (or regex match) becomes <c>content</c>.</summary>
internal sealed class ReplaceNormalizer : TextNormalizer
{
    private readonly string? _literal;
    private readonly Regex? _regex;
    private readonly string _content;

    public ReplaceNormalizer(string? literal, Regex? regex, string content)
    {
        _literal = literal;
        _regex = regex;
        _content = content;
    }

    public override string Normalize(string text)
    {
        if (_literal is not null) return _literal.Length == 0 ? text : text.Replace(_literal, _content, StringComparison.Ordinal);
        return _regex!.Replace(text, _content.Replace("$", "$$", StringComparison.Ordinal));
    }
}
