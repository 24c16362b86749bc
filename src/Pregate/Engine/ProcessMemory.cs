// Memory figures of the running process from Linux's /proc/self/status (VmHWM: the resident-set high-water mark, which
// counts mapped file pages the process touched as well as its own allocations).
using System.Globalization;

namespace Pregate.Engine;

public static class ProcessMemory
{
    /// <summary>Peak resident set size in bytes (VmHWM), or null where /proc/self/status is not available.</summary>
    public static long? PeakResidentBytes() => StatusKilobytes("VmHWM:") * 1024;

    /// <summary>Current resident set size in bytes (VmRSS), or null where /proc/self/status is not available.</summary>
    public static long? ResidentBytes() => StatusKilobytes("VmRSS:") * 1024;

    private static long? StatusKilobytes(string key)
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status)) return null;
        foreach (string line in File.ReadLines(status))
        {
            if (!line.StartsWith(key, StringComparison.Ordinal)) continue;
            // "VmHWM:	  123456 kB"
            var parts = line[key.Length..].Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            return parts.Length > 0 && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out long kb) ? kb : null;
        }
        return null;
    }
}
