// Continuous batching against decoding each sequence alone: MoeModel.ForwardStep's logits row by row against the
// one-sequence Forward (resident and offloaded experts, every family), and the GenerationScheduler's tokens for sequences
// of different prompt lengths that join the running batch at different steps, with their own samplers and stops.
using Pregate.Core;
using Pregate.Engine;
using Pregate.Formats.Synth;
using Pregate.Models;
using Xunit.Abstractions;
using static Pregate.Tests.Models.ModelTestSupport;

namespace Pregate.Tests.Engine;

public sealed class BatchedDecodeTests(ITestOutputHelper output)
{
    private const int Context = 96;
    private const int LongContext = 400;
    private const int TestTimeoutMs = 180_000;

    public static TheoryData<string, string, bool> Cases => new()
    {
        { "tiny", "f32", false }, { "tiny", "q8_0", true }, { "tiny-qwen2moe", "q4_0", false }, { "tiny-qwen2moe", "f32", true },
        { "tiny-qwen3moe", "f16", false }, { "tiny-olmoe", "q8_0", true },
    };

    /// <summary>
    /// Four sequences (prompts of 3, 9, 1 and 17 tokens) join a batch at steps 0, 2, 3 and 5 and decode greedily: every row
    /// of every ForwardStep must equal the one-sequence Forward of that token on a resident session. Tolerance: 0 (the
    /// batched kernels compute each row exactly as the one-row ones do), so the greedy tokens agree too.
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void ForwardStepRowsEqualDecodingEachSequenceAlone(string shape, string dtype, bool offloaded)
    {
        Assert.True(DTypes.TryParse(dtype, out var type));
        var c = SynthShapes.Get(shape);
        string path = Synth(shape, c, type, gguf: true);
        using var reference = ModelSession.Open(path, new EngineOptions { Context = Context, Threads = 2, ExpertMemory = ExpertMemory.All });
        using var batched = ModelSession.Open(path, new EngineOptions
        {
            Context = Context, Threads = 2, ExpertMemory = offloaded ? ExpertMemory.OfFraction(0.5) : ExpertMemory.All,
        });
        Assert.Equal(offloaded, batched.ExpertPlacement.Offloaded);
        int vocab = c.VocabSize;
        int[] promptLengths = [3, 9, 1, 17], joinAt = [0, 2, 3, 5];
        const int decode = 12;
        int sequences = promptLengths.Length;
        var prompts = promptLengths.Select((n, i) => Tokens(n, vocab, 100 + (ulong)i)).ToArray();

        // Alone: prefill, then one Forward per greedy token; keep the logits of each decode step.
        var aloneTokens = new List<int>[sequences];
        var aloneLogits = new float[sequences][][];
        for (int s = 0; s < sequences; s++)
        {
            var state = reference.Model.CreateState(Context);
            var logits = new float[vocab];
            reference.Model.Forward(state, prompts[s], logits, allPositions: false, reference.Team);
            aloneTokens[s] = [ArgMax(logits)];
            aloneLogits[s] = new float[decode][];
            for (int t = 0; t < decode; t++)
            {
                reference.Model.Forward(state, aloneTokens[s][^1], logits, reference.Team);
                aloneLogits[s][t] = (float[])logits.Clone();
                aloneTokens[s].Add(ArgMax(logits));
            }
        }

        // Batched: each sequence is prefilled when it joins, then every step decodes all joined, unfinished sequences.
        var model = batched.Model;
        var batch = model.CreateDecodeBatch(sequences);
        var states = new InferenceState[sequences];
        var batchedTokens = new List<int>[sequences];
        var stepLogits = new float[sequences * vocab];
        var prefillLogits = new float[vocab];
        double maxError = 0;
        int steps = 0, rows = 0;
        for (int step = 0; batchedTokens.Any(t => t is null) || batchedTokens.Any(t => t.Count <= decode); step++)
        {
            for (int s = 0; s < sequences; s++)
            {
                if (joinAt[s] != step) continue;
                states[s] = model.CreateState(Context);
                model.Forward(states[s], prompts[s], prefillLogits, allPositions: false, batched.Team);
                batchedTokens[s] = [ArgMax(prefillLogits)];
            }
            var active = Enumerable.Range(0, sequences).Where(s => batchedTokens[s] is { } t && t.Count <= decode).ToArray();
            if (active.Length == 0) continue;
            var stepStates = active.Select(s => states[s]).ToArray();
            var stepTokens = active.Select(s => batchedTokens[s][^1]).ToArray();
            var logits = stepLogits.AsSpan(0, active.Length * vocab);
            model.ForwardStep(batch, stepStates, stepTokens, logits, batched.Team);
            steps++;
            rows += active.Length;
            for (int b = 0; b < active.Length; b++)
            {
                int s = active[b], t = batchedTokens[s].Count - 1;
                var row = logits.Slice(b * vocab, vocab).ToArray();
                for (int i = 0; i < vocab; i++) maxError = Math.Max(maxError, Math.Abs(row[i] - aloneLogits[s][t][i]));
                batchedTokens[s].Add(ArgMax(row));
            }
        }
        output.WriteLine($"{shape} {dtype} {(offloaded ? "offloaded" : "resident")}: {steps} steps, {rows} rows, max |batched − alone| = {maxError:G3} (tolerance 0)");
        if (offloaded) output.WriteLine($"expert stats: {batched.ExpertStats}");
        Assert.True(rows > steps, "some steps must hold several sequences");
        Assert.Equal(0, maxError);
        for (int s = 0; s < sequences; s++)
        {
            Assert.Equal(aloneTokens[s], batchedTokens[s]);
            Assert.Equal(promptLengths[s] + decode, states[s].Position);
        }
    }

    /// <summary>
    /// A step allocates no buffers of its own: a step of n sequences allocates no more than n one-token Forwards (whose
    /// kernels allocate a few small objects per token, e.g. the top-k check's message string).
    /// </summary>
    [Theory]
    [InlineData("tiny", "f32")]
    [InlineData("tiny-qwen2moe", "q8_0")]
    public void AStepAllocatesNoMoreThanItsTokensDecodedAlone(string shape, string dtype)
    {
        Assert.True(DTypes.TryParse(dtype, out var type));
        var c = SynthShapes.Get(shape);
        using var session = ModelSession.Open(Synth(shape, c, type, gguf: true), new EngineOptions { Context = 32, Threads = 1 });
        var model = session.Model;
        var batch = model.CreateDecodeBatch(6);
        var states = Enumerable.Range(0, 6).Select(_ => model.CreateState(32)).ToArray();
        int[] tokens = [5, 9, 11, 2, 7, 3];
        var logits = new float[6 * c.VocabSize];
        long Step(int n)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            model.ForwardStep(batch, states.AsSpan(0, n), tokens.AsSpan(0, n), logits.AsSpan(0, n * c.VocabSize));
            return GC.GetAllocatedBytesForCurrentThread() - before;
        }
        Step(6);   // JIT and lazy statics
        Step(1);
        long one = Step(1), six = Step(6);
        var single = new float[c.VocabSize];
        long before = GC.GetAllocatedBytesForCurrentThread();
        model.Forward(states[0], 3, single);
        long forward = GC.GetAllocatedBytesForCurrentThread() - before;
        output.WriteLine($"{shape} {dtype}: bytes allocated by a step of 1 sequence {one}, of 6 sequences {six}; by a one-token Forward {forward}");
        Assert.True(one <= forward, $"a step of 1 allocated {one} bytes, a one-token Forward {forward}");
        Assert.True(six <= 6 * forward, $"a step of 6 allocated {six} bytes, six one-token Forwards {6 * forward}");
    }

    [Fact]
    public void ForwardStepRejectsWhatItCannotRun()
    {
        var c = SynthShapes.Get("tiny");
        using var session = ModelSession.Open(Synth("tiny", c, DType.F32, gguf: true), new EngineOptions { Context = 8, Threads = 1 });
        var model = session.Model;
        var batch = model.CreateDecodeBatch(2);
        var a = model.CreateState(8);
        var b = model.CreateState(8);
        var logits = new float[2 * c.VocabSize];
        Assert.Throws<ArgumentException>(() => model.ForwardStep(batch, [], [], default));
        Assert.Throws<ArgumentException>(() => model.ForwardStep(batch, [a, b], [1], logits));
        Assert.Throws<ArgumentException>(() => model.ForwardStep(batch, [a, a], [1, 2], logits));
        Assert.Throws<ArgumentException>(() => model.ForwardStep(batch, [a, b, model.CreateState(8)], [1, 2, 3], default));
        Assert.Throws<ArgumentException>(() => model.ForwardStep(batch, [a, b], [1, 2], logits.AsSpan(1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.ForwardStep(batch, [a, b], [1, c.VocabSize], logits));
        model.Forward(a, Tokens(8, c.VocabSize, 3), default, allPositions: false);
        Assert.Throws<ArgumentOutOfRangeException>(() => model.ForwardStep(batch, [a, b], [1, 2], logits));
        Assert.Equal(0, b.Position);
        Assert.Throws<ArgumentOutOfRangeException>(() => model.CreateDecodeBatch(0));
    }

    /// <summary>
    /// Through the scheduler: generations started from within the first one's stream (so they join a running batch at
    /// known points), with greedy and seeded sampling, a stop string and a 300-token prompt (prefilled in three blocks
    /// between decode steps), each give exactly the tokens and text of <see cref="Generator"/> run alone; the steps held
    /// several sequences; every slot comes back.
    /// </summary>
    [Theory(Timeout = TestTimeoutMs)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task SchedulerGenerationsEqualEachRequestAlone(bool offloaded)
    {
        var c = SynthShapes.Get("tiny");
        string path = Synth("tiny", c, DType.F32, gguf: true);
        using var alone = ModelSession.Open(path, new EngineOptions { Context = LongContext, Threads = 1, ExpertMemory = ExpertMemory.All });
        using var session = ModelSession.Open(path, new EngineOptions
        {
            Context = LongContext, Threads = 2, ExpertMemory = offloaded ? ExpertMemory.OfFraction(0.5) : ExpertMemory.All,
        });
        var scheduler = new GenerationScheduler(session, maxConcurrent: 4, maxQueued: 0);
        var prompts = new[] { 5, 14, 2, 300 }.Select((n, i) => Tokens(n, c.VocabSize, 200 + (ulong)i)).ToArray();
        var options = new[]
        {
            new GenerationOptions { MaxTokens = 40, Sampling = SamplingOptions.Greedy, StopAtEos = false },
            new GenerationOptions { MaxTokens = 25, Sampling = new SamplingOptions { Temperature = 0.9f, Seed = 77 }, StopAtEos = false },
            new GenerationOptions { MaxTokens = 30, Sampling = SamplingOptions.Greedy },
            new GenerationOptions { MaxTokens = 20, Sampling = new SamplingOptions { Temperature = 1.2f, TopK = 0, Seed = 5 } },
        };
        var expected = prompts.Select((p, i) => alone.CreateGenerator().Generate(p, options[i])).ToArray();
        // A stop string taken from the middle of the third reply's text cuts it there.
        string third = expected[2].Text;
        if (third.Length > 6)
        {
            options[2] = options[2] with { StopStrings = [third.Substring(third.Length / 2, 3)] };
            expected[2] = alone.CreateGenerator().Generate(prompts[2], options[2]);
        }

        var leases = new GenerationLease[prompts.Length];
        for (int i = 0; i < leases.Length; i++) leases[i] = await scheduler.AcquireAsync();
        var tasks = new Task<GenerationResult>[prompts.Length];
        var texts = prompts.Select(_ => new System.Text.StringBuilder()).ToArray();
        int pieces = 0;
        // The others start after the first one's 2nd, 5th and 7th pieces of text: they join while it decodes.
        int[] startAfter = [2, 5, 7];
        void OnFirst(string piece)
        {
            texts[0].Append(piece);
            int n = ++pieces;
            for (int j = 0; j < startAfter.Length; j++)
                if (n == startAfter[j]) Start(j + 1);
        }
        void Start(int i) => tasks[i] = leases[i].GenerateAsync(prompts[i], options[i], p => texts[i].Append(p));
        tasks[0] = leases[0].GenerateAsync(prompts[0], options[0], OnFirst);
        var results = new GenerationResult[tasks.Length];
        results[0] = await tasks[0];
        for (int i = 1; i < tasks.Length; i++)
        {
            if (tasks[i] is null) Start(i);   // the first reply had fewer pieces than planned
            results[i] = await tasks[i];
        }
        foreach (var lease in leases) lease.Dispose();

        for (int i = 0; i < prompts.Length; i++)
        {
            var r = results[i];
            output.WriteLine($"sequence {i}: prompt {prompts[i].Length}, {r.Tokens.Count} tokens, finish {r.FinishReason}; alone {expected[i].Tokens.Count} tokens");
            Assert.Equal(expected[i].Tokens, r.Tokens);
            Assert.Equal(expected[i].Text, r.Text);
            Assert.Equal(expected[i].Text, texts[i].ToString());
            Assert.Equal(expected[i].FinishReason, r.FinishReason);
        }
        double meanBatch = (double)scheduler.DecodedTokens / scheduler.DecodeSteps;
        output.WriteLine($"{scheduler.DecodeSteps} steps, {scheduler.DecodedTokens} tokens decoded, mean batch {meanBatch:F2}");
        Assert.True(meanBatch > 1.5, "the sequences should have decoded together");
        Assert.Equal(0, scheduler.Running);
        Assert.Equal(0, scheduler.Queued);
    }

    /// <summary>A cancelled sequence leaves the batch at the next step; the others finish unchanged and its slot comes back.</summary>
    [Fact(Timeout = TestTimeoutMs)]
    public async Task ACancelledSequenceLeavesTheBatchAndTheOthersGoOn()
    {
        var c = SynthShapes.Get("tiny");
        string path = Synth("tiny", c, DType.F32, gguf: true);
        using var alone = ModelSession.Open(path, new EngineOptions { Context = Context, Threads = 1 });
        using var session = ModelSession.Open(path, new EngineOptions { Context = Context, Threads = 1 });
        var scheduler = new GenerationScheduler(session, maxConcurrent: 2, maxQueued: 1);
        var options = new GenerationOptions { MaxTokens = 60, Sampling = SamplingOptions.Greedy, StopAtEos = false };
        var prompt = Tokens(6, c.VocabSize, 9);
        var expected = alone.CreateGenerator().Generate(prompt, options);

        using var cancel = new CancellationTokenSource();
        var keep = await scheduler.AcquireAsync();
        var drop = await scheduler.AcquireAsync();
        var waiting = scheduler.AcquireAsync();          // the queue holds one
        Assert.Equal(1, scheduler.Queued);
        await Assert.ThrowsAsync<SchedulerFullException>(() => scheduler.AcquireAsync());
        int dropped = 0;
        var dropTask = drop.GenerateAsync(Tokens(4, c.VocabSize, 10), options, _ => { if (++dropped == 3) cancel.Cancel(); }, cancel.Token);
        var keepTask = keep.GenerateAsync(prompt, options);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => dropTask);
        drop.Dispose();
        var third = await waiting;                       // the freed slot goes to the waiting caller
        var thirdTask = third.GenerateAsync(prompt, options with { MaxTokens = 5 });
        var kept = await keepTask;
        var late = await thirdTask;
        keep.Dispose();
        output.WriteLine($"cancelled after {dropped} pieces; kept {kept.Tokens.Count} tokens; late {late.Tokens.Count} tokens; {scheduler.DecodeSteps} steps");
        Assert.True(dropped < options.MaxTokens);
        Assert.Equal(expected.Tokens, kept.Tokens);
        Assert.Equal(expected.Tokens.Take(5), late.Tokens);
        third.Dispose();
        Assert.Equal(0, scheduler.Running);
    }
}
