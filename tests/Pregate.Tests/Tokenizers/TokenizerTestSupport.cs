// Shared inputs and helpers for the tokenizer tests: varied sample strings, temporary files, and the
// Hugging Face Rust tokenizers (Tokenizers.DotNet) as the reference implementation.
using System.Text;

namespace Pregate.Tests.Tokenizers;

internal static class TokenizerTestSupport
{
    /// <summary>ASCII, accents, CJK, emoji (with modifiers), whitespace runs, leading/trailing spaces, digits, contractions, astral letters.</summary>
    public static readonly string[] Samples =
    [
        "",
        "Hello world",
        "The quick brown fox jumps over the lazy dog.",
        " leading space",
        "   three leading spaces",
        "trailing space ",
        "a   b\t\tc\n\nd",
        "\n\nstarts with newlines",
        "café, naïve, résumé, Ærøskøbing",
        "日本語のテキスト",
        "中文分词测试",
        "emoji 👍🏽 and 🧪 and 👨‍👩‍👧",
        "I'm sure it's fine, we'll see; they've GOT IT'S",
        "numbers 12345 and 3.14159, 1,000,000!",
        "mixed: abc123def 𝒜𝒷𝒸 x𝒜y",
        "tabs\tand\r\nwindows line ends",
        "punctuation!!! ??? ... --- ***",
        "ümlaut Ümlaut straße",
        "κόσμε здравствуй мир",
    ];

    public static string TempDirectory()
    {
        string dir = Path.Combine(Path.GetTempPath(), "pregate-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    public static string WriteTemp(string dir, string name, string content)
    {
        string path = Path.Combine(dir, name);
        File.WriteAllText(path, content, new UTF8Encoding(false));
        return path;
    }

    /// <summary>Ids from the Hugging Face Rust tokenizers for the tokenizer.json at <paramref name="path"/>.</summary>
    public static int[] HfEncode(global::Tokenizers.DotNet.Tokenizer hf, string text) => hf.Encode(text).Select(x => (int)x).ToArray();

    public static string Show(IEnumerable<int> ids) => "[" + string.Join(", ", ids) + "]";

    public static string Escape(string s)
    {
        var sb = new StringBuilder();
        foreach (char c in s)
        {
            if (c < 0x20 || c > 0x7E) sb.Append($"\\u{(int)c:X4}");
            else sb.Append(c);
        }
        return sb.ToString();
    }
}
