// The memory promised to routed experts (--expert-memory SIZE|PCT|all), and the choice made when none is given: resident
// when the model fits comfortably in the memory available, else a budget that fits (DESIGN "Memory tiers"). A size or
// share of at least all routed-expert bytes is resident too (ModelSession places the experts).
using System.Globalization;

namespace Pregate.Engine;

public enum ExpertMemoryKind
{
    /// <summary>Every expert stays in the memory map; nothing is moved (the resident mode).</summary>
    All,
    /// <summary>A slot cache of a fixed number of bytes.</summary>
    Bytes,
    /// <summary>A slot cache of a fraction of all routed-expert bytes.</summary>
    Fraction,
}

/// <summary>An expert memory budget: <see cref="All"/>, a byte count or a fraction of the routed experts' bytes.</summary>
public readonly record struct ExpertMemory
{
    private ExpertMemory(ExpertMemoryKind kind, long bytes, double fraction) => (Kind, Bytes, Fraction) = (kind, bytes, fraction);

    public ExpertMemoryKind Kind { get; }

    /// <summary>The budget in bytes when <see cref="Kind"/> is <see cref="ExpertMemoryKind.Bytes"/>.</summary>
    public long Bytes { get; }

    /// <summary>The share of all routed-expert bytes, in (0, 1], when <see cref="Kind"/> is <see cref="ExpertMemoryKind.Fraction"/>.</summary>
    public double Fraction { get; }

    /// <summary>Resident: experts are read in place from the memory map.</summary>
    public static ExpertMemory All => new(ExpertMemoryKind.All, 0, 0);

    /// <exception cref="ArgumentOutOfRangeException"><paramref name="bytes"/> is not positive.</exception>
    public static ExpertMemory OfBytes(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        return new(ExpertMemoryKind.Bytes, bytes, 0);
    }

    /// <exception cref="ArgumentOutOfRangeException"><paramref name="fraction"/> is outside (0, 1].</exception>
    public static ExpertMemory OfFraction(double fraction)
    {
        if (!(fraction > 0 && fraction <= 1)) throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "A fraction of the expert bytes must lie in (0, 1].");
        return new(ExpertMemoryKind.Fraction, 0, fraction);
    }

    public bool IsResident => Kind == ExpertMemoryKind.All;

    /// <summary>The budget in bytes for a model whose routed experts take <paramref name="totalExpertBytes"/>: the byte count, or ⌊fraction · total⌋.</summary>
    /// <exception cref="InvalidOperationException">The budget is <see cref="All"/>.</exception>
    public long BudgetBytes(long totalExpertBytes) => Kind switch
    {
        ExpertMemoryKind.Bytes => Bytes,
        ExpertMemoryKind.Fraction => (long)Math.Floor(Fraction * totalExpertBytes),
        _ => throw new InvalidOperationException("The resident mode has no byte budget."),
    };

    /// <summary>
    /// Parses <c>all</c>, a size (<c>2GiB</c>, <c>512MiB</c>, <c>1.5GB</c>; see <see cref="ByteSize.TryParse"/>) or a
    /// percentage of all routed-expert bytes (<c>25%</c>, in (0, 100]).
    /// </summary>
    public static bool TryParse(string? text, out ExpertMemory value, out string error)
    {
        value = default;
        string s = (text ?? "").Trim();
        if (s.Equals("all", StringComparison.OrdinalIgnoreCase))
        {
            value = All;
            error = "";
            return true;
        }
        if (s.EndsWith('%'))
        {
            string number = s[..^1].Trim();
            if (!double.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double pct))
            {
                error = $"'{text}' is not a percentage (expected e.g. 25%)";
                return false;
            }
            if (!(pct > 0 && pct <= 100))
            {
                error = $"'{text}': a percentage of the expert bytes must be above 0% and at most 100%";
                return false;
            }
            value = OfFraction(pct / 100);
            error = "";
            return true;
        }
        if (!ByteSize.TryParse(s, out long bytes, out error))
        {
            error += "; or give a percentage of the expert bytes (25%) or all";
            return false;
        }
        value = OfBytes(bytes);
        return true;
    }

    /// <summary>As <see cref="TryParse"/>.</summary>
    /// <exception cref="FormatException">The text is not a budget; the message says why.</exception>
    public static ExpertMemory Parse(string text) =>
        TryParse(text, out var value, out string error) ? value : throw new FormatException(error);

    /// <summary>
    /// The budget when none is given. Resident when the memory available is unknown or the model takes at most half of it
    /// ("comfortably"); otherwise half the available memory minus <paramref name="reservedBytes"/> (weights that stay
    /// resident, the KV cache), but never below <paramref name="minimumBudgetBytes"/>.
    /// </summary>
    public static ExpertMemory Automatic(long modelBytes, long reservedBytes, long? availableBytes, long minimumBudgetBytes)
    {
        if (availableBytes is not long available || modelBytes <= available / 2) return All;
        return OfBytes(Math.Max(available / 2 - reservedBytes, Math.Max(minimumBudgetBytes, 1)));
    }

    /// <summary><c>all</c>, a size such as <c>512 MiB</c>, or a percentage such as <c>25%</c>.</summary>
    public override string ToString() => Kind switch
    {
        ExpertMemoryKind.Bytes => ByteSize.Format(Bytes),
        ExpertMemoryKind.Fraction => (Fraction * 100).ToString("0.###", CultureInfo.InvariantCulture) + "%",
        _ => "all",
    };
}
