// Property tests: mutations of a valid safetensors file (truncation, byte flips, huge header lengths, edited JSON)
// must open cleanly or fail with ModelFormatException, never with another exception, a crash or a hang.
using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Pregate.Core;
using Pregate.Formats.Safetensors;
using Xunit.Abstractions;
using static Pregate.Tests.Safetensors.SafetensorsTestFiles;

namespace Pregate.Tests.Safetensors;

public sealed partial class SafetensorsFuzzTests : IDisposable
{
    private readonly TempFolder _dir = new();
    private readonly ITestOutputHelper _output;
    private readonly byte[] _valid;
    private readonly int _headerLength;
    private int _opened, _rejected;
    private double _slowestMs;

    public SafetensorsFuzzTests(ITestOutputHelper output)
    {
        _output = output;
        string path = _dir.File("valid.safetensors");
        SafetensorsWriter.WriteFile(path,
        [
            RandomTensor("model.embed_tokens.weight", DType.BF16, [6, 4], 1).Data,
            RandomTensor("model.layers.0.mlp.experts.0.w1.weight", DType.F32, [2, 3], 2).Data,
            RandomTensor("scalar", DType.I64, [], 3).Data,
            RandomTensor("empty", DType.F16, [0, 5], 4).Data,
            RandomTensor("ids", DType.I8, [5], 5).Data,
        ], new Dictionary<string, string> { ["format"] = "pt" });
        _valid = File.ReadAllBytes(path);
        _headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(_valid);
    }

    public void Dispose()
    {
        _output.WriteLine($"opened {_opened}, rejected {_rejected}, slowest open {_slowestMs:F2} ms");
        _dir.Dispose();
    }

    /// <summary>The property: Open either succeeds (and every tensor's bytes are readable) or throws ModelFormatException.</summary>
    private bool OpensOrFailsCleanly(byte[] bytes)
    {
        string path = _dir.File($"m{Guid.NewGuid():N}.safetensors");
        File.WriteAllBytes(path, bytes);
        var clock = Stopwatch.StartNew();
        try
        {
            using var file = SafetensorsFile.Open(path);
            long checksum = 0;
            foreach (var t in file.Tensors)
                foreach (byte b in t.Bytes) checksum += b;
            _opened++;
            return checksum >= 0 && file.DataOffset <= file.Length;
        }
        catch (ModelFormatException e)
        {
            _rejected++;
            return e.FilePath == path;
        }
        finally
        {
            _slowestMs = Math.Max(_slowestMs, clock.Elapsed.TotalMilliseconds);
            File.Delete(path);
        }
    }

    /// <summary>The valid file with its header replaced by <paramref name="header"/> and the length field updated.</summary>
    private byte[] WithHeader(string header)
    {
        byte[] text = Encoding.UTF8.GetBytes(header);
        return Raw(text, _valid.AsSpan(8 + _headerLength).ToArray());
    }

    private string HeaderText => Encoding.UTF8.GetString(_valid, 8, _headerLength);

    [Property(MaxTest = 400, Replay = "(1234567,7654321)")]
    public Property TruncatedAnywhere() =>
        Prop.ForAll(Gen.Choose(0, _valid.Length - 1).ToArbitrary(), n => OpensOrFailsCleanly(_valid[..n]));

    [Property(MaxTest = 400, Replay = "(2345678,8765433)")]
    public Property BytesFlipped()
    {
        var flip = Gen.Zip(Gen.Choose(0, _valid.Length - 1), Gen.Choose(1, 255));
        return Prop.ForAll(Gen.NonEmptyListOf(flip).ToArbitrary(), flips =>
        {
            byte[] bytes = (byte[])_valid.Clone();
            foreach (var (at, mask) in flips) bytes[at] ^= (byte)mask;
            return OpensOrFailsCleanly(bytes);
        });
    }

    [Property(MaxTest = 200, Replay = "(3456789,9876543)")]
    public Property HeaderLengthOverwritten()
    {
        var special = Gen.Elements<ulong>(0UL, 1UL, 7UL, (ulong)_headerLength - 1, (ulong)_headerLength + 1, (ulong)_valid.Length,
            (ulong)SafetensorsFile.MaxHeaderBytes, (ulong)SafetensorsFile.MaxHeaderBytes + 1, (ulong)int.MaxValue, uint.MaxValue,
            (ulong)long.MaxValue, (ulong)long.MaxValue + 1, ulong.MaxValue);
        var random = Gen.Zip(Gen.Choose(int.MinValue, int.MaxValue), Gen.Choose(int.MinValue, int.MaxValue))
            .Select(p => ((ulong)(uint)p.Item1 << 32) | (uint)p.Item2);
        var small = Gen.Choose(0, _valid.Length + 16).Select(n => (ulong)n);
        return Prop.ForAll(Gen.OneOf(special, random, small).ToArbitrary(), length =>
        {
            byte[] bytes = (byte[])_valid.Clone();
            BinaryPrimitives.WriteUInt64LittleEndian(bytes, length);
            return OpensOrFailsCleanly(bytes);
        });
    }

    private static readonly string[] JsonPieces =
        ["{", "}", "[", "]", ",", ":", "\"", "\\", "-", "0", "9", "e", ".", " ", "null", "true", "\\u00", "\\ud800", "é", "__metadata__"];

    [Property(MaxTest = 400, Replay = "(4567890,1098765)")]
    public Property JsonTextEdited()
    {
        string text = HeaderText.TrimEnd(' ');
        // An edit: replace [at, at+remove) with a JSON-significant piece; the length field follows the new text.
        var edit = Gen.Zip(Gen.Zip(Gen.Choose(0, text.Length - 1), Gen.Choose(0, 3)), Gen.Elements(JsonPieces))
            .Select(p => (At: p.Item1.Item1, Remove: p.Item1.Item2, Piece: p.Item2));
        return Prop.ForAll(Gen.NonEmptyListOf(edit).ToArbitrary(), edits =>
        {
            string s = text;
            foreach (var (at, remove, piece) in edits)
            {
                int start = Math.Min(at, s.Length);
                s = s.Remove(start, Math.Min(remove, s.Length - start)).Insert(start, piece);
            }
            return OpensOrFailsCleanly(WithHeader(s));
        });
    }

    [GeneratedRegex("-?[0-9]+")]
    private static partial Regex Number();

    [Property(MaxTest = 300, Replay = "(5678901,2109877)")]
    public Property NumbersReplaced()
    {
        string text = HeaderText.TrimEnd(' ');
        var numbers = Number().Matches(text).ToArray();
        var replacement = Gen.OneOf(
            Gen.Elements("-1", "0", "1", "2.5", "1e3", "9223372036854775807", "9223372036854775808", "18446744073709551615",
                "4294967296", "99999999999999999999999", "-9223372036854775808"),
            Gen.Choose(0, 200).Select(n => n.ToString()));
        return Prop.ForAll(Gen.Zip(Gen.Choose(0, numbers.Length - 1), replacement).ToArbitrary(), pick =>
        {
            var m = numbers[pick.Item1];
            string s = text[..m.Index] + pick.Item2 + text[(m.Index + m.Length)..];
            return OpensOrFailsCleanly(WithHeader(s));
        });
    }
}
