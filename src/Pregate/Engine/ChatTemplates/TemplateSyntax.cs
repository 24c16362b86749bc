// The parsed form of a chat template: expression and statement nodes that evaluate themselves against a RenderContext.
// Node set and semantics follow Jinja2 3.1 nodes.py/compiler.py for the subset chat templates use.
namespace Pregate.Engine.ChatTemplates;

internal abstract class Node(int line, int column)
{
    public int Line { get; } = line;
    public int Column { get; } = column;
}

// ---------------------------------------------------------------- expressions

internal abstract class Expr(int line, int column) : Node(line, column)
{
    public abstract object? Eval(RenderContext context);
}

/// <summary>Arguments of a call, filter or test as written: positional expressions and name=expression pairs.</summary>
internal sealed class ArgumentList(List<Expr> positional, List<KeyValuePair<string, Expr>> named)
{
    public static readonly ArgumentList Empty = new([], []);

    public IReadOnlyList<Expr> Positional { get; } = positional;
    public IReadOnlyList<KeyValuePair<string, Expr>> Named { get; } = named;

    public CallArguments Evaluate(RenderContext context)
    {
        if (Positional.Count == 0 && Named.Count == 0) return CallArguments.None;
        var positional = new List<object?>(Positional.Count);
        foreach (Expr e in Positional) positional.Add(e.Eval(context));
        var named = new List<KeyValuePair<string, object?>>(Named.Count);
        foreach (var (name, e) in Named) named.Add(new(name, e.Eval(context)));
        return new CallArguments(positional, named);
    }
}

internal sealed class ConstantExpr(int line, int column, object? value) : Expr(line, column)
{
    public object? Value { get; } = value;

    public override object? Eval(RenderContext context)
    {
        context.At(this);
        return Value;
    }
}

internal sealed class NameExpr(int line, int column, string name) : Expr(line, column)
{
    public string Name { get; } = name;

    public override object? Eval(RenderContext context)
    {
        context.At(this);
        return context.Lookup(Name);
    }
}

internal sealed class ListExpr(int line, int column, List<Expr> items, bool tuple) : Expr(line, column)
{
    public override object? Eval(RenderContext context)
    {
        context.At(this);
        var values = new List<object?>(items.Count);
        foreach (Expr item in items) values.Add(item.Eval(context));
        return tuple ? values.ToArray() : values;
    }
}

internal sealed class DictExpr(int line, int column, List<KeyValuePair<Expr, Expr>> pairs) : Expr(line, column)
{
    public override object? Eval(RenderContext context)
    {
        context.At(this);
        var dict = new PyDict(pairs.Count);
        foreach (var (key, value) in pairs)
        {
            object? k = key.Eval(context) ?? throw TemplateFault.Runtime("dict keys cannot be None");
            dict[k] = value.Eval(context);
        }
        return dict;
    }
}

internal sealed class AttributeExpr(int line, int column, Expr target, string name) : Expr(line, column)
{
    public override object? Eval(RenderContext context)
    {
        object? value = target.Eval(context);
        context.At(this);
        return ValueOps.GetAttribute(value, name);
    }
}

internal sealed class ItemExpr(int line, int column, Expr target, Expr key) : Expr(line, column)
{
    public override object? Eval(RenderContext context)
    {
        object? value = target.Eval(context);
        object? k = key.Eval(context);
        context.At(this);
        return ValueOps.GetItem(value, k);
    }
}

internal sealed class SliceExpr(int line, int column, Expr target, Expr? start, Expr? stop, Expr? step) : Expr(line, column)
{
    public override object? Eval(RenderContext context)
    {
        object? value = target.Eval(context);
        object? a = start?.Eval(context), b = stop?.Eval(context), c = step?.Eval(context);
        context.At(this);
        return ValueOps.Slice(value, a, b, c, context);
    }
}

internal sealed class CallExpr(int line, int column, Expr callee, ArgumentList arguments) : Expr(line, column)
{
    public override object? Eval(RenderContext context)
    {
        object? function = callee.Eval(context);
        CallArguments values = arguments.Evaluate(context);
        context.At(this);
        return function switch
        {
            TemplateCallable callable => callable.Invoke(context, values),
            Undefined undefined => throw ValueOps.UndefinedError(undefined),
            _ => throw TemplateFault.Runtime($"'{ValueOps.TypeName(function)}' object is not callable"),
        };
    }
}

/// <summary>One `| name(args)` application, resolved to its implementation when parsed.</summary>
internal sealed class FilterCall(int line, int column, string name, TemplateFilter function, ArgumentList arguments) : Node(line, column)
{
    public string Name { get; } = name;

    public object? Apply(RenderContext context, object? value)
    {
        CallArguments values = arguments.Evaluate(context);
        context.At(this);
        return function(context, value, values);
    }
}

internal sealed class FilterExpr(int line, int column, Expr operand, FilterCall filter) : Expr(line, column)
{
    public override object? Eval(RenderContext context) => filter.Apply(context, operand.Eval(context));
}

internal sealed class TestExpr(int line, int column, Expr operand, TemplateTest test, ArgumentList arguments, bool negated)
    : Expr(line, column)
{
    public override object? Eval(RenderContext context)
    {
        object? value = operand.Eval(context);
        CallArguments values = arguments.Evaluate(context);
        context.At(this);
        return test(context, value, values) != negated;
    }
}

internal enum UnaryOperator { Negate, Plus, Not }

internal sealed class UnaryExpr(int line, int column, UnaryOperator op, Expr operand) : Expr(line, column)
{
    public override object? Eval(RenderContext context)
    {
        object? value = operand.Eval(context);
        context.At(this);
        return op switch
        {
            UnaryOperator.Not => !ValueOps.IsTruthy(value),
            UnaryOperator.Negate => value is Undefined u ? throw ValueOps.UndefinedError(u) : ValueOps.Negate(value),
            _ => value is Undefined v ? throw ValueOps.UndefinedError(v) : ValueOps.Plus(value),
        };
    }
}

internal sealed class BinaryExpr(int line, int column, string op, Expr left, Expr right) : Expr(line, column)
{
    public override object? Eval(RenderContext context)
    {
        object? a = left.Eval(context);
        object? b = right.Eval(context);
        context.At(this);
        return op switch
        {
            "+" => ValueOps.Add(a, b, context),
            "-" => ValueOps.Subtract(a, b),
            "*" => ValueOps.Multiply(a, b, context),
            "/" => ValueOps.Divide(a, b),
            "//" => ValueOps.FloorDivide(a, b),
            "%" => ValueOps.Modulo(a, b, context),
            "**" => ValueOps.Power(a, b),
            _ => throw TemplateFault.Runtime($"unknown operator '{op}'"),
        };
    }
}

/// <summary>`a ~ b ~ c`: the str() of each operand joined.</summary>
internal sealed class ConcatExpr(int line, int column, List<Expr> parts) : Expr(line, column)
{
    public override object? Eval(RenderContext context)
    {
        var output = context.NewBuilder();
        foreach (Expr part in parts) output.Append(ValueOps.ToStr(part.Eval(context), context));
        context.At(this);
        return context.Produce(output);
    }
}

/// <summary>`a and b` / `a or b` with Python's short-circuit semantics: the result is one of the operands.</summary>
internal sealed class LogicalExpr(int line, int column, bool isAnd, Expr left, Expr right) : Expr(line, column)
{
    public override object? Eval(RenderContext context)
    {
        object? a = left.Eval(context);
        context.At(this);
        return ValueOps.IsTruthy(a) == isAnd ? right.Eval(context) : a;
    }
}

/// <summary>A comparison chain `a < b <= c` (Python: a < b and b <= c, each operand evaluated once).</summary>
internal sealed class CompareExpr(int line, int column, Expr first, List<KeyValuePair<string, Expr>> rest) : Expr(line, column)
{
    public override object? Eval(RenderContext context)
    {
        object? left = first.Eval(context);
        foreach (var (op, operand) in rest)
        {
            object? right = operand.Eval(context);
            context.At(this);
            bool holds = op switch
            {
                "==" => ValueOps.PyEquals(left, right),
                "!=" => !ValueOps.PyEquals(left, right),
                "<" => ValueOps.Compare(left, right, op) < 0,
                "<=" => ValueOps.Compare(left, right, op) <= 0,
                ">" => ValueOps.Compare(left, right, op) > 0,
                ">=" => ValueOps.Compare(left, right, op) >= 0,
                "in" => ValueOps.Contains(right, left, context),
                "not in" => !ValueOps.Contains(right, left, context),
                _ => throw TemplateFault.Runtime($"unknown comparison '{op}'"),
            };
            if (!holds) return false;
            left = right;
        }
        return true;
    }
}

/// <summary>`a if condition else b`; without `else` a false condition gives Undefined.</summary>
internal sealed class ConditionalExpr(int line, int column, Expr condition, Expr whenTrue, Expr? whenFalse) : Expr(line, column)
{
    public override object? Eval(RenderContext context)
    {
        bool holds = ValueOps.IsTruthy(condition.Eval(context));
        context.At(this);
        return holds ? whenTrue.Eval(context) : whenFalse is null ? new Undefined(null) : whenFalse.Eval(context);
    }
}

// ---------------------------------------------------------------- assignment targets

internal abstract class Target(int line, int column) : Node(line, column)
{
    public abstract void Assign(RenderContext context, Scope scope, object? value);
}

internal sealed class NameTarget(int line, int column, string name) : Target(line, column)
{
    public override void Assign(RenderContext context, Scope scope, object? value) => scope.Set(name, value);
}

/// <summary>`ns.attr` in `{% set ns.attr = value %}`: only namespace objects accept attribute assignment.</summary>
internal sealed class NamespaceTarget(int line, int column, string name, string attribute) : Target(line, column)
{
    public override void Assign(RenderContext context, Scope scope, object? value)
    {
        if (!scope.TryGet(name, out object? target) || target is not Namespace ns)
            throw TemplateFault.Runtime($"cannot assign attribute on non-namespace object '{name}'");
        ns.Attributes[attribute] = value;
    }
}

internal sealed class TupleTarget(int line, int column, List<Target> items) : Target(line, column)
{
    public override void Assign(RenderContext context, Scope scope, object? value)
    {
        IReadOnlyList<object?> values = ValueOps.Iterate(value, context);
        if (values.Count != items.Count)
            throw TemplateFault.Runtime(values.Count > items.Count
                ? $"too many values to unpack (expected {items.Count})"
                : $"not enough values to unpack (expected {items.Count}, got {values.Count})");
        for (int i = 0; i < items.Count; i++) items[i].Assign(context, scope, values[i]);
    }
}

// ---------------------------------------------------------------- statements

internal enum Flow { Normal, Break, Continue }

internal abstract class Stmt(int line, int column) : Node(line, column)
{
    public abstract Flow Exec(RenderContext context);

    public static Flow ExecAll(IReadOnlyList<Stmt> body, RenderContext context)
    {
        foreach (Stmt statement in body)
        {
            Flow flow = statement.Exec(context);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    /// <summary>Runs <paramref name="body"/> in a child scope (loop iteration, macro call, with/generation block).</summary>
    public static Flow ExecScoped(IReadOnlyList<Stmt> body, RenderContext context, Scope scope)
    {
        Scope outer = context.Scope;
        context.Scope = scope;
        try
        {
            return ExecAll(body, context);
        }
        finally
        {
            context.Scope = outer;
        }
    }

    public static object? ApplyFilters(IReadOnlyList<FilterCall> filters, RenderContext context, object? value)
    {
        foreach (FilterCall filter in filters) value = filter.Apply(context, value);
        return value;
    }
}

internal sealed class TextStmt(int line, int column, string text) : Stmt(line, column)
{
    public override Flow Exec(RenderContext context)
    {
        context.At(this);
        context.Write(text);
        return Flow.Normal;
    }
}

internal sealed class OutputStmt(int line, int column, Expr expression) : Stmt(line, column)
{
    public override Flow Exec(RenderContext context)
    {
        object? value = expression.Eval(context);
        context.At(this);
        context.Write(ValueOps.ToStr(value, context));
        return Flow.Normal;
    }
}

internal sealed class IfStmt(int line, int column, List<KeyValuePair<Expr, List<Stmt>>> branches, List<Stmt> otherwise)
    : Stmt(line, column)
{
    public override Flow Exec(RenderContext context)
    {
        context.At(this);
        foreach (var (condition, body) in branches)
            if (ValueOps.IsTruthy(condition.Eval(context))) return ExecAll(body, context);
        return ExecAll(otherwise, context);
    }
}

internal sealed class ForStmt(int line, int column, Target target, Expr iterable, Expr? filter, List<Stmt> body, List<Stmt> otherwise)
    : Stmt(line, column)
{
    public override Flow Exec(RenderContext context)
    {
        object? source = iterable.Eval(context);
        context.At(this);
        IReadOnlyList<object?> items = ValueOps.Iterate(source, context);
        Scope outer = context.Scope;
        if (filter is not null)
        {
            var kept = new List<object?>();
            foreach (object? item in items)
            {
                context.Step();
                var scope = new Scope(outer);
                target.Assign(context, scope, item);
                context.Scope = scope;
                bool keep = ValueOps.IsTruthy(filter.Eval(context));
                context.Scope = outer;
                if (keep) kept.Add(item);
            }
            items = kept;
        }
        if (items.Count == 0) return ExecAll(otherwise, context);
        var loop = new LoopState(items, 0);
        for (int i = 0; i < items.Count; i++)
        {
            context.At(this);
            loop.Index0 = i;
            var scope = new Scope(outer);
            target.Assign(context, scope, items[i]);
            scope.Set("loop", loop);
            if (ExecScoped(body, context, scope) == Flow.Break) break;
        }
        return Flow.Normal;
    }
}

internal sealed class SetStmt(int line, int column, Target target, Expr value) : Stmt(line, column)
{
    public override Flow Exec(RenderContext context)
    {
        object? result = value.Eval(context);
        context.At(this);
        target.Assign(context, context.Scope, result);
        return Flow.Normal;
    }
}

/// <summary>`{% set x | filters %}body{% endset %}`: assigns the rendered body.</summary>
internal sealed class SetBlockStmt(int line, int column, Target target, List<FilterCall> filters, List<Stmt> body) : Stmt(line, column)
{
    public override Flow Exec(RenderContext context)
    {
        context.At(this);
        context.BeginCapture();
        ExecAll(body, context);
        object? value = ApplyFilters(filters, context, context.EndCapture());
        target.Assign(context, context.Scope, value);
        return Flow.Normal;
    }
}

/// <summary>`{% filter f %}body{% endfilter %}`: writes the filtered rendering of the body.</summary>
internal sealed class FilterBlockStmt(int line, int column, List<FilterCall> filters, List<Stmt> body) : Stmt(line, column)
{
    public override Flow Exec(RenderContext context)
    {
        context.At(this);
        context.BeginCapture();
        Flow flow = ExecAll(body, context);
        context.Write(ValueOps.ToStr(ApplyFilters(filters, context, context.EndCapture()), context));
        return flow;
    }
}

/// <summary>A block rendered in its own scope: `{% with a = 1 %}` and Hugging Face's `{% generation %}` marker.</summary>
internal sealed class ScopedBlockStmt(int line, int column, List<KeyValuePair<Target, Expr>> assignments, List<Stmt> body)
    : Stmt(line, column)
{
    public override Flow Exec(RenderContext context)
    {
        context.At(this);
        var scope = new Scope(context.Scope);
        foreach (var (target, value) in assignments) target.Assign(context, scope, value.Eval(context));
        return ExecScoped(body, context, scope);
    }
}

internal sealed class LoopControlStmt(int line, int column, Flow flow) : Stmt(line, column)
{
    public override Flow Exec(RenderContext context)
    {
        context.At(this);
        return flow;
    }
}

internal sealed class MacroStmt(int line, int column, string name, List<KeyValuePair<string, Expr?>> parameters, List<Stmt> body)
    : Stmt(line, column)
{
    public string Name { get; } = name;
    public IReadOnlyList<KeyValuePair<string, Expr?>> Parameters { get; } = parameters;
    public IReadOnlyList<Stmt> Body { get; } = body;

    public override Flow Exec(RenderContext context)
    {
        context.At(this);
        context.Scope.Set(Name, new MacroValue(this, context.Scope));
        return Flow.Normal;
    }
}

/// <summary>A defined macro: calling it renders its body in a new scope over the scope it was defined in.</summary>
internal sealed class MacroValue(MacroStmt definition, Scope closure) : TemplateCallable
{
    public override string Name => definition.Name;

    public override object? Invoke(RenderContext context, CallArguments arguments)
    {
        var parameters = definition.Parameters;
        if (arguments.Positional.Count > parameters.Count)
            throw TemplateFault.Runtime($"macro '{Name}' takes not more than {parameters.Count} argument(s)");
        var scope = new Scope(closure);
        var given = new object?[parameters.Count];
        var isGiven = new bool[parameters.Count];
        for (int i = 0; i < arguments.Positional.Count; i++) (given[i], isGiven[i]) = (arguments.Positional[i], true);
        foreach (var (name, value) in arguments.Named)
        {
            int index = -1;
            for (int i = 0; i < parameters.Count; i++) if (parameters[i].Key == name) index = i;
            if (index < 0) throw TemplateFault.Runtime($"macro '{Name}' takes no keyword argument '{name}'");
            if (isGiven[index]) throw TemplateFault.Runtime($"macro '{Name}' got multiple values for argument '{name}'");
            (given[index], isGiven[index]) = (value, true);
        }
        context.EnterCall();
        Scope outer = context.Scope;
        context.Scope = scope;
        try
        {
            for (int i = 0; i < parameters.Count; i++)
            {
                var (name, fallback) = parameters[i];
                scope.Set(name, isGiven[i] ? given[i] : fallback is null ? new Undefined(name) : fallback.Eval(context));
            }
            context.BeginCapture();
            Stmt.ExecAll(definition.Body, context);
            return context.EndCapture();
        }
        finally
        {
            context.Scope = outer;
            context.LeaveCall();
        }
    }
}
