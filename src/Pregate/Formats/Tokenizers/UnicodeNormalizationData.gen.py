# Generates UnicodeNormalizationData.cs (canonical decompositions, combining classes, primary compositions)
# from Python's unicodedata. Run: python3 UnicodeNormalizationData.gen.py > UnicodeNormalizationData.cs
import sys
import unicodedata

def is_hangul_syllable(cp):
    return 0xAC00 <= cp <= 0xD7A3

ccc = []          # (code point, combining class) for every non-zero class
decompositions = []  # (code point, full canonical decomposition)
compositions = []    # (first, second, composite)
for cp in range(0x110000):
    if 0xD800 <= cp <= 0xDFFF:
        continue
    ch = chr(cp)
    c = unicodedata.combining(ch)
    if c:
        ccc.append((cp, c))
    if is_hangul_syllable(cp):
        continue
    nfd = unicodedata.normalize('NFD', ch)
    if nfd != ch:
        decompositions.append((cp, [ord(x) for x in nfd]))
    raw = unicodedata.decomposition(ch)
    if raw and not raw.startswith('<'):
        parts = [int(x, 16) for x in raw.split()]
        if len(parts) == 2 and unicodedata.normalize('NFC', chr(parts[0]) + chr(parts[1])) == ch:
            compositions.append((parts[0], parts[1], cp))

def emit(name, values, per_line=12):
    out = [f"    internal static ReadOnlySpan<int> {name} =>", "    ["]
    for i in range(0, len(values), per_line):
        out.append("        " + ", ".join(f"0x{v:X}" for v in values[i:i + per_line]) + ",")
    out.append("    ];")
    return "\n".join(out)

ccc_flat = [v for pair in ccc for v in pair]
dec_flat = []
for cp, parts in decompositions:
    dec_flat += [cp, len(parts)] + parts
comp_flat = [v for triple in compositions for v in triple]

print("// Unicode canonical normalization tables (UAX #15), generated from Unicode " + unicodedata.unidata_version + " by UnicodeNormalizationData.gen.py.")
print("// Do not edit by hand; Hangul syllables are handled algorithmically in UnicodeNormalization.")
print("namespace Pregate.Formats.Tokenizers;")
print()
print("internal static class UnicodeNormalizationData")
print("{")
print("    internal const string UnicodeVersion = \"" + unicodedata.unidata_version + "\";")
print()
print("    /// <summary>Pairs (code point, canonical combining class) for every code point whose class is not 0.</summary>")
print(emit("CombiningClasses", ccc_flat))
print()
print("    /// <summary>Records (code point, n, d1..dn): the full canonical decomposition (NFD) of each decomposable code point.</summary>")
print(emit("Decompositions", dec_flat))
print()
print("    /// <summary>Triples (first, second, composite) of primary composites (composition exclusions removed).</summary>")
print(emit("Compositions", comp_flat))
print("}")
