// Python text formatting the templates rely on: float repr (shortest round-trip, 'r' style), str repr, printf-style `%`,
// str.format, and datetime.strftime for strftime_now (C locale). Reference: CPython Objects/floatobject.c, Objects/unicodeobject.c.
using System.Collections.Immutable;
using System.Globalization;
using System.Text;

namespace Pregate.Engine.ChatTemplates;

internal static class PythonFormat
{
    /// <summary>repr(float): fixed notation when -4 ≤ exponent &lt; 16, else scientific with a two-digit exponent.</summary>
    public static string FloatRepr(double value)
    {
        if (double.IsNaN(value)) return "nan";
        if (double.IsInfinity(value)) return value > 0 ? "inf" : "-inf";
        if (value == 0) return double.IsNegative(value) ? "-0.0" : "0.0";
        string shortest = Math.Abs(value).ToString("R", CultureInfo.InvariantCulture);
        int exponent = 0;
        int e = shortest.IndexOfAny(['E', 'e']);
        if (e >= 0)
        {
            exponent = int.Parse(shortest.AsSpan(e + 1), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            shortest = shortest[..e];
        }
        int dot = shortest.IndexOf('.');
        string integerPart = dot < 0 ? shortest : shortest[..dot];
        string digits = dot < 0 ? shortest : integerPart + shortest[(dot + 1)..];
        int decimalPoint = integerPart.Length + exponent;
        int leadingZeros = digits.Length - digits.TrimStart('0').Length;
        digits = digits.TrimStart('0').TrimEnd('0');
        decimalPoint -= leadingZeros;
        int exponent10 = decimalPoint - 1;
        var text = new StringBuilder(value < 0 ? "-" : "");
        if (exponent10 is >= -4 and < 16)
        {
            if (decimalPoint <= 0) text.Append("0.").Append('0', -decimalPoint).Append(digits);
            else if (decimalPoint >= digits.Length) text.Append(digits).Append('0', decimalPoint - digits.Length).Append(".0");
            else text.Append(digits, 0, decimalPoint).Append('.').Append(digits, decimalPoint, digits.Length - decimalPoint);
        }
        else
        {
            text.Append(digits[0]);
            if (digits.Length > 1) text.Append('.').Append(digits, 1, digits.Length - 1);
            text.Append('e').Append(exponent10 < 0 ? '-' : '+').Append(Math.Abs(exponent10).ToString("00", CultureInfo.InvariantCulture));
        }
        return text.ToString();
    }

    /// <summary>repr(str): single quotes unless the text has a ' and no ", backslash escapes for non-printable characters.</summary>
    public static string StringRepr(string value)
    {
        char quote = value.Contains('\'') && !value.Contains('"') ? '"' : '\'';
        var text = new StringBuilder(value.Length + 2).Append(quote);
        foreach (Rune rune in value.EnumerateRunes())
        {
            int c = rune.Value;
            if (c == quote || c == '\\') text.Append('\\').Append((char)c);
            else if (c == '\t') text.Append("\\t");
            else if (c == '\n') text.Append("\\n");
            else if (c == '\r') text.Append("\\r");
            else if (IsPrintable(rune)) text.Append(rune.ToString());
            else if (c < 0x100) text.Append($"\\x{c:x2}");
            else if (c < 0x10000) text.Append($"\\u{c:x4}");
            else text.Append($"\\U{c:x8}");
        }
        return text.Append(quote).ToString();
    }

    private static bool IsPrintable(Rune rune)
    {
        if (rune.Value == ' ') return true;
        return Rune.GetUnicodeCategory(rune) switch
        {
            UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse
                or UnicodeCategory.OtherNotAssigned or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator
                or UnicodeCategory.SpaceSeparator => false,
            _ => true,
        };
    }

    /// <summary>Python's `format % args` for the conversions %s %r %d %i %f %F %e %x %o %c %% with flags, width and precision;
    /// a dict argument supplies %(name)s fields.</summary>
    public static string Printf(string format, object? arguments, RenderContext context)
    {
        IReadOnlyList<object?> positional = arguments is object?[] tuple ? tuple : [arguments];
        var named = arguments as PyDict;
        int next = 0;
        var output = context.NewBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c != '%')
            {
                output.Append(c);
                continue;
            }
            if (++i >= format.Length) throw TemplateFault.Runtime("incomplete format");
            object? value;
            string? key = null;
            if (format[i] == '(')
            {
                int close = format.IndexOf(')', i);
                if (close < 0) throw TemplateFault.Runtime("incomplete format key");
                key = format[(i + 1)..close];
                i = close + 1;
            }
            int flagsStart = i;
            while (i < format.Length && "-+ 0#".Contains(format[i])) i++;
            string flags = format[flagsStart..i];
            int widthStart = i;
            while (i < format.Length && char.IsAsciiDigit(format[i])) i++;
            int width = i > widthStart ? int.Parse(format.AsSpan(widthStart, i - widthStart), CultureInfo.InvariantCulture) : 0;
            int precision = -1;
            if (i < format.Length && format[i] == '.')
            {
                int precisionStart = ++i;
                while (i < format.Length && char.IsAsciiDigit(format[i])) i++;
                precision = i > precisionStart ? int.Parse(format.AsSpan(precisionStart, i - precisionStart), CultureInfo.InvariantCulture) : 0;
            }
            if (i >= format.Length) throw TemplateFault.Runtime("incomplete format");
            char conversion = format[i];
            if (conversion == '%')
            {
                output.Append('%');
                continue;
            }
            if (key is not null)
            {
                if (named is null) throw TemplateFault.Runtime("format requires a mapping");
                value = named.TryGetValue(key, out object? found) ? found : throw TemplateFault.Runtime($"format key '{key}' is missing");
            }
            else
            {
                if (next >= positional.Count) throw TemplateFault.Runtime("not enough arguments for format string");
                value = positional[next++];
            }
            string text = conversion switch
            {
                's' => ValueOps.ToStr(value, context),
                'r' or 'a' => ValueOps.Repr(value, context),
                'd' or 'i' or 'u' => FormatInteger(value, flags),
                'f' or 'F' => FormatFixed(ValueOps.ToDouble(value), precision < 0 ? 6 : precision, flags),
                'e' or 'E' => ValueOps.ToDouble(value).ToString((conversion == 'e' ? "0." : "0.") + new string('0', precision < 0 ? 6 : precision)
                    + (conversion == 'e' ? "e+00" : "E+00"), CultureInfo.InvariantCulture),
                'x' => ValueOps.ToLong(value).ToString("x", CultureInfo.InvariantCulture),
                'X' => ValueOps.ToLong(value).ToString("X", CultureInfo.InvariantCulture),
                'o' => Convert.ToString(ValueOps.ToLong(value), 8),
                'c' => value is string s ? s : char.ConvertFromUtf32((int)ValueOps.ToLong(value)),
                _ => throw TemplateFault.Runtime($"unsupported format character '{conversion}'"),
            };
            if (conversion is 's' or 'r' or 'a' && precision >= 0 && text.Length > precision) text = text[..precision];
            if (text.Length < width)
            {
                bool left = flags.Contains('-');
                char pad = flags.Contains('0') && !left && conversion is not ('s' or 'r' or 'a' or 'c') ? '0' : ' ';
                if (left) text = text.PadRight(width);
                else if (pad == '0' && text.StartsWith('-')) text = "-" + text[1..].PadLeft(width - 1, '0');
                else text = text.PadLeft(width, pad);
            }
            output.Append(text);
        }
        if (named is null && next < positional.Count && arguments is object?[])
            throw TemplateFault.Runtime("not all arguments converted during string formatting");
        return context.Produce(output);
    }

    private static string FormatInteger(object? value, string flags)
    {
        long number = value is double d ? (long)Math.Truncate(d) : ValueOps.ToLong(value);
        string text = number.ToString(CultureInfo.InvariantCulture);
        if (number >= 0 && flags.Contains('+')) text = "+" + text;
        else if (number >= 0 && flags.Contains(' ')) text = " " + text;
        return text;
    }

    private static string FormatFixed(double value, int precision, string flags)
    {
        if (double.IsNaN(value)) return "nan";
        if (double.IsInfinity(value)) return value > 0 ? "inf" : "-inf";
        string text = value.ToString("F" + precision.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
        if (value >= 0 && flags.Contains('+')) text = "+" + text;
        return text;
    }

    /// <summary>Python's str.format with automatic ({}) or explicit ({0}, {name}) fields, !r/!s conversions and {{ }} escapes.</summary>
    public static string StrFormat(string format, CallArguments arguments, RenderContext context)
    {
        var output = context.NewBuilder();
        int auto = 0;
        var numbering = Numbering.None;
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c == '}')
            {
                if (i + 1 < format.Length && format[i + 1] == '}') i++;
                else throw TemplateFault.Runtime("single '}' encountered in format string");
                output.Append('}');
                continue;
            }
            if (c != '{')
            {
                output.Append(c);
                continue;
            }
            if (i + 1 < format.Length && format[i + 1] == '{')
            {
                output.Append('{');
                i++;
                continue;
            }
            int close = format.IndexOf('}', i);
            if (close < 0) throw TemplateFault.Runtime("single '{' encountered in format string");
            string field = format[(i + 1)..close];
            i = close;
            char conversion = 's';
            int bang = field.IndexOf('!');
            if (bang >= 0)
            {
                conversion = field.Length > bang + 1 ? field[bang + 1] : 's';
                field = field[..bang];
            }
            if (field.Contains(':')) throw TemplateFault.Runtime("format specifications are not supported in str.format");
            object? value;
            bool automatic = field.Length == 0;
            if (automatic ? numbering == Numbering.Manual : numbering == Numbering.Automatic && char.IsAsciiDigit(field[0]))
                throw TemplateFault.Runtime("cannot mix automatic and manual field numbering in str.format");
            if (automatic || char.IsAsciiDigit(field[0])) numbering = automatic ? Numbering.Automatic : Numbering.Manual;
            if (automatic)
            {
                if (auto >= arguments.Positional.Count) throw TemplateFault.Runtime($"replacement index {auto} out of range");
                value = arguments.Positional[auto++];
            }
            else if (int.TryParse(field, NumberStyles.None, CultureInfo.InvariantCulture, out int index))
            {
                if (index >= arguments.Positional.Count) throw TemplateFault.Runtime($"replacement index {index} out of range");
                value = arguments.Positional[index];
            }
            else
            {
                int found = -1;
                for (int k = 0; k < arguments.Named.Count; k++) if (arguments.Named[k].Key == field) found = k;
                if (found < 0) throw TemplateFault.Runtime($"format key '{field}' is missing");
                value = arguments.Named[found].Value;
            }
            output.Append(conversion == 'r' ? ValueOps.Repr(value, context) : ValueOps.ToStr(value, context));
        }
        return context.Produce(output);
    }

    private enum Numbering { None, Automatic, Manual }

    private static readonly ImmutableArray<string> MonthNames =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    private static readonly ImmutableArray<string> DayNames = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

    /// <summary>datetime.strftime in the C locale, including glibc's %-d style unpadded fields.</summary>
    public static string Strftime(DateTime time, string format)
    {
        var text = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length)
            {
                text.Append(format[i]);
                continue;
            }
            char directive = format[++i];
            bool unpadded = false;
            if (directive == '-' && i + 1 < format.Length)
            {
                unpadded = true;
                directive = format[++i];
            }
            string Number(int value, int width) =>
                unpadded ? value.ToString(CultureInfo.InvariantCulture) : value.ToString(new string('0', width), CultureInfo.InvariantCulture);
            int hour12 = time.Hour % 12 == 0 ? 12 : time.Hour % 12;
            text.Append(directive switch
            {
                'Y' => time.Year.ToString(CultureInfo.InvariantCulture),
                'y' => Number(time.Year % 100, 2),
                'm' => Number(time.Month, 2),
                'd' => Number(time.Day, 2),
                'e' => time.Day.ToString(CultureInfo.InvariantCulture).PadLeft(2),
                'H' => Number(time.Hour, 2),
                'I' => Number(hour12, 2),
                'M' => Number(time.Minute, 2),
                'S' => Number(time.Second, 2),
                'f' => (time.Ticks % TimeSpan.TicksPerSecond / 10).ToString("000000", CultureInfo.InvariantCulture),
                'j' => Number(time.DayOfYear, 3),
                'p' => time.Hour < 12 ? "AM" : "PM",
                'B' => MonthNames[time.Month - 1],
                'b' or 'h' => MonthNames[time.Month - 1][..3],
                'A' => DayNames[(int)time.DayOfWeek],
                'a' => DayNames[(int)time.DayOfWeek][..3],
                'w' => ((int)time.DayOfWeek).ToString(CultureInfo.InvariantCulture),
                'u' => (time.DayOfWeek == DayOfWeek.Sunday ? 7 : (int)time.DayOfWeek).ToString(CultureInfo.InvariantCulture),
                'F' => time.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
                'T' => time.ToString("HH:mm:ss", CultureInfo.InvariantCulture),
                'D' => time.ToString("MM/dd/yy", CultureInfo.InvariantCulture),
                'R' => time.ToString("HH:mm", CultureInfo.InvariantCulture),
                'n' => "\n",
                't' => "\t",
                '%' => "%",
                _ => "%" + (unpadded ? "-" : "") + directive,
            });
        }
        return text.ToString();
    }
}
