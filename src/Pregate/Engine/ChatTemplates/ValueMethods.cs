// Python methods callable on template values: str (strip, split, startswith, replace, format, ...), dict (get, items, keys,
// values) and list (append, index, count). Semantics follow CPython's str/dict/list.
using System.Collections.Frozen;
using System.Text;

namespace Pregate.Engine.ChatTemplates;

internal static class ValueMethods
{
    private static readonly FrozenSet<string> StringMethods = FrozenSet.ToFrozenSet(
    [
        "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith", "upper", "lower", "title",
        "capitalize", "swapcase", "replace", "find", "rfind", "index", "rindex", "count", "join", "format", "isdigit", "isnumeric",
        "isdecimal", "isalpha", "isalnum", "isspace", "isupper", "islower", "removeprefix", "removesuffix", "center", "ljust",
        "rjust", "zfill", "partition", "rpartition",
    ], StringComparer.Ordinal);

    private static readonly FrozenSet<string> DictMethods = FrozenSet.ToFrozenSet(["get", "items", "keys", "values"], StringComparer.Ordinal);
    private static readonly FrozenSet<string> ListMethods = FrozenSet.ToFrozenSet(["append", "index", "count"], StringComparer.Ordinal);

    public static bool IsMethod(object target, string name) => target switch
    {
        string => StringMethods.Contains(name),
        PyDict => DictMethods.Contains(name),
        List<object?> => ListMethods.Contains(name),
        object?[] => name is "index" or "count",
        _ => false,
    };

    public static object? Invoke(RenderContext context, object target, string name, CallArguments arguments)
    {
        context.Step();
        return target switch
        {
            string s => InvokeString(context, s, name, arguments),
            PyDict dict => InvokeDict(context, dict, name, arguments),
            List<object?> list => InvokeList(context, list, name, arguments),
            object?[] tuple => InvokeSequence(context, tuple, name, arguments),
            _ => throw TemplateFault.Runtime($"'{ValueOps.TypeName(target)}' object has no method '{name}'"),
        };
    }

    /// <summary>Python's str.isspace() characters (which include the information separators U+001C..U+001F).</summary>
    public static bool IsPythonSpace(char c) => char.IsWhiteSpace(c) || c is >= '\x1c' and <= '\x1f';

    public static string Strip(string s, object? chars, bool start, bool end)
    {
        Func<char, bool> strip = chars switch
        {
            null or Missing or Undefined => IsPythonSpace,
            string set => set.Contains,
            _ => throw TemplateFault.Runtime($"strip arg must be None or str, not {ValueOps.TypeName(chars)}"),
        };
        int first = 0, last = s.Length;
        if (start) while (first < last && strip(s[first])) first++;
        if (end) while (last > first && strip(s[last - 1])) last--;
        return s[first..last];
    }

    private static string Text(object? value, string method, string parameter) => value as string
        ?? throw TemplateFault.Runtime($"str.{method}() argument '{parameter}' must be str, not {ValueOps.TypeName(value)}");

    private static object? InvokeString(RenderContext context, string s, string name, CallArguments arguments)
    {
        object?[] a;
        switch (name)
        {
            case "strip" or "lstrip" or "rstrip":
                a = arguments.Bind("str." + name, "chars");
                return Strip(s, a[0], name != "rstrip", name != "lstrip");
            case "split" or "rsplit":
            {
                a = arguments.Bind("str." + name, "sep", "maxsplit");
                long maxSplit = a[1] is Missing ? -1 : ValueOps.ToLong(a[1]);
                context.Reserve(s.Length);
                List<object?> parts = a[0] is Missing or null ? SplitWhitespace(s, maxSplit, name == "rsplit")
                    : Split(s, Text(a[0], name, "sep"), maxSplit, name == "rsplit");
                context.Step(parts.Count);
                return parts;
            }
            case "splitlines":
            {
                a = arguments.Bind("str.splitlines", "keepends");
                context.Reserve(s.Length);
                return SplitLines(s, a[0] is not Missing && ValueOps.IsTruthy(a[0]));
            }
            case "startswith" or "endswith":
            {
                a = arguments.Bind("str." + name, "prefix");
                IEnumerable<object?> candidates = a[0] is object?[] tuple ? tuple : [a[0]];
                foreach (object? candidate in candidates)
                {
                    string affix = Text(candidate, name, "prefix");
                    if (name == "startswith" ? s.StartsWith(affix, StringComparison.Ordinal) : s.EndsWith(affix, StringComparison.Ordinal))
                        return true;
                }
                return false;
            }
            case "upper": arguments.Bind("str.upper"); return context.Produce(s.ToUpperInvariant());
            case "lower": arguments.Bind("str.lower"); return context.Produce(s.ToLowerInvariant());
            case "title": arguments.Bind("str.title"); return context.Produce(Title(s));
            case "capitalize": arguments.Bind("str.capitalize"); return context.Produce(Capitalize(s));
            case "swapcase":
                arguments.Bind("str.swapcase");
                return context.Produce(string.Concat(s.Select(c => char.IsUpper(c) ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c))));
            case "replace":
            {
                a = arguments.Bind("str.replace", "old", "new", "count");
                return Replace(context, s, Text(a[0], name, "old"), Text(a[1], name, "new"), a[2] is Missing ? -1 : ValueOps.ToLong(a[2]));
            }
            case "find" or "rfind" or "index" or "rindex":
            {
                a = arguments.Bind("str." + name, "sub");
                string sub = Text(a[0], name, "sub");
                int found = name is "find" or "index" ? s.IndexOf(sub, StringComparison.Ordinal) : s.LastIndexOf(sub, StringComparison.Ordinal);
                if (found < 0 && name is "index" or "rindex") throw TemplateFault.Runtime("substring not found");
                return found < 0 ? -1L : (long)ValueOps.CodePointCount(s[..found]);
            }
            case "count":
            {
                a = arguments.Bind("str.count", "sub");
                string sub = Text(a[0], name, "sub");
                if (sub.Length == 0) return (long)ValueOps.CodePointCount(s) + 1;
                long count = 0;
                for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) count++;
                return count;
            }
            case "join":
            {
                a = arguments.Bind("str.join", "iterable");
                var output = context.NewBuilder();
                bool first = true;
                foreach (object? item in ValueOps.Iterate(a[0], context))
                {
                    if (!first) output.Append(s);
                    first = false;
                    output.Append(item as string ?? throw TemplateFault.Runtime($"sequence item: expected str instance, {ValueOps.TypeName(item)} found"));
                }
                return context.Produce(output);
            }
            case "format": return PythonFormat.StrFormat(s, arguments, context);
            case "isdigit" or "isnumeric" or "isdecimal": arguments.Bind("str." + name); return s.Length > 0 && s.All(char.IsDigit);
            case "isalpha": arguments.Bind("str.isalpha"); return s.Length > 0 && s.All(char.IsLetter);
            case "isalnum": arguments.Bind("str.isalnum"); return s.Length > 0 && s.All(char.IsLetterOrDigit);
            case "isspace": arguments.Bind("str.isspace"); return s.Length > 0 && s.All(IsPythonSpace);
            case "isupper": arguments.Bind("str.isupper"); return s.Any(char.IsUpper) && !s.Any(char.IsLower);
            case "islower": arguments.Bind("str.islower"); return s.Any(char.IsLower) && !s.Any(char.IsUpper);
            case "removeprefix":
            {
                a = arguments.Bind("str.removeprefix", "prefix");
                string prefix = Text(a[0], name, "prefix");
                return s.StartsWith(prefix, StringComparison.Ordinal) ? s[prefix.Length..] : s;
            }
            case "removesuffix":
            {
                a = arguments.Bind("str.removesuffix", "suffix");
                string suffix = Text(a[0], name, "suffix");
                return suffix.Length > 0 && s.EndsWith(suffix, StringComparison.Ordinal) ? s[..^suffix.Length] : s;
            }
            case "center" or "ljust" or "rjust":
            {
                a = arguments.Bind("str." + name, "width", "fillchar");
                long width = ValueOps.ToLong(a[0]);
                char fill = a[1] is string f && f.Length == 1 ? f[0] : a[1] is Missing ? ' '
                    : throw TemplateFault.Runtime("The fill character must be exactly one character long");
                if (width <= s.Length) return s;
                context.Reserve(width);
                int padding = (int)width - s.Length;
                return name switch
                {
                    "ljust" => s.PadRight((int)width, fill),
                    "rjust" => s.PadLeft((int)width, fill),
                    _ => new string(fill, padding / 2 + (padding & (int)width & 1)) + s + new string(fill, padding - (padding / 2 + (padding & (int)width & 1))),
                };
            }
            case "zfill":
            {
                a = arguments.Bind("str.zfill", "width");
                long width = ValueOps.ToLong(a[0]);
                if (width <= s.Length) return s;
                context.Reserve(width);
                bool signed = s.Length > 0 && s[0] is '+' or '-';
                return signed ? s[0] + s[1..].PadLeft((int)width - 1, '0') : s.PadLeft((int)width, '0');
            }
            case "partition" or "rpartition":
            {
                a = arguments.Bind("str." + name, "sep");
                string sep = Text(a[0], name, "sep");
                if (sep.Length == 0) throw TemplateFault.Runtime("empty separator");
                int at = name == "partition" ? s.IndexOf(sep, StringComparison.Ordinal) : s.LastIndexOf(sep, StringComparison.Ordinal);
                if (at < 0) return name == "partition" ? new object?[] { s, "", "" } : new object?[] { "", "", s };
                return new object?[] { s[..at], sep, s[(at + sep.Length)..] };
            }
            default:
                throw TemplateFault.Runtime($"'str' object has no attribute '{name}'");
        }
    }

    private static List<object?> Split(string s, string separator, long maxSplit, bool fromRight)
    {
        if (separator.Length == 0) throw TemplateFault.Runtime("empty separator");
        var parts = new List<object?>();
        if (!fromRight)
        {
            int start = 0;
            while (maxSplit < 0 || parts.Count < maxSplit)
            {
                int at = s.IndexOf(separator, start, StringComparison.Ordinal);
                if (at < 0) break;
                parts.Add(s[start..at]);
                start = at + separator.Length;
            }
            parts.Add(s[start..]);
            return parts;
        }
        int end = s.Length;
        while (maxSplit < 0 || parts.Count < maxSplit)
        {
            int at = end - separator.Length < 0 ? -1 : s.LastIndexOf(separator, end - 1, end, StringComparison.Ordinal);
            if (at < 0 || at + separator.Length > end) break;
            parts.Add(s[(at + separator.Length)..end]);
            end = at;
        }
        parts.Add(s[..end]);
        parts.Reverse();
        return parts;
    }

    private static List<object?> SplitWhitespace(string s, long maxSplit, bool fromRight)
    {
        var parts = new List<object?>();
        if (!fromRight)
        {
            int i = 0;
            while (true)
            {
                while (i < s.Length && IsPythonSpace(s[i])) i++;
                if (i >= s.Length) break;
                if (maxSplit >= 0 && parts.Count >= maxSplit)
                {
                    parts.Add(Strip(s[i..], null, false, true));
                    break;
                }
                int start = i;
                while (i < s.Length && !IsPythonSpace(s[i])) i++;
                parts.Add(s[start..i]);
            }
            return parts;
        }
        int j = s.Length;
        while (true)
        {
            while (j > 0 && IsPythonSpace(s[j - 1])) j--;
            if (j <= 0) break;
            if (maxSplit >= 0 && parts.Count >= maxSplit)
            {
                parts.Add(Strip(s[..j], null, true, false));
                break;
            }
            int end = j;
            while (j > 0 && !IsPythonSpace(s[j - 1])) j--;
            parts.Add(s[j..end]);
        }
        parts.Reverse();
        return parts;
    }

    /// <summary>str.splitlines: breaks at \n, \r\n, \r, \v, \f, \x1c-\x1e, \x85, \u2028, \u2029.</summary>
    public static List<object?> SplitLines(string s, bool keepEnds)
    {
        var lines = new List<object?>();
        int start = 0;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c is not ('\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x85' or '\u2028' or '\u2029')) continue;
            int end = i;
            if (c == '\r' && i + 1 < s.Length && s[i + 1] == '\n') i++;
            lines.Add(keepEnds ? s[start..(i + 1)] : s[start..end]);
            start = i + 1;
        }
        if (start < s.Length) lines.Add(s[start..]);
        return lines;
    }

    public static string Replace(RenderContext context, string s, string old, string replacement, long count)
    {
        var output = context.NewBuilder();
        long done = 0;
        if (old.Length == 0)
        {
            object?[] chars = ValueOps.CodePoints(s);
            foreach (object? ch in chars)
            {
                if (count < 0 || done < count)
                {
                    output.Append(replacement);
                    done++;
                }
                output.Append((string)ch!);
            }
            if (count < 0 || done < count) output.Append(replacement);
            return context.Produce(output);
        }
        int start = 0;
        while (count < 0 || done < count)
        {
            int at = s.IndexOf(old, start, StringComparison.Ordinal);
            if (at < 0) break;
            output.Append(s[start..at]).Append(replacement);
            start = at + old.Length;
            done++;
        }
        output.Append(s[start..]);
        return context.Produce(output);
    }

    /// <summary>Python's str.title(): the first cased character after an uncased one is upper-cased, the rest lower-cased.</summary>
    public static string Title(string s)
    {
        var text = new StringBuilder(s.Length);
        bool previousCased = false;
        foreach (char c in s)
        {
            bool cased = char.IsUpper(c) || char.IsLower(c);
            text.Append(cased ? (previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c)) : c);
            previousCased = cased;
        }
        return text.ToString();
    }

    public static string Capitalize(string s) =>
        s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    private static object? InvokeDict(RenderContext context, PyDict dict, string name, CallArguments arguments)
    {
        switch (name)
        {
            case "get":
            {
                object?[] a = arguments.Bind("dict.get", "key", "default");
                object? key = a[0];
                if (key is string or long or double or bool or object?[] && dict.TryGetValue(key, out object? value)) return value;
                return a[1] is Missing ? null : a[1];
            }
            case "items":
                arguments.Bind("dict.items");
                context.Step(dict.Count);
                return dict.Select(p => (object?)new object?[] { p.Key, p.Value }).ToList();
            case "keys":
                arguments.Bind("dict.keys");
                context.Step(dict.Count);
                return dict.Keys.Cast<object?>().ToList();
            case "values":
                arguments.Bind("dict.values");
                context.Step(dict.Count);
                return dict.Values.ToList();
            default:
                throw TemplateFault.Runtime($"'dict' object has no attribute '{name}'");
        }
    }

    private static object? InvokeList(RenderContext context, List<object?> list, string name, CallArguments arguments)
    {
        if (name != "append") return InvokeSequence(context, list, name, arguments);
        object?[] a = arguments.Bind("list.append", "object");
        if (a[0] is Missing) throw TemplateFault.Runtime("list.append() takes exactly one argument (0 given)");
        list.Add(a[0]);
        return null;
    }

    private static object? InvokeSequence(RenderContext context, IReadOnlyList<object?> items, string name, CallArguments arguments)
    {
        object?[] a = arguments.Bind(name, "value");
        context.Step(items.Count);
        switch (name)
        {
            case "index":
                for (int i = 0; i < items.Count; i++) if (ValueOps.PyEquals(items[i], a[0])) return (long)i;
                throw TemplateFault.Runtime("value is not in list");
            case "count":
                return (long)items.Count(item => ValueOps.PyEquals(item, a[0]));
            default:
                throw TemplateFault.Runtime($"'{ValueOps.TypeName(items)}' object has no attribute '{name}'");
        }
    }
}
