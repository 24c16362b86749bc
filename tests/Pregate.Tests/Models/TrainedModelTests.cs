// The shipped default model against the reference its PyTorch trainer wrote from the same bf16 weights: token ids,
// logits at every position (≤ 1e-4 relative), the experts each layer routed to, and a 32-token greedy continuation.
using System.Text.Json;
using Pregate.Engine;
using Pregate.Models;
using Xunit.Abstractions;

namespace Pregate.Tests.Models;

public sealed class TrainedModelTests(ITestOutputHelper output)
{
    internal const string ModelName = "brown-moe-14m";

    /// <summary>The shipped model folder: models/NAME in the repository this test binary was built from.</summary>
    internal static string ModelDir()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            string dir = Path.Combine(d.FullName, "models", ModelName);
            if (File.Exists(Path.Combine(dir, "config.json"))) return dir;
        }
        throw new InvalidOperationException($"models/{ModelName} not found above {AppContext.BaseDirectory}");
    }

    private sealed record Prompt(string Text, int[] Ids, float[][]? Logits, (int Id, float Logit)[][]? Top, int[][][] Experts, int[] Greedy);

    private static List<Prompt> Reference()
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(ModelDir(), "reference.json")));
        var list = new List<Prompt>();
        foreach (var p in doc.RootElement.GetProperty("prompts").EnumerateArray())
        {
            int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();
            float[][]? logits = p.TryGetProperty("logits", out var l)
                ? l.EnumerateArray().Select(r => r.EnumerateArray().Select(x => x.GetSingle()).ToArray()).ToArray() : null;
            (int, float)[][]? top = p.TryGetProperty("top_logits", out var t)
                ? t.EnumerateArray().Select(r => r.EnumerateArray().Select(x => (x[0].GetInt32(), x[1].GetSingle())).ToArray()).ToArray() : null;
            var experts = p.GetProperty("experts").EnumerateArray()
                .Select(layer => layer.EnumerateArray().Select(Ints).ToArray()).ToArray();
            list.Add(new Prompt(p.GetProperty("text").GetString()!, Ints(p.GetProperty("token_ids")), logits, top, experts, Ints(p.GetProperty("greedy_ids"))));
        }
        return list;
    }

    [Fact]
    public void TokenizerGivesTheReferenceIds()
    {
        using var s = ModelSession.Open(ModelDir());
        foreach (var p in Reference())
            Assert.Equal(p.Ids, s.Tokenizer.Encode(p.Text, s.Tokenizer.AddBosToken));
    }

    [Fact]
    public void LogitsMatchThePyTorchReference()
    {
        using var s = ModelSession.Open(ModelDir());
        double worst = 0;
        foreach (var p in Reference())
        {
            var ours = s.Logits(p.Ids, allPositions: true);
            double maxDiff = 0, maxRef = 0;
            for (int pos = 0; pos < p.Ids.Length; pos++)
            {
                if (p.Logits is not null)
                    for (int i = 0; i < p.Logits[pos].Length; i++)
                    {
                        maxDiff = Math.Max(maxDiff, Math.Abs(ours[pos][i] - p.Logits[pos][i]));
                        maxRef = Math.Max(maxRef, Math.Abs(p.Logits[pos][i]));
                    }
                else
                    foreach (var (id, logit) in p.Top![pos])
                    {
                        maxDiff = Math.Max(maxDiff, Math.Abs(ours[pos][id] - logit));
                        maxRef = Math.Max(maxRef, Math.Abs(logit));
                    }
            }
            double rel = maxDiff / maxRef;
            worst = Math.Max(worst, rel);
            output.WriteLine($"\"{p.Text[..Math.Min(30, p.Text.Length)]}…\" ({p.Ids.Length} tokens, {(p.Logits is null ? "top-32" : "all")} logits): max|diff|/max|ref| = {rel:E2}");
        }
        Assert.True(worst <= 1e-4, $"relative error {worst:E2} exceeds 1e-4");
    }

    private sealed class RoutingRecorder : IForwardObserver
    {
        public readonly Dictionary<(int Layer, int Pos), int[]> Chosen = new();
        public void OnTensor(string name, int layer, int position, ReadOnlySpan<float> values) { }
        public void OnRouting(int layer, int position, ReadOnlySpan<float> probs, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights) =>
            Chosen[(layer, position)] = ids.ToArray();
    }

    [Fact]
    public void RoutingMatchesTheReferenceExperts()
    {
        using var s = ModelSession.Open(ModelDir());
        var rec = new RoutingRecorder();
        s.Model.Observer = rec;
        foreach (var p in Reference())
        {
            rec.Chosen.Clear();
            s.Logits(p.Ids, allPositions: false);
            for (int layer = 0; layer < p.Experts.Length; layer++)
                for (int pos = 0; pos < p.Ids.Length; pos++)
                    Assert.Equal(p.Experts[layer][pos], rec.Chosen[(layer, pos)]);
        }
    }

    [Fact]
    public void GreedyContinuationMatches()
    {
        using var s = ModelSession.Open(ModelDir());
        foreach (var p in Reference())
        {
            var ours = ModelTestSupport.Greedy(s, p.Ids, p.Greedy.Length);
            Assert.Equal(p.Greedy, ours);
        }
    }
}
