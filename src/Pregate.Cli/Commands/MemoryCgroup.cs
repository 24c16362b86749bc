// A cgroup v1 memory group for one memory-capped child process (bench --memory-cap): created with a limit, the child
// joins it from a shell before exec, and its peak usage (memory.max_usage_in_bytes) and limit hits (memory.failcnt) are
// read back before the group is removed. Linux's cgroup v1 interface (Documentation/admin-guide/cgroup-v1/memory.rst).
using System.Diagnostics;
using System.Globalization;

namespace Pregate.Cli.Commands;

internal sealed class MemoryCgroup : IDisposable
{
    /// <summary>Where the cgroup v1 memory controller is mounted.</summary>
    public const string Root = "/sys/fs/cgroup/memory";

    private readonly string _dir;

    private MemoryCgroup(string dir, long limit)
    {
        _dir = dir;
        LimitBytes = limit;
    }

    /// <summary>The limit the kernel accepted (it rounds to pages).</summary>
    public long LimitBytes { get; }

    /// <summary>The file a process writes its pid to in order to join.</summary>
    public string ProcsFile => Path.Combine(_dir, "cgroup.procs");

    /// <summary>Peak memory of the group's processes (anonymous memory and page cache charged to them).</summary>
    public long MaxUsageBytes => ReadLong("memory.max_usage_in_bytes");

    /// <summary>How many times usage hit the limit (each one made the kernel reclaim).</summary>
    public long LimitHits => ReadLong("memory.failcnt");

    /// <summary>
    /// Creates group <paramref name="name"/> with a limit of <paramref name="limitBytes"/>.
    /// </summary>
    /// <exception cref="UserException">cgroup v1 memory is not mounted or not writable (the message says which).</exception>
    public static MemoryCgroup Create(string name, long limitBytes)
    {
        if (!File.Exists(Path.Combine(Root, "memory.limit_in_bytes")))
            throw new UserException($"--memory-cap needs the cgroup v1 memory controller at {Root}, which this system does not have (cgroup v2 and systemd-run are not used)");
        string dir = Path.Combine(Root, name);
        try
        {
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "memory.limit_in_bytes"), limitBytes.ToString(CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryRemove(dir);
            throw new UserException($"--memory-cap: cannot create a memory cgroup under {Root} ({e.Message}); it needs root (or a delegated cgroup v1 memory hierarchy)");
        }
        var group = new MemoryCgroup(dir, 0);
        return new MemoryCgroup(dir, group.ReadLong("memory.limit_in_bytes"));
    }

    /// <summary>
    /// How to start <paramref name="file"/> with <paramref name="args"/>: directly, or (with a group) through <c>sh</c>, which
    /// writes its own pid into the group and then execs the command, so the child runs in the group from its first byte.
    /// Standard output and error are redirected.
    /// </summary>
    public static ProcessStartInfo StartInfo(MemoryCgroup? group, string file, IEnumerable<string> args)
    {
        ProcessStartInfo psi;
        if (group is null)
        {
            psi = new ProcessStartInfo(file);
        }
        else
        {
            psi = new ProcessStartInfo("/bin/sh");
            psi.ArgumentList.Add("-c");
            psi.ArgumentList.Add("echo $$ > \"$0\" && exec \"$@\"");
            psi.ArgumentList.Add(group.ProcsFile);
            psi.ArgumentList.Add(file);
        }
        foreach (string a in args) psi.ArgumentList.Add(a);
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.UseShellExecute = false;
        return psi;
    }

    /// <summary>
    /// Writes dirty pages back and drops the page cache (<c>sync; echo 3 &gt; /proc/sys/vm/drop_caches</c>), so every
    /// configuration starts cold. Returns false when the file is not writable.
    /// </summary>
    public static bool DropPageCache()
    {
        const string control = "/proc/sys/vm/drop_caches";
        try
        {
            using (var sync = Process.Start(new ProcessStartInfo("sync") { UseShellExecute = false })) sync?.WaitForExit();
            File.WriteAllText(control, "3");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    /// <summary>Removes the group (its processes have exited; the kernel may need a moment to let go).</summary>
    public void Dispose() => TryRemove(_dir);

    private static void TryRemove(string dir)
    {
        for (int attempt = 0; attempt < 50 && Directory.Exists(dir); attempt++)
        {
            try { Directory.Delete(dir); }
            catch (IOException) { Thread.Sleep(20); }
            catch (UnauthorizedAccessException) { return; }
        }
    }

    private long ReadLong(string file) =>
        long.Parse(File.ReadAllText(Path.Combine(_dir, file)).Trim(), NumberStyles.None, CultureInfo.InvariantCulture);
}
