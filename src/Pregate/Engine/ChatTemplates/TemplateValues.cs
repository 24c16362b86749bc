// Runtime values of the chat-template interpreter. Python types map to: None → null, bool, int → long, float → double,
// str → string, list → List<object?>, tuple → object?[], dict → PyDict, range → PyRange; plus Jinja's Undefined,
// namespace and loop objects (Jinja2 3.1 runtime.py Undefined/LoopContext, utils.py Namespace).
using System.Collections;

namespace Pregate.Engine.ChatTemplates;

/// <summary>Jinja's default Undefined: renders as "", is falsy, iterates as empty, equals only another Undefined.
/// <see cref="Problem"/> is the error reported when it is used where a value is required (called, added to, ...).</summary>
internal sealed class Undefined(string? name, string? problem = null)
{
    public string? Name { get; } = name;
    public string Problem { get; } = problem ?? (name is null ? "value is undefined" : $"'{name}' is undefined");
}

/// <summary>Marks a parameter that the caller did not pass.</summary>
internal sealed class Missing
{
    public static readonly Missing Value = new();
    private Missing() { }
}

/// <summary>A Python dict: insertion-ordered, keys compared with Python equality (1 == 1.0 == True).</summary>
internal sealed class PyDict : OrderedDictionary<object, object?>
{
    public PyDict() : base(PyKeyComparer.Instance) { }
    public PyDict(int capacity) : base(capacity, PyKeyComparer.Instance) { }
}

/// <summary>Python hashing and equality for dict keys; lists, dicts and other mutable values are unhashable.</summary>
internal sealed class PyKeyComparer : IEqualityComparer<object>
{
    public static readonly PyKeyComparer Instance = new();

    public new bool Equals(object? x, object? y) => ValueOps.PyEquals(x, y);

    public int GetHashCode(object value) => value switch
    {
        string s => s.GetHashCode(),
        bool b => b ? 1 : 0,
        long l => l.GetHashCode(),
        double d when d == Math.Floor(d) && Math.Abs(d) < 9.2e18 => ((long)d).GetHashCode(),
        double d => d.GetHashCode(),
        object?[] tuple => TupleHash(tuple),
        _ => throw TemplateFault.Runtime($"unhashable type: '{ValueOps.TypeName(value)}'"),
    };

    private int TupleHash(object?[] tuple)
    {
        var hash = new HashCode();
        foreach (object? item in tuple) hash.Add(item is null ? 0 : GetHashCode(item));
        return hash.ToHashCode();
    }
}

/// <summary>The object made by <c>namespace(...)</c>: attributes that <c>{% set ns.attr = ... %}</c> can change from any scope.</summary>
internal sealed class Namespace
{
    public OrderedDictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}

/// <summary>Python's range(start, stop, step) as a lazy sequence; the sandbox caps its length (Jinja sandbox MAX_RANGE).</summary>
internal sealed class PyRange : IReadOnlyList<object?>
{
    public const int MaxLength = 100_000;

    public long Start { get; }
    public long Stop { get; }
    public long Step { get; }
    public int Count { get; }

    public PyRange(long start, long stop, long step)
    {
        if (step == 0) throw TemplateFault.Runtime("range() arg 3 must not be zero");
        Int128 count = step > 0
            ? (start < stop ? ((Int128)stop - start - 1) / step + 1 : 0)
            : (start > stop ? ((Int128)start - stop - 1) / -(Int128)step + 1 : 0);
        if (count > MaxLength)
            throw TemplateFault.Limit($"range of {count} items is too big; ranges are limited to {MaxLength} items");
        (Start, Stop, Step, Count) = (start, stop, step, (int)count);
    }

    public object? this[int index] => Start + index * Step;

    public IEnumerator<object?> GetEnumerator()
    {
        for (int i = 0; i < Count; i++) yield return this[i];
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>The <c>loop</c> variable of a for loop (Jinja LoopContext).</summary>
internal sealed class LoopState(IReadOnlyList<object?> items, int depth0)
{
    public int Index0 { get; set; }

    public object? GetAttribute(string name)
    {
        int count = items.Count;
        return name switch
        {
            "index" => (long)(Index0 + 1),
            "index0" => (long)Index0,
            "revindex" => (long)(count - Index0),
            "revindex0" => (long)(count - Index0 - 1),
            "first" => Index0 == 0,
            "last" => Index0 == count - 1,
            "length" => (long)count,
            "previtem" => Index0 > 0 ? items[Index0 - 1] : new Undefined(null, "there is no previous item"),
            "nextitem" => Index0 + 1 < count ? items[Index0 + 1] : new Undefined(null, "there is no next item"),
            "depth" => (long)(depth0 + 1),
            "depth0" => (long)depth0,
            "cycle" => new BuiltinFunction("loop.cycle", (_, args) =>
            {
                if (args.Positional.Count == 0 || args.Named.Count != 0)
                    throw TemplateFault.Runtime("loop.cycle() needs at least one positional argument");
                return args.Positional[Index0 % args.Positional.Count];
            }),
            _ => new Undefined("loop." + name, $"'LoopContext' object has no attribute '{name}'"),
        };
    }
}

/// <summary>Positional and keyword arguments of a call, filter or test.</summary>
internal sealed class CallArguments(IReadOnlyList<object?> positional, IReadOnlyList<KeyValuePair<string, object?>> named)
{
    public static readonly CallArguments None = new([], []);

    public IReadOnlyList<object?> Positional { get; } = positional;
    public IReadOnlyList<KeyValuePair<string, object?>> Named { get; } = named;

    /// <summary>Binds the arguments to <paramref name="parameters"/> like a Python signature; unpassed ones are <see cref="Missing.Value"/>.</summary>
    public object?[] Bind(string callee, params ReadOnlySpan<string> parameters)
    {
        if (Positional.Count > parameters.Length)
            throw TemplateFault.Runtime($"{callee}() takes at most {parameters.Length} argument(s) ({Positional.Count} given)");
        var values = new object?[parameters.Length];
        Array.Fill(values, Missing.Value);
        for (int i = 0; i < Positional.Count; i++) values[i] = Positional[i];
        foreach (var (name, value) in Named)
        {
            int index = parameters.IndexOf(name);
            if (index < 0) throw TemplateFault.Runtime($"{callee}() got an unexpected keyword argument '{name}'");
            if (values[index] is not Missing) throw TemplateFault.Runtime($"{callee}() got multiple values for argument '{name}'");
            values[index] = value;
        }
        return values;
    }

    public CallArguments WithLeading(object? first)
    {
        var positional = new List<object?>(Positional.Count + 1) { first };
        positional.AddRange(Positional);
        return new CallArguments(positional, Named);
    }

    public CallArguments Skip(int count) => new(Positional.Skip(count).ToList(), Named);
}

/// <summary>Anything a template can call: built-in functions, bound methods of str/dict/list, macros.</summary>
internal abstract class TemplateCallable
{
    public abstract string Name { get; }
    public abstract object? Invoke(RenderContext context, CallArguments arguments);
}

internal sealed class BuiltinFunction(string name, Func<RenderContext, CallArguments, object?> body) : TemplateCallable
{
    public override string Name { get; } = name;
    public override object? Invoke(RenderContext context, CallArguments arguments) => body(context, arguments);
}

/// <summary>A method of a str, dict or list value, e.g. <c>message.content.strip</c>.</summary>
internal sealed class BoundMethod(object target, string name) : TemplateCallable
{
    public override string Name { get; } = name;
    public override object? Invoke(RenderContext context, CallArguments arguments) => ValueMethods.Invoke(context, target, Name, arguments);
}
