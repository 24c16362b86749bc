// `--backend cuda` where there is no NVIDIA driver: a clear message and exit code 1 from every command that runs the
// engine and from selftest; an unknown backend is a usage mistake with its own message.
using Pregate.Cuda.Native;
using Pregate.Formats.Synth;
using Pregate.Core;
using Pregate.Tests.Cli;
using Xunit.Abstractions;

namespace Pregate.Tests.Cuda;

public sealed class NoGpuTests(ITestOutputHelper output) : IDisposable
{
    private const string NoDriverMessage = "CUDA backend: libcuda.so.1 not found (no NVIDIA driver on this machine)";
    private readonly string _dir = Directory.CreateTempSubdirectory("pregate-cuda-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private (int Code, string Out, string Err) Run(params string[] args) => CliRun.Run(output, args, logStdout: false);

    private static bool DriverPresent() => NativeLibraries.TryLoad(NativeLibrarySpec.Driver, out _, out _);

    private string TinyModel()
    {
        string path = Path.Combine(_dir, "tiny.gguf");
        SyntheticModel.WriteGguf(path, new SynthOptions(SynthShapes.Get("tiny"), DType.F32));
        return path;
    }

    [Fact]
    public void SelftestWithoutDriverSaysSoAndExitsOne()
    {
        if (DriverPresent())
        {
            output.WriteLine("an NVIDIA driver is installed here: the no-driver message cannot be observed");
            return;
        }
        var (code, _, err) = Run("selftest", "--backend", "cuda");
        Assert.Equal(1, code);
        Assert.Contains(NoDriverMessage, err);
    }

    [Theory]
    [InlineData("compute")]
    [InlineData("low-precision")]
    public void MissPoliciesOtherThanLoadAreRefusedOnCuda(string policy)
    {
        // Checked before any device is touched, so the message is the same with or without a driver.
        var (code, _, err) = Run("logits", "--model", TinyModel(), "--tokens", "1,2", "--backend", "cuda", "--on-miss", policy);
        Assert.NotEqual(0, code);
        Assert.Contains($"on-miss {policy} runs on the CPU only", err);
    }

    [Theory]
    [InlineData("logits", "--tokens", "1,2,3")]
    [InlineData("run", "--prompt", "hello")]
    [InlineData("bench", "--gen-tokens", "4")]
    public void EngineCommandsWithoutDriverSaySoAndExitOne(string command, string option, string value)
    {
        if (DriverPresent())
        {
            output.WriteLine("an NVIDIA driver is installed here: the no-driver message cannot be observed");
            return;
        }
        var (code, _, err) = Run(command, "--model", TinyModel(), option, value, "--backend", "cuda");
        Assert.Equal(1, code);
        Assert.Contains(NoDriverMessage, err);
        Assert.DoesNotContain("   at ", err);
    }

    [Fact]
    public void UnknownBackendIsRejected()
    {
        var (code, _, err) = Run("logits", "--model", TinyModel(), "--tokens", "1", "--backend", "metal");
        Assert.Equal(1, code);
        Assert.Contains("--backend must be cpu or cuda, not 'metal'", err);
    }

    [Fact]
    public void CpuBackendIsTheDefaultAndStillRuns()
    {
        string model = TinyModel();
        var (explicitCode, explicitOut, _) = Run("logits", "--model", model, "--tokens", "1,2", "--backend", "cpu");
        var (defaultCode, defaultOut, _) = Run("logits", "--model", model, "--tokens", "1,2");
        Assert.Equal(0, explicitCode);
        Assert.Equal(0, defaultCode);
        Assert.Equal(defaultOut, explicitOut);
    }
}
