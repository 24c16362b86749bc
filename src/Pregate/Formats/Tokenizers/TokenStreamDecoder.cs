// Incremental detokenization: feed generated ids one at a time, get back the text that became complete.
// Bytes of a UTF-8 character split over several tokens are held until the character is whole.
using System.Text;

namespace Pregate.Formats.Tokenizers;

/// <summary>
/// Turns a stream of token ids into text as it becomes complete. The concatenation of everything
/// <see cref="Append"/> and <see cref="Flush"/> return equals <see cref="TextTokenizer.Decode"/> of the same ids.
/// Not thread-safe: one instance per generated sequence.
/// </summary>
public sealed class TokenStreamDecoder
{
    private readonly TextTokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] _chars = new char[64];
    private bool _beforeFirstToken = true;
    private int _stripRemaining;

    internal TokenStreamDecoder(TextTokenizer tokenizer, bool skipSpecialTokens)
    {
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
        _stripRemaining = tokenizer.Pieces.LeadingStripCount;
    }

    /// <summary>
    /// Adds one token and returns the text completed by it: empty while a multi-byte character is still
    /// incomplete, for skipped special tokens, and for ids without a token.
    /// </summary>
    public string Append(int id)
    {
        if (_skipSpecialTokens && _tokenizer.IsSpecial(id)) return string.Empty;
        if (!_tokenizer.Pieces.TryGetBytes(id, _beforeFirstToken, out byte[] bytes)) return string.Empty;
        _beforeFirstToken = false;
        return Emit(bytes, flush: false);
    }

    /// <summary>Ends the text: bytes of an unfinished UTF-8 character come out as U+FFFD. Later tokens continue the same text.</summary>
    public string Flush() => Emit([], flush: true);

    private string Emit(byte[] bytes, bool flush)
    {
        int needed = _utf8.GetCharCount(bytes, flush: false) + 4;
        if (_chars.Length < needed) _chars = new char[Math.Max(needed, _chars.Length * 2)];
        int count = _utf8.GetChars(bytes, 0, bytes.Length, _chars, 0, flush);
        int start = 0;
        char strip = _tokenizer.Pieces.StripChar;
        while (_stripRemaining > 0 && start < count)
        {
            if (_chars[start] == strip)
            {
                start++;
                _stripRemaining--;
            }
            else
            {
                _stripRemaining = 0;
            }
        }
        return count > start ? new string(_chars, start, count - start) : string.Empty;
    }
}
