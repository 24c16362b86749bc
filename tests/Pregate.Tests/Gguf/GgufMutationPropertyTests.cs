// Property tests: a small valid GGUF file, truncated, with bytes flipped, or with 8-byte fields overwritten by huge
// values, either opens (and every tensor lies inside the file) or throws ModelFormatException — nothing else, no hang.
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Pregate.Core;
using Pregate.Formats.Gguf;

namespace Pregate.Tests.Gguf;

public sealed class GgufMutationPropertyTests : IDisposable
{
    private static readonly TimeSpan HangLimit = TimeSpan.FromSeconds(20);
    private static readonly ulong[] HugeValues =
        [ulong.MaxValue, long.MaxValue, 1UL << 63, 1UL << 62, 1UL << 60, 1UL << 40, 1UL << 32, uint.MaxValue, 0x0123_4567_89AB_CDEF, 0];

    private readonly TempDir _dir = new();
    private readonly byte[] _valid = GgufTestFiles.SmallValidFile();

    public void Dispose() => _dir.Dispose();

    /// <summary>
    /// Holds when opening <paramref name="bytes"/> succeeds with in-file tensors or fails with ModelFormatException;
    /// fails on any other exception or a hang. Collects "opened"/"rejected" so the run prints the mix.
    /// </summary>
    private Property OpensOrRejectsCleanly(byte[] bytes)
    {
        string path = _dir.Write("mutant.gguf", bytes);
        var task = Task.Run<(bool Clean, string Outcome)>(() =>
        {
            try
            {
                using var f = GgufFile.Open(path);
                foreach (TensorView t in f.Tensors)
                {
                    long offset = f.GetFileOffset(t);
                    if (offset + t.ByteLength > bytes.Length || t.ElementCount <= 0) return (false, $"tensor {t.Name} outside the file");
                    ReadOnlySpan<byte> data = t.Bytes; // touches the mapping: must stay inside it
                    _ = data[0] ^ data[^1];
                }
                foreach (var (_, value) in f.Metadata) _ = value.ToString();
                return (true, "opened");
            }
            catch (ModelFormatException)
            {
                return (true, "rejected");
            }
        });
        if (!task.Wait(HangLimit)) throw new TimeoutException($"GgufFile.Open did not return within {HangLimit.TotalSeconds} s");
        return task.Result.Clean.Label(task.Result.Outcome).Collect(task.Result.Outcome);
    }

    [Fact]
    public void TheUnmutatedFileOpens()
    {
        using var f = GgufFile.Open(_dir.Write("valid.gguf", _valid));
        Assert.Equal(3, f.Tensors.Count);
    }

    [FsCheck.Xunit.Property(MaxTest = 200, Replay = "(20261128,1)")]
    public Property TruncationAnywhere() =>
        Prop.ForAll(Gen.Choose(0, _valid.Length - 1).ToArbitrary(), cut => OpensOrRejectsCleanly(_valid[..cut]));

    [FsCheck.Xunit.Property(MaxTest = 150, Replay = "(20261128,3)")]
    public Property FlippedBytes() =>
        Prop.ForAll(
            Gen.Choose(0, _valid.Length - 1).Zip(Gen.Choose(1, 255)).ListOf().Where(l => l.Count is > 0 and <= 8).ToArbitrary(),
            flips =>
            {
                byte[] mutant = (byte[])_valid.Clone();
                foreach (var (at, mask) in flips) mutant[at] ^= (byte)mask;
                return OpensOrRejectsCleanly(mutant);
            });

    [FsCheck.Xunit.Property(MaxTest = 150, Replay = "(20261128,5)")]
    public Property HugeEightByteFields() =>
        Prop.ForAll(
            Gen.Choose(0, _valid.Length - 8).Zip(Gen.Elements(HugeValues)).ToArbitrary(),
            field =>
            {
                byte[] mutant = (byte[])_valid.Clone();
                GgufTestFiles.PutU64(mutant, field.Item1, field.Item2);
                return OpensOrRejectsCleanly(mutant);
            });
}
