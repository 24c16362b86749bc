// The fast tier of expert offloading: a fixed number of equal, 4096-aligned native buffers sized from a byte budget and
// allocated once. Slots are handed out by ExpertCache; the pool only owns the memory.
using System.Runtime.InteropServices;

namespace Pregate.Experts;

/// <summary>
/// <see cref="SlotCount"/> slots of <see cref="SlotBytes"/> bytes each, every one 4096-aligned native memory
/// (uninitialised). Peak memory = <see cref="SlotCount"/> · <see cref="SlotBytes"/>.
/// </summary>
public sealed unsafe class SlotPool : IDisposable
{
    private readonly nint[] _slots;

    /// <summary>Allocates <paramref name="slotCount"/> slots of <paramref name="slotBytes"/> bytes (rounded up to 4096).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A non-positive slot size or count.</exception>
    public SlotPool(long slotBytes, int slotCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(slotBytes);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(slotCount);
        SlotBytes = DirectFileReader.AlignUp(slotBytes);
        _slots = new nint[slotCount];
        try
        {
            for (int i = 0; i < slotCount; i++)
                _slots[i] = (nint)NativeMemory.AlignedAlloc((nuint)SlotBytes, DirectFileReader.Alignment);
        }
        catch
        {
            Free();
            throw;
        }
    }

    /// <summary>
    /// A pool holding as many slots as <paramref name="budgetBytes"/> pays for (see <see cref="SlotCountForBudget"/>).
    /// </summary>
    public static SlotPool ForBudget(long budgetBytes, long slotBytes, int minimumSlots, int maximumSlots = int.MaxValue) =>
        new(slotBytes, SlotCountForBudget(budgetBytes, slotBytes, minimumSlots, maximumSlots));

    /// <summary>
    /// Slots a budget buys: <c>min(floor(budget / AlignUp(slotBytes, 4096)), maximumSlots)</c> (no more slots than experts).
    /// </summary>
    /// <param name="minimumSlots">Experts one layer holds at once (e.g. the router's top-k); the budget must buy at least these.</param>
    /// <exception cref="ArgumentException">The budget buys fewer than <paramref name="minimumSlots"/> slots; the message names the minimum budget in bytes.</exception>
    /// <exception cref="ArgumentOutOfRangeException">Non-positive sizes or counts, or <paramref name="maximumSlots"/> below <paramref name="minimumSlots"/>.</exception>
    public static int SlotCountForBudget(long budgetBytes, long slotBytes, int minimumSlots, int maximumSlots = int.MaxValue)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(budgetBytes);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(slotBytes);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(minimumSlots);
        ArgumentOutOfRangeException.ThrowIfLessThan(maximumSlots, minimumSlots);
        long aligned = DirectFileReader.AlignUp(slotBytes);
        long count = budgetBytes / aligned;
        if (count < minimumSlots)
        {
            long minimumBudget = checked(minimumSlots * aligned);
            throw new ArgumentException(
                $"An expert memory budget of {budgetBytes} bytes is too small: one layer uses {minimumSlots} experts at once, " +
                $"so at least {minimumSlots} slots × {aligned} bytes = {minimumBudget} bytes are needed.", nameof(budgetBytes));
        }
        return (int)Math.Min(count, maximumSlots);
    }

    public int SlotCount => _slots.Length;

    /// <summary>Bytes of one slot (a multiple of 4096).</summary>
    public long SlotBytes { get; }

    /// <summary><see cref="SlotCount"/> · <see cref="SlotBytes"/>.</summary>
    public long TotalBytes => SlotCount * SlotBytes;

    /// <summary>Start of slot <paramref name="slot"/> (4096-aligned).</summary>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    public byte* SlotPointer(int slot)
    {
        nint p = _slots[slot];
        ObjectDisposedException.ThrowIf(p == 0, this);
        return (byte*)p;
    }

    public void Dispose() => Free();

    private void Free()
    {
        for (int i = 0; i < _slots.Length; i++)
        {
            if (_slots[i] != 0) NativeMemory.AlignedFree((void*)_slots[i]);
            _slots[i] = 0;
        }
    }
}
