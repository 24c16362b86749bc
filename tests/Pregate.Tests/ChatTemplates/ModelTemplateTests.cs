// Renders the real chat templates of the served model families and compares with the exact prompts transformers'
// apply_chat_template produces (Jinja with trim_blocks/lstrip_blocks): one turn and system+user+assistant+user, with and
// without the generation prompt, plus Qwen3's thinking and tool paths.
using Pregate.Engine.ChatTemplates;
using Xunit.Abstractions;
using static Pregate.Tests.ChatTemplates.ChatTemplateTesting;

namespace Pregate.Tests.ChatTemplates;

public sealed class ModelTemplateTests(ITestOutputHelper output)
{
    private string Render(string template, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, string? bos, string? eos,
        IReadOnlyDictionary<string, object?>? extra = null)
    {
        string prompt = ChatTemplate.Parse(template).Render(messages, addGenerationPrompt, bos, eos, extra);
        output.WriteLine(prompt.Replace("\n", "\\n"));
        return prompt;
    }

    [Fact]
    public void MixtralInstruct_WrapsUserTurnsInInst()
    {
        const string one = "<s>[INST] Hello [/INST]";
        const string multi = "<s>[INST] Hello [/INST]Hi there</s>[INST] How are you? [/INST]";
        Assert.Equal(one, Render(ModelTemplates.MixtralInstruct, OneTurn, false, "<s>", "</s>"));
        Assert.Equal(one, Render(ModelTemplates.MixtralInstruct, OneTurn, true, "<s>", "</s>"));
        Assert.Equal(multi, Render(ModelTemplates.MixtralInstruct, MultiTurnWithoutSystem, false, "<s>", "</s>"));
        Assert.Equal(multi, Render(ModelTemplates.MixtralInstruct, MultiTurnWithoutSystem, true, "<s>", "</s>"));
    }

    [Fact]
    public void MixtralInstruct_RejectsASystemMessageWithTheTemplatesOwnMessage()
    {
        var error = Assert.Throws<ChatTemplateException>(() => Render(ModelTemplates.MixtralInstruct, MultiTurn, true, "<s>", "</s>"));
        Assert.Equal(ChatTemplateErrorKind.Raised, error.Kind);
        Assert.Equal("Conversation roles must alternate user/assistant/user/assistant/...", error.Message);
        Assert.Equal(1, error.Line);
    }

    [Fact]
    public void MistralInstructWithSystem_PrependsTheSystemMessageToTheFirstTurn()
    {
        const string one = "<s> [INST] Hello [/INST]";
        const string multi = "<s> [INST] You are a helpful assistant.\n\nHello [/INST] Hi there</s> [INST] How are you? [/INST]";
        Assert.Equal(one, Render(ModelTemplates.MistralInstructWithSystem, OneTurn, false, "<s>", "</s>"));
        Assert.Equal(one, Render(ModelTemplates.MistralInstructWithSystem, OneTurn, true, "<s>", "</s>"));
        Assert.Equal(multi, Render(ModelTemplates.MistralInstructWithSystem, MultiTurn, false, "<s>", "</s>"));
        Assert.Equal(multi, Render(ModelTemplates.MistralInstructWithSystem, MultiTurn, true, "<s>", "</s>"));
        Assert.Equal("<s> [INST] Hello [/INST] Hi there</s> [INST] How are you? [/INST]",
            Render(ModelTemplates.MistralInstructWithSystem, MultiTurnWithoutSystem, true, "<s>", "</s>"));
    }

    [Fact]
    public void MistralInstructWithSystem_RaisesOnTwoUserTurnsInARow()
    {
        ChatMessage[] messages = [new("user", "a"), new("user", "b")];
        var error = Assert.Throws<ChatTemplateException>(() => Render(ModelTemplates.MistralInstructWithSystem, messages, true, "<s>", "</s>"));
        Assert.Equal(ChatTemplateErrorKind.Raised, error.Kind);
        Assert.Equal("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...", error.Message);
        Assert.Equal(11, error.Line);
    }

    [Fact]
    public void Llama2Chat_PutsTheSystemBlockInsideTheFirstInst()
    {
        const string one = "<s>[INST] Hello [/INST]";
        const string multi = "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello [/INST] Hi there </s><s>[INST] How are you? [/INST]";
        Assert.Equal(one, Render(ModelTemplates.Llama2Chat, OneTurn, false, "<s>", "</s>"));
        Assert.Equal(one, Render(ModelTemplates.Llama2Chat, OneTurn, true, "<s>", "</s>"));
        Assert.Equal(multi, Render(ModelTemplates.Llama2Chat, MultiTurn, false, "<s>", "</s>"));
        Assert.Equal(multi, Render(ModelTemplates.Llama2Chat, MultiTurn, true, "<s>", "</s>"));
        ChatMessage[] padded = [new("user", "  spaced out \n")];
        Assert.Equal("<s>[INST] spaced out [/INST]", Render(ModelTemplates.Llama2Chat, padded, true, "<s>", "</s>"));
    }

    [Fact]
    public void Llama2Chat_RaisesWhenAnAssistantTurnComesFirst()
    {
        ChatMessage[] messages = [new("assistant", "Hi"), new("user", "Hello")];
        var error = Assert.Throws<ChatTemplateException>(() => Render(ModelTemplates.Llama2Chat, messages, true, "<s>", "</s>"));
        Assert.Equal(ChatTemplateErrorKind.Raised, error.Kind);
        Assert.Equal("Conversation roles must alternate user/assistant/user/assistant/...", error.Message);
    }

    [Fact]
    public void Qwen15MoeChat_AddsItsDefaultSystemPrompt()
    {
        const string system = "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n";
        const string user = "<|im_start|>user\nHello<|im_end|>\n";
        const string multi = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
            + "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n";
        Assert.Equal(system + user, Render(ModelTemplates.Qwen15MoeChat, OneTurn, false, null, "<|im_end|>"));
        Assert.Equal(system + user + "<|im_start|>assistant\n", Render(ModelTemplates.Qwen15MoeChat, OneTurn, true, null, "<|im_end|>"));
        Assert.Equal(multi, Render(ModelTemplates.Qwen15MoeChat, MultiTurn, false, null, "<|im_end|>"));
        Assert.Equal(multi + "<|im_start|>assistant\n", Render(ModelTemplates.Qwen15MoeChat, MultiTurn, true, null, "<|im_end|>"));
    }

    [Fact]
    public void Qwen2MoeInstruct_AddsItsDefaultSystemPrompt()
    {
        const string system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";
        const string user = "<|im_start|>user\nHello<|im_end|>\n";
        const string multi = system + user + "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n";
        Assert.Equal(system + user, Render(ModelTemplates.Qwen2MoeInstruct, OneTurn, false, null, "<|im_end|>"));
        Assert.Equal(system + user + "<|im_start|>assistant\n", Render(ModelTemplates.Qwen2MoeInstruct, OneTurn, true, null, "<|im_end|>"));
        Assert.Equal(multi, Render(ModelTemplates.Qwen2MoeInstruct, MultiTurn, false, null, "<|im_end|>"));
        Assert.Equal(multi + "<|im_start|>assistant\n", Render(ModelTemplates.Qwen2MoeInstruct, MultiTurn, true, null, "<|im_end|>"));
        Assert.Equal(multi + "<|im_start|>assistant\n", Render(ModelTemplates.Qwen2MoeInstruct, MultiTurnWithoutSystem, true, null, "<|im_end|>"));
    }

    [Fact]
    public void OlmoeInstruct_KeepsTheNewlinesAfterEachTurn()
    {
        const string one = "<|endoftext|><|user|>\nHello\n";
        const string multi = "<|endoftext|><|system|>\nYou are a helpful assistant.\n<|user|>\nHello\n<|assistant|>\nHi there<|endoftext|>\n"
            + "<|user|>\nHow are you?\n";
        Assert.Equal(one, Render(ModelTemplates.OlmoeInstruct, OneTurn, false, "<|endoftext|>", "<|endoftext|>"));
        Assert.Equal(one + "<|assistant|>\n", Render(ModelTemplates.OlmoeInstruct, OneTurn, true, "<|endoftext|>", "<|endoftext|>"));
        Assert.Equal(multi, Render(ModelTemplates.OlmoeInstruct, MultiTurn, false, "<|endoftext|>", "<|endoftext|>"));
        Assert.Equal(multi + "<|assistant|>\n", Render(ModelTemplates.OlmoeInstruct, MultiTurn, true, "<|endoftext|>", "<|endoftext|>"));
    }

    [Fact]
    public void Qwen3_RendersPlainConversations()
    {
        const string one = "<|im_start|>user\nHello<|im_end|>\n";
        const string multi = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
            + "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n";
        Assert.Equal(one, Render(ModelTemplates.Qwen3, OneTurn, false, null, "<|im_end|>"));
        Assert.Equal(one + "<|im_start|>assistant\n", Render(ModelTemplates.Qwen3, OneTurn, true, null, "<|im_end|>"));
        Assert.Equal(multi, Render(ModelTemplates.Qwen3, MultiTurn, false, null, "<|im_end|>"));
        Assert.Equal(multi + "<|im_start|>assistant\n", Render(ModelTemplates.Qwen3, MultiTurn, true, null, "<|im_end|>"));
    }

    [Fact]
    public void Qwen3_EnableThinkingFalseAddsAnEmptyThinkBlock()
    {
        var extra = new Dictionary<string, object?> { ["enable_thinking"] = false };
        Assert.Equal("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            Render(ModelTemplates.Qwen3, OneTurn, true, null, "<|im_end|>", extra));
        extra["enable_thinking"] = true;
        Assert.Equal("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
            Render(ModelTemplates.Qwen3, OneTurn, true, null, "<|im_end|>", extra));
    }

    [Fact]
    public void Qwen3_DropsReasoningOfTurnsBeforeTheLastQuery()
    {
        ChatMessage[] history =
        [
            new("user", "What is 2+2?"),
            new("assistant", "<think>\nAdd them.\n</think>\n\n4"),
            new("user", "And 3+3?"),
        ];
        Assert.Equal("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n"
            + "<|im_start|>assistant\n", Render(ModelTemplates.Qwen3, history, true, null, "<|im_end|>"));
    }

    [Fact]
    public void Qwen3_KeepsReasoningContentOfTheFinalAssistantTurn()
    {
        var messages = Messages("""
            [{"role": "user", "content": "What is 2+2?"},
             {"role": "assistant", "content": "4", "reasoning_content": "Add them."}]
            """);
        string prompt = ChatTemplate.Parse(ModelTemplates.Qwen3).Render(messages, false, null, "<|im_end|>");
        output.WriteLine(prompt);
        Assert.Equal("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nAdd them.\n</think>\n\n4<|im_end|>\n", prompt);
    }

    [Fact]
    public void Qwen3_RendersToolsToolCallsAndGroupedToolResponses()
    {
        var messages = Messages("""
            [{"role": "system", "content": "You are a weather bot."},
             {"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": "",
              "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
             {"role": "tool", "content": "{\"temperature\": 22}"},
             {"role": "tool", "content": "{\"sky\": \"clear\"}"}]
            """);
        var extra = new Dictionary<string, object?>
        {
            ["tools"] = Json("""
                [{"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. Zürich"}},
                                 "required": ["city"]}}}]
                """),
        };
        string prompt = ChatTemplate.Parse(ModelTemplates.Qwen3).Render(messages, true, null, "<|im_end|>", extra);
        output.WriteLine(prompt);
        const string expected = "<|im_start|>system\nYou are a weather bot.\n\n# Tools\n\nYou may call one or more functions to assist with "
            + "the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
            + "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Current weather for a city\", "
            + "\"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name, e.g. Zürich\"}}, "
            + "\"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
            + "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
            + "</tool_call><|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n"
            + "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n"
            + "{\"temperature\": 22}\n</tool_response>\n<tool_response>\n{\"sky\": \"clear\"}\n</tool_response><|im_end|>\n<|im_start|>assistant\n";
        Assert.Equal(expected, prompt);
    }

    [Fact]
    public void ChatMl_IsTheFallbackLayout()
    {
        Assert.Equal("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", ChatTemplate.ChatMl.Render(OneTurn, true, null, null));
        Assert.Equal("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
            + "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n",
            ChatTemplate.ChatMl.Render(MultiTurn, false, "<s>", "</s>"));
    }

    [Fact]
    public void Templates_RenderConcurrentlyFromOneParsedInstance()
    {
        var template = ChatTemplate.Parse(ModelTemplates.Qwen3);
        string expected = template.Render(MultiTurn, true, null, "<|im_end|>");
        var results = new string[64];
        Parallel.For(0, results.Length, i => results[i] = template.Render(MultiTurn, true, null, "<|im_end|>"));
        Assert.All(results, result => Assert.Equal(expected, result));
    }
}
