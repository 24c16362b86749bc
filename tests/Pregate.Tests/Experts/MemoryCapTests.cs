// DESIGN "Memory tiers": the expert budget is a promise, peak memory = resident weights + budget + KV cache + overhead.
// Runs the CLI inside a cgroup v1 memory cap about half the model's size (page cache charged to the cap, the model's
// pages dropped first), checks the logits equal a resident run outside the cap, and that the cap's peak usage keeps the
// promise. Also: with no --expert-memory the default inside the cap offloads and says why; --on-miss compute inside the
// cap reads experts through the page cache, which the cap reclaims (same logits; its peak is not bounded by the budget).
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Pregate.Core;
using Pregate.Engine;
using Pregate.Formats;
using Pregate.Formats.Synth;
using Pregate.Models;
using Xunit.Abstractions;

namespace Pregate.Tests.Experts;

public sealed partial class MemoryCapTests(ITestOutputHelper output) : IDisposable
{
    private const string CgroupRoot = "/sys/fs/cgroup/memory";
    private const long MiB = 1 << 20;

    /// <summary>The .NET runtime, JIT-compiled code, managed heap, activations and the logits' JSON text.</summary>
    private const long StatedOverhead = 64 * MiB;

    private const long Cap = 120 * MiB, Budget = 48 * MiB;
    private const int Context = 32;

    private readonly DiskFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    // mixtral-mini's layer (d 1024, 8 experts of ffn 2816, top-2) × 3 with a 4096-token vocabulary, Q8_0: ≈ 227 MiB, of
    // which ≈ 220 MiB routed experts (9.19 MiB each).
    private static readonly ModelConfig Shape = SynthShapes.Get("mixtral-mini") with { NumLayers = 3, VocabSize = 4096 };

    [Fact]
    public void AnOffloadedRunKeepsTheMemoryPromiseUnderACap()
    {
        string why = "not Linux";
        if (!OperatingSystem.IsLinux() || !CanCreateCgroup(out why))
        {
            output.WriteLine($"skipped: {CgroupRoot} is not writable here ({why}); a cgroup v1 memory cap is needed");
            return;
        }
        string path = _folder.File("mixtral-mini-l3.gguf");
        SyntheticModel.WriteGguf(path, new SynthOptions(Shape, DType.Q8_0, Seed: 3));
        long modelBytes = new FileInfo(path).Length;
        long residentBytes, expertBytes, kvBytes = new InferenceState(Shape, Context).KvCacheBytes;
        using (var ck = Checkpoint.Open(path))
        {
            var summary = ModelSummary.Of(ck);
            (residentBytes, expertBytes) = (summary.ResidentBytes, summary.ExpertBytes);
        }
        Assert.InRange(modelBytes, 18 * Cap / 10, 22 * Cap / 10); // the model is about twice the cap
        string tokens = string.Join(',', Models.ModelTestSupport.Tokens(16, Shape.VocabSize, 17));
        string[] logits = ["logits", "--model", path, "--tokens", tokens, "--ctx", Context.ToString(CultureInfo.InvariantCulture), "--threads", "2"];

        var o = new StringWriter();
        Assert.Equal(0, Pregate.Cli.Cli.Run([.. logits, "--expert-memory", "all"], o, new StringWriter()));
        string expected = o.ToString();

        var capped = RunCapped(path, [.. logits, "--expert-memory", $"{Budget / MiB}MiB"]);
        long promise = residentBytes + Budget + kvBytes + StatedOverhead;
        output.WriteLine($"model {modelBytes / MiB} MiB ({expertBytes / MiB} MiB experts), cap {Cap / MiB} MiB: peak {capped.PeakBytes / (double)MiB:0.0} MiB, " +
                         $"failcnt {capped.FailCount}; promise = resident {residentBytes / (double)MiB:0.0} + budget {Budget / MiB} + KV {kvBytes / (double)MiB:0.00} " +
                         $"+ overhead {StatedOverhead / MiB} = {promise / (double)MiB:0.0} MiB");
        Assert.Equal(0, capped.ExitCode);
        Assert.Contains("experts: offloaded, budget 48.0 MiB", capped.Err);
        Assert.Equal(expected, capped.Out);
        Assert.True(capped.PeakBytes <= promise, $"peak {capped.PeakBytes} bytes above the promise of {promise}");

        var automatic = RunCapped(path, logits);
        output.WriteLine($"default budget inside the cap: {automatic.Err.Trim()}; peak {automatic.PeakBytes / (double)MiB:0.0} MiB");
        Assert.Equal(0, automatic.ExitCode);
        Assert.Matches(@"experts: offloaded, budget .+; chosen for 120 MiB available", automatic.Err);
        Assert.Equal(expected, automatic.Out);

        var compute = RunCapped(path, [.. logits, "--expert-memory", $"{Budget / MiB}MiB", "--on-miss", "compute"]);
        output.WriteLine($"--on-miss compute inside the cap: peak {compute.PeakBytes / (double)MiB:0.0} MiB (page cache included), failcnt {compute.FailCount}");
        Assert.Equal(0, compute.ExitCode);
        Assert.Equal(expected, compute.Out);
    }

    private sealed record CappedRun(int ExitCode, string Out, string Err, long PeakBytes, long FailCount);

    // Runs the CLI in a fresh cgroup capped at Cap, after dropping the model's cached pages so its reads are charged to the cap.
    private CappedRun RunCapped(string model, string[] args)
    {
        PageCache.Drop(model);
        string group = Path.Combine(CgroupRoot, "pregate-test-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(group);
        try
        {
            File.WriteAllText(Path.Combine(group, "memory.limit_in_bytes"), Cap.ToString(CultureInfo.InvariantCulture));
            string cli = typeof(Pregate.Cli.Cli).Assembly.Location;
            var start = new ProcessStartInfo("sh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (string a in (string[])["-c", $"echo $$ > '{group}/cgroup.procs' && exec \"$@\"", "sh", "dotnet", cli, .. args]) start.ArgumentList.Add(a);
            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromSeconds(120)))
            {
                process.Kill(entireProcessTree: true);
                Assert.Fail("the capped run did not finish within 120 s");
            }
            string err = stderr.Result;
            if (err.Length > 0) output.WriteLine("stderr: " + err.Trim());
            return new CappedRun(process.ExitCode, stdout.Result, err, ReadLong(group, "memory.max_usage_in_bytes"), ReadLong(group, "memory.failcnt"));
        }
        finally
        {
            for (int attempt = 0; attempt < 50 && Directory.Exists(group); attempt++)
            {
                try { Directory.Delete(group); }
                catch (IOException) { Thread.Sleep(100); } // the exited process is still leaving the group
            }
        }
    }

    private static long ReadLong(string group, string file) => long.Parse(File.ReadAllText(Path.Combine(group, file)).Trim(), CultureInfo.InvariantCulture);

    private static bool CanCreateCgroup(out string why)
    {
        string probe = Path.Combine(CgroupRoot, "pregate-probe-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            if (!Directory.Exists(CgroupRoot))
            {
                why = "no cgroup v1 memory controller mounted";
                return false;
            }
            Directory.CreateDirectory(probe);
            Directory.Delete(probe);
            why = "";
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            why = e.Message;
            return false;
        }
    }
}
