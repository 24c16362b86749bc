// A content hash that ties a calibrated predictor to the model it was trained on: SHA-256 over the architecture, every
// tensor's name, type and shape, and the bytes of every resident (non-expert) tensor — the routers among them.
using System.Security.Cryptography;
using System.Text;
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
            unsafe
            {
                for (long off = 0; off < t.ByteLength; off += 1 << 30)
                {
                    int n = (int)Math.Min(1 << 30, t.ByteLength - off);
                    h.AppendData(new ReadOnlySpan<byte>((byte*)t.Pointer + off, n));
                }
            }
        }
        return Convert.ToHexStringLower(h.GetHashAndReset());
    }
}
