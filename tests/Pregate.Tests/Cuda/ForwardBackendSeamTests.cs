// The seam a GPU backend plugs into (EngineOptions.Backend → MoeModel.Backend): a backend that runs a second CPU model
// stands in for a device, so the session's logits, generation, positions, per-state caches and disposal are checked
// without a GPU. The results must be bit-identical to the plain CPU session.
using Pregate.Core;
using Pregate.Engine;
using Pregate.Formats;
using Pregate.Formats.Synth;
using Pregate.Models;
using Xunit.Abstractions;

namespace Pregate.Tests.Cuda;

public sealed class ForwardBackendSeamTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pregate-seam-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // A backend over its own copy of the model: one CPU InferenceState per caller state, as a device keeps one KV cache per sequence.
    private sealed class SecondCpuModel : IForwardBackend
    {
        private readonly Checkpoint _ck;
        private readonly MoeModel _model;
        private readonly Dictionary<InferenceState, InferenceState> _states = [];

        public SecondCpuModel(BackendRequest request)
        {
            Request = request;
            _ck = Checkpoint.Open(request.Checkpoint.Path);
            _model = MoeModel.Load(_ck);
        }

        public BackendRequest Request { get; }
        public int Calls { get; private set; }
        public int States => _states.Count;
        public bool Disposed { get; private set; }

        public string Describe() => "backend: second cpu model";

        public void Forward(InferenceState state, int firstPosition, ReadOnlySpan<int> tokens, Span<float> logits, bool allPositions)
        {
            Calls++;
            if (!_states.TryGetValue(state, out var own)) _states[state] = own = _model.CreateState(state.Context);
            if (firstPosition == 0) own.Reset();
            Assert.Equal(own.Position, firstPosition);
            _model.Forward(own, tokens, logits, allPositions);
        }

        public void Dispose()
        {
            Disposed = true;
            _ck.Dispose();
        }
    }

    [Theory]
    [InlineData("tiny")]
    [InlineData("tiny-qwen2moe")]
    public void BackendResultsReachEveryCaller(string shape)
    {
        string path = Path.Combine(_dir, shape + ".gguf");
        SyntheticModel.WriteGguf(path, new SynthOptions(SynthShapes.Get(shape), DType.F32, 3));
        int[] tokens = [5, 17, 42, 99, 7, 300];
        SecondCpuModel? backend = null;
        float[][] viaBackend, viaCpu;
        List<int> generatedViaBackend, generatedViaCpu;
        var gen = new GenerationOptions { MaxTokens = 6, Sampling = SamplingOptions.Greedy, StopAtEos = false };
        using (var s = ModelSession.Open(path, new EngineOptions { Context = 64, ExpertMemory = ExpertMemory.All, Backend = r => backend = new SecondCpuModel(r) }))
        {
            Assert.Same(backend, s.Model.Backend);
            Assert.Equal("none", backend!.Request.PredictorName);
            viaBackend = s.Logits(tokens, allPositions: true);
            Assert.Equal(tokens.Length, s.State.Position);
            generatedViaBackend = s.CreateGenerator().Generate(tokens, gen).Tokens.ToList();
            var other = s.Model.CreateState(32);
            var last = new float[s.Config.VocabSize];
            s.Model.Forward(other, tokens.AsSpan(0, 2), last, allPositions: false);
            Assert.Equal(2, other.Position);
            Assert.Equal(2, backend.States);
            Assert.Equal(viaBackend[1], last);
        }
        Assert.True(backend.Disposed);
        using (var s = ModelSession.Open(path, new EngineOptions { Context = 64, ExpertMemory = ExpertMemory.All }))
        {
            viaCpu = s.Logits(tokens, allPositions: true);
            generatedViaCpu = s.CreateGenerator().Generate(tokens, gen).Tokens.ToList();
        }
        output.WriteLine($"{shape}: {backend.Calls} backend calls; generated {string.Join(",", generatedViaBackend)} (tolerance 0)");
        for (int r = 0; r < tokens.Length; r++) Assert.Equal(viaCpu[r], viaBackend[r]);
        Assert.Equal(generatedViaCpu, generatedViaBackend);
    }

    [Fact]
    public void OffloadingOptionsGoToTheBackendNotTheCpu()
    {
        string path = Path.Combine(_dir, "tiny.gguf");
        SyntheticModel.WriteGguf(path, new SynthOptions(SynthShapes.Get("tiny"), DType.F32));
        SecondCpuModel? backend = null;
        using var s = ModelSession.Open(path, new EngineOptions { ExpertMemory = ExpertMemory.OfFraction(0.5), Backend = r => backend = new SecondCpuModel(r) });
        Assert.False(s.ExpertPlacement.Offloaded);
        Assert.NotNull(backend!.Request.Predictor);
        Assert.StartsWith("next-gate", backend.Request.PredictorName);
        Assert.Equal(ExpertMemory.OfFraction(0.5), backend.Request.Options.ExpertMemory);
    }

    [Fact]
    public void EveryEngineCommandHasTheBackendOption()
    {
        var root = Pregate.Cli.Cli.BuildRoot(TextWriter.Null, TextWriter.Null);
        var engineCommands = root.Subcommands.Where(c => c.Options.Any(o => o.Name == "--expert-memory")).ToList();
        output.WriteLine(string.Join(", ", engineCommands.Select(c => c.Name)));
        Assert.Contains(engineCommands, c => c.Name == "bench");
        foreach (var c in engineCommands) Assert.Contains(c.Options, o => o.Name == "--backend");
        Assert.Contains(root.Subcommands.Single(c => c.Name == "selftest").Options, o => o.Name == "--backend");
    }
}
