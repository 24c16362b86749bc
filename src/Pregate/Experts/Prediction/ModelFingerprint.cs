// A content hash that ties a calibrated predictor to the model it was trained on: SHA-256 over the architecture, every
// tensor's name, type and shape, and the bytes of every resident (non-expert) tensor — the routers among them.
// The token embedding (only its rows of the tokens seen are read while running) is hashed from the file with O_DIRECT.
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Pregate.Core;
using Pregate.Formats;

namespace Pregate.Experts.Prediction;

public static class ModelFingerprint
{
    /// <summary>Lower-case hex SHA-256 of the checkpoint's structure and resident weights.</summary>
    public static string Of(Checkpoint ck)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Text(string s) => h.AppendData(Encoding.UTF8.GetBytes(s + "\n"));
        var c = ck.Config;
        Text($"{c.ModelType} {c.NumLayers} {c.HiddenSize} {c.NumExperts} {c.NumExpertsUsed} {c.ExpertFfn} {c.VocabSize}");
        foreach (var spec in ck.Specs)
        {
            if (spec.IsRoutedExpert)
            {
                var v = ck.GetExpert(spec.Role, spec.Layer, 0);
                Text($"{spec.Role} {spec.Layer} {v.Type} [{string.Join(",", v.Shape)}] x{c.NumExperts}");
                continue;
            }
            var t = ck.Get(spec.Role, spec.Layer);
            Text($"{spec.Role} {spec.Layer} {t.Type} [{string.Join(",", t.Shape)}]");
            if (ResidentWeightAdvice.ReadsRowsOnly(spec.Role, c)) HashFromFile(ck, t, h);
            else HashMapped(t, h);
        }
        return Convert.ToHexStringLower(h.GetHashAndReset());
    }

    private static unsafe void HashMapped(in TensorView t, IncrementalHash h)
    {
        for (long off = 0; off < t.ByteLength; off += 1 << 30)
        {
            int n = (int)Math.Min(1 << 30, t.ByteLength - off);
            h.AppendData(new ReadOnlySpan<byte>((byte*)t.Pointer + off, n));
        }
    }

    // The same bytes read from the file with O_DIRECT: running reads only the rows of the tokens seen, so mapping the whole
    // embedding in to hash it would add its size to the process's memory (and, under a memory cap, push out weights in use).
    private static unsafe void HashFromFile(Checkpoint ck, in TensorView t, IncrementalHash h)
    {
        const int Chunk = 8 << 20;
        var (file, offset) = ck.Locate(t);
        using var reader = new DirectFileReader(file);
        long capacity = Chunk + 2L * DirectFileReader.Alignment;
        byte* buffer = (byte*)NativeMemory.AlignedAlloc((nuint)capacity, DirectFileReader.Alignment);
        try
        {
            for (long done = 0; done < t.ByteLength; done += Chunk)
            {
                long at = offset + done;
                int n = (int)Math.Min(Chunk, t.ByteLength - done);
                reader.ReadCovering(at, n, buffer, capacity);
                h.AppendData(new ReadOnlySpan<byte>(buffer + (at - DirectFileReader.AlignDown(at)), n));
            }
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }
}
