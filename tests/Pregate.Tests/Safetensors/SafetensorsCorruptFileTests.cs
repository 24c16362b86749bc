// Named malformed safetensors files: each must fail with a ModelFormatException that names the file and the problem.
using System.Text;
using Pregate.Core;
using Pregate.Formats.Safetensors;
using Xunit.Abstractions;
using static Pregate.Tests.Safetensors.SafetensorsTestFiles;

namespace Pregate.Tests.Safetensors;

public sealed class SafetensorsCorruptFileTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempFolder _dir = new();

    public void Dispose() => _dir.Dispose();

    private const string ValidHeader = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""";

    private string Write(byte[] bytes)
    {
        string path = _dir.File($"case-{Guid.NewGuid():N}.safetensors");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private void Rejected(byte[] bytes, string expected) => RejectedPath(Write(bytes), expected);

    private void RejectedPath(string path, string expected)
    {
        var e = Assert.Throws<ModelFormatException>(() => SafetensorsFile.Open(path).Dispose());
        output.WriteLine(e.Message);
        Assert.Equal(path, e.FilePath);
        Assert.StartsWith(path, e.Message);
        Assert.Contains(expected, e.Message);
    }

    private void Header(string header, int dataBytes, string expected) => Rejected(Raw(header, new byte[dataBytes]), expected);

    private SafetensorsFile Open(string header, int dataBytes) => SafetensorsFile.Open(Write(Raw(header, RandomBytes(1, dataBytes))));

    // ---- accepted variants --------------------------------------------------------------------------------

    [Fact]
    public void BaselineIsValid()
    {
        using var f = Open(ValidHeader, 8);
        Assert.Equal([2L], f.GetTensor("a").Shape);
    }

    [Fact]
    public void TrailingSpacesAndNewlinesAfterTheHeaderAreAllowed()
    {
        using var f = Open(ValidHeader + "      \n ", 8);
        Assert.Single(f.Tensors);
    }

    [Fact]
    public void UnknownEntryFieldsAreIgnored()
    {
        using var f = Open("""{"a":{"dtype":"F32","extra":{"x":[1,2]},"shape":[2],"data_offsets":[0,8]}}""", 8);
        Assert.Single(f.Tensors);
    }

    [Fact]
    public void NullMetadataIsEmpty()
    {
        using var f = Open("""{"__metadata__":null,"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8);
        Assert.Empty(f.Metadata);
    }

    [Fact]
    public void TensorsListedOutOfOffsetOrderComeBackInFileOrder()
    {
        using var f = Open("""{"b":{"dtype":"I8","shape":[4],"data_offsets":[4,8]},"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]},"z":{"dtype":"I8","shape":[0],"data_offsets":[8,8]}}""", 8);
        Assert.Equal(["a", "b", "z"], f.Tensors.Select(t => t.Name));
        Assert.Equal(0, f.GetTensor("z").ByteLength);
    }

    // ---- length field -------------------------------------------------------------------------------------

    [Fact]
    public void EmptyFile() => Rejected([], "too short");

    [Fact]
    public void FileShorterThanTheLengthField() => Rejected([1, 0, 0, 0, 0, 0, 0], "too short");

    [Fact]
    public void HeaderLengthBeyondTheFile() => Rejected(Raw(ValidHeader, new byte[8], headerLength: 1000), "exceeds the");

    [Fact]
    public void HeaderLengthOfUInt64Max() => Rejected(Raw(ValidHeader, new byte[8], headerLength: ulong.MaxValue), "exceeds the");

    [Fact]
    public void HeaderLengthAboveTheLimitInAFileLargeEnoughToHoldIt()
    {
        // A sparse file a little over the limit: the limit is checked before the header is read.
        string path = _dir.File("huge.safetensors");
        using (var fs = new FileStream(path, FileMode.CreateNew))
        {
            fs.Write(Raw("", null, headerLength: SafetensorsFile.MaxHeaderBytes + 1));
            fs.SetLength(SafetensorsFile.MaxHeaderBytes + 64);
        }
        RejectedPath(path, "limit");
    }

    [Fact]
    public void HeaderLengthZero() => Rejected(Raw("", new byte[8]), "empty");

    // ---- header text --------------------------------------------------------------------------------------

    [Fact]
    public void HeaderNotStartingWithABrace() => Header(" " + ValidHeader, 8, "does not start with '{'");

    [Fact]
    public void HeaderIsAJsonArray() => Header("[1,2,3]", 0, "does not start with '{'");

    [Fact]
    public void HeaderIsNotValidUtf8()
    {
        byte[] header = Encoding.UTF8.GetBytes("{\"a\u00e9\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}");
        int at = Array.IndexOf(header, (byte)0xC3);
        header[at] = 0xFF;
        Rejected(Raw(header, new byte[8]), "UTF-8");
    }

    [Fact]
    public void HeaderJsonIsTruncated() => Header("""{"a":{"dtype":"F32","shape":[2],""", 0, "not valid JSON");

    [Fact]
    public void HeaderHasGarbageAfterTheObject() => Header(ValidHeader + "}", 8, "not valid JSON");

    [Fact]
    public void HeaderPaddedWithNulBytes() => Header(ValidHeader + "\0\0\0", 8, "not valid JSON");

    [Fact]
    public void HeaderNestsTooDeeply() =>
        Header("{\"a\":{\"x\":" + new string('[', 40) + new string(']', 40) + "}}", 0, "not valid JSON");

    [Fact]
    public void HeaderNameHasALoneSurrogateEscape() =>
        Header("""{"\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8, "invalid string");

    // ---- fields -------------------------------------------------------------------------------------------

    [Fact]
    public void EntryIsNotAnObject() => Header("""{"a":5}""", 0, "tensor 'a' must be an object");

    [Fact]
    public void EntryLacksDtype() => Header("""{"a":{"shape":[2],"data_offsets":[0,8]}}""", 8, "lacks the field 'dtype'");

    [Fact]
    public void EntryLacksShape() => Header("""{"a":{"dtype":"F32","data_offsets":[0,8]}}""", 8, "lacks the field 'shape'");

    [Fact]
    public void EntryLacksDataOffsets() => Header("""{"a":{"dtype":"F32","shape":[2]}}""", 8, "lacks the field 'data_offsets'");

    [Fact]
    public void DtypeIsNotAString() => Header("""{"a":{"dtype":7,"shape":[2],"data_offsets":[0,8]}}""", 8, "'dtype' must be a string");

    [Fact]
    public void ShapeIsNotAnArray() => Header("""{"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}""", 8, "'shape' must be an array");

    [Fact]
    public void ShapeHoldsAString() => Header("""{"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}""", 8, "'shape' must hold integers");

    [Fact]
    public void ShapeHoldsAFraction() => Header("""{"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}""", 8, "not an integer");

    [Fact]
    public void ShapeHasMoreDimensionsThanTheRankLimit() =>
        Header("{\"a\":{\"dtype\":\"F32\",\"shape\":[" + string.Join(",", Enumerable.Repeat(1, 17)) + "],\"data_offsets\":[0,4]}}", 4, "more than 16 entries");

    [Fact]
    public void DataOffsetsHaveThreeNumbers() => Header("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}""", 8, "more than 2 entries");

    [Fact]
    public void DataOffsetsHaveOneNumber() => Header("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[8]}}""", 8, "must hold 2 numbers");

    [Fact]
    public void DataOffsetBeyondInt64() => Header("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551616]}}""", 8, "64-bit range");

    [Fact]
    public void UnsupportedDtypeNamesTensorAndDtype() => Header("""{"w":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}""", 8, "tensor 'w' has dtype 'F8_E4M3'");

    [Fact]
    public void LowercaseDtypeIsNotAFormatName() => Header("""{"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}""", 8, "dtype 'f32'");

    [Fact]
    public void NegativeDimension() => Header("""{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", 8, "negative dimension");

    [Fact]
    public void ShapeProductOverflows() =>
        Header("""{"a":{"dtype":"I8","shape":[4294967296,4294967296],"data_offsets":[0,8]}}""", 8, "more elements than fit in 64 bits");

    [Fact]
    public void ByteCountOverflows() =>
        Header("""{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}}""", 8, "do not fit");

    [Fact]
    public void ByteRangeDisagreesWithShape() => Header("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}""", 4, "needs 8");

    [Fact]
    public void NegativeDataOffset() => Header("""{"a":{"dtype":"F32","shape":[0],"data_offsets":[-8,-8]}}""", 0, "negative data_offsets");

    [Fact]
    public void BeginAfterEnd() => Header("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}""", 8, "begin after end");

    [Fact]
    public void TensorRunsPastTheDataArea() => Header("""{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 8, "past the end");

    [Fact]
    public void TensorsOverlap() =>
        Header("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12, "overlap");

    [Fact]
    public void ZeroSizeTensorInsideAnotherOverlaps() =>
        Header("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}""", 8, "overlap");

    [Fact]
    public void HoleBetweenTensors() =>
        Header("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", 12, "belong to no tensor");

    [Fact]
    public void BytesAfterTheLastTensor() => Header(ValidHeader, 12, "belong to no tensor");

    [Fact]
    public void DataWithoutAnyTensor() => Header("{}", 8, "belong to no tensor");

    // ---- duplicates ---------------------------------------------------------------------------------------

    [Fact]
    public void DuplicateTensorName() =>
        Header("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "tensor 'a' appears twice");

    [Fact]
    public void DuplicateTensorNameSpelledWithAnEscape() =>
        Header("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\u0061":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "appears twice");

    [Fact]
    public void DuplicateFieldInAnEntry() =>
        Header("""{"a":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}}""", 8, "field 'dtype' twice");

    [Fact]
    public void DuplicateMetadataObject() =>
        Header("""{"__metadata__":{},"__metadata__":{},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8, "duplicate key '__metadata__'");

    [Fact]
    public void DuplicateKeyInsideMetadata() =>
        Header("""{"__metadata__":{"k":"1","k":"2"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8, "key 'k' twice");

    // ---- metadata -----------------------------------------------------------------------------------------

    [Fact]
    public void MetadataIsNotAnObject() =>
        Header("""{"__metadata__":["x"],"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8, "must be an object of strings");

    [Fact]
    public void MetadataValueIsNotAString() =>
        Header("""{"__metadata__":{"total":5},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8, "value of 'total' must be a string");

    // ---- the file itself ----------------------------------------------------------------------------------

    [Fact]
    public void FileDoesNotExist() => RejectedPath(_dir.File("absent.safetensors"), "not found");
}
