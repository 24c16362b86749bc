// Where a model's chat template comes from (HF tokenizer_config.json string or named list, GGUF tokenizer.chat_template,
// none → ChatML), the BOS rule when tokenizing the rendered prompt, end-of-turn stops, and the server using the template.
using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pregate.Core;
using Pregate.Engine;
using Pregate.Formats.Synth;
using Pregate.Tests.Models;
using Xunit.Abstractions;
using TemplateMessage = Pregate.Engine.ChatTemplates.ChatMessage;

namespace Pregate.Tests.Server;

public sealed class ChatFormatTests(ITestOutputHelper output) : IDisposable
{
    // A Zephyr-like template: bos first, turns ended by eos, and a rule on roles it enforces with raise_exception.
    private const string Template =
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('tool messages are not supported') }}{% endif %}"
        + "<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

    private static readonly TemplateMessage[] Conversation =
        [new("system", "Be brief."), new("user", "Hello!"), new("assistant", "Hi."), new("user", "How are you?")];

    private readonly string _dir = Directory.CreateTempSubdirectory("pregate-chat-format-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A copy of the tiny HF model whose tokenizer_config.json is changed by <paramref name="edit"/>.</summary>
    private string HfModel(string name, Action<JsonObject> edit)
    {
        string source = ModelTestSupport.Synth("tiny", SynthShapes.Get("tiny"), DType.F32, gguf: false);
        string dir = Path.Combine(_dir, name);
        Directory.CreateDirectory(dir);
        foreach (string f in Directory.GetFiles(source)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        string configPath = Path.Combine(dir, "tokenizer_config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        edit(config);
        File.WriteAllText(configPath, config.ToJsonString());
        return dir;
    }

    [Fact]
    public void AHuggingFaceTemplateStringIsRenderedWithTheTokenizersSpecialTokens()
    {
        using var s = ModelSession.Open(HfModel("string", c => c["chat_template"] = Template));
        var f = ChatFormat.For(s);
        Assert.False(f.IsFallback);
        Assert.Equal("<|endoftext|>", f.EosToken);
        string text = f.Render(Conversation);
        output.WriteLine(text);
        Assert.Equal("<|system|>\nBe brief.<|endoftext|>\n<|user|>\nHello!<|endoftext|>\n<|assistant|>\nHi.<|endoftext|>\n<|user|>\nHow are you?<|endoftext|>\n<|assistant|>\n", text);
        Assert.Equal(s.Tokenizer.Encode(text, addBos: false), f.Encode(Conversation));
        // Turns end with eos, which stops generation anyway; the template writes no other end-of-turn marker.
        Assert.Empty(f.StopTokens);
        Assert.Empty(f.StopStrings);
    }

    [Fact]
    public void ANamedTemplateListPicksDefault()
    {
        using var s = ModelSession.Open(HfModel("list", c => c["chat_template"] = new JsonArray(
            new JsonObject { ["name"] = "tool_use", ["template"] = "TOOLS" },
            new JsonObject { ["name"] = "default", ["template"] = Template })));
        Assert.Equal(Template, ChatFormat.For(s).Template.Source);
    }

    [Fact]
    public void NoTemplateFallsBackToChatMlAndSaysWhy()
    {
        using var s = ModelSession.Open(ServerTestSupport.TinyModel);
        var f = ChatFormat.For(s);
        Assert.True(f.IsFallback);
        Assert.Null(f.Origin);
        Assert.Contains("no chat template", f.FallbackReason);
        Assert.Equal("<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n", f.Render([new("user", "Hello!")]));
        // This vocabulary has no <|im_end|> token: the markers stop generation as text.
        Assert.Contains("<|im_end|>", f.StopStrings);
        Assert.Contains("<|im_start|>", f.StopStrings);
        Assert.Empty(f.StopTokens);
    }

    [Fact]
    public void AnEndOfTurnMarkerThatIsASpecialTokenStopsAsAToken()
    {
        using var s = ModelSession.Open(HfModel("marker", c => c["chat_template"] = "{% for m in messages %}{{ m['content'] }}<|endoftext|>{% endfor %}"));
        var f = ChatFormat.For(s);
        Assert.Equal([s.Tokenizer.TokenToId("<|endoftext|>")!.Value], f.StopTokens);
        Assert.Empty(f.StopStrings);
        var o = f.WithStops(new GenerationOptions { StopStrings = ["END"] });
        Assert.Equal(["END"], o.StopStrings);
        Assert.Equal(f.StopTokens, o.StopTokens);
    }

    [Fact]
    public void ATemplateThatDoesNotParseFallsBackToChatMl()
    {
        using var s = ModelSession.Open(HfModel("broken", c => c["chat_template"] = "{% for m in messages %}{{ m['content'] }"));
        var f = ChatFormat.For(s);
        Assert.True(f.IsFallback);
        output.WriteLine(f.FallbackReason);
        Assert.Contains("could not be parsed", f.FallbackReason);
    }

    [Fact]
    public void AChatTemplateOfTheWrongTypeIsAModelFormatError()
    {
        string dir = HfModel("wrong-type", c => c["chat_template"] = 5);
        using var s = ModelSession.Open(dir);
        var e = Assert.Throws<ModelFormatException>(() => ChatFormat.For(s));
        output.WriteLine(e.Message);
        Assert.Contains("tokenizer_config.json", e.Message);
    }

    [Fact]
    public void BosIsAddedOnlyWhenTheTemplateDidNotWriteIt()
    {
        void WithBos(JsonObject c)
        {
            c["bos_token"] = "<|endoftext|>";
            c["add_bos_token"] = true;
        }
        using var plain = ModelSession.Open(HfModel("bos-chatml", WithBos));
        int bos = plain.Tokenizer.BosId!.Value;
        var chatMl = ChatFormat.For(plain).Encode([new("user", "Hello!")]);
        Assert.Equal(bos, chatMl[0]);
        Assert.NotEqual(bos, chatMl[1]);

        using var templated = ModelSession.Open(HfModel("bos-template", c => { WithBos(c); c["chat_template"] = Template; }));
        var f = ChatFormat.For(templated);
        var ids = f.Encode([new("user", "Hello!")]);
        Assert.StartsWith("<|endoftext|><|user|>", f.Render([new("user", "Hello!")]));
        Assert.Equal(bos, ids[0]);
        Assert.NotEqual(bos, ids[1]);
        Assert.Equal(templated.Tokenizer.Encode(f.Render([new("user", "Hello!")]), addBos: false), ids);
    }

    [Fact]
    public void AGgufTemplateIsReadFromItsMetadata()
    {
        string path = ServerTestSupport.TinyModelWithTemplate("zephyr", Template);
        using var s = ModelSession.Open(path);
        var f = ChatFormat.For(s);
        Assert.False(f.IsFallback);
        Assert.Contains("tokenizer.chat_template", f.Origin);
        Assert.Equal(Template, f.Template.Source);
    }

    [Fact(Timeout = 120_000)]
    public async Task TheServerFormatsChatsWithTheModelsTemplateAndReportsTemplateErrors()
    {
        string path = ServerTestSupport.TinyModelWithTemplate("zephyr", Template);
        await using var server = await TestServer.StartAsync(path);
        Assert.False(server.Server.ChatFormat.IsFallback);
        Assert.DoesNotContain("ChatML", server.Log.ToString());

        using var reference = ModelSession.Open(path);
        var expected = ServerTestSupport.ReferenceChat(reference, Conversation, 10);
        Assert.Equal(reference.Tokenizer.Encode(ChatFormat.For(reference).Render(Conversation), false).Count, expected.PromptTokens);
        string messages = JsonSerializer.Serialize(Conversation.Select(m => new Dictionary<string, string> { ["role"] = m.Role, ["content"] = m.Content }));
        var (status, body) = await server.PostAsync("/v1/chat/completions", $$"""{"messages":{{messages}},"max_tokens":10,"temperature":0}""");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(expected.PromptTokens, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(expected.Text, body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());

        // Content given as text parts is joined.
        var (partsStatus, parts) = await server.PostAsync("/v1/chat/completions",
            """{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hello"},{"type":"text","text":"!"}]},{"role":"assistant","content":"Hi."},{"role":"user","content":"How are you?"}],"max_tokens":10,"temperature":0}""");
        Assert.Equal(HttpStatusCode.OK, partsStatus);
        Assert.Equal(expected.Text, parts.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());

        var (refused, error) = await server.PostAsync("/v1/chat/completions", """{"messages":[{"role":"tool","content":"42"}]}""");
        output.WriteLine(error.ToString());
        Assert.Equal(HttpStatusCode.BadRequest, refused);
        Assert.Contains("tool messages are not supported", error.GetProperty("error").GetProperty("message").GetString());

        var (fine, _) = await server.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody("still there?", 2));
        Assert.Equal(HttpStatusCode.OK, fine);
    }

    [Fact(Timeout = 120_000)]
    public async Task AModelWithoutTemplateLogsTheChatMlFallbackOnce()
    {
        await using var server = await TestServer.StartAsync(ServerTestSupport.TinyModel);
        for (int i = 0; i < 3; i++)
        {
            var (status, _) = await server.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody("hi", 2));
            Assert.Equal(HttpStatusCode.OK, status);
        }
        string log = server.Log.ToString();
        output.WriteLine(log);
        Assert.Single(log.Split('\n'), l => l.Contains("ChatML", StringComparison.Ordinal));
    }
}
