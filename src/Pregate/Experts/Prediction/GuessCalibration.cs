// Online calibration of a predictor's guesses: how often a guess of a given lookahead, target layer, rank and softmax
// probability turns out to be among the experts its layer routes to, counted while the model runs (a reliability table),
// each cell smoothed toward the coarser one above it and, before any evidence, toward "always right".
namespace Pregate.Experts.Prediction;

/// <summary>
/// The calibrated probability that a guess is routed to. A guess is described by its lookahead <c>a</c> (1 = next layer),
/// its target layer <c>l</c>, its rank <c>r</c> among the token's guesses (0 = best) and <c>p</c>, the softmax of the
/// predictor's scores at that expert, cut into <see cref="Buckets"/> equal bins <c>b</c>. With <c>n</c> guesses seen and
/// <c>h</c> of them routed, and <c>w</c> = <see cref="PriorWeight"/>:
/// <c>P(a, r) = (h_ar + w) / (n_ar + w)</c>, <c>P(a, l, r) = (h_alr + w · P(a, r)) / (n_alr + w)</c> and
/// <c>P(a, l, r, b) = (h_alrb + w · P(a, l, r)) / (n_alrb + w)</c>: a new predictor starts out trusted and is judged on
/// what it gets right, layer by layer (early layers are guessed worse from less refined states). Raw softmax
/// probabilities are not comparable across models (a trained router may give its top choice 0.12 of 16 experts and be
/// right 9 times in 10); the counts are. Not thread-safe.
/// </summary>
public sealed class GuessCalibration
{
    /// <summary>Bins of the softmax probability.</summary>
    public const int Buckets = 20;

    /// <summary>The weight, in guesses, of the coarser estimate each cell is smoothed toward.</summary>
    public const double PriorWeight = 2;

    private readonly int _layers, _ranks;
    private readonly long[] _rankGuesses, _rankHits;   // [(a - 1) · ranks + r]
    private readonly long[] _layerGuesses, _layerHits; // [((a - 1) · layers + l) · ranks + r]
    private readonly long[] _cellGuesses, _cellHits;   // [(((a - 1) · layers + l) · ranks + r) · Buckets + b]

    /// <exception cref="ArgumentOutOfRangeException">A lookahead, layer or rank count below 1.</exception>
    public GuessCalibration(int maxLookahead, int layers, int ranks)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxLookahead);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(ranks);
        MaxLookahead = maxLookahead;
        _layers = layers;
        _ranks = ranks;
        _rankGuesses = new long[checked(maxLookahead * ranks)];
        _rankHits = new long[_rankGuesses.Length];
        _layerGuesses = new long[checked(_rankGuesses.Length * layers)];
        _layerHits = new long[_layerGuesses.Length];
        _cellGuesses = new long[checked(_layerGuesses.Length * Buckets)];
        _cellHits = new long[_cellGuesses.Length];
    }

    public int MaxLookahead { get; }

    /// <summary>Layers of the model (target layers 0 … Layers − 1).</summary>
    public int Layers => _layers;

    /// <summary>Guesses per token this table ranks.</summary>
    public int Ranks => _ranks;

    /// <summary>Guesses observed so far.</summary>
    public long Observed { get; private set; }

    /// <summary>
    /// The calibrated probability that a guess of lookahead <paramref name="ahead"/> for layer <paramref name="layer"/>, of
    /// rank <paramref name="rank"/> and softmax probability <paramref name="softmax"/>, is routed to.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The lookahead, layer or rank is outside the table.</exception>
    public double Probability(int ahead, int layer, int rank, double softmax)
    {
        var (r, lr, cell) = Indices(ahead, layer, rank, softmax);
        double byRank = (_rankHits[r] + PriorWeight) / (_rankGuesses[r] + PriorWeight);
        double byLayer = (_layerHits[lr] + PriorWeight * byRank) / (_layerGuesses[lr] + PriorWeight);
        return (_cellHits[cell] + PriorWeight * byLayer) / (_cellGuesses[cell] + PriorWeight);
    }

    /// <summary>Counts one guess and whether its layer then routed to it.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The lookahead, layer or rank is outside the table.</exception>
    public void Observe(int ahead, int layer, int rank, double softmax, bool routed)
    {
        var (r, lr, cell) = Indices(ahead, layer, rank, softmax);
        _rankGuesses[r]++;
        _layerGuesses[lr]++;
        _cellGuesses[cell]++;
        if (routed)
        {
            _rankHits[r]++;
            _layerHits[lr]++;
            _cellHits[cell]++;
        }
        Observed++;
    }

    /// <summary>The bin of a softmax probability: <c>floor(p · Buckets)</c>, clamped to the table (NaN: bin 0).</summary>
    public static int Bucket(double softmax) => softmax >= 1 ? Buckets - 1 : softmax > 0 ? (int)(softmax * Buckets) : 0;

    private (int Rank, int LayerRank, int Cell) Indices(int ahead, int layer, int rank, double softmax)
    {
        if (ahead < 1 || ahead > MaxLookahead) throw new ArgumentOutOfRangeException(nameof(ahead), ahead, $"the table holds lookaheads 1 to {MaxLookahead}");
        if ((uint)layer >= (uint)_layers) throw new ArgumentOutOfRangeException(nameof(layer), layer, $"the table holds layers 0 to {_layers - 1}");
        if ((uint)rank >= (uint)_ranks) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"the table holds ranks 0 to {_ranks - 1}");
        int r = (ahead - 1) * _ranks + rank;
        int lr = ((ahead - 1) * _layers + layer) * _ranks + rank;
        return (r, lr, lr * Buckets + Bucket(softmax));
    }
}
