// `pregate selftest --backend cuda`: the CUDA backend against the CPU engine on the tiny synthetic models of every family
// in F32, F16 and Q8_0 (and optionally a given model): logits at every position within a stated tolerance, and offloaded
// experts bit-identical to resident ones. The check a GPU machine runs without .NET's test runner.
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Pregate.Core;
using Pregate.Cuda;
using Pregate.Cuda.Native;
using Pregate.Engine;
using Pregate.Formats;
using Pregate.Formats.Synth;

namespace Pregate.Cli.Commands;

internal static class SelftestCommand
{
    /// <summary>The synthetic families and weight types the self-test covers.</summary>
    internal static readonly string[] Shapes = ["tiny", "tiny-qwen2moe", "tiny-qwen3moe", "tiny-olmoe"];
    internal static readonly DType[] Types = [DType.F32, DType.F16, DType.Q8_0];

    /// <summary>
    /// max |cuda − cpu| / max |cpu| allowed: 1e-4 for F32 weights (the CPU oracle tests' bound against llama.cpp), 1e-2 for
    /// half-precision and quantized weights (a float difference can move an activation across a Q8_0 rounding step).
    /// </summary>
    internal static double Tolerance(DType weightType) => weightType == DType.F32 ? 1e-4 : 1e-2;

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var backend = new Option<string>("--backend") { Description = "the backend compared with the CPU engine: cuda", DefaultValueFactory = _ => "cuda" };
        var model = new Option<string?>("--model") { Description = "also compare on this GGUF file or Hugging Face folder" };
        var tokenCount = new Option<int>("--tokens") { Description = "tokens per sequence", DefaultValueFactory = _ => 12 };
        var cmd = new Command("selftest", "Compare a GPU backend with the CPU engine on synthetic models of every family (exit 1 on a mismatch)") { backend, model, tokenCount };
        cmd.SetAction(p =>
        {
            if (!p.GetValue(backend)!.Equals("cuda", StringComparison.OrdinalIgnoreCase))
                throw new UserException($"--backend must be cuda (the self-test compares a GPU backend with the CPU), not '{p.GetValue(backend)}'");
            int count = p.GetValue(tokenCount);
            if (count is < 1 or > 256) throw new UserException($"--tokens must be between 1 and 256, not {count}");
            try
            {
                using (var device = new CudaDevice(new KernelCache(KernelCache.DefaultDirectory(Environment.GetEnvironmentVariable))))
                    stdout.WriteLine($"device: {device.Describe()}");
                return Run(p.GetValue(model), count, stdout);
            }
            catch (CudaException e) { throw new UserException(e.Message); }
            catch (ArgumentException e) { throw new UserException(e.Message); }
        });
        return cmd;
    }

    private static int Run(string? modelPath, int count, TextWriter stdout)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"pregate-selftest-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        int failures = 0;
        try
        {
            stdout.WriteLine("model            type   max|Δ|       rel err     tolerance  offload Δ  experts (offloaded run)          result");
            foreach (string shape in Shapes)
                foreach (var type in Types)
                {
                    string path = Path.Combine(dir, $"{shape}-{DTypes.Name(type)}.gguf");
                    SyntheticModel.WriteGguf(path, new SynthOptions(SynthShapes.Get(shape), type, Seed: 7));
                    if (!Compare($"{shape}", type, path, count, offload: true, stdout)) failures++;
                    if (shape == Shapes[0] && !CheckGemm(type, path, stdout)) failures++;
                }
            if (modelPath is not null)
            {
                DType type;
                using (var ck = Checkpoint.Open(modelPath)) type = ck.Get(TensorRole.AttnQ, 0).Type;
                if (!Compare(Path.GetFileName(modelPath.TrimEnd('/')), type, modelPath, count, offload: false, stdout)) failures++;
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
        stdout.WriteLine(failures == 0 ? "selftest: all passed" : $"selftest: {failures} failed");
        return failures == 0 ? Cli.ExitOk : Cli.ExitUserError;
    }

    // CPU logits vs CUDA logits (experts resident), and CUDA with half the experts in VRAM vs resident (must be identical).
    private static bool Compare(string name, DType type, string path, int count, bool offload, TextWriter stdout)
    {
        var context = Math.Max(count, 16);
        float[][] cpu, gpu;
        int vocab;
        using (var s = ModelSession.Open(path, new EngineOptions { ExpertMemory = ExpertMemory.All, Context = context }))
        {
            vocab = s.Config.VocabSize;
            cpu = s.Logits(Tokens(vocab, count), allPositions: true);
        }
        var timer = Stopwatch.StartNew();
        using (var s = ModelSession.Open(path, new EngineOptions { ExpertMemory = ExpertMemory.All, Context = context, Backend = CudaEngine.Create }))
            gpu = s.Logits(Tokens(vocab, count), allPositions: true);
        double gpuSeconds = timer.Elapsed.TotalSeconds;
        var (maxDiff, rel) = Error(gpu, cpu);
        double tol = Tolerance(type);
        bool ok = rel <= tol && double.IsFinite(rel);
        string offloadText = "-", expertText = "-";
        if (offload)
        {
            float[][] off;
            using (var s = ModelSession.Open(path, new EngineOptions { ExpertMemory = ExpertMemory.OfFraction(0.5), Context = context, Backend = CudaEngine.Create }))
            {
                off = s.Logits(Tokens(vocab, count), allPositions: true);
                var st = ((CudaEngine)s.Model.Backend!).ExpertStats;
                expertText = $"{st.Hits} hits, {st.Misses} misses, {st.Prefetches} prefetched";
            }
            var (offDiff, _) = Error(off, gpu);
            offloadText = offDiff.ToString("0.0E+0", CultureInfo.InvariantCulture);
            ok &= offDiff == 0;
        }
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{name,-16} {DTypes.Name(type),-6} {maxDiff,-12:0.000E+0} {rel,-11:0.00E+0} {tol,-10:0E+0} {offloadText,-10} {expertText,-32} {(ok ? "ok" : "FAIL")} ({gpuSeconds:0.00} s on the GPU)"));
        return ok;
    }

    /// <summary>Bound of the cuBLAS fp16 path against the mat-vec kernel (inputs and F32 weights rounded to fp16).</summary>
    internal const double GemmTolerance = 1e-2;

    // cuBLAS on fp16 copies of the first layer's q projection against the mat-vec kernel, 8 random input vectors.
    private static bool CheckGemm(DType type, string path, TextWriter stdout)
    {
        using var ck = Checkpoint.Open(path);
        var w = Pregate.Kernels.WeightMatrix.FromTensor(ck.Get(TensorRole.AttnQ, 0));
        const int tokens = 8;
        var x = new float[tokens * w.Cols];
        var rng = new SeededRandom(13, "selftest-gemm");
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        using var device = new CudaDevice(new KernelCache(KernelCache.DefaultDirectory(Environment.GetEnvironmentVariable)));
        var a = PrefillGemmCheck.Run(device, w, x, tokens);
        bool ok = a.Gemm <= GemmTolerance && a.Batched <= GemmTolerance;
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"cuBLAS fp16 GEMM vs mat-vec, {DTypes.Name(type)} [{w.Rows}, {w.Cols}] × {tokens}: rel err {a.Gemm:0.00E+0}, strided-batched {a.Batched:0.00E+0} (tolerance {GemmTolerance:0E+0}) {(ok ? "ok" : "FAIL")}"));
        return ok;
    }

    private static int[] Tokens(int vocab, int count)
    {
        var rng = new SeededRandom(11, "selftest-tokens");
        var t = new int[count];
        for (int i = 0; i < count; i++) t[i] = (int)(rng.NextULong() % (ulong)vocab);
        return t;
    }

    /// <summary>(max |a − b|, max |a − b| / max |b|) over all rows.</summary>
    internal static (double MaxDiff, double Relative) Error(float[][] actual, float[][] reference)
    {
        double maxDiff = 0, maxRef = 0;
        for (int r = 0; r < reference.Length; r++)
            for (int i = 0; i < reference[r].Length; i++)
            {
                double diff = Math.Abs((double)actual[r][i] - reference[r][i]);
                maxDiff = double.IsNaN(diff) ? double.NaN : Math.Max(maxDiff, diff);
                maxRef = Math.Max(maxRef, Math.Abs(reference[r][i]));
            }
        return (maxDiff, maxDiff / maxRef);
    }
}
