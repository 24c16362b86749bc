// Python semantics of template values: truthiness, str()/repr(), ==, <, arithmetic, `in`, len(), iteration, and Jinja's
// attribute/item lookup (Environment.getattr/getitem: attribute first for `.x`, item first for `[x]`, Undefined on failure).
using System.Globalization;
using System.Text;

namespace Pregate.Engine.ChatTemplates;

internal static class ValueOps
{
    /// <summary>How deeply lists/dicts may nest in str(), ==, tojson (also stops self-containing lists).</summary>
    public const int MaxNesting = 128;

    public static bool IsTruthy(object? value) => value switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length != 0,
        List<object?> list => list.Count != 0,
        object?[] tuple => tuple.Length != 0,
        PyDict dict => dict.Count != 0,
        PyRange range => range.Count != 0,
        _ => true,
    };

    public static string TypeName(object? value) => value switch
    {
        null => "NoneType",
        Undefined => "Undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        object?[] => "tuple",
        PyDict => "dict",
        PyRange => "range",
        Namespace => "Namespace",
        LoopState => "LoopContext",
        TemplateCallable => "function",
        _ => value.GetType().Name,
    };

    public static bool IsNumber(object? value) => value is long or double or bool;
    public static bool IsInteger(object? value) => value is long or bool;

    public static long ToLong(object? value) => value switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        _ => throw TemplateFault.Runtime($"'{TypeName(value)}' object cannot be interpreted as an integer"),
    };

    public static double ToDouble(object? value) => value switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw TemplateFault.Runtime($"must be a real number, not '{TypeName(value)}'"),
    };

    // ---- str() and repr() ----

    /// <summary>Python str(value) as Jinja prints it; Undefined prints as "".</summary>
    public static string ToStr(object? value, RenderContext context) => value switch
    {
        string s => s,
        Undefined => "",
        null => "None",
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => PythonFormat.FloatRepr(d),
        _ => ReprToString(value, context),
    };

    public static string Repr(object? value, RenderContext context) => value switch
    {
        string s => PythonFormat.StringRepr(s),
        null or bool or long or double => ToStr(value, context),
        Undefined => "Undefined",
        _ => ReprToString(value, context),
    };

    private static string ReprToString(object? value, RenderContext context)
    {
        var builder = context.NewBuilder();
        AppendRepr(builder, value, context, 0);
        return context.Produce(builder);
    }

    private static void AppendRepr(TextBuilder builder, object? value, RenderContext context, int depth)
    {
        if (depth > MaxNesting) throw TemplateFault.Limit($"value nested deeper than {MaxNesting} levels");
        context.Step();
        switch (value)
        {
            case List<object?> list:
                builder.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0) builder.Append(", ");
                    AppendRepr(builder, list[i], context, depth + 1);
                }
                builder.Append(']');
                break;
            case object?[] tuple:
                builder.Append('(');
                for (int i = 0; i < tuple.Length; i++)
                {
                    if (i > 0) builder.Append(", ");
                    AppendRepr(builder, tuple[i], context, depth + 1);
                }
                builder.Append(tuple.Length == 1 ? ",)" : ")");
                break;
            case PyDict dict:
                AppendDictRepr(builder, dict.Select(p => new KeyValuePair<object?, object?>(p.Key, p.Value)), context, depth);
                break;
            case Namespace ns:
                builder.Append("<Namespace ");
                AppendDictRepr(builder, ns.Attributes.Select(p => new KeyValuePair<object?, object?>(p.Key, p.Value)), context, depth);
                builder.Append('>');
                break;
            case PyRange range:
                builder.Append(range.Step == 1 ? $"range({range.Start}, {range.Stop})" : $"range({range.Start}, {range.Stop}, {range.Step})");
                break;
            case LoopState:
                builder.Append("<LoopContext>");
                break;
            case TemplateCallable callable:
                builder.Append($"<function {callable.Name}>");
                break;
            case string s:
                builder.Append(PythonFormat.StringRepr(s));
                break;
            default:
                builder.Append(Repr(value, context));
                break;
        }
    }

    private static void AppendDictRepr(TextBuilder builder, IEnumerable<KeyValuePair<object?, object?>> pairs, RenderContext context, int depth)
    {
        builder.Append('{');
        bool first = true;
        foreach (var (key, item) in pairs)
        {
            if (!first) builder.Append(", ");
            first = false;
            AppendRepr(builder, key, context, depth + 1);
            builder.Append(": ");
            AppendRepr(builder, item, context, depth + 1);
        }
        builder.Append('}');
    }

    // ---- equality and ordering ----

    public static bool PyEquals(object? a, object? b) => PyEquals(a, b, 0);

    private static bool PyEquals(object? a, object? b, int depth)
    {
        if (depth > MaxNesting) throw TemplateFault.Limit($"value nested deeper than {MaxNesting} levels");
        if (IsNumber(a) && IsNumber(b))
        {
            if (IsInteger(a) && IsInteger(b)) return ToLong(a) == ToLong(b);
            return ToDouble(a) == ToDouble(b);
        }
        switch (a)
        {
            case null: return b is null;
            case Undefined: return b is Undefined;
            case string s: return b is string t && string.Equals(s, t, StringComparison.Ordinal);
            case List<object?> list:
                return b is List<object?> other && SequenceEquals(list, other, depth);
            case object?[] tuple:
                return b is object?[] otherTuple && SequenceEquals(tuple, otherTuple, depth);
            case PyDict dict:
                if (b is not PyDict otherDict || otherDict.Count != dict.Count) return false;
                foreach (var (key, item) in dict)
                    if (!otherDict.TryGetValue(key, out object? otherItem) || !PyEquals(item, otherItem, depth + 1)) return false;
                return true;
            case PyRange range:
                return b is PyRange r && ((range.Count == 0 && r.Count == 0) ||
                    (range.Start == r.Start && range.Count == r.Count && (range.Count == 1 || range.Step == r.Step)));
            default:
                return ReferenceEquals(a, b);
        }
    }

    private static bool SequenceEquals(IReadOnlyList<object?> a, IReadOnlyList<object?> b, int depth)
    {
        if (a.Count != b.Count) return false;
        for (int i = 0; i < a.Count; i++)
            if (!PyEquals(a[i], b[i], depth + 1)) return false;
        return true;
    }

    /// <summary>Python's ordering for &lt; &lt;= &gt; &gt;=: numbers, strings (by code point), lists/tuples lexicographically.</summary>
    public static int Compare(object? a, object? b, string op) => Compare(a, b, op, 0);

    private static int Compare(object? a, object? b, string op, int depth)
    {
        if (depth > MaxNesting) throw TemplateFault.Limit($"value nested deeper than {MaxNesting} levels");
        if (IsNumber(a) && IsNumber(b))
        {
            if (IsInteger(a) && IsInteger(b)) return ToLong(a).CompareTo(ToLong(b));
            double x = ToDouble(a), y = ToDouble(b);
            return x < y ? -1 : x > y ? 1 : 0;
        }
        if (a is string s && b is string t) return CompareCodePoints(s, t);
        if ((a is List<object?> && b is List<object?>) || (a is object?[] && b is object?[]))
        {
            var left = (IReadOnlyList<object?>)a;
            var right = (IReadOnlyList<object?>)b;
            for (int i = 0; i < Math.Min(left.Count, right.Count); i++)
            {
                if (PyEquals(left[i], right[i], depth + 1)) continue;
                return Compare(left[i], right[i], op, depth + 1);
            }
            return left.Count.CompareTo(right.Count);
        }
        throw TemplateFault.Runtime($"'{op}' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    public static int CompareCodePoints(string a, string b)
    {
        int i = 0, j = 0;
        while (i < a.Length && j < b.Length)
        {
            Rune.DecodeFromUtf16(a.AsSpan(i), out Rune x, out int nx);
            Rune.DecodeFromUtf16(b.AsSpan(j), out Rune y, out int ny);
            if (x.Value != y.Value) return x.Value < y.Value ? -1 : 1;
            i += nx;
            j += ny;
        }
        return (a.Length - i).CompareTo(b.Length - j);
    }

    // ---- arithmetic ----

    public static object? Add(object? a, object? b, RenderContext context)
    {
        if (IsNumber(a) && IsNumber(b))
            return IsInteger(a) && IsInteger(b) ? (object?)checked(ToLong(a) + ToLong(b)) : ToDouble(a) + ToDouble(b);
        if (a is string s && b is string t)
        {
            context.Reserve((long)s.Length + t.Length);
            return string.Concat(s, t);
        }
        if (a is List<object?> x && b is List<object?> y)
        {
            context.Step(x.Count + y.Count);
            return new List<object?>(x.Concat(y));
        }
        if (a is object?[] p && b is object?[] q)
        {
            context.Step(p.Length + q.Length);
            return p.Concat(q).ToArray();
        }
        throw OperandError("+", a, b);
    }

    public static object? Subtract(object? a, object? b)
    {
        if (IsNumber(a) && IsNumber(b))
            return IsInteger(a) && IsInteger(b) ? (object?)checked(ToLong(a) - ToLong(b)) : ToDouble(a) - ToDouble(b);
        throw OperandError("-", a, b);
    }

    public static object? Multiply(object? a, object? b, RenderContext context)
    {
        if (IsNumber(a) && IsNumber(b))
            return IsInteger(a) && IsInteger(b) ? (object?)checked(ToLong(a) * ToLong(b)) : ToDouble(a) * ToDouble(b);
        if (IsInteger(a) && b is string or List<object?> or object?[]) (a, b) = (b, a);
        if (IsInteger(b))
        {
            long times = Math.Max(0, ToLong(b));
            switch (a)
            {
                case string s:
                    if (s.Length == 0 || times == 0) return "";
                    context.Reserve((long)Int128.Min((Int128)s.Length * times, long.MaxValue));
                    return new StringBuilder(s.Length * (int)times).Insert(0, s, (int)times).ToString();
                case List<object?> list:
                    if (list.Count == 0 || times == 0) return new List<object?>();
                    context.Step((long)Int128.Min((Int128)list.Count * times, long.MaxValue));
                    return Enumerable.Repeat(list, (int)times).SelectMany(x => x).ToList();
                case object?[] tuple:
                    if (tuple.Length == 0 || times == 0) return Array.Empty<object?>();
                    context.Step((long)Int128.Min((Int128)tuple.Length * times, long.MaxValue));
                    return Enumerable.Repeat(tuple, (int)times).SelectMany(x => x).ToArray();
            }
        }
        throw OperandError("*", a, b);
    }

    public static object? Divide(object? a, object? b)
    {
        if (!IsNumber(a) || !IsNumber(b)) throw OperandError("/", a, b);
        double divisor = ToDouble(b);
        if (divisor == 0) throw TemplateFault.Runtime("division by zero");
        return ToDouble(a) / divisor;
    }

    public static object? FloorDivide(object? a, object? b)
    {
        if (!IsNumber(a) || !IsNumber(b)) throw OperandError("//", a, b);
        if (IsInteger(a) && IsInteger(b))
        {
            long x = ToLong(a), y = ToLong(b);
            if (y == 0) throw TemplateFault.Runtime("integer division or modulo by zero");
            if (x == long.MinValue && y == -1) throw TemplateFault.Runtime("integer overflow");
            long q = x / y;
            return (object?)((x % y != 0 && (x < 0) != (y < 0)) ? q - 1 : q);
        }
        double d = ToDouble(b);
        if (d == 0) throw TemplateFault.Runtime("float floor division by zero");
        return Math.Floor(ToDouble(a) / d);
    }

    public static object? Modulo(object? a, object? b, RenderContext context)
    {
        if (a is string format) return PythonFormat.Printf(format, b, context);
        if (!IsNumber(a) || !IsNumber(b)) throw OperandError("%", a, b);
        if (IsInteger(a) && IsInteger(b))
        {
            long x = ToLong(a), y = ToLong(b);
            if (y == 0) throw TemplateFault.Runtime("integer division or modulo by zero");
            if (y == -1) return 0L;
            long r = x % y;
            return (r != 0 && (r < 0) != (y < 0)) ? r + y : r;
        }
        double p = ToDouble(a), q = ToDouble(b);
        if (q == 0) throw TemplateFault.Runtime("float modulo");
        double m = p % q; // fmod, then Python's sign rule
        return (m != 0 && (m < 0) != (q < 0)) ? m + q : m;
    }

    public static object? Power(object? a, object? b)
    {
        if (!IsNumber(a) || !IsNumber(b)) throw OperandError("**", a, b);
        if (IsInteger(a) && IsInteger(b) && ToLong(b) >= 0)
        {
            long baseValue = ToLong(a), exponent = ToLong(b);
            if (baseValue is 0 or 1) return exponent == 0 ? 1L : baseValue;
            if (baseValue == -1) return exponent % 2 == 0 ? 1L : -1L;
            long result = 1;
            for (long i = 0; i < exponent; i++) result = checked(result * baseValue); // |base| >= 2 overflows within 63 steps
            return result;
        }
        return Math.Pow(ToDouble(a), ToDouble(b));
    }

    public static object? Negate(object? value) => value switch
    {
        long l => (object?)checked(-l),
        bool b => b ? -1L : 0L,
        double d => -d,
        _ => throw TemplateFault.Runtime($"bad operand type for unary -: '{TypeName(value)}'"),
    };

    public static object? Plus(object? value) => value switch
    {
        long or double => value,
        bool b => (object?)(b ? 1L : 0L),
        _ => throw TemplateFault.Runtime($"bad operand type for unary +: '{TypeName(value)}'"),
    };

    private static TemplateFault OperandError(string op, object? a, object? b)
    {
        if (a is Undefined u) return UndefinedError(u);
        if (b is Undefined v) return UndefinedError(v);
        return TemplateFault.Runtime($"unsupported operand type(s) for {op}: '{TypeName(a)}' and '{TypeName(b)}'");
    }

    public static TemplateFault UndefinedError(Undefined undefined) => TemplateFault.Runtime(undefined.Problem);

    // ---- containers ----

    /// <summary>Python's `needle in haystack`.</summary>
    public static bool Contains(object? haystack, object? needle, RenderContext context)
    {
        switch (haystack)
        {
            case string s:
                if (needle is not string n) throw TemplateFault.Runtime($"'in <string>' requires string as left operand, not {TypeName(needle)}");
                return s.Contains(n, StringComparison.Ordinal);
            case PyDict dict:
                return dict.ContainsKey(needle ?? throw TemplateFault.Runtime("dict keys cannot be None"));
            case Namespace:
                throw TemplateFault.Runtime("argument of type 'Namespace' is not iterable");
            default:
                foreach (object? item in Iterate(haystack, context))
                {
                    context.Step();
                    if (PyEquals(item, needle)) return true;
                }
                return false;
        }
    }

    /// <summary>Python len(); Undefined has length 0.</summary>
    public static long Length(object? value) => value switch
    {
        string s => CodePointCount(s),
        List<object?> list => list.Count,
        object?[] tuple => tuple.Length,
        PyDict dict => dict.Count,
        PyRange range => range.Count,
        Namespace ns => ns.Attributes.Count,
        Undefined => 0,
        _ => throw TemplateFault.Runtime($"object of type '{TypeName(value)}' has no len()"),
    };

    /// <summary>The items a for loop sees: list/tuple items, dict keys, string characters; Undefined is empty.</summary>
    public static IReadOnlyList<object?> Iterate(object? value, RenderContext context)
    {
        switch (value)
        {
            case List<object?> list:
                context.Step(list.Count / 16);
                return list.ToArray();
            case object?[] tuple: return tuple;
            case PyRange range: return range;
            case PyDict dict:
                context.Step(dict.Count / 16);
                return dict.Keys.ToArray();
            case string s:
                context.Reserve(s.Length);
                return CodePoints(s);
            case Undefined: return [];
            default: throw TemplateFault.Runtime($"'{TypeName(value)}' object is not iterable");
        }
    }

    public static bool IsIterable(object? value) => value is string or List<object?> or object?[] or PyDict or PyRange or Undefined;

    public static int CodePointCount(string s)
    {
        int surrogates = 0;
        foreach (char c in s) if (char.IsLowSurrogate(c)) surrogates++;
        return s.Length - surrogates;
    }

    public static object?[] CodePoints(string s)
    {
        var result = new List<object?>(s.Length);
        for (int i = 0; i < s.Length;)
        {
            int width = char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? 2 : 1;
            result.Add(s.Substring(i, width));
            i += width;
        }
        return result.ToArray();
    }

    // ---- attribute, item and slice access ----

    /// <summary>Jinja's `obj.name`: a Python attribute (methods, namespace attributes) first, then obj["name"], else Undefined.
    /// Attribute access on Undefined gives Undefined.</summary>
    public static object? GetAttribute(object? target, string name) => target switch
    {
        PyDict dict => ValueMethods.IsMethod(dict, name) ? new BoundMethod(dict, name)
            : dict.TryGetValue(name, out object? value) ? value : MissingAttribute(target, name),
        Namespace ns => ns.Attributes.TryGetValue(name, out object? value) ? value : MissingAttribute(target, name),
        LoopState loop => loop.GetAttribute(name),
        not null when ValueMethods.IsMethod(target, name) => new BoundMethod(target, name),
        Undefined undefined => new Undefined(undefined.Name is null ? name : undefined.Name + "." + name),
        _ => MissingAttribute(target, name),
    };

    private static Undefined MissingAttribute(object? target, string name) =>
        new(name, $"'{TypeName(target)}' object has no attribute '{name}'");

    /// <summary>Jinja's `obj[key]`: the item first, then for string keys an attribute, else Undefined.</summary>
    public static object? GetItem(object? target, object? key)
    {
        switch (target)
        {
            case PyDict dict:
                if (key is string or long or double or bool or object?[] && dict.TryGetValue(key, out object? value)) return value;
                break;
            case List<object?> or object?[] or PyRange when IsInteger(key):
            {
                var list = (IReadOnlyList<object?>)target;
                long index = ToLong(key);
                if (index < 0) index += list.Count;
                return index >= 0 && index < list.Count ? list[(int)index] : new Undefined(null, $"{TypeName(target)} index {key} out of range");
            }
            case string s when IsInteger(key):
            {
                object?[] chars = CodePoints(s);
                long index = ToLong(key);
                if (index < 0) index += chars.Length;
                return index >= 0 && index < chars.Length ? chars[index] : new Undefined(null, $"string index {key} out of range");
            }
            case Undefined undefined:
                return new Undefined(undefined.Name is null ? $"[{key}]" : $"{undefined.Name}[{key}]");
        }
        return key is string name && target is not null ? GetAttribute(target, name)
            : new Undefined(null, $"'{TypeName(target)}' object has no item [{key}]");
    }

    /// <summary>Python slicing obj[start:stop:step] for lists, tuples, strings and ranges.</summary>
    public static object? Slice(object? target, object? start, object? stop, object? step, RenderContext context)
    {
        long stepValue = step is null or Undefined ? 1 : ToLong(step);
        if (stepValue == 0) throw TemplateFault.Runtime("slice step cannot be zero");
        IReadOnlyList<object?> items = target switch
        {
            List<object?> list => list,
            object?[] tuple => tuple,
            PyRange range => range,
            string s => CodePoints(s),
            Undefined => [],
            _ => throw TemplateFault.Runtime($"'{TypeName(target)}' object is not subscriptable"),
        };
        long length = items.Count;
        long Adjust(object? bound, long whenMissing, long lower, long upper)
        {
            if (bound is null or Undefined) return whenMissing;
            long value = ToLong(bound);
            if (value < 0) value += length;
            return Math.Clamp(value, lower, upper);
        }
        long first, last;
        if (stepValue > 0)
        {
            first = Adjust(start, 0, 0, length);
            last = Adjust(stop, length, 0, length);
        }
        else
        {
            first = Adjust(start, length - 1, -1, length - 1);
            last = Adjust(stop, -1, -1, length - 1);
        }
        var picked = new List<object?>();
        for (long i = first; stepValue > 0 ? i < last : i > last; i += stepValue)
        {
            context.Step();
            picked.Add(items[(int)i]);
        }
        return target switch
        {
            string => context.Produce(string.Concat(picked.Cast<string>())),
            object?[] => picked.ToArray(),
            _ => picked,
        };
    }
}
