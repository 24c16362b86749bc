// A pinned, loaded expert handed to model code: pointers to its parts inside the slot. Disposing it unpins the slot.
namespace Pregate.Experts;

/// <summary>
/// A resident expert that cannot be evicted until this lease is disposed. Part <c>p</c> (e.g. gate, up, down) is
/// <see cref="PartLength"/>(p) bytes at <see cref="PartPointer"/>(p), byte-identical to the file. Pointers are valid
/// until <see cref="Dispose"/> (and never after the loader is disposed). Dispose is idempotent.
/// </summary>
public sealed unsafe class ExpertLease : IDisposable
{
    private readonly ExpertReadPlan _plan;
    private readonly byte* _slotBase;
    private ExpertLoader? _owner;

    internal ExpertLease(ExpertLoader owner, ExpertKey key, int slot, byte* slotBase, ExpertReadPlan plan)
    {
        _owner = owner;
        Key = key;
        Slot = slot;
        _slotBase = slotBase;
        _plan = plan;
    }

    public ExpertKey Key { get; }

    /// <summary>The slot of the pool holding the expert.</summary>
    public int Slot { get; }

    public int PartCount => _plan.PartLengths.Length;

    /// <summary>Address of part <paramref name="part"/>'s first byte.</summary>
    /// <exception cref="ObjectDisposedException">The lease was disposed.</exception>
    public nint PartPointer(int part)
    {
        ObjectDisposedException.ThrowIf(_owner is null, this);
        return (nint)(_slotBase + _plan.PartSlotOffsets[part]);
    }

    /// <summary>Bytes of part <paramref name="part"/>.</summary>
    public long PartLength(int part) => _plan.PartLengths[part];

    /// <summary>Part <paramref name="part"/> as a span (parts up to 2 GiB).</summary>
    /// <exception cref="ObjectDisposedException">The lease was disposed.</exception>
    public ReadOnlySpan<byte> PartBytes(int part) => new((void*)PartPointer(part), checked((int)PartLength(part)));

    public void Dispose() => Interlocked.Exchange(ref _owner, null)?.Release(Key);

    public override string ToString() => $"lease {Key} in slot {Slot}";
}
