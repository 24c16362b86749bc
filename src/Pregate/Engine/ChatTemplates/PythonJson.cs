// The `tojson` filter as Hugging Face transformers defines it for chat templates: Python's
// json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) (transformers utils/chat_template_utils.py).
using System.Globalization;

namespace Pregate.Engine.ChatTemplates;

internal sealed class PythonJson
{
    private readonly RenderContext context;
    private readonly TextBuilder output;
    private readonly bool ensureAscii;
    private readonly string? indent;
    private readonly string itemSeparator;
    private readonly string keySeparator;
    private readonly bool sortKeys;

    private PythonJson(RenderContext context, bool ensureAscii, string? indent, string itemSeparator, string keySeparator, bool sortKeys)
    {
        this.context = context;
        output = context.NewBuilder();
        this.ensureAscii = ensureAscii;
        this.indent = indent;
        this.itemSeparator = itemSeparator;
        this.keySeparator = keySeparator;
        this.sortKeys = sortKeys;
    }

    /// <summary>json.dumps: separators default to (", ", ": ") without indent and (",", ": ") with one; an int indent means
    /// that many spaces, a string indent is used as is.</summary>
    public static string Dumps(RenderContext context, object? value, bool ensureAscii, object? indent, object? separators, bool sortKeys)
    {
        string? indentText = indent switch
        {
            null or Missing => null,
            string s => s,
            _ when ValueOps.IsInteger(indent) => new string(' ', (int)Math.Clamp(ValueOps.ToLong(indent), 0, 64)),
            _ => throw TemplateFault.Runtime($"tojson indent must be an int or a string, not '{ValueOps.TypeName(indent)}'"),
        };
        string itemSeparator = indentText is null ? ", " : ",", keySeparator = ": ";
        if (separators is not (null or Missing))
        {
            if (separators is not (object?[] or List<object?>) || ((IReadOnlyList<object?>)separators) is not [string item, string key])
                throw TemplateFault.Runtime("tojson separators must be a pair of strings");
            (itemSeparator, keySeparator) = (item, key);
        }
        var writer = new PythonJson(context, ensureAscii, indentText, itemSeparator, keySeparator, sortKeys);
        writer.Write(value, 0);
        return context.Produce(writer.output);
    }

    private void Write(object? value, int depth)
    {
        if (depth > ValueOps.MaxNesting) throw TemplateFault.Limit($"value nested deeper than {ValueOps.MaxNesting} levels");
        context.Step();
        switch (value)
        {
            case null: output.Append("null"); break;
            case bool b: output.Append(b ? "true" : "false"); break;
            case long l: output.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: output.Append(FloatText(d)); break;
            case string s: WriteString(s); break;
            case List<object?> or object?[]: WriteArray((IReadOnlyList<object?>)value, depth); break;
            case PyDict dict: WriteObject(dict, depth); break;
            default: throw TemplateFault.Runtime($"Object of type {ValueOps.TypeName(value)} is not JSON serializable");
        }
    }

    private static string FloatText(double d) =>
        double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : PythonFormat.FloatRepr(d);

    private void NewLine(int depth)
    {
        if (indent is null) return;
        output.Append('\n');
        for (int i = 0; i < depth; i++) output.Append(indent);
    }

    private void WriteArray(IReadOnlyList<object?> items, int depth)
    {
        if (items.Count == 0)
        {
            output.Append("[]");
            return;
        }
        output.Append('[');
        for (int i = 0; i < items.Count; i++)
        {
            if (i > 0) output.Append(itemSeparator);
            NewLine(depth + 1);
            Write(items[i], depth + 1);
        }
        NewLine(depth);
        output.Append(']');
    }

    private void WriteObject(PyDict dict, int depth)
    {
        if (dict.Count == 0)
        {
            output.Append("{}");
            return;
        }
        var pairs = dict.Select(p => (Key: KeyText(p.Key), p.Value)).ToList();
        if (sortKeys) pairs = pairs.OrderBy(p => p.Key, Comparer<string>.Create(ValueOps.CompareCodePoints)).ToList();
        output.Append('{');
        for (int i = 0; i < pairs.Count; i++)
        {
            if (i > 0) output.Append(itemSeparator);
            NewLine(depth + 1);
            WriteString(pairs[i].Key);
            output.Append(keySeparator);
            Write(pairs[i].Value, depth + 1);
        }
        NewLine(depth);
        output.Append('}');
    }

    private static string KeyText(object key) => key switch
    {
        string s => s,
        bool b => b ? "true" : "false",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FloatText(d),
        _ => throw TemplateFault.Runtime($"keys must be str, int, float, bool or None, not {ValueOps.TypeName(key)}"),
    };

    private void WriteString(string s)
    {
        var text = new System.Text.StringBuilder(s.Length + 2).Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': text.Append("\\\""); break;
                case '\\': text.Append("\\\\"); break;
                case '\n': text.Append("\\n"); break;
                case '\r': text.Append("\\r"); break;
                case '\t': text.Append("\\t"); break;
                case '\b': text.Append("\\b"); break;
                case '\f': text.Append("\\f"); break;
                default:
                    if (c < 0x20 || (ensureAscii && c > 0x7e)) text.Append($"\\u{(int)c:x4}");
                    else text.Append(c);
                    break;
            }
        }
        output.Append(text.Append('"').ToString());
    }
}
