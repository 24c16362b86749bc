// Jinja's filters as chat templates use them (Jinja2 3.1 filters.py), with `tojson` replaced by Hugging Face's
// json.dumps-based version (ensure_ascii=False, indent, separators, sort_keys).
using System.Collections.Frozen;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Pregate.Engine.ChatTemplates;

internal delegate object? TemplateFilter(RenderContext context, object? value, CallArguments arguments);

internal static partial class TemplateFilters
{
    private static readonly FrozenDictionary<string, TemplateFilter> Table = Build();

    public static bool TryGet(string name, out TemplateFilter filter) => Table.TryGetValue(name, out filter!);

    public static TemplateFilter Get(string name) =>
        Table.TryGetValue(name, out TemplateFilter? filter) ? filter : throw TemplateFault.Runtime($"no filter named '{name}'");

    private static object? Given(object? value, object? fallback) => value is Missing ? fallback : value;

    private static FrozenDictionary<string, TemplateFilter> Build()
    {
        var table = new Dictionary<string, TemplateFilter>(StringComparer.Ordinal)
        {
            ["abs"] = (_, v, a) =>
            {
                a.Bind("abs");
                return v switch
                {
                    long l => (object?)(l == long.MinValue ? throw TemplateFault.Runtime("integer overflow") : Math.Abs(l)),
                    double d => Math.Abs(d),
                    bool b => b ? 1L : 0L,
                    _ => throw TemplateFault.Runtime($"bad operand type for abs(): '{ValueOps.TypeName(v)}'"),
                };
            },
            ["attr"] = (_, v, a) => Attribute(v, a.Bind("attr", "name")[0] as string
                ?? throw TemplateFault.Runtime("attr() needs an attribute name")),
            ["capitalize"] = (c, v, a) =>
            {
                a.Bind("capitalize");
                return c.Produce(ValueMethods.Capitalize(ValueOps.ToStr(v, c)));
            },
            ["center"] = (c, v, a) =>
            {
                object?[] p = a.Bind("center", "width");
                return ValueMethods.Invoke(c, ValueOps.ToStr(v, c), "center", new CallArguments([Given(p[0], 80L)], []));
            },
            ["default"] = Default,
            ["d"] = Default,
            ["dictsort"] = DictSort,
            ["escape"] = Escape,
            ["e"] = Escape,
            ["first"] = (c, v, a) =>
            {
                a.Bind("first");
                var items = ValueOps.Iterate(v, c);
                return items.Count > 0 ? items[0] : new Undefined(null, "first() of an empty sequence");
            },
            ["last"] = (c, v, a) =>
            {
                a.Bind("last");
                var items = ValueOps.Iterate(v, c);
                return items.Count > 0 ? items[^1] : new Undefined(null, "last() of an empty sequence");
            },
            ["float"] = (c, v, a) =>
            {
                object?[] p = a.Bind("float", "default");
                return ToFloat(v) ?? Given(p[0], 0.0);
            },
            ["format"] = (c, v, a) =>
            {
                object? arguments = a.Named.Count > 0 ? ToDict(a.Named) : (object?)a.Positional.ToArray();
                return PythonFormat.Printf(ValueOps.ToStr(v, c), arguments, c);
            },
            ["indent"] = Indent,
            ["int"] = (c, v, a) =>
            {
                object?[] p = a.Bind("int", "default", "base");
                return ToInt(v, p[1] is Missing ? 10 : (int)ValueOps.ToLong(p[1])) ?? Given(p[0], 0L);
            },
            ["items"] = (c, v, a) =>
            {
                a.Bind("items");
                return v switch
                {
                    Undefined => new List<object?>(),
                    PyDict dict => dict.Select(p => (object?)new object?[] { p.Key, p.Value }).ToList(),
                    _ => throw TemplateFault.Runtime("Can only get item pairs from a mapping."),
                };
            },
            ["join"] = Join,
            ["length"] = Length,
            ["count"] = Length,
            ["list"] = (c, v, a) =>
            {
                a.Bind("list");
                return ValueOps.Iterate(v, c).ToList();
            },
            ["lower"] = (c, v, a) =>
            {
                a.Bind("lower");
                return c.Produce(ValueOps.ToStr(v, c).ToLowerInvariant());
            },
            ["upper"] = (c, v, a) =>
            {
                a.Bind("upper");
                return c.Produce(ValueOps.ToStr(v, c).ToUpperInvariant());
            },
            ["map"] = Map,
            ["max"] = (c, v, a) => MinMax(c, v, a, "max"),
            ["min"] = (c, v, a) => MinMax(c, v, a, "min"),
            ["reject"] = (c, v, a) => Select(c, v, a, byAttribute: false, keep: false),
            ["rejectattr"] = (c, v, a) => Select(c, v, a, byAttribute: true, keep: false),
            ["select"] = (c, v, a) => Select(c, v, a, byAttribute: false, keep: true),
            ["selectattr"] = (c, v, a) => Select(c, v, a, byAttribute: true, keep: true),
            ["replace"] = (c, v, a) =>
            {
                object?[] p = a.Bind("replace", "old", "new", "count");
                if (p[0] is Missing || p[1] is Missing) throw TemplateFault.Runtime("replace() needs 'old' and 'new'");
                return ValueMethods.Replace(c, ValueOps.ToStr(v, c), ValueOps.ToStr(p[0], c), ValueOps.ToStr(p[1], c),
                    p[2] is Missing or null ? -1 : ValueOps.ToLong(p[2]));
            },
            ["reverse"] = (c, v, a) =>
            {
                a.Bind("reverse");
                if (v is string s) return c.Produce(string.Concat(ValueOps.CodePoints(s).Reverse().Cast<string>()));
                return ValueOps.Iterate(v, c).Reverse().ToList();
            },
            ["round"] = (c, v, a) =>
            {
                object?[] p = a.Bind("round", "precision", "method");
                if (v is long && Given(p[1], "common") is "common") return v;
                int precision = (int)Math.Clamp(p[0] is Missing ? 0 : ValueOps.ToLong(p[0]), 0, 15);
                double x = ValueOps.ToDouble(v), scale = Math.Pow(10, precision);
                return Given(p[1], "common") switch
                {
                    "common" => Math.Round(x, precision, MidpointRounding.ToEven),
                    "ceil" => Math.Ceiling(x * scale) / scale,
                    "floor" => Math.Floor(x * scale) / scale,
                    _ => throw TemplateFault.Runtime("method must be common, ceil or floor"),
                };
            },
            ["safe"] = (c, v, a) =>
            {
                a.Bind("safe");
                return ValueOps.ToStr(v, c);
            },
            ["sort"] = Sort,
            ["string"] = (c, v, a) =>
            {
                a.Bind("string");
                return ValueOps.ToStr(v, c);
            },
            ["sum"] = (c, v, a) =>
            {
                object?[] p = a.Bind("sum", "attribute", "start");
                object? total = Given(p[1], 0L);
                foreach (object? item in ValueOps.Iterate(v, c))
                    total = ValueOps.Add(total, p[0] is Missing ? item : GetPath(item, p[0]), c);
                return total;
            },
            ["title"] = (c, v, a) =>
            {
                a.Bind("title");
                return c.Produce(string.Concat(WordBeginning().Split(ValueOps.ToStr(v, c))
                    .Where(piece => piece.Length > 0).Select(piece => char.ToUpperInvariant(piece[0]) + piece[1..].ToLowerInvariant())));
            },
            ["tojson"] = (c, v, a) =>
            {
                object?[] p = a.Bind("tojson", "ensure_ascii", "indent", "separators", "sort_keys");
                return PythonJson.Dumps(c, v, p[0] is not Missing && ValueOps.IsTruthy(p[0]), p[1], p[2], p[3] is not Missing && ValueOps.IsTruthy(p[3]));
            },
            ["trim"] = (c, v, a) =>
            {
                object?[] p = a.Bind("trim", "chars");
                return ValueMethods.Strip(ValueOps.ToStr(v, c), p[0], true, true);
            },
            ["unique"] = Unique,
            ["wordcount"] = (c, v, a) =>
            {
                a.Bind("wordcount");
                return (long)Word().Count(ValueOps.ToStr(v, c));
            },
        };
        return table.ToFrozenDictionary(StringComparer.Ordinal);
    }

    [GeneratedRegex(@"([-\s\(\{\[<]+)")]
    private static partial Regex WordBeginning();

    [GeneratedRegex(@"\w+")]
    private static partial Regex Word();

    private static PyDict ToDict(IEnumerable<KeyValuePair<string, object?>> pairs)
    {
        var dict = new PyDict();
        foreach (var (key, value) in pairs) dict[key] = value;
        return dict;
    }

    /// <summary>Jinja's attr filter: a Python attribute only (methods, namespace and loop attributes), never a dict item.</summary>
    private static object? Attribute(object? value, string name) => value switch
    {
        Namespace or LoopState => ValueOps.GetAttribute(value, name),
        not null when ValueMethods.IsMethod(value, name) => new BoundMethod(value, name),
        _ => new Undefined(name, $"'{ValueOps.TypeName(value)}' object has no attribute '{name}'"),
    };

    private static object? Default(RenderContext context, object? value, CallArguments arguments)
    {
        object?[] p = arguments.Bind("default", "default_value", "boolean");
        bool boolean = p[1] is not Missing && ValueOps.IsTruthy(p[1]);
        bool useDefault = value is Undefined || (boolean && !ValueOps.IsTruthy(value));
        return useDefault ? Given(p[0], "") : value;
    }

    private static object? Escape(RenderContext context, object? value, CallArguments arguments)
    {
        arguments.Bind("escape");
        string s = ValueOps.ToStr(value, context);
        return context.Produce(s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;"));
    }

    private static object? Length(RenderContext context, object? value, CallArguments arguments)
    {
        arguments.Bind("length");
        return ValueOps.Length(value);
    }

    /// <summary>Jinja's indent: indents every line but the first (and the first too when first=True); blank lines only when blank=True.</summary>
    private static object? Indent(RenderContext context, object? value, CallArguments arguments)
    {
        object?[] p = arguments.Bind("indent", "width", "first", "blank");
        string indention = Given(p[0], 4L) switch
        {
            string s => s,
            object width => new string(' ', (int)Math.Clamp(ValueOps.ToLong(width), 0, 1024)),
            null => throw TemplateFault.Runtime("indent width must be an int or a string"),
        };
        bool first = p[1] is not Missing && ValueOps.IsTruthy(p[1]);
        bool blank = p[2] is not Missing && ValueOps.IsTruthy(p[2]);
        string text = ValueOps.ToStr(value, context) + "\n";
        List<object?> lines = ValueMethods.SplitLines(text, keepEnds: false);
        context.Reserve(text.Length + (long)lines.Count * indention.Length);
        string result;
        if (blank) result = string.Join("\n" + indention, lines.Cast<string>());
        else
        {
            result = (string)lines[0]!;
            if (lines.Count > 1)
                result += "\n" + string.Join("\n", lines.Skip(1).Cast<string>().Select(line => line.Length > 0 ? indention + line : line));
        }
        return first ? indention + result : result;
    }

    private static object? Join(RenderContext context, object? value, CallArguments arguments)
    {
        object?[] p = arguments.Bind("join", "d", "attribute");
        string separator = p[0] is Missing ? "" : ValueOps.ToStr(p[0], context);
        var output = context.NewBuilder();
        bool first = true;
        foreach (object? item in ValueOps.Iterate(value, context))
        {
            context.Step();
            if (!first) output.Append(separator);
            first = false;
            output.Append(ValueOps.ToStr(p[1] is Missing ? item : GetPath(item, p[1]), context));
        }
        return context.Produce(output);
    }

    /// <summary>Jinja's attribute getter: "a.b.0" walks attributes/items, integer parts index sequences.</summary>
    private static object? GetPath(object? item, object? attribute)
    {
        if (attribute is long or bool) return ValueOps.GetItem(item, attribute);
        string path = attribute as string ?? throw TemplateFault.Runtime("attribute must be a string");
        foreach (string part in path.Split('.'))
            item = long.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out long index)
                ? ValueOps.GetItem(item, index) : ValueOps.GetItem(item, part);
        return item;
    }

    private static object? Map(RenderContext context, object? value, CallArguments arguments)
    {
        var items = ValueOps.Iterate(value, context);
        var result = new List<object?>(items.Count);
        if (arguments.Positional.Count == 0)
        {
            object?[] p = arguments.Bind("map", "attribute", "default");
            if (p[0] is Missing) throw TemplateFault.Runtime("map() needs a filter name or attribute=");
            foreach (object? item in items)
            {
                context.Step();
                object? mapped = GetPath(item, p[0]);
                result.Add(mapped is Undefined && p[1] is not Missing ? p[1] : mapped);
            }
            return result;
        }
        string filterName = arguments.Positional[0] as string ?? throw TemplateFault.Runtime("map() filter name must be a string");
        TemplateFilter filter = Get(filterName);
        CallArguments rest = arguments.Skip(1);
        foreach (object? item in items)
        {
            context.Step();
            result.Add(filter(context, item, rest));
        }
        return result;
    }

    private static object? Select(RenderContext context, object? value, CallArguments arguments, bool byAttribute, bool keep)
    {
        int skip = byAttribute ? 1 : 0;
        if (arguments.Named.Count > 0) throw TemplateFault.Runtime("select filters take positional arguments only");
        if (byAttribute && arguments.Positional.Count < 1) throw TemplateFault.Runtime("selectattr()/rejectattr() need an attribute name");
        object? attribute = byAttribute ? arguments.Positional[0] : null;
        TemplateTest? test = null;
        CallArguments testArguments = CallArguments.None;
        if (arguments.Positional.Count > skip)
        {
            string name = arguments.Positional[skip] as string ?? throw TemplateFault.Runtime("test name must be a string");
            test = TemplateTests.Get(name);
            testArguments = arguments.Skip(skip + 1);
        }
        var result = new List<object?>();
        foreach (object? item in ValueOps.Iterate(value, context))
        {
            context.Step();
            object? subject = byAttribute ? GetPath(item, attribute) : item;
            bool passed = test is null ? ValueOps.IsTruthy(subject) : test(context, subject, testArguments);
            if (passed == keep) result.Add(item);
        }
        return result;
    }

    /// <summary>Sort key: strings compare case-insensitively unless case_sensitive=True (Jinja ignore_case).</summary>
    private static object? SortKey(object? item, object? attribute, bool caseSensitive)
    {
        object? key = attribute is Missing or null ? item : GetPath(item, attribute);
        return !caseSensitive && key is string s ? s.ToLowerInvariant() : key;
    }

    private static object? Sort(RenderContext context, object? value, CallArguments arguments)
    {
        object?[] p = arguments.Bind("sort", "reverse", "case_sensitive", "attribute");
        bool reverse = p[0] is not Missing && ValueOps.IsTruthy(p[0]);
        bool caseSensitive = p[1] is not Missing && ValueOps.IsTruthy(p[1]);
        var items = ValueOps.Iterate(value, context);
        context.Step(items.Count * 4L);
        var keyed = items.Select(item => (Key: SortKey(item, p[2], caseSensitive), Item: item));
        var comparer = Comparer<object?>.Create((x, y) => ValueOps.Compare(x, y, "<"));
        var sorted = reverse ? keyed.OrderByDescending(pair => pair.Key, comparer) : keyed.OrderBy(pair => pair.Key, comparer);
        return Materialize(sorted.Select(pair => pair.Item));
    }

    private static object? DictSort(RenderContext context, object? value, CallArguments arguments)
    {
        object?[] p = arguments.Bind("dictsort", "case_sensitive", "by", "reverse");
        if (value is not PyDict dict) throw TemplateFault.Runtime("dictsort() needs a mapping");
        bool caseSensitive = p[0] is not Missing && ValueOps.IsTruthy(p[0]);
        int position = Given(p[1], "key") switch
        {
            "key" => 0,
            "value" => 1,
            _ => throw TemplateFault.Runtime("You can only sort by either \"key\" or \"value\""),
        };
        bool reverse = p[2] is not Missing && ValueOps.IsTruthy(p[2]);
        context.Step(dict.Count * 4L);
        var pairs = dict.Select(pair => new object?[] { pair.Key, pair.Value });
        var comparer = Comparer<object?>.Create((x, y) => ValueOps.Compare(x, y, "<"));
        Func<object?[], object?> key = pair => SortKey(pair[position], null, caseSensitive);
        var sorted = reverse ? pairs.OrderByDescending(key, comparer) : pairs.OrderBy(key, comparer);
        return Materialize(sorted.Cast<object?>());
    }

    /// <summary>Runs a (stable) LINQ sort, surfacing a comparison error as itself rather than wrapped by the sorter.</summary>
    private static List<object?> Materialize(IEnumerable<object?> sorted)
    {
        try
        {
            return sorted.ToList();
        }
        catch (InvalidOperationException e) when (e.InnerException is TemplateFault fault)
        {
            throw fault;
        }
    }

    private static object? Unique(RenderContext context, object? value, CallArguments arguments)
    {
        object?[] p = arguments.Bind("unique", "case_sensitive", "attribute");
        bool caseSensitive = p[0] is not Missing && ValueOps.IsTruthy(p[0]);
        var seen = new List<object?>();
        var result = new List<object?>();
        foreach (object? item in ValueOps.Iterate(value, context))
        {
            object? key = SortKey(item, p[1], caseSensitive);
            context.Step(1 + seen.Count / 16);
            if (seen.Any(k => ValueOps.PyEquals(k, key))) continue;
            seen.Add(key);
            result.Add(item);
        }
        return result;
    }

    private static object? MinMax(RenderContext context, object? value, CallArguments arguments, string which)
    {
        object?[] p = arguments.Bind(which, "case_sensitive", "attribute");
        bool caseSensitive = p[0] is not Missing && ValueOps.IsTruthy(p[0]);
        object? best = null;
        object? bestKey = null;
        bool any = false;
        foreach (object? item in ValueOps.Iterate(value, context))
        {
            context.Step();
            object? key = SortKey(item, p[1], caseSensitive);
            int order = any ? ValueOps.Compare(key, bestKey, "<") : 0;
            if (!any || (which == "max" ? order > 0 : order < 0))
            {
                (best, bestKey, any) = (item, key, true);
            }
        }
        return any ? best : new Undefined(null, "No aggregated item, sequence was empty.");
    }

    private static double? ToFloat(object? value) => value switch
    {
        double d => d,
        long l => l,
        bool b => b ? 1 : 0,
        string s => ParseFloat(s.Trim()),
        _ => null,
    };

    private static double? ParseFloat(string s)
    {
        string lowered = s.ToLowerInvariant().Replace("_", "");
        if (lowered is "inf" or "+inf" or "infinity" or "+infinity") return double.PositiveInfinity;
        if (lowered is "-inf" or "-infinity") return double.NegativeInfinity;
        if (lowered is "nan" or "+nan" or "-nan") return double.NaN;
        return double.TryParse(lowered, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) ? d : null;
    }

    /// <summary>Jinja's int filter: int(value) (strings in the given base), else int(float(value)), else null.</summary>
    private static object? ToInt(object? value, int numberBase)
    {
        switch (value)
        {
            case long l: return l;
            case bool b: return b ? 1L : 0L;
            case double d: return double.IsFinite(d) && Math.Abs(d) < 9.2e18 ? (long)Math.Truncate(d) : (object?)null;
            case string s:
                string text = s.Trim().Replace("_", "");
                try
                {
                    if (numberBase == 10 && long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long parsed))
                        return parsed;
                    if (numberBase is 2 or 8 or 16 && text.Length > 0)
                    {
                        bool negative = text.StartsWith('-');
                        string digits = text.TrimStart('+', '-');
                        string prefix = numberBase switch { 2 => "0b", 8 => "0o", _ => "0x" };
                        if (digits.StartsWith(prefix, StringComparison.OrdinalIgnoreCase)) digits = digits[2..];
                        long magnitude = Convert.ToInt64(digits, numberBase);
                        return negative ? -magnitude : magnitude;
                    }
                }
                catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
                {
                    return null;
                }
                double? asFloat = ParseFloat(text);
                return asFloat is double f ? ToInt(f, 10) : null;
            default:
                return null;
        }
    }
}
