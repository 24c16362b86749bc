// The on-disk kernel cache: names keyed by source, architecture, compiler version and options; atomic writes that leave
// no temporary files; a second lookup that does not compile again.
using Pregate.Cuda;
using Xunit.Abstractions;

namespace Pregate.Tests.Cuda;

public sealed class KernelCacheTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pregate-kcache-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void FileNameDependsOnEveryInput()
    {
        string[] options = ["--gpu-architecture=sm_90"];
        string name = KernelCache.FileName("src", "sm_90", "13.0", options);
        output.WriteLine(name);
        Assert.Matches("^kernels-sm_90-[0-9a-f]{16}\\.cubin$", name);
        Assert.Equal(name, KernelCache.FileName("src", "sm_90", "13.0", options));
        Assert.NotEqual(name, KernelCache.FileName("src2", "sm_90", "13.0", options));
        Assert.NotEqual(name, KernelCache.FileName("src", "sm_80", "13.0", options));
        Assert.NotEqual(name, KernelCache.FileName("src", "sm_90", "12.8", options));
        Assert.NotEqual(name, KernelCache.FileName("src", "sm_90", "13.0", ["--gpu-architecture=sm_90", "-G"]));
    }

    [Fact]
    public void CompilesOnceThenReadsTheFile()
    {
        var cache = new KernelCache(Path.Combine(_dir, "nested", "cuda"));
        int compiles = 0;
        byte[] Compile() { compiles++; return [1, 2, 3, 4]; }
        var first = cache.GetOrCompile("src", "sm_90", "13.0", [], Compile);
        var second = cache.GetOrCompile("src", "sm_90", "13.0", [], Compile);
        Assert.Equal(1, compiles);
        Assert.Equal(first, second);
        var files = Directory.GetFiles(cache.Directory);
        Assert.Single(files);
        Assert.Equal(KernelCache.FileName("src", "sm_90", "13.0", []), Path.GetFileName(files[0]));
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, File.ReadAllBytes(files[0]));
    }

    [Fact]
    public void UnwritableFolderStillReturnsTheBinary()
    {
        string blocker = Path.Combine(_dir, "file");
        File.WriteAllText(blocker, "not a folder");
        var cache = new KernelCache(Path.Combine(blocker, "cuda"));
        Assert.Equal(new byte[] { 9 }, cache.GetOrCompile("src", "sm_90", "13.0", [], () => [9]));
    }

    [Fact]
    public void DefaultFolderFollowsTheEnvironment()
    {
        Assert.Equal("/c", KernelCache.DefaultDirectory(n => n == "PREGATE_CUDA_CACHE" ? "/c" : n == "HOME" ? "/h" : null));
        Assert.Equal("/x/pregate/cuda", KernelCache.DefaultDirectory(n => n == "XDG_CACHE_HOME" ? "/x" : n == "HOME" ? "/h" : null));
        Assert.Equal("/h/.cache/pregate/cuda", KernelCache.DefaultDirectory(n => n == "HOME" ? "/h" : null));
    }
}
