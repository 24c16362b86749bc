// One GPU as the engine uses it: the driver bound, device 0's primary context, a compute stream and a copy stream,
// the kernels compiled (or taken from the disk cache) and loaded, and a launcher that packs kernel arguments.
using System.Runtime.InteropServices;
using Pregate.Cuda.Native;

namespace Pregate.Cuda;

/// <summary>The device, its context, streams and kernels. Not thread-safe: one caller at a time (the engine locks).</summary>
public sealed unsafe class CudaDevice : IDisposable
{
    /// <summary>What `--backend cuda` says when this machine has no NVIDIA driver.</summary>
    public const string NoDriverHint = "no NVIDIA driver on this machine";

    private readonly Dictionary<string, IntPtr> _functions = new(StringComparer.Ordinal);
    private readonly IntPtr _module;
    private readonly ulong* _argSlots;
    private readonly void** _argPointers;
    private int _argCount;
    private bool _disposed;

    private const int MaxArgs = 24;

    public CudaDriver Driver { get; }
    public int Device { get; }
    public IntPtr Context { get; }
    public IntPtr ComputeStream { get; }
    public IntPtr CopyStream { get; }
    public string Name { get; }

    /// <summary>"sm_90" for compute capability 9.0.</summary>
    public string Arch { get; }
    public string NvrtcVersion { get; }
    public IntPtr NvrtcLibrary { get; }

    /// <summary>
    /// Loads libcuda, takes device <paramref name="ordinal"/>'s primary context, compiles the embedded kernels for its
    /// architecture with NVRTC (or reads them from <paramref name="cache"/>) and creates the two streams.
    /// </summary>
    /// <exception cref="CudaException">No driver, no device, no NVRTC, or a kernel does not compile; the message says which.</exception>
    public CudaDevice(KernelCache cache, int ordinal = 0)
    {
        Driver = new CudaDriver(NativeLibraries.Load(NativeLibrarySpec.Driver, NoDriverHint));
        int count = Driver.DeviceCount();
        if (count <= ordinal) throw new CudaException($"CUDA backend: device {ordinal} asked for, the driver sees {count}");
        Device = Driver.Device(ordinal);
        Name = Driver.DeviceName(Device);
        int major = Driver.DeviceAttribute(Device, CudaDriver.AttributeComputeCapabilityMajor);
        int minor = Driver.DeviceAttribute(Device, CudaDriver.AttributeComputeCapabilityMinor);
        Arch = $"sm_{major}{minor}";
        NvrtcLibrary = NativeLibraries.Load(NativeLibrarySpec.Nvrtc, "the CUDA runtime compiler; install the CUDA toolkit or pip nvidia-cuda-nvrtc, or set CUDA_HOME");
        var nvrtc = new Nvrtc(NvrtcLibrary);
        NvrtcVersion = nvrtc.Version();
        Context = Driver.RetainPrimaryContext(Device);
        try
        {
            Driver.SetCurrent(Context);
            string source = KernelSources.CombinedSource();
            string[] options = Nvrtc.Options(Arch);
            byte[] cubin = cache.GetOrCompile(source, Arch, NvrtcVersion, options, () => nvrtc.CompileCubin(source, "pregate_kernels.cu", Arch));
            _module = Driver.LoadModule(cubin);
            foreach (string name in KernelSources.KernelNames) _functions[name] = Driver.Function(_module, name);
            ComputeStream = Driver.CreateStream();
            CopyStream = Driver.CreateStream();
        }
        catch
        {
            if (ComputeStream != 0) Driver.DestroyStream(ComputeStream);
            if (_module != 0) Driver.UnloadModule(_module);
            Driver.ReleasePrimaryContext(Device);
            throw;
        }
        _argSlots = (ulong*)NativeMemory.AllocZeroed(MaxArgs, sizeof(ulong));
        _argPointers = (void**)NativeMemory.AllocZeroed(MaxArgs, (nuint)sizeof(void*));
        for (int i = 0; i < MaxArgs; i++) _argPointers[i] = _argSlots + i;
    }

    /// <summary>One line: "NVIDIA H200 (sm_90, 139.8 GiB, driver 13.0, NVRTC 13.0)".</summary>
    public string Describe() =>
        $"{Name} ({Arch}, {Pregate.Engine.ByteSize.Format(Driver.DeviceTotalMemory(Device))}, driver {Driver.DriverVersion() / 1000}.{Driver.DriverVersion() % 1000 / 10}, NVRTC {NvrtcVersion})";

    /// <summary>Makes the context current on the calling thread.</summary>
    public void MakeCurrent() => Driver.SetCurrent(Context);

    /// <summary>Starts the argument list of the next launch.</summary>
    public CudaDevice Args()
    {
        _argCount = 0;
        return this;
    }

    private CudaDevice Slot(ulong bits)
    {
        if (_argCount == MaxArgs) throw new InvalidOperationException($"a kernel takes at most {MaxArgs} arguments here");
        _argSlots[_argCount++] = bits;
        return this;
    }

    /// <summary>A device pointer argument.</summary>
    public CudaDevice Ptr(ulong pointer) => Slot(pointer);

    public CudaDevice I32(int value) => Slot((uint)value);

    public CudaDevice I64(long value) => Slot((ulong)value);

    public CudaDevice F32(float value) => Slot(BitConverter.SingleToUInt32Bits(value));

    /// <summary>Launches <paramref name="kernel"/> on the compute stream with the arguments given since <see cref="Args"/>.</summary>
    public void Launch(string kernel, LaunchGeometry geometry)
    {
        if (!_functions.TryGetValue(kernel, out var f)) throw new CudaException($"CUDA backend: unknown kernel {kernel}");
        Driver.Launch(f, kernel, geometry, ComputeStream, _argPointers);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Driver.SetCurrent(Context);
        Driver.Synchronize(ComputeStream);
        Driver.Synchronize(CopyStream);
        Driver.DestroyStream(ComputeStream);
        Driver.DestroyStream(CopyStream);
        Driver.UnloadModule(_module);
        Driver.ReleasePrimaryContext(Device);
        NativeMemory.Free(_argSlots);
        NativeMemory.Free(_argPointers);
    }
}
