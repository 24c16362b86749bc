// Finding a checkpoint's chat template and special tokens: tokenizer_config.json (string or named list, AddedToken objects),
// chat_template.json and chat_template.jinja precedence, the ChatML fallback, and clean errors for malformed files.
using Pregate.Core;
using Pregate.Engine.ChatTemplates;
using Xunit.Abstractions;
using static Pregate.Tests.ChatTemplates.ChatTemplateTesting;

namespace Pregate.Tests.ChatTemplates;

public sealed class ChatTemplateConfigTests(ITestOutputHelper output) : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("pregate-chat-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private void Write(string name, string text) => File.WriteAllText(Path.Combine(folder, name), text);

    [Fact]
    public void TokenizerConfig_StringTemplateAndAddedTokenObjects()
    {
        Write("tokenizer_config.json", """
            {"bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
             "eos_token": "</s>",
             "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.content }}]{% endfor %}{{ eos_token }}"}
            """);
        var config = ChatTemplateConfig.Load(folder);
        Assert.Equal("<s>", config.BosToken);
        Assert.Equal("</s>", config.EosToken);
        Assert.Equal("<s>[Hello]</s>", config.Compile().Render(OneTurn, true, config.BosToken, config.EosToken));
    }

    [Fact]
    public void TokenizerConfig_NamedTemplatesPickDefault()
    {
        Write("tokenizer_config.json", """
            {"bos_token": null, "eos_token": "<|im_end|>",
             "chat_template": [{"name": "default", "template": "plain"}, {"name": "tool_use", "template": "tools"}]}
            """);
        var config = ChatTemplateConfig.Load(folder);
        Assert.Null(config.BosToken);
        Assert.Equal("plain", config.Template);
        Assert.Equal("tools", config.NamedTemplates["tool_use"]);
        Assert.Equal(2, config.NamedTemplates.Count);
    }

    [Fact]
    public void JinjaFile_TakesPrecedenceOverJsonFiles()
    {
        Write("tokenizer_config.json", """{"eos_token": "</s>", "chat_template": "from tokenizer_config"}""");
        Assert.Equal("from tokenizer_config", ChatTemplateConfig.Load(folder).Template);
        Write("chat_template.json", """{"chat_template": "from chat_template.json"}""");
        Assert.Equal("from chat_template.json", ChatTemplateConfig.Load(folder).Template);
        Write("chat_template.jinja", "from chat_template.jinja\n");
        var config = ChatTemplateConfig.Load(folder);
        Assert.Equal("from chat_template.jinja\n", config.Template);
        Assert.Equal("</s>", config.EosToken);
        Assert.Equal("from chat_template.jinja", config.Compile().Render(OneTurn, true, null, null));
    }

    [Fact]
    public void NoTemplate_FallsBackToChatMl()
    {
        Write("tokenizer_config.json", """{"eos_token": "</s>"}""");
        var config = ChatTemplateConfig.Load(folder);
        Assert.Null(config.Template);
        Assert.Same(ChatTemplate.ChatMl, config.Compile());
        Assert.Equal("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", config.Compile().Render(OneTurn, true, null, null));
        Assert.Null(ChatTemplateConfig.Load(Path.Combine(folder, "missing")).Template);
    }

    [Theory]
    [InlineData("{\"chat_template\": ")]
    [InlineData("[1, 2]")]
    [InlineData("{\"chat_template\": 5}")]
    [InlineData("{\"chat_template\": [{\"name\": \"default\"}]}")]
    [InlineData("{\"bos_token\": 7}")]
    [InlineData("{\"eos_token\": {\"content\": 1}}")]
    public void MalformedTokenizerConfig_IsAModelFormatExceptionNamingTheFile(string json)
    {
        Write("tokenizer_config.json", json);
        var error = Assert.Throws<ModelFormatException>(() => ChatTemplateConfig.Load(folder));
        output.WriteLine(error.Message);
        Assert.Equal(Path.Combine(folder, "tokenizer_config.json"), error.FilePath);
    }
}
