// Finding the CUDA libraries at run time: the names the dynamic loader resolves (LD_LIBRARY_PATH, ldconfig cache), then
// CUDA_HOME/CUDA_PATH, /usr/local/cuda, and the lib folders of pip's nvidia-* packages (nvidia/<component>/lib,
// nvidia/cu13/lib) in the Python site-packages folders found on this machine.
using System.Runtime.InteropServices;

namespace Pregate.Cuda.Native;

/// <summary>A CUDA library to find: its file names, most specific first, and the pip package folder that ships it.</summary>
public sealed record NativeLibrarySpec(string Description, IReadOnlyList<string> FileNames, string? PipComponent)
{
    /// <summary>The driver API (installed with the NVIDIA driver, never with the toolkit).</summary>
    public static NativeLibrarySpec Driver { get; } = new("libcuda.so.1", ["libcuda.so.1", "libcuda.so"], null);

    /// <summary>The runtime compiler of CUDA 13 or 12.</summary>
    public static NativeLibrarySpec Nvrtc { get; } = new("libnvrtc", ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"], "cuda_nvrtc");

    /// <summary>cuBLAS of CUDA 13 or 12.</summary>
    public static NativeLibrarySpec Cublas { get; } = new("libcublas", ["libcublas.so.13", "libcublas.so.12", "libcublas.so"], "cublas");
}

/// <summary>Loads CUDA libraries with <see cref="NativeLibrary.TryLoad(string, out IntPtr)"/> over a fixed search list.</summary>
public static class NativeLibraries
{
    /// <summary>
    /// The paths tried for <paramref name="spec"/>, in order: each bare file name (the loader's own search:
    /// LD_LIBRARY_PATH, the ldconfig cache, the system folders), then each name in $CUDA_HOME/lib64, $CUDA_PATH/lib64,
    /// /usr/local/cuda/lib64, /usr/lib/x86_64-linux-gnu, then in every pip folder of <paramref name="sitePackages"/>
    /// (nvidia/&lt;component&gt;/lib, nvidia/cu13/lib, nvidia/cu12/lib).
    /// </summary>
    public static IReadOnlyList<string> Candidates(NativeLibrarySpec spec, Func<string, string?> environment, IEnumerable<string> sitePackages)
    {
        var folders = new List<string>();
        foreach (string variable in new[] { "CUDA_HOME", "CUDA_PATH" })
            if (environment(variable) is { Length: > 0 } home) folders.Add(Path.Combine(home, "lib64"));
        folders.Add("/usr/local/cuda/lib64");
        folders.Add("/usr/lib/x86_64-linux-gnu");
        foreach (string site in sitePackages)
        {
            if (spec.PipComponent is { } component) folders.Add(Path.Combine(site, "nvidia", component, "lib"));
            folders.Add(Path.Combine(site, "nvidia", "cu13", "lib"));
            folders.Add(Path.Combine(site, "nvidia", "cu12", "lib"));
        }
        var result = new List<string>(spec.FileNames);
        foreach (string folder in folders.Distinct())
            foreach (string name in spec.FileNames) result.Add(Path.Combine(folder, name));
        return result;
    }

    /// <summary>
    /// Python package folders that may hold pip's nvidia-* packages: $VIRTUAL_ENV's and the user's and system's
    /// lib/python3.*/site-packages and dist-packages folders that exist.
    /// </summary>
    public static IEnumerable<string> SitePackageFolders(Func<string, string?> environment)
    {
        var roots = new List<string>();
        if (environment("VIRTUAL_ENV") is { Length: > 0 } venv) roots.Add(Path.Combine(venv, "lib"));
        if (environment("HOME") is { Length: > 0 } home) roots.Add(Path.Combine(home, ".local", "lib"));
        roots.AddRange(["/usr/local/lib", "/usr/lib", "/opt/conda/lib"]);
        foreach (string root in roots)
        {
            if (!Directory.Exists(root)) continue;
            foreach (string python in Directory.EnumerateDirectories(root, "python3*").Order(StringComparer.Ordinal))
                foreach (string kind in new[] { "site-packages", "dist-packages" })
                {
                    string folder = Path.Combine(python, kind);
                    if (Directory.Exists(folder)) yield return folder;
                }
        }
    }

    /// <summary>Loads the first candidate of <paramref name="spec"/> that loads; false when none does.</summary>
    public static bool TryLoad(NativeLibrarySpec spec, out IntPtr handle, out string loadedFrom)
    {
        foreach (string candidate in Candidates(spec, Environment.GetEnvironmentVariable, SitePackageFolders(Environment.GetEnvironmentVariable)))
        {
            if (candidate.Contains('/') && !File.Exists(candidate)) continue;
            if (NativeLibrary.TryLoad(candidate, out handle))
            {
                loadedFrom = candidate;
                return true;
            }
        }
        handle = 0;
        loadedFrom = "";
        return false;
    }

    /// <summary>Loads <paramref name="spec"/> or throws <see cref="CudaException"/> with <paramref name="whenMissing"/>.</summary>
    public static IntPtr Load(NativeLibrarySpec spec, string whenMissing) =>
        TryLoad(spec, out var handle, out _) ? handle : throw new CudaException($"CUDA backend: {spec.Description} not found ({whenMissing})");

    /// <summary>The address of <paramref name="name"/> in <paramref name="library"/>; throws <see cref="CudaException"/> when absent.</summary>
    public static IntPtr Export(IntPtr library, string libraryName, string name) =>
        NativeLibrary.TryGetExport(library, name, out var address) ? address
            : throw new CudaException($"CUDA backend: {libraryName} has no {name} (a driver or toolkit too old for this backend)");
}
