// The CUDA driver API (libcuda.so.1, cuda.h) through function pointers resolved once per process handle: the calls the
// backend needs for devices, the primary context, memory, streams, events, modules and launches. Every call is checked.
using System.Runtime.InteropServices;

namespace Pregate.Cuda.Native;

/// <summary>Driver API entry points; every method throws <see cref="CudaException"/> naming the call and the CUDA error.</summary>
public sealed unsafe class CudaDriver
{
    /// <summary>CU_DEVICE_ATTRIBUTE_* numbers used here (cuda.h).</summary>
    public const int AttributeMultiprocessorCount = 16, AttributeComputeCapabilityMajor = 75, AttributeComputeCapabilityMinor = 76;

    private const uint StreamNonBlocking = 1, EventDisableTiming = 2, HostAllocPortable = 1;

    private readonly delegate* unmanaged<uint, int> _init;
    private readonly delegate* unmanaged<int*, int> _driverGetVersion;
    private readonly delegate* unmanaged<int*, int> _deviceGetCount;
    private readonly delegate* unmanaged<int*, int, int> _deviceGet;
    private readonly delegate* unmanaged<byte*, int, int, int> _deviceGetName;
    private readonly delegate* unmanaged<int*, int, int, int> _deviceGetAttribute;
    private readonly delegate* unmanaged<nuint*, int, int> _deviceTotalMem;
    private readonly delegate* unmanaged<IntPtr*, int, int> _primaryCtxRetain;
    private readonly delegate* unmanaged<int, int> _primaryCtxRelease;
    private readonly delegate* unmanaged<IntPtr, int> _ctxSetCurrent;
    private readonly delegate* unmanaged<nuint*, nuint*, int> _memGetInfo;
    private readonly delegate* unmanaged<ulong*, nuint, int> _memAlloc;
    private readonly delegate* unmanaged<ulong, int> _memFree;
    private readonly delegate* unmanaged<void**, nuint, uint, int> _memHostAlloc;
    private readonly delegate* unmanaged<void*, int> _memFreeHost;
    private readonly delegate* unmanaged<ulong, void*, nuint, IntPtr, int> _memcpyHtoDAsync;
    private readonly delegate* unmanaged<void*, ulong, nuint, IntPtr, int> _memcpyDtoHAsync;
    private readonly delegate* unmanaged<ulong, ulong, nuint, IntPtr, int> _memcpyDtoDAsync;
    private readonly delegate* unmanaged<ulong, uint, nuint, IntPtr, int> _memsetD32Async;
    private readonly delegate* unmanaged<IntPtr*, uint, int> _streamCreate;
    private readonly delegate* unmanaged<IntPtr, int> _streamDestroy;
    private readonly delegate* unmanaged<IntPtr, int> _streamSynchronize;
    private readonly delegate* unmanaged<IntPtr, IntPtr, uint, int> _streamWaitEvent;
    private readonly delegate* unmanaged<IntPtr*, uint, int> _eventCreate;
    private readonly delegate* unmanaged<IntPtr, IntPtr, int> _eventRecord;
    private readonly delegate* unmanaged<IntPtr, int> _eventDestroy;
    private readonly delegate* unmanaged<IntPtr*, void*, int> _moduleLoadData;
    private readonly delegate* unmanaged<IntPtr, int> _moduleUnload;
    private readonly delegate* unmanaged<IntPtr*, IntPtr, byte*, int> _moduleGetFunction;
    private readonly delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, IntPtr, void**, void**, int> _launchKernel;
    private readonly delegate* unmanaged<int, byte**, int> _getErrorName;
    private readonly delegate* unmanaged<int, byte**, int> _getErrorString;

    /// <summary>Binds the driver API in an already loaded libcuda handle and calls cuInit(0).</summary>
    /// <exception cref="CudaException">An entry point is missing or cuInit fails (e.g. no device, driver/library mismatch).</exception>
    public CudaDriver(IntPtr library)
    {
        IntPtr F(string name) => NativeLibraries.Export(library, "libcuda", name);
        _init = (delegate* unmanaged<uint, int>)F("cuInit");
        _driverGetVersion = (delegate* unmanaged<int*, int>)F("cuDriverGetVersion");
        _deviceGetCount = (delegate* unmanaged<int*, int>)F("cuDeviceGetCount");
        _deviceGet = (delegate* unmanaged<int*, int, int>)F("cuDeviceGet");
        _deviceGetName = (delegate* unmanaged<byte*, int, int, int>)F("cuDeviceGetName");
        _deviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)F("cuDeviceGetAttribute");
        _deviceTotalMem = (delegate* unmanaged<nuint*, int, int>)F("cuDeviceTotalMem_v2");
        _primaryCtxRetain = (delegate* unmanaged<IntPtr*, int, int>)F("cuDevicePrimaryCtxRetain");
        _primaryCtxRelease = (delegate* unmanaged<int, int>)F("cuDevicePrimaryCtxRelease_v2");
        _ctxSetCurrent = (delegate* unmanaged<IntPtr, int>)F("cuCtxSetCurrent");
        _memGetInfo = (delegate* unmanaged<nuint*, nuint*, int>)F("cuMemGetInfo_v2");
        _memAlloc = (delegate* unmanaged<ulong*, nuint, int>)F("cuMemAlloc_v2");
        _memFree = (delegate* unmanaged<ulong, int>)F("cuMemFree_v2");
        _memHostAlloc = (delegate* unmanaged<void**, nuint, uint, int>)F("cuMemHostAlloc");
        _memFreeHost = (delegate* unmanaged<void*, int>)F("cuMemFreeHost");
        _memcpyHtoDAsync = (delegate* unmanaged<ulong, void*, nuint, IntPtr, int>)F("cuMemcpyHtoDAsync_v2");
        _memcpyDtoHAsync = (delegate* unmanaged<void*, ulong, nuint, IntPtr, int>)F("cuMemcpyDtoHAsync_v2");
        _memcpyDtoDAsync = (delegate* unmanaged<ulong, ulong, nuint, IntPtr, int>)F("cuMemcpyDtoDAsync_v2");
        _memsetD32Async = (delegate* unmanaged<ulong, uint, nuint, IntPtr, int>)F("cuMemsetD32Async");
        _streamCreate = (delegate* unmanaged<IntPtr*, uint, int>)F("cuStreamCreate");
        _streamDestroy = (delegate* unmanaged<IntPtr, int>)F("cuStreamDestroy_v2");
        _streamSynchronize = (delegate* unmanaged<IntPtr, int>)F("cuStreamSynchronize");
        _streamWaitEvent = (delegate* unmanaged<IntPtr, IntPtr, uint, int>)F("cuStreamWaitEvent");
        _eventCreate = (delegate* unmanaged<IntPtr*, uint, int>)F("cuEventCreate");
        _eventRecord = (delegate* unmanaged<IntPtr, IntPtr, int>)F("cuEventRecord");
        _eventDestroy = (delegate* unmanaged<IntPtr, int>)F("cuEventDestroy_v2");
        _moduleLoadData = (delegate* unmanaged<IntPtr*, void*, int>)F("cuModuleLoadData");
        _moduleUnload = (delegate* unmanaged<IntPtr, int>)F("cuModuleUnload");
        _moduleGetFunction = (delegate* unmanaged<IntPtr*, IntPtr, byte*, int>)F("cuModuleGetFunction");
        _launchKernel = (delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, IntPtr, void**, void**, int>)F("cuLaunchKernel");
        _getErrorName = (delegate* unmanaged<int, byte**, int>)F("cuGetErrorName");
        _getErrorString = (delegate* unmanaged<int, byte**, int>)F("cuGetErrorString");
        Check(_init(0), "cuInit");
    }

    /// <summary>"CUDA_ERROR_OUT_OF_MEMORY (out of memory)" for a CUresult.</summary>
    public string ErrorText(int result)
    {
        byte* name = null, text = null;
        string n = _getErrorName(result, &name) == 0 && name != null ? Marshal.PtrToStringUTF8((IntPtr)name)! : $"CUresult {result}";
        string t = _getErrorString(result, &text) == 0 && text != null ? Marshal.PtrToStringUTF8((IntPtr)text)! : "unknown error";
        return $"{n} ({t})";
    }

    private void Check(int result, string call)
    {
        if (result != 0) throw new CudaException($"CUDA backend: {call} failed: {ErrorText(result)}");
    }

    public int DriverVersion() { int v; Check(_driverGetVersion(&v), "cuDriverGetVersion"); return v; }

    public int DeviceCount() { int n; Check(_deviceGetCount(&n), "cuDeviceGetCount"); return n; }

    public int Device(int ordinal) { int d; Check(_deviceGet(&d, ordinal), "cuDeviceGet"); return d; }

    public string DeviceName(int device)
    {
        byte* name = stackalloc byte[256];
        Check(_deviceGetName(name, 256, device), "cuDeviceGetName");
        return Marshal.PtrToStringUTF8((IntPtr)name)!;
    }

    public int DeviceAttribute(int device, int attribute) { int v; Check(_deviceGetAttribute(&v, attribute, device), "cuDeviceGetAttribute"); return v; }

    public long DeviceTotalMemory(int device) { nuint b; Check(_deviceTotalMem(&b, device), "cuDeviceTotalMem"); return (long)b; }

    public IntPtr RetainPrimaryContext(int device) { IntPtr c; Check(_primaryCtxRetain(&c, device), "cuDevicePrimaryCtxRetain"); return c; }

    public void ReleasePrimaryContext(int device) => Check(_primaryCtxRelease(device), "cuDevicePrimaryCtxRelease");

    public void SetCurrent(IntPtr context) => Check(_ctxSetCurrent(context), "cuCtxSetCurrent");

    public (long Free, long Total) MemoryInfo() { nuint f, t; Check(_memGetInfo(&f, &t), "cuMemGetInfo"); return ((long)f, (long)t); }

    public ulong Alloc(long bytes)
    {
        ulong p;
        int r = _memAlloc(&p, (nuint)Math.Max(bytes, 1));
        if (r != 0) throw new CudaException($"CUDA backend: cuMemAlloc of {bytes} bytes failed: {ErrorText(r)}");
        return p;
    }

    public void Free(ulong pointer) => Check(_memFree(pointer), "cuMemFree");

    /// <summary>Page-locked host memory (portable across contexts) the copy engines read directly.</summary>
    public byte* HostAlloc(long bytes)
    {
        void* p;
        int r = _memHostAlloc(&p, (nuint)Math.Max(bytes, 1), HostAllocPortable);
        if (r != 0) throw new CudaException($"CUDA backend: cuMemHostAlloc of {bytes} bytes (pinned host memory) failed: {ErrorText(r)}");
        return (byte*)p;
    }

    public void FreeHost(void* pointer) => Check(_memFreeHost(pointer), "cuMemFreeHost");

    public void CopyToDevice(ulong dst, void* src, long bytes, IntPtr stream) => Check(_memcpyHtoDAsync(dst, src, (nuint)bytes, stream), "cuMemcpyHtoDAsync");

    public void CopyToHost(void* dst, ulong src, long bytes, IntPtr stream) => Check(_memcpyDtoHAsync(dst, src, (nuint)bytes, stream), "cuMemcpyDtoHAsync");

    public void CopyOnDevice(ulong dst, ulong src, long bytes, IntPtr stream) => Check(_memcpyDtoDAsync(dst, src, (nuint)bytes, stream), "cuMemcpyDtoDAsync");

    public void Fill32(ulong dst, uint value, long count, IntPtr stream) => Check(_memsetD32Async(dst, value, (nuint)count, stream), "cuMemsetD32Async");

    /// <summary>A stream that does not synchronise with the legacy default stream.</summary>
    public IntPtr CreateStream() { IntPtr s; Check(_streamCreate(&s, StreamNonBlocking), "cuStreamCreate"); return s; }

    public void DestroyStream(IntPtr stream) => Check(_streamDestroy(stream), "cuStreamDestroy");

    public void Synchronize(IntPtr stream) => Check(_streamSynchronize(stream), "cuStreamSynchronize");

    public void WaitEvent(IntPtr stream, IntPtr ev) => Check(_streamWaitEvent(stream, ev, 0), "cuStreamWaitEvent");

    public IntPtr CreateEvent() { IntPtr e; Check(_eventCreate(&e, EventDisableTiming), "cuEventCreate"); return e; }

    public void Record(IntPtr ev, IntPtr stream) => Check(_eventRecord(ev, stream), "cuEventRecord");

    public void DestroyEvent(IntPtr ev) => Check(_eventDestroy(ev), "cuEventDestroy");

    public IntPtr LoadModule(ReadOnlySpan<byte> image)
    {
        IntPtr m;
        fixed (byte* p = image) Check(_moduleLoadData(&m, p), "cuModuleLoadData");
        return m;
    }

    public void UnloadModule(IntPtr module) => Check(_moduleUnload(module), "cuModuleUnload");

    public IntPtr Function(IntPtr module, string name)
    {
        IntPtr f;
        byte[] utf8 = System.Text.Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* p = utf8)
        {
            int r = _moduleGetFunction(&f, module, p);
            if (r != 0) throw new CudaException($"CUDA backend: kernel {name} not found in the compiled module: {ErrorText(r)}");
        }
        return f;
    }

    /// <summary>Launches <paramref name="function"/>; <paramref name="arguments"/> holds one pointer per kernel parameter.</summary>
    public void Launch(IntPtr function, string name, LaunchGeometry g, IntPtr stream, void** arguments)
    {
        int r = _launchKernel(function, g.GridX, g.GridY, 1, g.BlockX, g.BlockY, 1, g.SharedBytes, stream, arguments, null);
        if (r != 0) throw new CudaException($"CUDA backend: launch of {name} ({g}) failed: {ErrorText(r)}");
    }
}
