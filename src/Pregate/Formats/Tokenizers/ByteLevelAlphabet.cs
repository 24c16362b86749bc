// GPT-2's reversible map between the 256 byte values and printable characters (openai/gpt-2 encoder.py,
// bytes_to_unicode): byte-level BPE vocabularies spell every token in these characters.
using System.Text;

namespace Pregate.Formats.Tokenizers;

internal static class ByteLevelAlphabet
{
    private static readonly char[] ByteToCharTable = BuildByteToChar();
    private static readonly short[] CharToByteTable = BuildCharToByte(ByteToCharTable);

    /// <summary>The printable character that stands for byte <paramref name="b"/>.</summary>
    public static char ByteToChar(byte b) => ByteToCharTable[b];

    /// <summary>The byte a byte-level character stands for; false for characters outside the alphabet.</summary>
    public static bool TryCharToByte(char c, out byte b)
    {
        if (c < CharToByteTable.Length && CharToByteTable[c] >= 0)
        {
            b = (byte)CharToByteTable[c];
            return true;
        }
        b = 0;
        return false;
    }

    /// <summary>Spells the UTF-8 bytes of <paramref name="text"/> in byte-level characters.</summary>
    public static string Encode(string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        return string.Create(bytes.Length, bytes, static (span, b) =>
        {
            for (int i = 0; i < b.Length; i++) span[i] = ByteToCharTable[b[i]];
        });
    }

    /// <summary>The bytes a byte-level token spells, or null when a character is outside the alphabet.</summary>
    public static byte[]? TryDecode(string token)
    {
        var bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            if (!TryCharToByte(token[i], out bytes[i])) return null;
        }
        return bytes;
    }

    // Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100.. in byte order.
    private static char[] BuildByteToChar()
    {
        var table = new char[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            table[b] = printable ? (char)b : (char)(256 + next++);
        }
        return table;
    }

    private static short[] BuildCharToByte(char[] byteToChar)
    {
        var table = new short[256 + 68];
        Array.Fill(table, (short)-1);
        for (int b = 0; b < 256; b++) table[byteToChar[b]] = (short)b;
        return table;
    }
}
