// Renders a model's chat template (tokenizer_config.json "chat_template" or GGUF tokenizer.chat_template) the way Hugging Face
// transformers does: Jinja with trim_blocks/lstrip_blocks, loop controls, raise_exception, strftime_now and a json.dumps tojson
// (transformers utils/chat_template_utils.py, ImmutableSandboxedEnvironment), by a small interpreter of the Jinja subset.
using System.Collections;
using System.Collections.Frozen;
using System.Text.Json;

namespace Pregate.Engine.ChatTemplates;

/// <summary>One chat turn: <paramref name="Role"/> is "system", "user", "assistant", "tool", ...</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>Execution limits and environment of a chat template. The defaults render any real model template for very long
/// conversations while a hostile template fails within a fraction of a second.</summary>
public sealed record ChatTemplateOptions
{
    public static ChatTemplateOptions Default { get; } = new();

    /// <summary>Most evaluation steps (nodes evaluated, loop iterations, items processed) one render may take.</summary>
    public long MaxSteps { get; init; } = 2_000_000;
    /// <summary>Most characters of the rendered prompt (and of any one string built while rendering).</summary>
    public int MaxOutputLength { get; init; } = 8 * 1024 * 1024;
    /// <summary>Most characters of text all string operations of one render may build together.</summary>
    public long MaxAllocatedCharacters { get; init; } = 64L * 1024 * 1024;
    /// <summary>Deepest nesting of macro calls.</summary>
    public int MaxCallDepth { get; init; } = 64;
    /// <summary>The clock behind <c>strftime_now</c> (local time of this provider).</summary>
    public TimeProvider Clock { get; init; } = TimeProvider.System;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first non-positive limit.</summary>
    public void Validate()
    {
        if (MaxSteps <= 0) throw new ArgumentException($"MaxSteps must be > 0, not {MaxSteps}");
        if (MaxOutputLength <= 0) throw new ArgumentException($"MaxOutputLength must be > 0, not {MaxOutputLength}");
        if (MaxAllocatedCharacters <= 0) throw new ArgumentException($"MaxAllocatedCharacters must be > 0, not {MaxAllocatedCharacters}");
        if (MaxCallDepth <= 0) throw new ArgumentException($"MaxCallDepth must be > 0, not {MaxCallDepth}");
        ArgumentNullException.ThrowIfNull(Clock);
    }
}

/// <summary>A parsed chat template. Immutable and safe to render from several threads at once.</summary>
public sealed class ChatTemplate
{
    /// <summary>The ChatML layout (<c>&lt;|im_start|&gt;role\ncontent&lt;|im_end|&gt;\n</c> per message, then
    /// <c>&lt;|im_start|&gt;assistant\n</c> when a generation prompt is asked for), for models that ship no template.</summary>
    public const string ChatMlSource =
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
        + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    private static readonly FrozenSet<string> ReservedNames =
        FrozenSet.ToFrozenSet(["messages", "add_generation_prompt", "bos_token", "eos_token"], StringComparer.Ordinal);

    private readonly List<Stmt> body;

    private ChatTemplate(string source, List<Stmt> body, ChatTemplateOptions options)
    {
        Source = source;
        this.body = body;
        Options = options;
    }

    /// <summary>The ChatML fallback template, see <see cref="ChatMlSource"/>.</summary>
    public static ChatTemplate ChatMl { get; } = Parse(ChatMlSource);

    public string Source { get; }
    public ChatTemplateOptions Options { get; }

    /// <summary>Parses a Jinja chat template.</summary>
    /// <exception cref="ChatTemplateException">Kind <see cref="ChatTemplateErrorKind.Syntax"/> with the line and column of the
    /// problem: unterminated tags, strings or blocks, unknown tags, filters or tests, malformed expressions.</exception>
    public static ChatTemplate Parse(string source, ChatTemplateOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        options ??= ChatTemplateOptions.Default;
        options.Validate();
        return new ChatTemplate(source, TemplateParser.Parse(source), options);
    }

    /// <summary>Renders the prompt for <paramref name="messages"/>. Variables: <c>messages</c> (dicts with role and content),
    /// <c>add_generation_prompt</c>, <c>bos_token</c>/<c>eos_token</c> (undefined when null), <c>tools</c> and <c>documents</c>
    /// (None unless <paramref name="extra"/> sets them), and every entry of <paramref name="extra"/>.</summary>
    /// <exception cref="ChatTemplateException">Kind Runtime for evaluation errors, Raised when the template calls
    /// raise_exception(message) (the message is kept verbatim), LimitExceeded when <see cref="Options"/> limits are hit.</exception>
    /// <exception cref="ArgumentException"><paramref name="extra"/> names a reserved variable or holds a value of an unsupported type.</exception>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, string? bosToken, string? eosToken,
        IReadOnlyDictionary<string, object?>? extra = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var list = new List<object?>(messages.Count);
        foreach (ChatMessage message in messages) list.Add(ValueConverter.Message(message));
        return RenderValues(list, addGenerationPrompt, bosToken, eosToken, extra);
    }

    /// <summary>Renders messages given as dictionaries, for messages with more fields than role and content
    /// (tool_calls, reasoning_content, tool_call_id, structured content, ...). Values may be strings, numbers, booleans, null,
    /// lists, dictionaries and <see cref="JsonElement"/>s. Same variables and exceptions as the other overload.</summary>
    public string Render(IReadOnlyList<IReadOnlyDictionary<string, object?>> messages, bool addGenerationPrompt, string? bosToken,
        string? eosToken, IReadOnlyDictionary<string, object?>? extra = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var list = new List<object?>(messages.Count);
        for (int i = 0; i < messages.Count; i++) list.Add(ValueConverter.FromClr(messages[i], $"messages[{i}]", 0));
        return RenderValues(list, addGenerationPrompt, bosToken, eosToken, extra);
    }

    private string RenderValues(List<object?> messages, bool addGenerationPrompt, string? bosToken, string? eosToken,
        IReadOnlyDictionary<string, object?>? extra)
    {
        var globals = new Scope(null);
        foreach (var (name, function) in Builtins.Create(Options)) globals.Set(name, function);
        var variables = new Scope(globals);
        variables.Set("tools", null);
        variables.Set("documents", null);
        if (extra is not null)
        {
            foreach (var (name, value) in extra)
            {
                if (ReservedNames.Contains(name))
                    throw new ArgumentException($"'{name}' is set from the Render arguments and cannot be passed in extra", nameof(extra));
                variables.Set(name, ValueConverter.FromClr(value, name, 0));
            }
        }
        variables.Set("messages", messages);
        variables.Set("add_generation_prompt", addGenerationPrompt);
        if (bosToken is not null) variables.Set("bos_token", bosToken);
        if (eosToken is not null) variables.Set("eos_token", eosToken);

        var context = new RenderContext(Options, variables);
        try
        {
            Stmt.ExecAll(body, context);
            return context.Output.ToString();
        }
        catch (TemplateFault fault)
        {
            throw new ChatTemplateException(fault.Kind, fault.Message, context.Line, context.Column);
        }
        catch (OverflowException e)
        {
            throw new ChatTemplateException(ChatTemplateErrorKind.Runtime, "integer overflow (integers are limited to 64 bits)", context.Line, context.Column, e);
        }
        catch (InsufficientExecutionStackException e)
        {
            throw new ChatTemplateException(ChatTemplateErrorKind.LimitExceeded, "template nesting exhausted the stack", context.Line, context.Column, e);
        }
    }
}

/// <summary>The global functions Hugging Face and Jinja provide: range, namespace, dict, raise_exception, strftime_now.</summary>
internal static class Builtins
{
    public static IEnumerable<KeyValuePair<string, object?>> Create(ChatTemplateOptions options)
    {
        yield return new("range", new BuiltinFunction("range", (_, args) =>
        {
            if (args.Named.Count > 0) throw TemplateFault.Runtime("range() takes no keyword arguments");
            var p = args.Positional;
            return p.Count switch
            {
                1 => new PyRange(0, ValueOps.ToLong(p[0]), 1),
                2 => new PyRange(ValueOps.ToLong(p[0]), ValueOps.ToLong(p[1]), 1),
                3 => new PyRange(ValueOps.ToLong(p[0]), ValueOps.ToLong(p[1]), ValueOps.ToLong(p[2])),
                _ => throw TemplateFault.Runtime($"range expected 1 to 3 arguments, got {p.Count}"),
            };
        }));
        yield return new("namespace", new BuiltinFunction("namespace", (_, args) =>
        {
            var ns = new Namespace();
            foreach (object? initial in args.Positional)
            {
                if (initial is not PyDict dict) throw TemplateFault.Runtime("namespace() positional arguments must be mappings");
                foreach (var (key, value) in dict)
                    ns.Attributes[key as string ?? throw TemplateFault.Runtime("namespace keys must be strings")] = value;
            }
            foreach (var (name, value) in args.Named) ns.Attributes[name] = value;
            return ns;
        }));
        yield return new("dict", new BuiltinFunction("dict", (_, args) =>
        {
            var dict = new PyDict();
            foreach (object? initial in args.Positional)
            {
                if (initial is not PyDict source) throw TemplateFault.Runtime("dict() positional arguments must be mappings");
                foreach (var (key, value) in source) dict[key] = value;
            }
            foreach (var (name, value) in args.Named) dict[name] = value;
            return dict;
        }));
        yield return new("raise_exception", new BuiltinFunction("raise_exception", (context, args) =>
        {
            object?[] a = args.Bind("raise_exception", "message");
            throw new TemplateFault(ChatTemplateErrorKind.Raised, a[0] is Missing ? "raise_exception() called" : ValueOps.ToStr(a[0], context));
        }));
        yield return new("strftime_now", new BuiltinFunction("strftime_now", (context, args) =>
        {
            object?[] a = args.Bind("strftime_now", "format");
            string format = a[0] as string ?? throw TemplateFault.Runtime("strftime_now() needs a format string");
            return context.Produce(PythonFormat.Strftime(options.Clock.GetLocalNow().DateTime, format));
        }));
    }
}

/// <summary>Converts .NET values handed to Render into template values.</summary>
internal static class ValueConverter
{
    private const int MaxDepth = 64;

    public static PyDict Message(ChatMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        return new PyDict { ["role"] = message.Role, ["content"] = message.Content };
    }

    public static object? FromClr(object? value, string path, int depth)
    {
        if (depth > MaxDepth) throw new ArgumentException($"{path}: nested deeper than {MaxDepth} levels");
        switch (value)
        {
            case null: return null;
            case string s: return s;
            case bool b: return b;
            case char c: return c.ToString();
            case sbyte or byte or short or ushort or int or uint or long: return Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture);
            case ulong u: return u <= long.MaxValue ? (object?)(long)u : (double)u;
            case float or double or decimal: return Convert.ToDouble(value, System.Globalization.CultureInfo.InvariantCulture);
            case ChatMessage message: return Message(message);
            case JsonElement json: return FromJson(json, path, depth);
            case IReadOnlyDictionary<string, object?> dict:
            {
                var result = new PyDict(dict.Count);
                foreach (var (key, item) in dict) result[key] = FromClr(item, $"{path}.{key}", depth + 1);
                return result;
            }
            case IDictionary dict:
            {
                var result = new PyDict(dict.Count);
                foreach (DictionaryEntry entry in dict)
                {
                    object key = FromClr(entry.Key, path, depth + 1) ?? throw new ArgumentException($"{path}: dictionary keys cannot be null");
                    result[key] = FromClr(entry.Value, $"{path}.{entry.Key}", depth + 1);
                }
                return result;
            }
            case IEnumerable items:
            {
                var result = new List<object?>();
                int i = 0;
                foreach (object? item in items) result.Add(FromClr(item, $"{path}[{i++}]", depth + 1));
                return result;
            }
            default:
                throw new ArgumentException($"{path}: values of type {value.GetType().Name} cannot be passed to a chat template");
        }
    }

    private static object? FromJson(JsonElement json, string path, int depth)
    {
        if (depth > MaxDepth) throw new ArgumentException($"{path}: nested deeper than {MaxDepth} levels");
        switch (json.ValueKind)
        {
            case JsonValueKind.Null or JsonValueKind.Undefined: return null;
            case JsonValueKind.True: return true;
            case JsonValueKind.False: return false;
            case JsonValueKind.String: return json.GetString();
            case JsonValueKind.Number: return json.TryGetInt64(out long l) ? (object?)l : json.GetDouble();
            case JsonValueKind.Array:
            {
                var result = new List<object?>();
                int i = 0;
                foreach (JsonElement item in json.EnumerateArray()) result.Add(FromJson(item, $"{path}[{i++}]", depth + 1));
                return result;
            }
            default:
            {
                var result = new PyDict();
                foreach (JsonProperty property in json.EnumerateObject())
                    result[property.Name] = FromJson(property.Value, $"{path}.{property.Name}", depth + 1);
                return result;
            }
        }
    }
}
