// Identity of one routed expert: (layer, expert index within the layer). The unit the cache, loader and predictors speak in.
namespace Pregate.Experts;

/// <summary>One routed expert: <paramref name="Layer"/> is the transformer block, <paramref name="Expert"/> its index in that block's router.</summary>
public readonly record struct ExpertKey(int Layer, int Expert)
{
    public override string ToString() => $"L{Layer}/E{Expert}";
}
