// Canonical Unicode normalization (NFC, NFD) per UAX #15, over tables generated from the Unicode data.
// Needed because string.Normalize is a no-op when the runtime runs with invariant globalization.
using System.Collections.Frozen;
using System.Text;

namespace Pregate.Formats.Tokenizers;

internal static class UnicodeNormalization
{
    // Hangul syllable arithmetic (UAX #15 §3.12 / Unicode ch. 3.12).
    private const int HangulSBase = 0xAC00, HangulLBase = 0x1100, HangulVBase = 0x1161, HangulTBase = 0x11A7;
    private const int HangulLCount = 19, HangulVCount = 21, HangulTCount = 28;
    private const int HangulNCount = HangulVCount * HangulTCount, HangulSCount = HangulLCount * HangulNCount;

    private sealed class Tables
    {
        public readonly FrozenDictionary<int, byte> CombiningClass;
        public readonly FrozenDictionary<int, int[]> Decomposition;
        public readonly FrozenDictionary<long, int> Composition;
        /// <summary>Code points that may change under NFC or NFD: decomposable, non-zero class, or second of a composition.</summary>
        public readonly FrozenSet<int> NeedsWork;

        public Tables()
        {
            var ccc = new Dictionary<int, byte>();
            ReadOnlySpan<int> classes = UnicodeNormalizationData.CombiningClasses;
            for (int i = 0; i < classes.Length; i += 2) ccc[classes[i]] = (byte)classes[i + 1];

            var decomposition = new Dictionary<int, int[]>();
            ReadOnlySpan<int> dec = UnicodeNormalizationData.Decompositions;
            for (int i = 0; i < dec.Length;)
            {
                int cp = dec[i], n = dec[i + 1];
                decomposition[cp] = dec.Slice(i + 2, n).ToArray();
                i += 2 + n;
            }

            var composition = new Dictionary<long, int>();
            var needsWork = new HashSet<int>(ccc.Keys);
            needsWork.UnionWith(decomposition.Keys);
            ReadOnlySpan<int> comp = UnicodeNormalizationData.Compositions;
            for (int i = 0; i < comp.Length; i += 3)
            {
                composition[Key(comp[i], comp[i + 1])] = comp[i + 2];
                needsWork.Add(comp[i + 1]);
            }
            for (int v = HangulVBase; v < HangulVBase + HangulVCount; v++) needsWork.Add(v);
            for (int t = HangulTBase + 1; t < HangulTBase + HangulTCount; t++) needsWork.Add(t);
            for (int s = HangulSBase; s < HangulSBase + HangulSCount; s++) needsWork.Add(s);

            CombiningClass = ccc.ToFrozenDictionary();
            Decomposition = decomposition.ToFrozenDictionary();
            Composition = composition.ToFrozenDictionary();
            NeedsWork = needsWork.ToFrozenSet();
        }
    }

    private static readonly Lazy<Tables> Data = new(() => new Tables(), LazyThreadSafetyMode.ExecutionAndPublication);

    private static long Key(int first, int second) => ((long)first << 21) | (uint)second;

    /// <summary>Canonical composition (NFC): canonical decomposition, canonical ordering, then primary composition.</summary>
    public static string ToNfc(string text) => Normalize(text, compose: true);

    /// <summary>Canonical decomposition (NFD) with canonical ordering of combining marks.</summary>
    public static string ToNfd(string text) => Normalize(text, compose: false);

    private static string Normalize(string text, bool compose)
    {
        if (IsTriviallyStable(text, compose ? '\u0300' : '\u00C0')) return text;
        Tables t = Data.Value;
        List<int> codePoints = ToCodePoints(text);
        bool changes = false;
        foreach (int cp in codePoints)
        {
            if (t.NeedsWork.Contains(cp)) { changes = true; break; }
        }
        if (!changes) return text;

        var decomposed = new List<int>(codePoints.Count + 8);
        foreach (int cp in codePoints) Decompose(t, cp, decomposed);
        OrderCombiningMarks(t, decomposed);
        List<int> result = compose ? Compose(t, decomposed) : decomposed;
        return FromCodePoints(result);
    }

    /// <summary>
    /// Text below <paramref name="limit"/> is stable: nothing below U+0300 changes under NFC (no marks to compose with),
    /// nothing below U+00C0 under NFD (the first decomposable letter is U+00C0).
    /// </summary>
    private static bool IsTriviallyStable(string text, char limit)
    {
        foreach (char c in text)
        {
            if (c >= limit) return false;
        }
        return true;
    }

    private static void Decompose(Tables t, int cp, List<int> output)
    {
        int s = cp - HangulSBase;
        if (s >= 0 && s < HangulSCount)
        {
            output.Add(HangulLBase + s / HangulNCount);
            output.Add(HangulVBase + s % HangulNCount / HangulTCount);
            int trailing = s % HangulTCount;
            if (trailing != 0) output.Add(HangulTBase + trailing);
            return;
        }
        if (t.Decomposition.TryGetValue(cp, out int[]? parts)) output.AddRange(parts);
        else output.Add(cp);
    }

    // Canonical ordering: stable sort of every run of non-starters by combining class.
    private static void OrderCombiningMarks(Tables t, List<int> cps)
    {
        for (int i = 1; i < cps.Count; i++)
        {
            int cls = Ccc(t, cps[i]);
            if (cls == 0) continue;
            int j = i;
            while (j > 0)
            {
                int prevCls = Ccc(t, cps[j - 1]);
                if (prevCls <= cls) break;
                (cps[j - 1], cps[j]) = (cps[j], cps[j - 1]);
                j--;
            }
        }
    }

    // Canonical composition algorithm (UAX #15 §1.3): a mark composes with the last starter unless blocked.
    private static List<int> Compose(Tables t, List<int> cps)
    {
        var result = new List<int>(cps.Count);
        int starterIndex = -1;
        int lastClass = -1; // class of the last character kept after the starter; -1 when none
        foreach (int cp in cps)
        {
            int cls = Ccc(t, cp);
            if (starterIndex >= 0 && (lastClass == -1 || lastClass < cls) && TryCompose(t, result[starterIndex], cp, out int composite))
            {
                result[starterIndex] = composite;
                continue;
            }
            if (cls == 0)
            {
                starterIndex = result.Count;
                lastClass = -1;
            }
            else
            {
                lastClass = cls;
            }
            result.Add(cp);
        }
        return result;
    }

    private static bool TryCompose(Tables t, int first, int second, out int composite)
    {
        int l = first - HangulLBase, v = second - HangulVBase;
        if (l >= 0 && l < HangulLCount && v >= 0 && v < HangulVCount)
        {
            composite = HangulSBase + (l * HangulVCount + v) * HangulTCount;
            return true;
        }
        int s = first - HangulSBase, tr = second - HangulTBase;
        if (s >= 0 && s < HangulSCount && s % HangulTCount == 0 && tr > 0 && tr < HangulTCount)
        {
            composite = first + tr;
            return true;
        }
        return t.Composition.TryGetValue(Key(first, second), out composite);
    }

    private static int Ccc(Tables t, int cp) => t.CombiningClass.TryGetValue(cp, out byte c) ? c : 0;

    private static List<int> ToCodePoints(string text)
    {
        var cps = new List<int>(text.Length);
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                cps.Add(char.ConvertToUtf32(c, text[i + 1]));
                i++;
            }
            else
            {
                cps.Add(c); // lone surrogates pass through unchanged
            }
        }
        return cps;
    }

    private static string FromCodePoints(List<int> cps)
    {
        var sb = new StringBuilder(cps.Count + 4);
        foreach (int cp in cps)
        {
            if (cp < 0x10000) sb.Append((char)cp);
            else sb.Append(char.ConvertFromUtf32(cp));
        }
        return sb.ToString();
    }
}
