// Deterministic random streams: xoshiro256** seeded through SplitMix64 from (seed, stream name). Synthetic weights use one
// stream per tensor row, so values depend only on the seed and the name; the sampler uses one per session.
namespace Pregate.Core;

public struct SeededRandom
{
    private ulong _s0, _s1, _s2, _s3;

    public SeededRandom(ulong seed, string stream)
    {
        ulong h = 14695981039346656037UL; // FNV-1a over the stream name, mixed with the seed
        foreach (char ch in stream) { h ^= ch; h *= 1099511628211UL; }
        ulong x = seed ^ h;
        _s0 = SplitMix(ref x); _s1 = SplitMix(ref x); _s2 = SplitMix(ref x); _s3 = SplitMix(ref x);
    }

    private static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextULong()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0; _s3 ^= _s1; _s1 ^= _s2; _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextULong() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform in [-1, 1).</summary>
    public float NextSigned() => (NextULong() >> 40) * (1.0f / (1 << 23)) - 1.0f;

    /// <summary>Fills <paramref name="dst"/> with <c>offset + scale·U[-1,1)</c>.</summary>
    public void Fill(Span<float> dst, float scale, float offset)
    {
        for (int i = 0; i < dst.Length; i++) dst[i] = offset + scale * NextSigned();
    }
}
