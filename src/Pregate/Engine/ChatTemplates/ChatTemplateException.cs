// The one error type of chat templates: syntax errors, runtime errors, raise_exception() and exceeded execution limits.
namespace Pregate.Engine.ChatTemplates;

/// <summary>What went wrong in a chat template.</summary>
public enum ChatTemplateErrorKind
{
    /// <summary>The template text does not parse (unterminated tag, unknown filter, unexpected token, ...).</summary>
    Syntax,
    /// <summary>Evaluation failed (type error, calling an undefined function, ...).</summary>
    Runtime,
    /// <summary>The template called <c>raise_exception(message)</c>; <see cref="Exception.Message"/> is that message verbatim.</summary>
    Raised,
    /// <summary>An execution limit of <see cref="ChatTemplateOptions"/> was exceeded (steps, output size, allocation, nesting).</summary>
    LimitExceeded,
}

/// <summary>A chat template failed to parse or to render. <see cref="Line"/> and <see cref="Column"/> (1-based) locate the
/// tag or expression at fault when known.</summary>
public sealed class ChatTemplateException : Exception
{
    public ChatTemplateErrorKind Kind { get; }
    public int? Line { get; }
    public int? Column { get; }

    public ChatTemplateException(ChatTemplateErrorKind kind, string message, int? line = null, int? column = null, Exception? inner = null)
        : base(Describe(kind, message, line, column), inner)
    {
        Kind = kind;
        Line = line;
        Column = column;
    }

    private static string Describe(ChatTemplateErrorKind kind, string message, int? line, int? column)
    {
        if (kind == ChatTemplateErrorKind.Raised) return message;
        string where = line is null ? "" : $" at line {line}, column {column}";
        return kind switch
        {
            ChatTemplateErrorKind.Syntax => $"chat template syntax error{where}: {message}",
            ChatTemplateErrorKind.LimitExceeded => $"chat template limit exceeded{where}: {message}",
            _ => $"chat template error{where}: {message}",
        };
    }
}

/// <summary>Internal carrier of an error raised during evaluation; the renderer adds the position of the node being evaluated.</summary>
internal sealed class TemplateFault(ChatTemplateErrorKind kind, string message) : Exception(message)
{
    public ChatTemplateErrorKind Kind { get; } = kind;

    public static TemplateFault Runtime(string message) => new(ChatTemplateErrorKind.Runtime, message);
    public static TemplateFault Limit(string message) => new(ChatTemplateErrorKind.LimitExceeded, message);
}
