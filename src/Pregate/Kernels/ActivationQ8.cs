// Input vectors of a mat-vec / mat-mul in every form the weight types need: the floats (F32 weights, and F16/BF16 weights
// by default), fp16/bf16 copies (F16/BF16 weights in llama.cpp-compatible mode), the F16 input scaled by 2^112 (the
// decode kernel for F16 weights), Q8_0 blocks (Q8_0/Q4_0 weights) and Q8_K blocks (Q4_K/Q6_K weights). Each form is made
// at most once per Load, so one input shared by several matrices (gate and up projections, every expert of a layer) is
// converted once, as in llama.cpp.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Pregate.Core;

namespace Pregate.Kernels;

/// <summary>What F16 and BF16 weights multiply.</summary>
public enum HalfWeightInput
{
    /// <summary>The float input as is (the more accurate choice).</summary>
    Float,

    /// <summary>
    /// The input rounded to the weight's type first (fp16 for F16 weights, bf16 for BF16 weights), as llama.cpp's CPU
    /// backend does (ggml's vec_dot_type), so results match its ggml_vec_dot_f16 / ggml_vec_dot_bf16 bit for bit.
    /// </summary>
    WeightType,
}

/// <summary>
/// A reusable buffer for up to <see cref="MaxTokens"/> input vectors of up to <see cref="MaxCols"/> values. Memory is
/// allocated once (pinned) in the constructor; <see cref="Load(ReadOnlySpan{float}, int)"/> copies new inputs and
/// invalidates the quantized forms, which are then built on first use. Not thread-safe: load and prepare from one thread.
/// </summary>
public sealed unsafe class ActivationQ8
{
    private readonly float[] _values;
    private readonly byte[] _q8_0;
    private readonly byte[] _q8_K;
    private readonly ushort[] _half;
    private readonly float[] _scaled;
    private ScaledForm _scaledForm;
    private bool _hasQ8_0;
    private bool _hasQ8_K;
    private DType _halfType;   // F16 or BF16 when _half holds the current input in that type, else F32

    /// <summary>
    /// Allocates room for <paramref name="maxTokens"/> vectors of <paramref name="maxCols"/> values;
    /// <paramref name="halfInput"/> chooses what F16/BF16 weights multiply.
    /// </summary>
    public ActivationQ8(int maxCols, int maxTokens = 1, HalfWeightInput halfInput = HalfWeightInput.Float)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxCols);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokens, 1);
        MaxCols = maxCols;
        MaxTokens = maxTokens;
        long n = (long)maxCols * maxTokens;
        _values = GC.AllocateUninitializedArray<float>(checked((int)n), pinned: true);
        _q8_0 = GC.AllocateUninitializedArray<byte>(checked((int)(n / BlockQ8_0.Size * Unsafe.SizeOf<BlockQ8_0>())), pinned: true);
        _q8_K = GC.AllocateUninitializedArray<byte>(checked((int)(n / BlockQ8_K.Size * Unsafe.SizeOf<BlockQ8_K>())), pinned: true);
        HalfInput = halfInput;
        _half = halfInput == HalfWeightInput.WeightType ? GC.AllocateUninitializedArray<ushort>((int)n, pinned: true) : [];
        _scaled = VecDot.HasScaledF16 ? GC.AllocateUninitializedArray<float>((int)n, pinned: true) : [];
    }

    private enum ScaledForm { Stale, Ready, Unavailable }

    /// <summary>What F16/BF16 weights multiply (fixed at construction).</summary>
    public HalfWeightInput HalfInput { get; }

    /// <summary>True when weights of <paramref name="weightType"/> multiply an fp16/bf16 copy of the input.</summary>
    internal bool UsesHalfCopy(DType weightType) =>
        HalfInput == HalfWeightInput.WeightType && weightType is DType.F16 or DType.BF16;

    public int MaxCols { get; }
    public int MaxTokens { get; }

    /// <summary>Values per vector of the current input.</summary>
    public int Cols { get; private set; }

    /// <summary>Vectors in the current input.</summary>
    public int Tokens { get; private set; }

    /// <summary>Loads one vector.</summary>
    public void Load(ReadOnlySpan<float> x) => Load(x, 1);

    /// <summary>
    /// Loads <paramref name="tokens"/> vectors stored row-major in <paramref name="x"/> ([tokens, cols]). Throws
    /// <see cref="ArgumentException"/> when x is not tokens whole rows or exceeds the capacity.
    /// </summary>
    public void Load(ReadOnlySpan<float> x, int tokens)
    {
        if (tokens < 1 || tokens > MaxTokens) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, $"capacity is {MaxTokens} vectors");
        if (x.Length % tokens != 0) throw new ArgumentException($"{x.Length} values is not {tokens} whole vectors", nameof(x));
        int cols = x.Length / tokens;
        if (cols > MaxCols) throw new ArgumentException($"vectors of {cols} values exceed the capacity of {MaxCols}", nameof(x));
        x.CopyTo(_values);
        Cols = cols;
        Tokens = tokens;
        Invalidate();
    }

    /// <summary>
    /// Loads vectors gathered from the rows of <paramref name="x"/> ([*, cols] row-major): vector i is row rows[i] (a row
    /// may repeat). Throws <see cref="ArgumentException"/> when a row is outside x or the capacity is exceeded.
    /// </summary>
    public void LoadRows(ReadOnlySpan<float> x, int cols, ReadOnlySpan<int> rows)
    {
        if (rows.Length < 1 || rows.Length > MaxTokens) throw new ArgumentOutOfRangeException(nameof(rows), rows.Length, $"capacity is {MaxTokens} vectors");
        if (cols < 0 || cols > MaxCols) throw new ArgumentException($"vectors of {cols} values exceed the capacity of {MaxCols}", nameof(cols));
        int available = cols == 0 ? int.MaxValue : x.Length / cols;
        for (int i = 0; i < rows.Length; i++)
        {
            int r = rows[i];
            if ((uint)r >= (uint)available) throw new ArgumentException($"row {r} is outside the {available} rows given", nameof(rows));
            x.Slice(r * cols, cols).CopyTo(_values.AsSpan(i * cols, cols));
        }
        Cols = cols;
        Tokens = rows.Length;
        Invalidate();
    }

    private void Invalidate()
    {
        _hasQ8_0 = false;
        _hasQ8_K = false;
        _halfType = DType.F32;
        _scaledForm = ScaledForm.Stale;
    }

    /// <summary>The floats of every loaded vector, [Tokens, Cols] row-major.</summary>
    public ReadOnlySpan<float> Values() => _values.AsSpan(0, Tokens * Cols);

    /// <summary>The floats of vector <paramref name="token"/>.</summary>
    public ReadOnlySpan<float> Values(int token)
    {
        if ((uint)token >= (uint)Tokens) throw new ArgumentOutOfRangeException(nameof(token));
        return _values.AsSpan(token * Cols, Cols);
    }

    /// <summary>
    /// Builds (once per load) the activation form <paramref name="weightType"/> multiplies with. Throws
    /// <see cref="ArgumentException"/> when Cols is not a whole number of that form's blocks.
    /// </summary>
    public void Prepare(DType weightType)
    {
        switch (weightType)
        {
            case DType.Q8_0 or DType.Q4_0 when !_hasQ8_0:
                RequireBlocks(BlockQ8_0.Size, weightType);
                Quantize.QuantizeQ8_0Activation(_values.AsSpan(0, Cols * Tokens), _q8_0);
                _hasQ8_0 = true;
                break;
            case DType.Q4_K or DType.Q6_K when !_hasQ8_K:
                RequireBlocks(BlockQ8_K.Size, weightType);
                Quantize.QuantizeQ8_K(_values.AsSpan(0, Cols * Tokens), _q8_K);
                _hasQ8_K = true;
                break;
            case DType.F16 when UsesHalfCopy(weightType) && _halfType != DType.F16:
                Fp16.FromFloat(_values.AsSpan(0, Cols * Tokens), MemoryMarshal.Cast<ushort, Half>(_half.AsSpan()));
                _halfType = DType.F16;
                break;
            case DType.BF16 when UsesHalfCopy(weightType) && _halfType != DType.BF16:
                Bf16.FromFloat(_values.AsSpan(0, Cols * Tokens), _half);
                _halfType = DType.BF16;
                break;
        }
        if (weightType == DType.F16 && _scaledForm == ScaledForm.Stale) PrepareScaled();
    }

    // x·2^112 (or, in llama.cpp-compatible mode, the fp16 copy widened and scaled) for VecDot.F16Scaled; unavailable without
    // AVX2 or when a finite |x| reaches 2^16, which the scaling would overflow.
    private void PrepareScaled()
    {
        _scaledForm = ScaledForm.Unavailable;
        if (_scaled.Length == 0) return;
        int n = Cols * Tokens;
        var dst = _scaled.AsSpan(0, n);
        if (UsesHalfCopy(DType.F16)) Fp16.ToFloat(_half.AsSpan(0, n), dst);   // |fp16| ≤ 65504: always in range
        else if (!ScalesExactly(_values.AsSpan(0, n))) return;
        else _values.AsSpan(0, n).CopyTo(dst);
        System.Numerics.Tensors.TensorPrimitives.Multiply(dst, VecDot.HalfInputScale, dst);
        _scaledForm = ScaledForm.Ready;
    }

    // False when a finite value has |v| ≥ 2^16 (its bits without the sign in [0x47800000, 0x7F800000)).
    private static bool ScalesExactly(ReadOnlySpan<float> values)
    {
        var bits = MemoryMarshal.Cast<float, int>(values);
        int i = 0;
        var magnitude = Vector256.Create(0x7FFFFFFF);
        var low = Vector256.Create(0x47800000 - 1);
        var high = Vector256.Create(0x7F800000);
        for (; i + 8 <= bits.Length; i += 8)
        {
            var m = Vector256.Create(bits.Slice(i, 8)) & magnitude;
            if (Vector256.EqualsAny(Vector256.GreaterThan(m, low) & Vector256.LessThan(m, high), Vector256<int>.AllBitsSet)) return false;
        }
        for (; i < bits.Length; i++)
        {
            int m = bits[i] & 0x7FFFFFFF;
            if (m >= 0x47800000 && m < 0x7F800000) return false;
        }
        return true;
    }

    /// <summary>
    /// The input scaled for <see cref="VecDot.F16Scaled"/> ([Tokens, Cols] floats), or null where it is unavailable;
    /// <see cref="Prepare"/>(F16) must have run.
    /// </summary>
    internal float* ScaledHalfInput() =>
        _scaledForm == ScaledForm.Ready ? (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_scaled)) : null;

    private void RequireBlocks(int blockSize, DType weightType)
    {
        if (Cols % blockSize != 0)
            throw new ArgumentException($"{Cols} values per vector is not a whole number of blocks of {blockSize} for {DTypes.Name(weightType)} weights");
    }

    /// <summary>Vector <paramref name="token"/> in the form <paramref name="weightType"/> needs; <see cref="Prepare"/> must have run.</summary>
    internal byte* Row(DType weightType, int token) => (byte*)Base(weightType) + token * RowBytes(weightType);

    internal void* Base(DType weightType) => weightType switch
    {
        DType.Q8_0 or DType.Q4_0 => Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_q8_0)),
        DType.Q4_K or DType.Q6_K => Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_q8_K)),
        _ when UsesHalfCopy(weightType) => Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_half)),
        _ => Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_values)),
    };

    /// <summary>Bytes between consecutive vectors in the form <paramref name="weightType"/> needs.</summary>
    internal long RowBytes(DType weightType) => weightType switch
    {
        DType.Q8_0 or DType.Q4_0 => (long)Cols / BlockQ8_0.Size * Unsafe.SizeOf<BlockQ8_0>(),
        DType.Q4_K or DType.Q6_K => (long)Cols / BlockQ8_K.Size * Unsafe.SizeOf<BlockQ8_K>(),
        _ when UsesHalfCopy(weightType) => (long)Cols * sizeof(ushort),
        _ => (long)Cols * sizeof(float),
    };

    /// <summary>The Q8_0 blocks of vector <paramref name="token"/> (builds them if needed).</summary>
    public ReadOnlySpan<BlockQ8_0> Q8_0(int token)
    {
        if ((uint)token >= (uint)Tokens) throw new ArgumentOutOfRangeException(nameof(token));
        Prepare(DType.Q8_0);
        return new ReadOnlySpan<BlockQ8_0>(Row(DType.Q8_0, token), Cols / BlockQ8_0.Size);
    }

    /// <summary>The Q8_K blocks of vector <paramref name="token"/> (builds them if needed).</summary>
    public ReadOnlySpan<BlockQ8_K> Q8_K(int token)
    {
        if ((uint)token >= (uint)Tokens) throw new ArgumentOutOfRangeException(nameof(token));
        Prepare(DType.Q4_K);
        return new ReadOnlySpan<BlockQ8_K>(Row(DType.Q4_K, token), Cols / BlockQ8_K.Size);
    }
}
