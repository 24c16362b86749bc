// Pre-tokenizer regular expressions evaluated per code point, as the Rust (Oniguruma) and llama.cpp
// implementations do. .NET's Regex sees UTF-16 units, so \p{L} would not match a letter outside the
// BMP; each such code point is stood in for by a BMP character of the same Unicode category.
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Pregate.Formats.Tokenizers;

internal sealed class CodePointRegex
{
    /// <summary>GPT-2's pre-tokenizer (openai/gpt-2 encoder.py; HF ByteLevel with use_regex).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>Llama 3's pre-tokenizer (tokenizer.json Split pattern; llama.cpp pre "llama-bpe").</summary>
    public const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Qwen2's pre-tokenizer (tokenizer.json Split pattern; llama.cpp pre "qwen2").</summary>
    public const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private readonly Regex _regex;

    public string Pattern { get; }

    /// <exception cref="ArgumentException">The pattern is not a valid .NET regular expression.</exception>
    public CodePointRegex(string pattern)
    {
        Pattern = pattern;
        _regex = new Regex(pattern, RegexOptions.CultureInvariant | RegexOptions.Compiled);
    }

    /// <summary>Appends the (start, length) of every non-empty match in <paramref name="text"/>, in UTF-16 units of the original text.</summary>
    public void Matches(string text, List<(int Start, int Length)> output)
    {
        if (!HasSurrogates(text))
        {
            for (Match m = _regex.Match(text); m.Success; m = m.NextMatch())
            {
                if (m.Length > 0) output.Add((m.Index, m.Length));
            }
            return;
        }

        // One stand-in char per code point; origin[k] is where stand-in k starts in the original text.
        var standIn = new StringBuilder(text.Length);
        var origin = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length; i++)
        {
            origin.Add(i);
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                standIn.Append(StandIn(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(c, text[i + 1]))));
                i++;
            }
            else
            {
                standIn.Append(c);
            }
        }
        origin.Add(text.Length);
        for (Match m = _regex.Match(standIn.ToString()); m.Success; m = m.NextMatch())
        {
            if (m.Length == 0) continue;
            int start = origin[m.Index];
            output.Add((start, origin[m.Index + m.Length] - start));
        }
    }

    private static bool HasSurrogates(string text)
    {
        foreach (char c in text)
        {
            if (char.IsSurrogate(c)) return true;
        }
        return false;
    }

    // BMP characters of each general category, none of them ASCII or a literal in a known pattern.
    private static char StandIn(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter => '\u00C0',
        UnicodeCategory.LowercaseLetter => '\u00E0',
        UnicodeCategory.TitlecaseLetter => '\u01C5',
        UnicodeCategory.ModifierLetter => '\u02B0',
        UnicodeCategory.OtherLetter => '\u05D0',
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u0488',
        UnicodeCategory.DecimalDigitNumber => '\u0660',
        UnicodeCategory.LetterNumber => '\u2160',
        UnicodeCategory.OtherNumber => '\u00B2',
        UnicodeCategory.SpaceSeparator => '\u3000',
        UnicodeCategory.LineSeparator => '\u2028',
        UnicodeCategory.ParagraphSeparator => '\u2029',
        UnicodeCategory.Control => '\u0080',
        UnicodeCategory.Format => '\u00AD',
        UnicodeCategory.PrivateUse => '\uE000',
        UnicodeCategory.ConnectorPunctuation => '\u203F',
        UnicodeCategory.DashPunctuation => '\u2010',
        UnicodeCategory.OpenPunctuation => '\u2045',
        UnicodeCategory.ClosePunctuation => '\u2046',
        UnicodeCategory.InitialQuotePunctuation => '\u00AB',
        UnicodeCategory.FinalQuotePunctuation => '\u00BB',
        UnicodeCategory.OtherPunctuation => '\u00A1',
        UnicodeCategory.MathSymbol => '\u00D7',
        UnicodeCategory.CurrencySymbol => '\u00A2',
        UnicodeCategory.ModifierSymbol => '\u02C2',
        UnicodeCategory.OtherSymbol => '\u00A6',
        _ => '\u0378', // unassigned
    };
}
