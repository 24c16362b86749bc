// What an offloaded run does with a routed expert that is neither cached nor loading (--on-miss load|compute|auto):
// read it into a cache slot, compute it in place from the checkpoint's memory map, or choose per expert by cost.
namespace Pregate.Experts;

/// <summary>The miss policies offered on the command line (<c>--on-miss load|compute|auto</c>).</summary>
public enum MissPolicy
{
    /// <summary>Read the expert into a cache slot (O_DIRECT), then compute it from there.</summary>
    Load,

    /// <summary>
    /// Compute the expert from the checkpoint's memory map without caching it (the same kernels, so the same bits). Its
    /// bytes come through the page cache; under a memory cap the kernel may drop them again, at the cost of re-reading.
    /// </summary>
    Compute,

    /// <summary>Per missed expert, whichever of load and compute the cost model of <see cref="MissCostModel"/> finds cheaper.</summary>
    Auto,
}

public static class MissPolicies
{
    /// <summary>Parses <c>load</c>, <c>compute</c> or <c>auto</c> (case-insensitive).</summary>
    public static bool TryParse(string? name, out MissPolicy policy)
    {
        (bool ok, policy) = name?.Trim().ToLowerInvariant() switch
        {
            "load" => (true, MissPolicy.Load),
            "compute" => (true, MissPolicy.Compute),
            "auto" => (true, MissPolicy.Auto),
            _ => (false, default(MissPolicy)),
        };
        return ok;
    }

    /// <summary><c>load</c>, <c>compute</c> or <c>auto</c>.</summary>
    public static string Name(MissPolicy policy) => policy.ToString().ToLowerInvariant();
}
