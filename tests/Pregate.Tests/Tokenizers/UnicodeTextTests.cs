// Canonical normalization (NFC/NFD, needed because string.Normalize is a no-op under invariant globalization)
// against vectors from Python's unicodedata, and code-point-correct pre-tokenizer regex splitting.
using Pregate.Formats.Tokenizers;

namespace Pregate.Tests.Tokenizers;

public class UnicodeTextTests
{
    // (input, NFC, NFD) computed with Python's unicodedata (Unicode 14): composition, Hangul, reordering,
    // exclusions (U+0958), singletons (U+212B, U+2126), non-starter composition (U+0B47 U+0B3E), astral (U+1D15E).
    public static readonly TheoryData<string, string, string> Vectors = new()
    {
        { "cafe\u0301", "caf\u00E9", "cafe\u0301" },
        { "\u00E9", "\u00E9", "e\u0301" },
        { "A\u030Angstr\u00F6m \u212B", "\u00C5ngstr\u00F6m \u00C5", "A\u030Angstro\u0308m A\u030A" },
        { "\u1100\u1161\u11A8", "\uAC01", "\u1100\u1161\u11A8" },
        { "\uAC01", "\uAC01", "\u1100\u1161\u11A8" },
        { "a\u0301\u0328", "\u0105\u0301", "a\u0328\u0301" },
        { "q\u0307\u0323", "q\u0323\u0307", "q\u0323\u0307" },
        { "\u0958", "\u0915\u093C", "\u0915\u093C" },
        { "\u1E9B\u0323", "\u1E9B\u0323", "\u017F\u0323\u0307" },
        { "\u0B47\u0B3E", "\u0B4B", "\u0B47\u0B3E" },
        { "\u00C5\u0301", "\u01FA", "A\u030A\u0301" },
        { "x\u0300\u0301\u0302", "x\u0300\u0301\u0302", "x\u0300\u0301\u0302" },
        { "A\u0308\u0304", "\u01DE", "A\u0308\u0304" },
        { "\uFB01", "\uFB01", "\uFB01" },
        { "\u2126", "\u03A9", "\u03A9" },
        { "\U0001D15E", "\U0001D157\U0001D165", "\U0001D157\U0001D165" },
        { "u\u0327\u1100\u0301\u0300\u0316A\u0323\u11A8\u0302\u0302\u0316c\u0323", "u\u0327\u1100\u0316\u0301\u0300\u1EA0\u11A8\u0316\u0302\u0302c\u0323", "u\u0327\u1100\u0316\u0301\u0300A\u0323\u11A8\u0316\u0302\u0302c\u0323" },
        { "A\u030A\u030A\u030A\u11A8\u0308\u0327\u0301a\u0316u\u030A\u0328c\u0327\u0302\u030A", "\u00C5\u030A\u030A\u11A8\u0327\u0308\u0301a\u0316\u0173\u030A\u00E7\u0302\u030A", "A\u030A\u030A\u030A\u11A8\u0327\u0308\u0301a\u0316u\u0328\u030Ac\u0327\u0302\u030A" },
        { "Ae\u0316\u0301\u0327\uAC00c\u0300A\u030A\u0301\u0300", "A\u0229\u0316\u0301\uAC00c\u0300\u01FA\u0300", "Ae\u0327\u0316\u0301\u1100\u1161c\u0300A\u030A\u0301\u0300" },
        { "\u1100c\u0302\u0328z\u0300Ae", "\u1100\u0109\u0328z\u0300Ae", "\u1100c\u0328\u0302z\u0300Ae" },
        { "plain ASCII", "plain ASCII", "plain ASCII" },
    };

    [Theory]
    [MemberData(nameof(Vectors))]
    public void NfcAndNfd_MatchUnicodeData(string input, string nfc, string nfd)
    {
        Assert.Equal(nfc, UnicodeNormalization.ToNfc(input));
        Assert.Equal(nfd, UnicodeNormalization.ToNfd(input));
        Assert.Equal(nfc, UnicodeNormalization.ToNfc(nfd));
    }

    [Fact]
    public void Gpt2Regex_TreatsAstralLettersAndDigitsByCategory()
    {
        var regex = new CodePointRegex(CodePointRegex.Gpt2Pattern);
        string[] Split(string text)
        {
            var spans = new List<(int Start, int Length)>();
            regex.Matches(text, spans);
            return spans.Select(s => text.Substring(s.Start, s.Length)).ToArray();
        }
        // U+1D49C 𝒜 is a letter, U+1D7D9 𝟙 a decimal digit, U+1F44D 👍 a symbol.
        Assert.Equal(["x\U0001D49Cy", " \U0001D7D9\U0001D7DA", " \U0001F44D!", " ok"], Split("x\U0001D49Cy \U0001D7D9\U0001D7DA \U0001F44D! ok"));
        Assert.Equal(["a", "'s", " b", "  ", " c"], Split("a's b   c"));
    }
}
