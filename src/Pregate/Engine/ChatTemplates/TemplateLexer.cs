// Splits a template into text and tag tokens with Jinja's whitespace rules as Hugging Face configures them
// (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False; `-`/`+` modifiers), handles {# comments #} and
// {% raw %} blocks, and tokenizes the expressions inside tags. Reference: Jinja2 3.1 lexer.py (Lexer.tokeniter).
using System.Collections.Immutable;
using System.Globalization;
using System.Text;

namespace Pregate.Engine.ChatTemplates;

internal enum TokenKind { Text, VariableBegin, VariableEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Operator, End }

internal readonly record struct Token(TokenKind Kind, string Text, int Position, object? Value = null);

/// <summary>Maps character positions of the (newline-normalized) source to 1-based line and column.</summary>
internal sealed class SourceMap
{
    private readonly List<int> lineStarts = [0];

    public SourceMap(string source)
    {
        for (int i = 0; i < source.Length; i++)
            if (source[i] == '\n') lineStarts.Add(i + 1);
    }

    public (int Line, int Column) Locate(int position)
    {
        int index = lineStarts.BinarySearch(position);
        if (index < 0) index = ~index - 1;
        return (index + 1, position - lineStarts[index] + 1);
    }
}

internal sealed class TemplateLexer
{
    private static readonly ImmutableArray<string> Operators =
        ["**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "[", "]", "(", ")", "{", "}", "<", ">", "=", ".", ",", ":", "|", ";"];

    private readonly string source;
    private readonly List<Token> tokens = [];
    private int position;
    private bool lineStarting = true;

    private TemplateLexer(string source)
    {
        this.source = source;
        Map = new SourceMap(source);
    }

    private SourceMap Map { get; }

    /// <summary>Normalizes newlines (\r\n and \r become \n), drops one trailing newline, and tokenizes.</summary>
    public static (List<Token> Tokens, SourceMap Map) Tokenize(string template)
    {
        string source = template.Replace("\r\n", "\n").Replace('\r', '\n');
        if (source.EndsWith('\n')) source = source[..^1];
        var lexer = new TemplateLexer(source);
        lexer.Run();
        return (lexer.tokens, lexer.Map);
    }

    private ChatTemplateException Error(int at, string message)
    {
        var (line, column) = Map.Locate(at);
        return new ChatTemplateException(ChatTemplateErrorKind.Syntax, message, line, column);
    }

    private void Run()
    {
        while (position < source.Length)
        {
            int tagStart = FindTagStart(position);
            if (tagStart < 0)
            {
                tokens.Add(new Token(TokenKind.Text, source[position..], position));
                break;
            }
            char kind = source[tagStart + 1];
            char sign = tagStart + 2 < source.Length && source[tagStart + 2] is '-' or '+' ? source[tagStart + 2] : '\0';
            int rawBodyStart = kind == '%' ? MatchRawBegin(tagStart + 2 + (sign == '\0' ? 0 : 1)) : -1;
            string text = ControlWhitespace(source[position..tagStart], sign, isVariable: kind == '{');
            if (text.Length > 0) tokens.Add(new Token(TokenKind.Text, text, position));
            if (kind == '#') LexComment(tagStart, tagStart + 2 + (sign == '\0' ? 0 : 1));
            else if (rawBodyStart >= 0) LexRaw(tagStart, rawBodyStart);
            else LexTag(tagStart, kind == '{', tagStart + 2 + (sign == '\0' ? 0 : 1));
        }
        tokens.Add(new Token(TokenKind.End, "", source.Length));
    }

    private int FindTagStart(int from)
    {
        for (int i = source.IndexOf('{', from); i >= 0 && i + 1 < source.Length; i = source.IndexOf('{', i + 1))
            if (source[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    /// <summary>Jinja's OptionalLStrip: `-` strips all whitespace before the tag; otherwise lstrip_blocks removes spaces and tabs
    /// between the start of the line and a block or comment tag.</summary>
    private string ControlWhitespace(string text, char sign, bool isVariable)
    {
        if (sign == '-')
        {
            int end = text.Length;
            while (end > 0 && ValueMethods.IsPythonSpace(text[end - 1])) end--;
            return text[..end];
        }
        if (sign == '+' || isVariable) return text;
        int lineStart = text.LastIndexOf('\n') + 1;
        if (lineStart > 0 || lineStarting)
        {
            bool onlyBlanks = true;
            for (int i = lineStart; i < text.Length && onlyBlanks; i++) onlyBlanks = text[i] is ' ' or '\t';
            if (onlyBlanks) return text[..lineStart];
        }
        return text;
    }

    /// <summary>After a block end `%}` (trim_blocks) or `#}`: `+` keeps what follows, `-` removes all following whitespace,
    /// otherwise a single newline is removed.</summary>
    private int ConsumeBlockSuffix(int after, char modifier)
    {
        if (modifier == '-')
            while (after < source.Length && ValueMethods.IsPythonSpace(source[after])) after++;
        else if (modifier != '+' && after < source.Length && source[after] == '\n')
            after++;
        lineStarting = after > 0 && source[after - 1] == '\n';
        return after;
    }

    private void LexComment(int tagStart, int contentStart)
    {
        int end = source.IndexOf("#}", contentStart, StringComparison.Ordinal);
        if (end < 0) throw Error(tagStart, "unterminated comment: missing '#}'");
        char modifier = end > contentStart && source[end - 1] is '-' or '+' ? source[end - 1] : '\0';
        position = ConsumeBlockSuffix(end + 2, modifier);
    }

    /// <summary>Returns where the raw body starts when `{% raw %}` (or `{%- raw -%}`) begins at <paramref name="afterSign"/>.</summary>
    private int MatchRawBegin(int afterSign)
    {
        int i = SkipSpace(afterSign);
        if (string.CompareOrdinal(source, i, "raw", 0, 3) != 0) return -1;
        i = SkipSpace(i + 3);
        if (string.CompareOrdinal(source, i, "-%}", 0, 3) == 0)
        {
            i += 3;
            while (i < source.Length && ValueMethods.IsPythonSpace(source[i])) i++;
            return i;
        }
        return string.CompareOrdinal(source, i, "%}", 0, 2) == 0 ? i + 2 : -1;
    }

    private void LexRaw(int tagStart, int bodyStart)
    {
        lineStarting = source[bodyStart - 1] == '\n';
        for (int i = source.IndexOf("{%", bodyStart, StringComparison.Ordinal); i >= 0; i = source.IndexOf("{%", i + 1, StringComparison.Ordinal))
        {
            char sign = i + 2 < source.Length && source[i + 2] is '-' or '+' ? source[i + 2] : '\0';
            int j = SkipSpace(i + 2 + (sign == '\0' ? 0 : 1));
            if (string.CompareOrdinal(source, j, "endraw", 0, 6) != 0) continue;
            j = SkipSpace(j + 6);
            char modifier = source.Length > j && source[j] is '-' or '+' ? source[j] : '\0';
            int close = j + (modifier == '\0' ? 0 : 1);
            if (string.CompareOrdinal(source, close, "%}", 0, 2) != 0) continue;
            string body = ControlWhitespace(source[bodyStart..i], sign, isVariable: false);
            if (body.Length > 0) tokens.Add(new Token(TokenKind.Text, body, bodyStart));
            position = ConsumeBlockSuffix(close + 2, modifier);
            return;
        }
        throw Error(tagStart, "unterminated raw block: missing '{% endraw %}'");
    }

    private int SkipSpace(int i)
    {
        while (i < source.Length && ValueMethods.IsPythonSpace(source[i])) i++;
        return i;
    }

    private void LexTag(int tagStart, bool isVariable, int i)
    {
        tokens.Add(new Token(isVariable ? TokenKind.VariableBegin : TokenKind.BlockBegin, isVariable ? "{{" : "{%", tagStart));
        var brackets = new Stack<char>();
        while (true)
        {
            i = SkipSpace(i);
            if (i >= source.Length)
                throw Error(tagStart, $"unexpected end of template: '{(isVariable ? "{{" : "{%")}' is never closed by '{(isVariable ? "}}" : "%}")}'");
            if (brackets.Count == 0 && TryTagEnd(i, isVariable, out int after))
            {
                position = after;
                return;
            }
            char c = source[i];
            if (char.IsLetter(c) || c == '_') i = LexName(i);
            else if (char.IsAsciiDigit(c)) i = LexNumber(i);
            else if (c is '\'' or '"') i = LexString(i);
            else i = LexOperator(i, brackets);
        }
    }

    private bool TryTagEnd(int i, bool isVariable, out int after)
    {
        string close = isVariable ? "}}" : "%}";
        char modifier = source[i] is '-' or '+' && string.CompareOrdinal(source, i + 1, close, 0, 2) == 0 ? source[i] : '\0';
        if (isVariable && modifier == '+') modifier = '\0';
        int at = i + (modifier == '\0' ? 0 : 1);
        after = 0;
        if (string.CompareOrdinal(source, at, close, 0, 2) != 0) return false;
        tokens.Add(new Token(isVariable ? TokenKind.VariableEnd : TokenKind.BlockEnd, close, at));
        after = at + 2;
        if (isVariable)
        {
            if (modifier == '-') after = SkipSpace(after);
            lineStarting = after > 0 && source[after - 1] == '\n';
        }
        else
        {
            after = ConsumeBlockSuffix(after, modifier);
        }
        return true;
    }

    private int LexName(int i)
    {
        int start = i;
        while (i < source.Length && (char.IsLetterOrDigit(source[i]) || source[i] == '_')) i++;
        tokens.Add(new Token(TokenKind.Name, source[start..i], start));
        return i;
    }

    private int Digits(int i)
    {
        while (i < source.Length && (char.IsAsciiDigit(source[i]) || (source[i] == '_' && i + 1 < source.Length && char.IsAsciiDigit(source[i + 1]))))
            i++;
        return i;
    }

    private int LexNumber(int start)
    {
        int i = Digits(start);
        bool isFloat = false;
        if (i + 1 < source.Length && source[i] == '.' && char.IsAsciiDigit(source[i + 1]))
        {
            isFloat = true;
            i = Digits(i + 1);
        }
        if (i < source.Length && source[i] is 'e' or 'E')
        {
            int j = i + 1;
            if (j < source.Length && source[j] is '+' or '-') j++;
            if (j < source.Length && char.IsAsciiDigit(source[j]))
            {
                isFloat = true;
                i = Digits(j);
            }
        }
        string text = source[start..i].Replace("_", "");
        if (isFloat)
        {
            tokens.Add(new Token(TokenKind.Float, text, start, double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture)));
        }
        else
        {
            if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long value))
                throw Error(start, $"integer literal {text} does not fit in 64 bits");
            tokens.Add(new Token(TokenKind.Integer, text, start, value));
        }
        return i;
    }

    /// <summary>A quoted string; escapes decode as Python's unicode-escape codec (\n \t \\ \' \" \xhh \uhhhh \Uhhhhhhhh, octal).</summary>
    private int LexString(int start)
    {
        char quote = source[start];
        var value = new StringBuilder();
        int i = start + 1;
        while (true)
        {
            if (i >= source.Length) throw Error(start, "unterminated string literal");
            char c = source[i];
            if (c == quote)
            {
                tokens.Add(new Token(TokenKind.String, value.ToString(), start));
                return i + 1;
            }
            if (c != '\\')
            {
                value.Append(c);
                i++;
                continue;
            }
            if (i + 1 >= source.Length) throw Error(start, "unterminated string literal");
            char e = source[i + 1];
            i += 2;
            switch (e)
            {
                case '\n': break;
                case '\\': value.Append('\\'); break;
                case '\'': value.Append('\''); break;
                case '"': value.Append('"'); break;
                case 'a': value.Append('\a'); break;
                case 'b': value.Append('\b'); break;
                case 'f': value.Append('\f'); break;
                case 'n': value.Append('\n'); break;
                case 'r': value.Append('\r'); break;
                case 't': value.Append('\t'); break;
                case 'v': value.Append('\v'); break;
                case 'x': value.Append(HexEscape(ref i, 2, start)); break;
                case 'u': value.Append(HexEscape(ref i, 4, start)); break;
                case 'U': value.Append(HexEscape(ref i, 8, start)); break;
                case >= '0' and <= '7':
                {
                    int code = e - '0';
                    for (int k = 0; k < 2 && i < source.Length && source[i] is >= '0' and <= '7'; k++, i++) code = code * 8 + (source[i] - '0');
                    value.Append((char)code);
                    break;
                }
                default: value.Append('\\').Append(e); break;
            }
        }
    }

    private string HexEscape(ref int i, int digits, int stringStart)
    {
        if (i + digits > source.Length || !int.TryParse(source.AsSpan(i, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int code)
            || source.AsSpan(i, digits).ContainsAny('+', '-') || code > 0x10FFFF || (code is >= 0xD800 and <= 0xDFFF && digits == 8))
            throw Error(stringStart, $"truncated or invalid \\{(digits == 2 ? 'x' : digits == 4 ? 'u' : 'U')} escape in string literal");
        i += digits;
        return code <= 0xFFFF ? ((char)code).ToString() : char.ConvertFromUtf32(code);
    }

    private int LexOperator(int i, Stack<char> brackets)
    {
        foreach (string op in Operators)
        {
            if (string.CompareOrdinal(source, i, op, 0, op.Length) != 0) continue;
            char c = op[0];
            if (op.Length == 1 && c is '(' or '[' or '{') brackets.Push(c switch { '(' => ')', '[' => ']', _ => '}' });
            else if (op.Length == 1 && c is ')' or ']' or '}')
            {
                if (brackets.Count == 0) throw Error(i, $"unexpected '{c}'");
                char close = brackets.Pop();
                if (close != c) throw Error(i, $"unexpected '{c}', expected '{close}'");
            }
            tokens.Add(new Token(TokenKind.Operator, op, i));
            return i + op.Length;
        }
        throw Error(i, $"unexpected character '{source[i]}'");
    }
}
