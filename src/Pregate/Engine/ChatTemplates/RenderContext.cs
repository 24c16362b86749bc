// State of one render: variable scopes, the output being written, and the execution budget (steps, characters allocated,
// output size, call depth) that keeps a hostile template from hanging or exhausting the server.
using System.Runtime.CompilerServices;
using System.Text;

namespace Pregate.Engine.ChatTemplates;

/// <summary>Variables of one scope. Jinja scoping: the template body and `if` blocks share a scope; each for-loop iteration,
/// macro call, `with` block and generation block gets a child scope whose assignments vanish when it ends.</summary>
internal sealed class Scope(Scope? parent)
{
    // Scopes hold a handful of names, so a small array searched linearly beats a hash table (one is made per loop iteration).
    private readonly Scope? parent = parent;
    private string[]? names;
    private object?[]? values;
    private int count;

    public bool TryGet(string name, out object? value)
    {
        for (Scope? scope = this; scope is not null; scope = scope.parent)
        {
            for (int i = 0; i < scope.count; i++)
            {
                if (string.Equals(scope.names![i], name, StringComparison.Ordinal))
                {
                    value = scope.values![i];
                    return true;
                }
            }
        }
        value = null;
        return false;
    }

    public void Set(string name, object? value)
    {
        for (int i = 0; i < count; i++)
        {
            if (string.Equals(names![i], name, StringComparison.Ordinal))
            {
                values![i] = value;
                return;
            }
        }
        if (names is null || count == names.Length)
        {
            Array.Resize(ref names, Math.Max(4, count * 2));
            Array.Resize(ref values, names.Length);
        }
        names[count] = name;
        values![count++] = value;
    }
}

/// <summary>A string builder that enforces the per-string size limit as it grows.</summary>
internal sealed class TextBuilder(RenderContext context)
{
    private readonly StringBuilder builder = new();

    public int Length => builder.Length;

    public TextBuilder Append(string text)
    {
        if ((long)builder.Length + text.Length > context.Options.MaxOutputLength)
            throw TemplateFault.Limit($"text longer than {context.Options.MaxOutputLength} characters");
        builder.Append(text);
        return this;
    }

    public TextBuilder Append(char c) => Append(c.ToString());

    public override string ToString() => builder.ToString();
}

internal sealed class RenderContext
{
    private readonly Stack<TextBuilder> outputs = new();
    private long steps;
    private long allocated;
    private int callDepth;

    public RenderContext(ChatTemplateOptions options, Scope globals)
    {
        Options = options;
        Scope = globals;
        outputs.Push(new TextBuilder(this));
    }

    public ChatTemplateOptions Options { get; }
    public Scope Scope { get; set; }
    public TextBuilder Output => outputs.Peek();

    /// <summary>Line and column of the node evaluated last, reported with runtime errors.</summary>
    public int Line { get; private set; }
    public int Column { get; private set; }

    public void At(Node node)
    {
        Line = node.Line;
        Column = node.Column;
        Step();
    }

    /// <summary>Charges <paramref name="count"/> units of work to the step budget.</summary>
    public void Step(long count = 1)
    {
        steps += count;
        if (steps > Options.MaxSteps)
            throw TemplateFault.Limit($"rendering took more than {Options.MaxSteps} steps");
    }

    /// <summary>Charges a string of <paramref name="length"/> characters that is about to be built.</summary>
    public void Reserve(long length)
    {
        if (length > Options.MaxOutputLength)
            throw TemplateFault.Limit($"text longer than {Options.MaxOutputLength} characters");
        allocated += length;
        if (allocated > Options.MaxAllocatedCharacters)
            throw TemplateFault.Limit($"rendering built more than {Options.MaxAllocatedCharacters} characters of text");
        Step(1 + length / 256);
    }

    public TextBuilder NewBuilder() => new(this);

    public string Produce(TextBuilder builder)
    {
        Reserve(builder.Length);
        return builder.ToString();
    }

    public string Produce(string text)
    {
        Reserve(text.Length);
        return text;
    }

    public void Write(string text) => Output.Append(text);

    public void BeginCapture() => outputs.Push(new TextBuilder(this));

    public string EndCapture() => Produce(outputs.Pop());

    public void EnterCall()
    {
        if (++callDepth > Options.MaxCallDepth)
            throw TemplateFault.Limit($"macro calls nested deeper than {Options.MaxCallDepth}");
        if (!RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw TemplateFault.Limit("template nesting exhausted the stack");
    }

    public void LeaveCall() => callDepth--;

    public object? Lookup(string name) => Scope.TryGet(name, out object? value) ? value : new Undefined(name);
}
