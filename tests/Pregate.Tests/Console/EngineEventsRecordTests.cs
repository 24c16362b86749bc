// Engine-level tests of EngineEvents: a listener that never reads skips tokens without holding up the forward pass, an
// observer set before the first listener keeps seeing every call, and the record matches the router's own choices.
using Pregate.Engine;
using Pregate.Models;
using Xunit.Abstractions;

namespace Pregate.Tests.WebConsole;

public sealed class EngineEventsRecordTests(ITestOutputHelper output)
{
    private sealed class RoutingLog : IForwardObserver
    {
        public readonly List<(int Layer, int Position, int[] Ids, float[] Weights)> Calls = [];
        public void OnTensor(string name, int layer, int position, ReadOnlySpan<float> values) { }
        public void OnRouting(int layer, int position, ReadOnlySpan<float> probs, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights) =>
            Calls.Add((layer, position, ids.ToArray(), weights.ToArray()));
    }

    [Fact]
    public void AnUnreadListenerSkipsTokensAndTheRecordMatchesTheRouter()
    {
        using var session = ModelSession.Open(ConsoleTestSupport.GridModel, ConsoleTestSupport.Offloaded);
        var log = new RoutingLog();
        session.Model.Observer = log;
        var events = session.Events;
        var options = new GenerationOptions { MaxTokens = 200, StopAtEos = false, Sampling = SamplingOptions.Greedy };

        session.CreateGenerator().Generate("Once upon a time", options);
        Assert.Equal(0, events.RecordsFilled);
        Assert.Equal(0, events.Tokens);

        using var listener = events.Subscribe();
        Assert.NotSame(log, session.Model.Observer);
        log.Calls.Clear();
        var result = session.CreateGenerator().Generate("Once upon a time", options);
        // One token per forward pass: the prompt block, then every decoded token but the last (it is sampled, not run).
        long expected = 1 + result.Tokens.Count - 1;
        Assert.Equal(expected, events.Tokens);
        var record = events.NewRecord();
        Assert.True(listener.TryRead(record));
        Assert.False(listener.TryRead(record), "nothing newer than the token just read");
        output.WriteLine($"{events.Tokens} tokens recorded, {listener.Skipped} skipped by the unread listener, {events.RecordsFilled} routing records");
        Assert.Equal(expected - 1, record.Token);
        Assert.Equal(expected - 1, listener.Skipped);

        // The previous observer still saw every routing call; the record holds the last token's choices.
        int layers = session.Config.NumLayers, k = session.Config.NumExpertsUsed, e = session.Config.NumExperts;
        Assert.Equal(events.RecordsFilled, log.Calls.Count);
        int lastPosition = log.Calls[^1].Position;
        Assert.Equal(lastPosition, record.Position);
        for (int l = 0; l < layers; l++)
        {
            var call = log.Calls.Last(c => c.Layer == l);
            Assert.Equal(call.Ids, record.ChosenIds.AsSpan(l * k, k).ToArray());
            Assert.Equal(call.Weights, record.ChosenWeights.AsSpan(l * k, k).ToArray());
            for (int x = 0; x < e; x++)
                Assert.Equal(call.Ids.Contains(x), (record.Cells[l * e + x] & ExpertCellFlags.Chosen) != 0);
        }
        Assert.Equal(session.ExpertStats.Tokens, record.Stats.Tokens);
        Assert.InRange(events.CountResidentExperts(), session.Config.NumExpertsUsed, session.ExpertPlacement.SlotCount);

        listener.Dispose();
        Assert.Same(log, session.Model.Observer);
        Assert.Equal(0, events.Listeners);
    }
}
