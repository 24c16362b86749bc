// A Hugging Face safetensors checkpoint: one model.safetensors, or shards listed by model.safetensors.index.json
// ({"metadata": {...}, "weight_map": {tensor: shard}}), the layout transformers' save_pretrained writes.
using System.Text.Json;
using Pregate.Core;

namespace Pregate.Formats.Safetensors;

/// <summary>
/// All tensors of a single-file or sharded safetensors checkpoint. Every tensor lives in exactly one shard; the
/// views stay valid until <see cref="Dispose"/>.
/// </summary>
public sealed class SafetensorsCheckpoint : IDisposable
{
    /// <summary>File name of a single-file checkpoint.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>File name of the shard index of a sharded checkpoint.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>Largest index file read (real ones are a few megabytes).</summary>
    public const long MaxIndexBytes = 100_000_000;

    private readonly SafetensorsFile[] _files;
    private readonly TensorView[] _tensors;
    private readonly Dictionary<string, (int File, int Tensor)> _byName;

    /// <summary>The opened files: the single file, or the shards sorted by name (model-00001-of-… first).</summary>
    public IReadOnlyList<SafetensorsFile> Files => _files;

    /// <summary>The union of all files' tensors, file by file, each in file order.</summary>
    public IReadOnlyList<TensorView> Tensors => _tensors;

    /// <summary>The index file when the checkpoint is sharded, otherwise null.</summary>
    public string? IndexPath { get; }

    private SafetensorsCheckpoint(SafetensorsFile[] files, string? indexPath)
    {
        _files = files;
        IndexPath = indexPath;
        _byName = new Dictionary<string, (int, int)>(StringComparer.Ordinal);
        var all = new List<TensorView>();
        for (int f = 0; f < files.Length; f++)
        {
            for (int t = 0; t < files[f].Tensors.Count; t++)
            {
                var tensor = files[f].Tensors[t];
                if (_byName.TryGetValue(tensor.Name, out var other))
                    throw new ModelFormatException(indexPath ?? files[f].Path,
                        $"tensor '{tensor.Name}' appears in two shards: '{System.IO.Path.GetFileName(files[other.File].Path)}' and '{System.IO.Path.GetFileName(files[f].Path)}'");
                _byName.Add(tensor.Name, (f, all.Count));
                all.Add(tensor);
            }
        }
        _tensors = all.ToArray();
    }

    /// <summary>
    /// Opens a <c>.safetensors</c> file, or a folder holding <see cref="SingleFileName"/> (preferred, as transformers
    /// does) or <see cref="IndexFileName"/> and its shards. Throws <see cref="ModelFormatException"/> naming the file
    /// when nothing is found, the index is malformed (invalid JSON, duplicate keys, non-string shard names), a shard
    /// name is absolute or leaves the folder, a shard is missing or malformed, an indexed tensor is not in its shard,
    /// a shard holds a tensor the index does not list, or a tensor appears in two shards.
    /// </summary>
    public static SafetensorsCheckpoint Open(string pathOrDirectory)
    {
        if (File.Exists(pathOrDirectory))
            return OpenSingle(pathOrDirectory);
        if (!Directory.Exists(pathOrDirectory))
            throw new ModelFormatException(pathOrDirectory, "no such file or folder");
        string single = System.IO.Path.Combine(pathOrDirectory, SingleFileName);
        if (File.Exists(single))
            return OpenSingle(single);
        string index = System.IO.Path.Combine(pathOrDirectory, IndexFileName);
        if (File.Exists(index))
            return OpenSharded(pathOrDirectory, index);
        throw new ModelFormatException(pathOrDirectory, $"folder holds neither {SingleFileName} nor {IndexFileName}");
    }

    private static SafetensorsCheckpoint OpenSingle(string path)
    {
        var file = SafetensorsFile.Open(path);
        try
        {
            return new SafetensorsCheckpoint([file], null);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static SafetensorsCheckpoint OpenSharded(string directory, string indexPath)
    {
        List<(string Tensor, string Shard)> weightMap = ReadWeightMap(indexPath);
        if (weightMap.Count == 0) throw new ModelFormatException(indexPath, "'weight_map' lists no tensors");

        string root = System.IO.Path.GetFullPath(directory);
        var shardSet = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var (tensor, shard) in weightMap)
            if (shardSet.Add(shard)) CheckShardName(shard, tensor, root, indexPath);
        var shardNames = shardSet.ToList();
        var shardIndex = shardNames.Select((name, i) => (name, i)).ToDictionary(p => p.name, p => p.i, StringComparer.Ordinal);

        var files = new List<SafetensorsFile>();
        try
        {
            foreach (string shard in shardNames)
            {
                string path = System.IO.Path.Combine(directory, shard);
                if (!File.Exists(path))
                    throw new ModelFormatException(indexPath, $"shard '{shard}' does not exist");
                files.Add(SafetensorsFile.Open(path));
            }
            var indexed = new Dictionary<string, int>(weightMap.Count, StringComparer.Ordinal);
            foreach (var (tensor, shard) in weightMap)
            {
                int f = shardIndex[shard];
                if (!files[f].Contains(tensor))
                    throw new ModelFormatException(indexPath, $"tensor '{tensor}' is listed in shard '{shard}', which does not contain it");
                indexed.Add(tensor, f);
            }
            var checkpoint = new SafetensorsCheckpoint(files.ToArray(), indexPath);
            foreach (var t in checkpoint._tensors)
                if (!indexed.ContainsKey(t.Name))
                {
                    string shard = shardNames[checkpoint._byName[t.Name].File];
                    throw new ModelFormatException(indexPath, $"shard '{shard}' holds tensor '{t.Name}', which the index does not list");
                }
            return checkpoint;
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    /// <summary>A shard name must be a relative path that stays inside the checkpoint folder.</summary>
    private static void CheckShardName(string shard, string tensor, string root, string indexPath)
    {
        bool bad = shard.Length == 0
            || shard.Contains('\0')
            || System.IO.Path.IsPathRooted(shard)
            || shard.Split('/', '\\').Any(part => part == "..");
        if (!bad)
        {
            string full = System.IO.Path.GetFullPath(System.IO.Path.Combine(root, shard));
            bad = !full.StartsWith(root.TrimEnd(System.IO.Path.DirectorySeparatorChar) + System.IO.Path.DirectorySeparatorChar, StringComparison.Ordinal);
        }
        if (bad)
            throw new ModelFormatException(indexPath, $"shard name '{shard}' of tensor '{tensor}' must be a file name inside the checkpoint folder");
    }

    /// <summary>Reads the "weight_map" of an index, rejecting duplicate keys (a tensor listed twice).</summary>
    private static List<(string Tensor, string Shard)> ReadWeightMap(string indexPath)
    {
        byte[] bytes;
        try
        {
            long length = new FileInfo(indexPath).Length;
            if (length > MaxIndexBytes)
                throw new ModelFormatException(indexPath, $"index is {length} bytes, more than the limit of {MaxIndexBytes}");
            bytes = File.ReadAllBytes(indexPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFormatException(indexPath, $"cannot read index: {e.Message}", e);
        }

        var map = new List<(string, string)>();
        try
        {
            var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { MaxDepth = 64 });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                throw new ModelFormatException(indexPath, "index is not a JSON object");
            bool sawWeightMap = false;
            var topKeys = new HashSet<string>(StringComparer.Ordinal);
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                string key = reader.GetString()!;
                if (!topKeys.Add(key)) throw new ModelFormatException(indexPath, $"index has the key '{key}' twice");
                reader.Read();
                if (key != "weight_map")
                {
                    reader.Skip();
                    continue;
                }
                sawWeightMap = true;
                if (reader.TokenType != JsonTokenType.StartObject)
                    throw new ModelFormatException(indexPath, "'weight_map' must be an object of tensor name to shard file name");
                var seen = new HashSet<string>(StringComparer.Ordinal);
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    string tensor = reader.GetString()!;
                    reader.Read();
                    if (reader.TokenType != JsonTokenType.String)
                        throw new ModelFormatException(indexPath, $"'weight_map' entry of tensor '{tensor}' must be a shard file name string");
                    if (!seen.Add(tensor))
                        throw new ModelFormatException(indexPath, $"'weight_map' lists tensor '{tensor}' twice");
                    map.Add((tensor, reader.GetString()!));
                }
            }
            while (reader.Read()) { } // trailing content after the object throws
            if (!sawWeightMap) throw new ModelFormatException(indexPath, "index lacks 'weight_map'");
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(indexPath, $"index is not valid JSON: {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            throw new ModelFormatException(indexPath, $"index has an invalid string: {e.Message}", e);
        }
        return map;
    }

    /// <summary>Finds a tensor by exact name in any file.</summary>
    public bool TryGetTensor(string name, out TensorView tensor)
    {
        if (_byName.TryGetValue(name, out var at))
        {
            tensor = _tensors[at.Tensor];
            return true;
        }
        tensor = default;
        return false;
    }

    /// <summary>The tensor called <paramref name="name"/>; throws <see cref="ModelFormatException"/> naming the checkpoint and the tensor when absent.</summary>
    public TensorView GetTensor(string name) =>
        TryGetTensor(name, out var t) ? t : throw new ModelFormatException(IndexPath ?? _files[0].Path, $"tensor '{name}' not found");

    /// <summary>The file that holds tensor <paramref name="name"/> (for its path and file offset); throws <see cref="ModelFormatException"/> when absent.</summary>
    public SafetensorsFile GetFile(string name) =>
        _byName.TryGetValue(name, out var at) ? _files[at.File] : throw new ModelFormatException(IndexPath ?? _files[0].Path, $"tensor '{name}' not found");

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
