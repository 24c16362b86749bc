// Property tests: mutated real chat templates (truncated, pieces cut out, Jinja-significant text spliced in) must parse and
// render or fail with a ChatTemplateException — never another exception, a crash or a hang.
using System.Diagnostics;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Pregate.Engine.ChatTemplates;
using Xunit.Abstractions;
using static Pregate.Tests.ChatTemplates.ChatTemplateTesting;

namespace Pregate.Tests.ChatTemplates;

public sealed class TemplateFuzzTests(ITestOutputHelper output) : IDisposable
{
    private static readonly string[] Templates =
    [
        ModelTemplates.MixtralInstruct, ModelTemplates.MistralInstructWithSystem, ModelTemplates.Qwen15MoeChat,
        ModelTemplates.Qwen2MoeInstruct, ModelTemplates.Qwen3, ModelTemplates.OlmoeInstruct, ModelTemplates.Llama2Chat,
    ];

    private static readonly string[] Pieces =
    [
        "{{", "}}", "{%", "%}", "{#", "#}", "{%-", "-%}", "{{-", "-}}", "{% raw %}", "{% endraw %}", "{% endfor %}", "{% endif %}",
        "{% else %}", "{% for x in range(100000) %}", "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "(", ")", "[", "]", "{", "}",
        "'", "\"", "\\", "|", "|tojson", "|join", " is ", " not ", " in ", "~", "*", "**", "//", "%", "-", "+", ".", ",", ":", "=",
        "loop", "ns", "messages", "none", "1", "1e309", "99999999999999999999", "'\\x'", "\n", " ", "é", "😀", "\u0000",
    ];

    private static readonly ChatTemplateOptions Options = new() { MaxSteps = 200_000, MaxOutputLength = 1 << 20 };

    private int rendered, rejected;
    private double slowestMs;

    public void Dispose() => output.WriteLine($"rendered {rendered}, rejected {rejected}, slowest {slowestMs:F1} ms");

    /// <summary>The property: Parse and Render either succeed or throw ChatTemplateException.</summary>
    private bool RendersOrFailsCleanly(string template)
    {
        var clock = Stopwatch.StartNew();
        try
        {
            var parsed = ChatTemplate.Parse(template, Options);
            parsed.Render(MultiTurn, true, "<s>", "</s>");
            parsed.Render(Array.Empty<ChatMessage>(), false, null, null);
            rendered++;
            return true;
        }
        catch (ChatTemplateException e)
        {
            rejected++;
            return e.Message.Length > 0;
        }
        finally
        {
            slowestMs = Math.Max(slowestMs, clock.Elapsed.TotalMilliseconds);
        }
    }

    [Property(MaxTest = 300, Replay = "(1357911,2468103)")]
    public Property Truncated() =>
        Prop.ForAll(Gen.Zip(Gen.Choose(0, Templates.Length - 1), Gen.Choose(0, 10_000)).ToArbitrary(), pick =>
        {
            string template = Templates[pick.Item1];
            return RendersOrFailsCleanly(template[..(pick.Item2 % (template.Length + 1))]);
        });

    private static readonly Gen<(int At, int Remove, string Piece)> Edit =
        Gen.Zip(Gen.Zip(Gen.Choose(0, 10_000), Gen.Choose(0, 6)), Gen.Elements(Pieces))
            .Select(p => (At: p.Item1.Item1, Remove: p.Item1.Item2, Piece: p.Item2));

    private static string Apply(string template, IEnumerable<(int At, int Remove, string Piece)> edits)
    {
        foreach (var (at, remove, piece) in edits)
        {
            int start = at % (template.Length + 1);
            template = template.Remove(start, Math.Min(remove, template.Length - start)).Insert(start, piece);
        }
        return template;
    }

    [Property(MaxTest = 500, Replay = "(3141592,6535897)")]
    public Property EditedOnce() =>
        Prop.ForAll(Gen.Zip(Gen.Choose(0, Templates.Length - 1), Edit).ToArbitrary(),
            pick => RendersOrFailsCleanly(Apply(Templates[pick.Item1], [pick.Item2])));

    [Property(MaxTest = 300, Replay = "(1618033,9887499)")]
    public Property EditedManyTimes() =>
        Prop.ForAll(Gen.Zip(Gen.Choose(0, Templates.Length - 1), Gen.NonEmptyListOf(Edit)).ToArbitrary(),
            pick => RendersOrFailsCleanly(Apply(Templates[pick.Item1], pick.Item2)));

    [Property(MaxTest = 500, Replay = "(2718281,8284591)")]
    public Property PiecesAlone() =>
        Prop.ForAll(Gen.NonEmptyListOf(Gen.Elements(Pieces)).ToArbitrary(), pieces => RendersOrFailsCleanly(string.Concat(pieces)));
}
