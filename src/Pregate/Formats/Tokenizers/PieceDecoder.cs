// Token id → the bytes it contributes to decoded text, precomputed per id from the tokenizer's decoder
// (HF decoders ByteLevel / Replace+ByteFallback+Fuse+Strip / Metaspace; SentencePiece piece rendering),
// plus the leading-character strip the decoder applies once at the start of the text.
namespace Pregate.Formats.Tokenizers;

internal sealed class PieceDecoder
{
    private readonly byte[]?[] _pieces;       // [vocab] null where the id has no token
    private readonly byte[]?[]? _firstPieces; // [vocab] variant for the first decoded token (Metaspace), or null

    /// <summary>How many <see cref="StripChar"/> characters are removed from the start of decoded text.</summary>
    public int LeadingStripCount { get; }

    public char StripChar { get; }

    public PieceDecoder(byte[]?[] pieces, byte[]?[]? firstPieces, int leadingStripCount, char stripChar)
    {
        _pieces = pieces;
        _firstPieces = firstPieces;
        LeadingStripCount = leadingStripCount;
        StripChar = stripChar;
    }

    /// <summary>The bytes of token <paramref name="id"/>; false for ids without a token.</summary>
    public bool TryGetBytes(int id, bool isFirst, out byte[] bytes)
    {
        byte[]?[] table = isFirst && _firstPieces is not null ? _firstPieces : _pieces;
        if ((uint)id < (uint)table.Length && table[id] is byte[] b)
        {
            bytes = b;
            return true;
        }
        bytes = [];
        return false;
    }

    /// <summary>The byte a SentencePiece byte token ("&lt;0xE2&gt;") stands for.</summary>
    public static bool TryParseByteToken(string token, out byte value)
    {
        value = 0;
        if (token.Length != 6 || !token.StartsWith("<0x", StringComparison.Ordinal) || token[5] != '>') return false;
        return IsHex(token[3]) && IsHex(token[4]) && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out value);
    }

    // HF's ByteFallback accepts upper- and lower-case hex digits.
    private static bool IsHex(char c) => char.IsAsciiHexDigit(c);
}
