// Keeps the kernel's read-ahead out of the expert ranges of a mapped checkpoint when experts are offloaded: a page fault
// in a mapping reads a window around it (read_ahead_kb, often megabytes), which would pull neighbouring experts into
// the page cache. madvise(2): MADV_RANDOM on each resident tensor (faults read only their own page), MADV_WILLNEED to
// load the resident tensors up front, exactly their pages.
using System.Runtime.InteropServices;
using Pregate.Core;
using Pregate.Formats;

namespace Pregate.Experts;

internal static unsafe partial class ResidentWeightAdvice
{
    private const int AdviseRandom = 1, AdviseWillNeed = 3;

    /// <summary>
    /// Advises every non-expert tensor of <paramref name="ck"/>: no read-around, and load it now (except a token embedding
    /// that is not also the output matrix: only the rows of the tokens seen are read). Best effort: a refused advice
    /// changes only how much is read, never what the model computes. Apply before anything reads the weights.
    /// </summary>
    public static void Apply(Checkpoint ck)
    {
        if (!OperatingSystem.IsLinux()) return;
        foreach (var spec in ck.Specs)
        {
            if (spec.IsRoutedExpert || !ck.TryGet(spec.Role, spec.Layer, out var view) || view.ByteLength == 0) continue;
            long page = Environment.SystemPageSize;
            long start = view.Pointer / page * page;
            long end = (view.Pointer + view.ByteLength + page - 1) / page * page;
            Madvise((void*)start, (nuint)(end - start), AdviseRandom);
            if (!ReadsRowsOnly(spec.Role, ck.Config)) Madvise((void*)start, (nuint)(end - start), AdviseWillNeed);
        }
    }

    /// <summary>
    /// True for the tensor a forward pass reads only a few rows of: the token embedding, unless it is also the output
    /// matrix (tied), which every token reads whole.
    /// </summary>
    public static bool ReadsRowsOnly(TensorRole role, ModelConfig c) => role == TensorRole.TokenEmbedding && !c.TieWordEmbeddings;

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* address, nuint length, int advice);
}
