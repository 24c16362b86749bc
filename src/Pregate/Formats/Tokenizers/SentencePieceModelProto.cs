// Reader for SentencePiece's tokenizer.model (protobuf ModelProto of sentencepiece_model.proto): pieces with
// score and type, trainer_spec (model_type 3, byte_fallback 35, unk/bos/eos ids 40-42), normalizer_spec
// (name 1, precompiled_charsmap 2, add_dummy_prefix 3, remove_extra_whitespaces 4, escape_whitespaces 5).
using System.Text;
using Pregate.Core;

namespace Pregate.Formats.Tokenizers;

internal sealed class SentencePieceModelProto
{
    public const int ModelTypeUnigram = 1, ModelTypeBpe = 2, ModelTypeWord = 3, ModelTypeChar = 4;

    public List<string> Pieces { get; } = [];
    public List<float> Scores { get; } = [];
    public List<int> Types { get; } = [];
    public int ModelType { get; private set; } = ModelTypeUnigram;
    public bool ByteFallback { get; private set; }
    public bool TreatWhitespaceAsSuffix { get; private set; }
    public int UnknownId { get; private set; }
    public int BosId { get; private set; } = 1;
    public int EosId { get; private set; } = 2;
    public string NormalizerName { get; private set; } = "";
    public int PrecompiledCharsmapLength { get; private set; }
    public bool AddDummyPrefix { get; private set; } = true;
    public bool RemoveExtraWhitespaces { get; private set; } = true;
    public bool EscapeWhitespaces { get; private set; } = true;

    private const int WireVarint = 0, WireFixed64 = 1, WireLength = 2, WireFixed32 = 5;
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <exception cref="ModelFormatException">The bytes are not a well-formed ModelProto.</exception>
    public static SentencePieceModelProto Parse(ReadOnlySpan<byte> data, string file)
    {
        var model = new SentencePieceModelProto();
        var reader = new Reader(data, file);
        while (!reader.AtEnd)
        {
            (int field, int wire) = reader.Key();
            switch (field)
            {
                case 1 when wire == WireLength: model.ReadPiece(reader.Bytes(), file); break;
                case 2 when wire == WireLength: model.ReadTrainerSpec(reader.Bytes(), file); break;
                case 3 when wire == WireLength: model.ReadNormalizerSpec(reader.Bytes(), file); break;
                default: reader.Skip(wire); break;
            }
        }
        return model;
    }

    private void ReadPiece(ReadOnlySpan<byte> data, string file)
    {
        var reader = new Reader(data, file);
        string? piece = null;
        float score = 0;
        int type = GgufTokenType.Normal;
        while (!reader.AtEnd)
        {
            (int field, int wire) = reader.Key();
            switch (field)
            {
                case 1 when wire == WireLength: piece = reader.String(); break;
                case 2 when wire == WireFixed32: score = BitConverter.Int32BitsToSingle((int)reader.Fixed32()); break;
                case 3 when wire == WireVarint: type = (int)reader.Varint(); break;
                default: reader.Skip(wire); break;
            }
        }
        Pieces.Add(piece ?? throw new ModelFormatException(file, $"piece #{Pieces.Count} has no text"));
        Scores.Add(score);
        Types.Add(type);
    }

    private void ReadTrainerSpec(ReadOnlySpan<byte> data, string file)
    {
        var reader = new Reader(data, file);
        while (!reader.AtEnd)
        {
            (int field, int wire) = reader.Key();
            switch (field)
            {
                case 3 when wire == WireVarint: ModelType = (int)reader.Varint(); break;
                case 24 when wire == WireVarint: TreatWhitespaceAsSuffix = reader.Varint() != 0; break;
                case 35 when wire == WireVarint: ByteFallback = reader.Varint() != 0; break;
                case 40 when wire == WireVarint: UnknownId = (int)reader.Varint(); break;
                case 41 when wire == WireVarint: BosId = (int)reader.Varint(); break;
                case 42 when wire == WireVarint: EosId = (int)reader.Varint(); break;
                default: reader.Skip(wire); break;
            }
        }
    }

    private void ReadNormalizerSpec(ReadOnlySpan<byte> data, string file)
    {
        var reader = new Reader(data, file);
        while (!reader.AtEnd)
        {
            (int field, int wire) = reader.Key();
            switch (field)
            {
                case 1 when wire == WireLength: NormalizerName = reader.String(); break;
                case 2 when wire == WireLength: PrecompiledCharsmapLength = reader.Bytes().Length; break;
                case 3 when wire == WireVarint: AddDummyPrefix = reader.Varint() != 0; break;
                case 4 when wire == WireVarint: RemoveExtraWhitespaces = reader.Varint() != 0; break;
                case 5 when wire == WireVarint: EscapeWhitespaces = reader.Varint() != 0; break;
                default: reader.Skip(wire); break;
            }
        }
    }

    /// <summary>Bounds-checked protobuf wire reader.</summary>
    private ref struct Reader(ReadOnlySpan<byte> data, string file)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _pos;

        public readonly bool AtEnd => _pos >= _data.Length;

        public (int Field, int Wire) Key()
        {
            ulong key = Varint();
            int field = (int)(key >> 3);
            if (field <= 0 || key >> 3 > int.MaxValue) throw Bad("invalid field number");
            return (field, (int)(key & 7));
        }

        public ulong Varint()
        {
            ulong value = 0;
            for (int shift = 0; shift < 70; shift += 7)
            {
                if (_pos >= _data.Length) throw Bad("truncated varint");
                byte b = _data[_pos++];
                value |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0) return value;
            }
            throw Bad("varint longer than 10 bytes");
        }

        public uint Fixed32()
        {
            if (_data.Length - _pos < 4) throw Bad("truncated fixed32");
            uint v = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(_data.Slice(_pos, 4));
            _pos += 4;
            return v;
        }

        public ReadOnlySpan<byte> Bytes()
        {
            ulong length = Varint();
            if (length > (ulong)(_data.Length - _pos)) throw Bad($"a length of {length} runs past the end of its message");
            ReadOnlySpan<byte> s = _data.Slice(_pos, (int)length);
            _pos += (int)length;
            return s;
        }

        public string String()
        {
            ReadOnlySpan<byte> bytes = Bytes();
            try
            {
                return StrictUtf8.GetString(bytes);
            }
            catch (DecoderFallbackException)
            {
                throw Bad("a string is not valid UTF-8");
            }
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case WireVarint: Varint(); break;
                case WireFixed64:
                    if (_data.Length - _pos < 8) throw Bad("truncated fixed64");
                    _pos += 8;
                    break;
                case WireLength: Bytes(); break;
                case WireFixed32: Fixed32(); break;
                default: throw Bad($"unsupported wire type {wire}");
            }
        }

        private readonly ModelFormatException Bad(string what) => new(file, $"not a SentencePiece model: {what} at byte {_pos}");
    }
}
