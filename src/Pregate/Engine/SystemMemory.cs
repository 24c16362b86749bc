// Memory this process may use: MemAvailable from /proc/meminfo and the memory limit of its cgroup and every ancestor
// (cgroup v1 memory.limit_in_bytes, v2 memory.max), whichever is smallest. Linux only; elsewhere unknown.
using System.Globalization;

namespace Pregate.Engine;

public static class SystemMemory
{
    private const string CgroupRoot = "/sys/fs/cgroup";
    private const long Unlimited = 1L << 60; // v1 reports "no limit" as 0x7FFFFFFFFFFFF000

    /// <summary>
    /// min(MemAvailable, every memory limit on the path of this process's cgroups, v1 and v2) in bytes; null when none
    /// of them can be read (not Linux, or /proc and /sys are hidden).
    /// </summary>
    public static long? AvailableBytes() => OperatingSystem.IsLinux() ? Available(ReadOrNull) : null;

    /// <summary><see cref="AvailableBytes"/> with the files read through <paramref name="read"/> (null: the file is missing).</summary>
    internal static long? Available(Func<string, string?> read)
    {
        long? best = read("/proc/meminfo") is string meminfo ? ParseMemAvailable(meminfo) : null;
        foreach (string file in CgroupLimitFiles(read("/proc/self/cgroup")))
            if (read(file) is string text && ParseLimit(text) is long limit)
                best = Math.Min(best ?? long.MaxValue, limit);
        return best;
    }

    /// <summary>The "MemAvailable: N kB" line of /proc/meminfo in bytes.</summary>
    internal static long? ParseMemAvailable(string meminfo)
    {
        foreach (string line in meminfo.Split('\n'))
        {
            if (!line.StartsWith("MemAvailable:", StringComparison.Ordinal)) continue;
            string[] f = line["MemAvailable:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length >= 1 && long.TryParse(f[0], NumberStyles.None, CultureInfo.InvariantCulture, out long kb) && kb < long.MaxValue / 1024)
                return kb * 1024;
        }
        return null;
    }

    /// <summary>
    /// The limit files on the way from this process's cgroups (lines "id:controllers:/path" of /proc/self/cgroup) up to
    /// the root: v1 <c>memory/…/memory.limit_in_bytes</c>, v2 <c>…/memory.max</c>. Without the cgroup file: the root files.
    /// </summary>
    internal static IEnumerable<string> CgroupLimitFiles(string? procSelfCgroup)
    {
        var files = new List<string>();
        bool v1 = false, v2 = false;
        foreach (string line in (procSelfCgroup ?? "").Split('\n'))
        {
            string[] f = line.Trim().Split(':', 3);
            if (f.Length != 3 || !f[2].StartsWith('/')) continue;
            if (f[0] == "0" && f[1].Length == 0)
            {
                v2 = true;
                foreach (string dir in Ancestors(f[2])) files.Add($"{CgroupRoot}{dir}/memory.max");
            }
            else if (f[1].Split(',').Contains("memory"))
            {
                v1 = true;
                foreach (string dir in Ancestors(f[2])) files.Add($"{CgroupRoot}/memory{dir}/memory.limit_in_bytes");
            }
        }
        if (!v1) files.Add($"{CgroupRoot}/memory/memory.limit_in_bytes");
        if (!v2) files.Add($"{CgroupRoot}/memory.max");
        return files;
    }

    /// <summary>A limit file's value in bytes; null for "max", values meaning "no limit", or anything unreadable.</summary>
    internal static long? ParseLimit(string text)
    {
        string s = text.Trim();
        return long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out long v) && v < Unlimited ? v : null;
    }

    // "/a/b" → "/a/b", "/a", "" (the root, written as no suffix)
    private static IEnumerable<string> Ancestors(string path)
    {
        string p = path.TrimEnd('/');
        while (p.Length > 0)
        {
            yield return p;
            p = p[..p.LastIndexOf('/')];
        }
        yield return "";
    }

    private static string? ReadOrNull(string path)
    {
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }
}
