// Shared conversations and helpers for the chat-template tests.
using System.Text.Json;
using Pregate.Engine.ChatTemplates;

namespace Pregate.Tests.ChatTemplates;

internal static class ChatTemplateTesting
{
    public static readonly ChatMessage[] OneTurn = [new("user", "Hello")];

    public static readonly ChatMessage[] MultiTurn =
    [
        new("system", "You are a helpful assistant."),
        new("user", "Hello"),
        new("assistant", "Hi there"),
        new("user", "How are you?"),
    ];

    public static readonly ChatMessage[] MultiTurnWithoutSystem = MultiTurn[1..];

    /// <summary>Renders a template with no messages and the given variables (JSON object text) as extra values.</summary>
    public static string Render(string template, string variablesJson = "{}", ChatTemplateOptions? options = null)
    {
        var extra = new Dictionary<string, object?>();
        using var document = JsonDocument.Parse(variablesJson);
        foreach (JsonProperty property in document.RootElement.EnumerateObject()) extra[property.Name] = property.Value.Clone();
        return ChatTemplate.Parse(template, options).Render(Array.Empty<ChatMessage>(), false, null, null, extra);
    }

    /// <summary>Messages given as a JSON array of objects, for fields beyond role and content.</summary>
    public static IReadOnlyList<IReadOnlyDictionary<string, object?>> Messages(string json)
    {
        using var document = JsonDocument.Parse(json);
        return document.RootElement.EnumerateArray()
            .Select(message => (IReadOnlyDictionary<string, object?>)message.EnumerateObject()
                .ToDictionary(property => property.Name, property => (object?)property.Value.Clone()))
            .ToList();
    }

    public static JsonElement Json(string json)
    {
        using var document = JsonDocument.Parse(json);
        return document.RootElement.Clone();
    }
}
