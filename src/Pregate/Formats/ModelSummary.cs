// Sizes of a checkpoint: parameter counts (total and active per token) and bytes by dtype, split into the routed
// experts (which Pregate offloads) and everything else (which stays resident).
using Pregate.Core;

namespace Pregate.Formats;

public sealed record ModelSummary(
    ModelConfig Config,
    CheckpointFormat Format,
    long TotalParams,
    long ActiveParams,
    long TotalBytes,
    long ExpertBytes,
    long ResidentBytes,
    long BytesPerExpert,
    IReadOnlyDictionary<string, long> BytesByType)
{
    /// <summary>Sums the tensors the architecture uses (extra tensors in the file, e.g. an unused lm_head copy, are not counted).</summary>
    public static ModelSummary Of(Checkpoint ck)
    {
        var c = ck.Config;
        long totalParams = 0, expertParams = 0, totalBytes = 0, expertBytes = 0;
        var byType = new SortedDictionary<string, long>(StringComparer.Ordinal);
        void Add(TensorView v, bool expert)
        {
            long n = v.ElementCount;
            totalParams += n;
            totalBytes += v.ByteLength;
            if (expert) { expertParams += n; expertBytes += v.ByteLength; }
            string t = DTypes.Name(v.Type);
            byType[t] = byType.GetValueOrDefault(t) + v.ByteLength;
        }
        foreach (var spec in ck.Specs)
        {
            if (spec.IsRoutedExpert)
                for (int e = 0; e < c.NumExperts; e++) Add(ck.GetExpert(spec.Role, spec.Layer, e), true);
            else
                Add(ck.Get(spec.Role, spec.Layer), false);
        }
        long active = totalParams - expertParams + expertParams / c.NumExperts * c.NumExpertsUsed;
        long perExpert = expertBytes / ((long)c.NumExperts * c.NumLayers);
        return new ModelSummary(c, ck.Format, totalParams, active, totalBytes, expertBytes, totalBytes - expertBytes, perExpert, byType);
    }
}
