// Byte sizes as people write them: "2GiB", "512 MiB", "1.5GB", "4096"; and back to short text ("9.19 MiB").
using System.Globalization;

namespace Pregate.Engine;

public static class ByteSize
{
    private static readonly string[] BinaryUnits = ["B", "KiB", "MiB", "GiB", "TiB"];

    /// <summary>Three significant digits in binary units: "512 B", "9.19 MiB", "1.50 GiB".</summary>
    public static string Format(long bytes)
    {
        double v = bytes;
        int u = 0;
        while (Math.Abs(v) >= 1024 && u < BinaryUnits.Length - 1)
        {
            v /= 1024;
            u++;
        }
        if (u == 0) return bytes.ToString(CultureInfo.InvariantCulture) + " B";
        string digits = Math.Abs(v) < 10 ? "0.00" : Math.Abs(v) < 100 ? "0.0" : "0";
        return v.ToString(digits, CultureInfo.InvariantCulture) + " " + BinaryUnits[u];
    }

    /// <summary>
    /// Parses a positive size: a decimal number (<c>.</c> as the separator) and an optional unit, case-insensitive:
    /// B; KiB, MiB, GiB, TiB (powers of 1024; also K, M, G, T); KB, MB, GB, TB (powers of 1000). The bytes are rounded down.
    /// </summary>
    /// <returns>False with a message in <paramref name="error"/> for anything else, zero, or more than <see cref="long.MaxValue"/>.</returns>
    public static bool TryParse(string? text, out long bytes, out string error)
    {
        bytes = 0;
        string s = (text ?? "").Trim();
        int end = 0;
        while (end < s.Length && (char.IsAsciiDigit(s[end]) || s[end] == '.')) end++;
        string number = s[..end], unit = s[end..].Trim();
        if (number.Length == 0 || !double.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double value))
        {
            error = $"'{text}' is not a size (expected a number and a unit, e.g. 512MiB, 2GiB, 1.5GB)";
            return false;
        }
        double? scale = unit.ToLowerInvariant() switch
        {
            "" or "b" => 1,
            "k" or "kib" => 1L << 10,
            "m" or "mib" => 1L << 20,
            "g" or "gib" => 1L << 30,
            "t" or "tib" => 1L << 40,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            "tb" => 1e12,
            _ => null,
        };
        if (scale is not double f)
        {
            error = $"'{unit}' in '{text}' is not a size unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)";
            return false;
        }
        double total = Math.Floor(value * f);
        if (total < 1)
        {
            error = $"'{text}' is less than one byte; give a positive size";
            return false;
        }
        if (total >= long.MaxValue)
        {
            error = $"'{text}' is too large";
            return false;
        }
        bytes = (long)total;
        error = "";
        return true;
    }
}
