// What an offloaded run does with a routed expert that is neither cached nor loading (--on-miss load|compute|auto|low-precision):
// read it into a cache slot, compute it in place from the checkpoint's memory map, choose per expert by cost, or compute a
// lightly weighted one from its low-precision copy (HOBBIT, Tang et al. 2024: mixed-precision expert offloading).
namespace Pregate.Experts;

/// <summary>The miss policies offered on the command line (<c>--on-miss load|compute|auto|low-precision</c>).</summary>
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

    /// <summary>
    /// A missed expert whose routing weight is below a threshold is computed from its low-precision copy (the
    /// <c>{name}.{type}</c> tensors <c>pregate quantize --dual</c> stores), read with O_DIRECT into a buffer of its own and
    /// never cached; any other miss loads as
    /// <see cref="Load"/> does. The one policy whose outputs may differ from a resident run.
    /// </summary>
    LowPrecision,
}

public static class MissPolicies
{
    /// <summary>
    /// The default routing-weight threshold of <see cref="MissPolicy.LowPrecision"/>: 0.3. With Mixtral's top-2 routing the
    /// second expert's weight lies in (0, 0.5]; on the shipped model a quarter of second experts weigh below 0.3 (its
    /// first quartile; median 0.385), where the first expert carries at least 70% of the output.
    /// </summary>
    public const float DefaultLowPrecisionBelow = 0.3f;

    /// <summary>Parses <c>load</c>, <c>compute</c>, <c>auto</c> or <c>low-precision</c> (case-insensitive).</summary>
    public static bool TryParse(string? name, out MissPolicy policy)
    {
        (bool ok, policy) = name?.Trim().ToLowerInvariant() switch
        {
            "load" => (true, MissPolicy.Load),
            "compute" => (true, MissPolicy.Compute),
            "auto" => (true, MissPolicy.Auto),
            "low-precision" => (true, MissPolicy.LowPrecision),
            _ => (false, default(MissPolicy)),
        };
        return ok;
    }

    /// <summary><c>load</c>, <c>compute</c>, <c>auto</c> or <c>low-precision</c>.</summary>
    public static string Name(MissPolicy policy) => policy == MissPolicy.LowPrecision ? "low-precision" : policy.ToString().ToLowerInvariant();
}
