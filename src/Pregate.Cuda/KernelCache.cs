// Compiled kernels on disk: one cubin per (source, architecture, compiler version, options), named by a SHA-256 of those,
// written atomically (temp file + rename) so concurrent processes never read a half-written binary.
using System.Security.Cryptography;
using System.Text;
using Pregate.Formats;

namespace Pregate.Cuda;

/// <summary>A folder of compiled kernel binaries keyed by what produced them.</summary>
public sealed class KernelCache(string directory)
{
    public string Directory { get; } = directory;

    /// <summary>$PREGATE_CUDA_CACHE, else $XDG_CACHE_HOME/pregate/cuda, else $HOME/.cache/pregate/cuda, else the temp folder's pregate-cuda.</summary>
    public static string DefaultDirectory(Func<string, string?> environment)
    {
        if (environment("PREGATE_CUDA_CACHE") is { Length: > 0 } explicitDir) return explicitDir;
        if (environment("XDG_CACHE_HOME") is { Length: > 0 } xdg) return Path.Combine(xdg, "pregate", "cuda");
        if (environment("HOME") is { Length: > 0 } home) return Path.Combine(home, ".cache", "pregate", "cuda");
        return Path.Combine(Path.GetTempPath(), "pregate-cuda");
    }

    /// <summary>
    /// "kernels-sm_90-&lt;16 hex digits&gt;.cubin": the digits are the first 8 bytes of SHA-256 over the source, the
    /// architecture, the compiler version and the options, separated by NUL characters.
    /// </summary>
    public static string FileName(string source, string arch, string compilerVersion, IReadOnlyList<string> options)
    {
        string key = string.Join('\0', [source, arch, compilerVersion, .. options]);
        byte[] hash = SHA256.HashData(Encoding.UTF8.GetBytes(key));
        return $"kernels-{arch}-{Convert.ToHexStringLower(hash, 0, 8)}.cubin";
    }

    /// <summary>
    /// The cached binary for this key, or <paramref name="compile"/>'s result, then stored atomically. A cache folder that
    /// cannot be written only costs the next run a compile.
    /// </summary>
    public byte[] GetOrCompile(string source, string arch, string compilerVersion, IReadOnlyList<string> options, Func<byte[]> compile)
    {
        string path = Path.Combine(Directory, FileName(source, arch, compilerVersion, options));
        if (File.Exists(path))
        {
            byte[] cached = File.ReadAllBytes(path);
            if (cached.Length > 0) return cached;
        }
        byte[] binary = compile();
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            AtomicFile.Write(path, s => s.Write(binary));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return binary;
    }
}
