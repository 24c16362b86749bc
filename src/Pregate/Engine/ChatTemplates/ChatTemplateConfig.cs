// The chat-template settings of a Hugging Face checkpoint folder, found where transformers looks: chat_template.jinja,
// chat_template.json, or the "chat_template" entry of tokenizer_config.json (a string or a list of {name, template}),
// plus the bos/eos token strings (plain strings or AddedToken objects with "content").
using System.Text.Json;
using Pregate.Core;

namespace Pregate.Engine.ChatTemplates;

/// <summary>A model's chat template text and special tokens. <see cref="Template"/> is the default template (null when the
/// model ships none); <see cref="NamedTemplates"/> holds every named one (e.g. "default", "tool_use").</summary>
public sealed record ChatTemplateConfig(string? Template, IReadOnlyDictionary<string, string> NamedTemplates, string? BosToken, string? EosToken)
{
    public const string TokenizerConfigFile = "tokenizer_config.json";
    public const string JinjaFile = "chat_template.jinja";
    public const string JsonFile = "chat_template.json";

    /// <summary>Reads the settings of the checkpoint in <paramref name="folder"/>. A chat_template.jinja file takes precedence over
    /// chat_template.json, which takes precedence over tokenizer_config.json's "chat_template". Missing files mean no template.</summary>
    /// <exception cref="ModelFormatException">A file is not valid JSON or an entry has the wrong type; the message names the file.</exception>
    public static ChatTemplateConfig Load(string folder)
    {
        string tokenizerConfigPath = Path.Combine(folder, TokenizerConfigFile);
        ChatTemplateConfig config = File.Exists(tokenizerConfigPath)
            ? FromTokenizerConfig(File.ReadAllText(tokenizerConfigPath), tokenizerConfigPath)
            : new ChatTemplateConfig(null, new Dictionary<string, string>(), null, null);
        string jsonPath = Path.Combine(folder, JsonFile);
        if (File.Exists(jsonPath))
        {
            using JsonDocument document = Parse(File.ReadAllText(jsonPath), jsonPath);
            var (template, named) = ReadTemplates(document.RootElement, jsonPath);
            if (template is not null || named.Count > 0) config = config with { Template = template, NamedTemplates = named };
        }
        string jinjaPath = Path.Combine(folder, JinjaFile);
        if (File.Exists(jinjaPath)) config = config with { Template = File.ReadAllText(jinjaPath) };
        return config;
    }

    /// <summary>Parses tokenizer_config.json text; <paramref name="filePath"/> names the file in errors.</summary>
    /// <exception cref="ModelFormatException">Invalid JSON, or "chat_template"/"bos_token"/"eos_token" of the wrong type.</exception>
    public static ChatTemplateConfig FromTokenizerConfig(string json, string filePath)
    {
        using JsonDocument document = Parse(json, filePath);
        var (template, named) = ReadTemplates(document.RootElement, filePath);
        return new ChatTemplateConfig(template, named, TokenText(document.RootElement, "bos_token", filePath),
            TokenText(document.RootElement, "eos_token", filePath));
    }

    /// <summary>Compiles <see cref="Template"/>, or returns <see cref="ChatTemplate.ChatMl"/> when the model has none.</summary>
    /// <exception cref="ChatTemplateException">The template does not parse.</exception>
    public ChatTemplate Compile(ChatTemplateOptions? options = null) =>
        Template is null ? (options is null ? ChatTemplate.ChatMl : ChatTemplate.Parse(ChatTemplate.ChatMlSource, options))
            : ChatTemplate.Parse(Template, options);

    private static JsonDocument Parse(string json, string filePath)
    {
        try
        {
            var document = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                document.Dispose();
                throw new ModelFormatException(filePath, "expected a JSON object at the top level");
            }
            return document;
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(filePath, $"invalid JSON: {e.Message}", e);
        }
    }

    private static (string? Template, Dictionary<string, string> Named) ReadTemplates(JsonElement root, string filePath)
    {
        var named = new Dictionary<string, string>(StringComparer.Ordinal);
        if (!root.TryGetProperty("chat_template", out JsonElement entry) || entry.ValueKind == JsonValueKind.Null)
            return (null, named);
        if (entry.ValueKind == JsonValueKind.String) return (entry.GetString(), named);
        if (entry.ValueKind != JsonValueKind.Array)
            throw new ModelFormatException(filePath, $"\"chat_template\" must be a string or a list of {{name, template}} objects, not {entry.ValueKind}");
        foreach (JsonElement item in entry.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Object
                || !item.TryGetProperty("name", out JsonElement name) || name.ValueKind != JsonValueKind.String
                || !item.TryGetProperty("template", out JsonElement template) || template.ValueKind != JsonValueKind.String)
                throw new ModelFormatException(filePath, "each \"chat_template\" list entry needs a string \"name\" and a string \"template\"");
            named[name.GetString()!] = template.GetString()!;
        }
        return (named.GetValueOrDefault("default"), named);
    }

    private static string? TokenText(JsonElement root, string name, string filePath)
    {
        if (!root.TryGetProperty(name, out JsonElement token)) return null;
        return token.ValueKind switch
        {
            JsonValueKind.Null => null,
            JsonValueKind.String => token.GetString(),
            JsonValueKind.Object when token.TryGetProperty("content", out JsonElement content) && content.ValueKind == JsonValueKind.String
                => content.GetString(),
            _ => throw new ModelFormatException(filePath, $"\"{name}\" must be a string, null or an object with a string \"content\""),
        };
    }
}
