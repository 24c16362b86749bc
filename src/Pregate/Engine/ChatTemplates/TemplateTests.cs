// Jinja's tests (`x is defined`, `x is string`, `x is divisibleby(3)`, ...), as in Jinja2 3.1 tests.py.
using System.Collections.Frozen;

namespace Pregate.Engine.ChatTemplates;

internal delegate bool TemplateTest(RenderContext context, object? value, CallArguments arguments);

internal static class TemplateTests
{
    private static readonly FrozenDictionary<string, TemplateTest> Table = Build();

    public static bool TryGet(string name, out TemplateTest test) => Table.TryGetValue(name, out test!);

    public static TemplateTest Get(string name) =>
        Table.TryGetValue(name, out TemplateTest? test) ? test : throw TemplateFault.Runtime($"no test named '{name}'");

    private static object? Argument(CallArguments arguments, string test)
    {
        object?[] a = arguments.Bind(test, "other");
        return a[0] is Missing ? throw TemplateFault.Runtime($"test '{test}' needs an argument") : a[0];
    }

    private static FrozenDictionary<string, TemplateTest> Build()
    {
        var table = new Dictionary<string, TemplateTest>(StringComparer.Ordinal)
        {
            ["defined"] = (_, v, _) => v is not Undefined,
            ["undefined"] = (_, v, _) => v is Undefined,
            ["none"] = (_, v, _) => v is null,
            ["boolean"] = (_, v, _) => v is bool,
            ["true"] = (_, v, _) => v is true,
            ["false"] = (_, v, _) => v is false,
            ["integer"] = (_, v, _) => v is long,
            ["float"] = (_, v, _) => v is double,
            ["number"] = (_, v, _) => v is long or double or bool,
            ["string"] = (_, v, _) => v is string,
            ["mapping"] = (_, v, _) => v is PyDict,
            ["iterable"] = (_, v, _) => ValueOps.IsIterable(v),
            ["sequence"] = (_, v, _) => v is string or List<object?> or object?[] or PyDict or PyRange or Undefined,
            ["callable"] = (_, v, _) => v is TemplateCallable,
            ["escaped"] = (_, _, _) => false,
            ["sameas"] = (_, v, a) => SameAs(v, Argument(a, "sameas")),
            ["odd"] = (_, v, _) => ValueOps.ToLong(v) % 2 != 0,
            ["even"] = (_, v, _) => ValueOps.ToLong(v) % 2 == 0,
            ["divisibleby"] = (_, v, a) =>
            {
                long divisor = ValueOps.ToLong(Argument(a, "divisibleby"));
                return divisor == 0 ? throw TemplateFault.Runtime("integer division or modulo by zero") : ValueOps.ToLong(v) % divisor == 0;
            },
            ["lower"] = (c, v, _) => ValueOps.ToStr(v, c) is var s && s == s.ToLowerInvariant(),
            ["upper"] = (c, v, _) => ValueOps.ToStr(v, c) is var s && s == s.ToUpperInvariant(),
            ["in"] = (c, v, a) => ValueOps.Contains(Argument(a, "in"), v, c),
            ["filter"] = (_, v, _) => v is string name && TemplateFilters.TryGet(name, out _),
            ["test"] = (_, v, _) => v is string name && Table!.ContainsKey(name),
        };
        TemplateTest equal = (_, v, a) => ValueOps.PyEquals(v, Argument(a, "eq"));
        TemplateTest notEqual = (_, v, a) => !ValueOps.PyEquals(v, Argument(a, "ne"));
        TemplateTest less = (_, v, a) => ValueOps.Compare(v, Argument(a, "lt"), "<") < 0;
        TemplateTest lessOrEqual = (_, v, a) => ValueOps.Compare(v, Argument(a, "le"), "<=") <= 0;
        TemplateTest greater = (_, v, a) => ValueOps.Compare(v, Argument(a, "gt"), ">") > 0;
        TemplateTest greaterOrEqual = (_, v, a) => ValueOps.Compare(v, Argument(a, "ge"), ">=") >= 0;
        foreach (string name in (string[])["eq", "equalto", "=="]) table[name] = equal;
        foreach (string name in (string[])["ne", "!="]) table[name] = notEqual;
        foreach (string name in (string[])["lt", "lessthan", "<"]) table[name] = less;
        foreach (string name in (string[])["le", "<="]) table[name] = lessOrEqual;
        foreach (string name in (string[])["gt", "greaterthan", ">"]) table[name] = greater;
        foreach (string name in (string[])["ge", ">="]) table[name] = greaterOrEqual;
        return table.ToFrozenDictionary(StringComparer.Ordinal);
    }

    private static bool SameAs(object? a, object? b) => a switch
    {
        null => b is null,
        bool x => b is bool y && x == y,
        long x => b is long y && x == y,
        string x => b is string y && string.Equals(x, y, StringComparison.Ordinal),
        _ => ReferenceEquals(a, b),
    };
}
