// The search list for the CUDA libraries: bare names first (the loader's own search: LD_LIBRARY_PATH, ldconfig), then
// CUDA_HOME/CUDA_PATH, the standard toolkit folder, and pip's nvidia-* package folders.
using Pregate.Cuda.Native;
using Xunit.Abstractions;

namespace Pregate.Tests.Cuda;

public sealed class NativeLibrariesTests(ITestOutputHelper output)
{
    private static Func<string, string?> Env(params (string Key, string Value)[] vars) =>
        name => vars.FirstOrDefault(v => v.Key == name).Value;

    [Fact]
    public void DriverIsSearchedByLoaderNameThenToolkitFolders()
    {
        var list = NativeLibraries.Candidates(NativeLibrarySpec.Driver, Env(("CUDA_HOME", "/opt/cuda-13")), []);
        foreach (string c in list) output.WriteLine(c);
        Assert.Equal("libcuda.so.1", list[0]);
        Assert.Equal("libcuda.so", list[1]);
        int home = list.ToList().IndexOf("/opt/cuda-13/lib64/libcuda.so.1");
        int usrLocal = list.ToList().IndexOf("/usr/local/cuda/lib64/libcuda.so.1");
        Assert.True(home > 1 && usrLocal > home, "CUDA_HOME before /usr/local/cuda, after the loader's own search");
        Assert.Equal(list.Count, list.Distinct().Count());
    }

    [Fact]
    public void NvrtcAndCublasAreFoundInPipPackages()
    {
        var sites = new[] { "/venv/lib/python3.12/site-packages" };
        var nvrtc = NativeLibraries.Candidates(NativeLibrarySpec.Nvrtc, Env(), sites);
        var cublas = NativeLibraries.Candidates(NativeLibrarySpec.Cublas, Env(), sites);
        Assert.Equal("libnvrtc.so.13", nvrtc[0]);
        Assert.Contains("/venv/lib/python3.12/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12", nvrtc);
        Assert.Contains("/venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13", nvrtc);
        Assert.Contains("/venv/lib/python3.12/site-packages/nvidia/cublas/lib/libcublas.so.12", cublas);
        Assert.DoesNotContain(nvrtc, c => c.StartsWith("/opt/", StringComparison.Ordinal));
    }

    [Fact]
    public void CudaPathIsSearchedToo()
    {
        var list = NativeLibraries.Candidates(NativeLibrarySpec.Nvrtc, Env(("CUDA_PATH", "/toolkit")), []);
        Assert.Contains("/toolkit/lib64/libnvrtc.so.13", list);
    }

    [Fact]
    public void SitePackageFoldersComeFromTheVirtualEnvironment()
    {
        string venv = Directory.CreateTempSubdirectory("pregate-venv-").FullName;
        try
        {
            string site = Path.Combine(venv, "lib", "python3.11", "site-packages");
            Directory.CreateDirectory(site);
            var folders = NativeLibraries.SitePackageFolders(Env(("VIRTUAL_ENV", venv))).ToList();
            Assert.Equal(site, folders[0]);
        }
        finally
        {
            Directory.Delete(venv, recursive: true);
        }
    }

    [Fact]
    public void MissingLibraryGivesTheHint()
    {
        var spec = new NativeLibrarySpec("libpregate-absent.so.1", ["libpregate-absent.so.1"], null);
        var e = Assert.Throws<CudaException>(() => NativeLibraries.Load(spec, "a hint"));
        Assert.Equal("CUDA backend: libpregate-absent.so.1 not found (a hint)", e.Message);
    }
}
