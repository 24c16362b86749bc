// `pregate chat` with piped input, in process: each line is a user turn answered with the greedy reply the chat format and
// generator give for the whole conversation so far; /reset starts over, /exit and the end of input quit.
using Pregate.Engine;
using Xunit.Abstractions;
using TemplateMessage = Pregate.Engine.ChatTemplates.ChatMessage;

namespace Pregate.Tests.Server;

public sealed class ChatCommandTests(ITestOutputHelper output)
{
    private (int Code, string Out, string Err) Chat(string input, params string[] extra)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        string[] args = ["chat", "--model", ServerTestSupport.TinyModel, "--temperature", "0", "-n", "12", "--threads", "1", .. extra];
        int code = Pregate.Cli.Cli.Run(args, new StringReader(input), o, e);
        output.WriteLine($"stdout: {System.Text.Json.JsonSerializer.Serialize(o.ToString())}");
        output.WriteLine($"stderr: {e}");
        return (code, o.ToString(), e.ToString());
    }

    private static string Reply(ModelSession s, List<TemplateMessage> history)
    {
        string text = ServerTestSupport.ReferenceChat(s, history, 12).Text;
        history.Add(new TemplateMessage("assistant", text));
        return text;
    }

    [Fact]
    public void EachLineIsATurnOfOneConversation()
    {
        using var s = ModelSession.Open(ServerTestSupport.TinyModel);
        var history = new List<TemplateMessage> { new("system", "You are terse."), new("user", "Hello") };
        string first = Reply(s, history);
        history.Add(new TemplateMessage("user", "And then?"));
        string second = Reply(s, history);

        var (code, stdout, stderr) = Chat("Hello\n\nAnd then?\n", "--system", "You are terse.");
        Assert.Equal(0, code);
        Assert.Equal(first + "\n" + second + "\n", stdout);
        Assert.Contains("ChatML", stderr);
    }

    [Fact]
    public void ResetForgetsTheConversationAndExitStops()
    {
        using var s = ModelSession.Open(ServerTestSupport.TinyModel);
        string alone = Reply(s, [new TemplateMessage("user", "Hello")]);
        var (code, stdout, stderr) = Chat("Hello\n/reset\nHello\n/exit\nnot read\n");
        Assert.Equal(0, code);
        Assert.Equal(alone + "\n" + alone + "\n", stdout);
        Assert.Contains("conversation cleared", stderr);
    }

    [Fact]
    public void UnknownCommandsAndOverlongTurnsAreReportedAndTheChatGoesOn()
    {
        using var s = ModelSession.Open(ServerTestSupport.TinyModel);
        string alone = Reply(s, [new TemplateMessage("user", "Hi")]);
        string huge = string.Concat(Enumerable.Repeat("words that will not fit ", 300));
        var (code, stdout, stderr) = Chat($"/help\n{huge}\n/reset\nHi\n");
        Assert.Equal(0, code);
        Assert.Contains("unknown command /help", stderr);
        Assert.Contains("no longer fits the context", stderr);
        Assert.Equal(alone + "\n", stdout);
    }

    [Fact]
    public void EmptyInputEndsAtOnce()
    {
        var (code, stdout, _) = Chat("");
        Assert.Equal(0, code);
        Assert.Equal("", stdout);
    }
}
