// NVRTC (libnvrtc, nvrtc.h): compiles CUDA C++ source text to a cubin for one device architecture at run time.
using System.Runtime.InteropServices;
using System.Text;

namespace Pregate.Cuda.Native;

/// <summary>The runtime compiler; <see cref="CompileCubin"/> throws <see cref="CudaException"/> with the compiler log on failure.</summary>
public sealed unsafe class Nvrtc
{
    private readonly delegate* unmanaged<int*, int*, int> _version;
    private readonly delegate* unmanaged<IntPtr*, byte*, byte*, int, byte**, byte**, int> _createProgram;
    private readonly delegate* unmanaged<IntPtr*, int> _destroyProgram;
    private readonly delegate* unmanaged<IntPtr, int, byte**, int> _compileProgram;
    private readonly delegate* unmanaged<IntPtr, nuint*, int> _getProgramLogSize;
    private readonly delegate* unmanaged<IntPtr, byte*, int> _getProgramLog;
    private readonly delegate* unmanaged<IntPtr, nuint*, int> _getCubinSize;
    private readonly delegate* unmanaged<IntPtr, byte*, int> _getCubin;
    private readonly delegate* unmanaged<int, byte*> _getErrorString;

    /// <summary>Binds NVRTC in an already loaded libnvrtc handle.</summary>
    public Nvrtc(IntPtr library)
    {
        IntPtr F(string name) => NativeLibraries.Export(library, "libnvrtc", name);
        _version = (delegate* unmanaged<int*, int*, int>)F("nvrtcVersion");
        _createProgram = (delegate* unmanaged<IntPtr*, byte*, byte*, int, byte**, byte**, int>)F("nvrtcCreateProgram");
        _destroyProgram = (delegate* unmanaged<IntPtr*, int>)F("nvrtcDestroyProgram");
        _compileProgram = (delegate* unmanaged<IntPtr, int, byte**, int>)F("nvrtcCompileProgram");
        _getProgramLogSize = (delegate* unmanaged<IntPtr, nuint*, int>)F("nvrtcGetProgramLogSize");
        _getProgramLog = (delegate* unmanaged<IntPtr, byte*, int>)F("nvrtcGetProgramLog");
        _getCubinSize = (delegate* unmanaged<IntPtr, nuint*, int>)F("nvrtcGetCUBINSize");
        _getCubin = (delegate* unmanaged<IntPtr, byte*, int>)F("nvrtcGetCUBIN");
        _getErrorString = (delegate* unmanaged<int, byte*>)F("nvrtcGetErrorString");
    }

    private void Check(int result, string call)
    {
        if (result != 0) throw new CudaException($"CUDA backend: {call} failed: {Marshal.PtrToStringUTF8((IntPtr)_getErrorString(result))}");
    }

    /// <summary>"13.0" for NVRTC 13.0.</summary>
    public string Version()
    {
        int major, minor;
        Check(_version(&major, &minor), "nvrtcVersion");
        return $"{major}.{minor}";
    }

    /// <summary>The NVRTC options for <paramref name="arch"/> (e.g. "sm_90"): a cubin for that architecture (the kernels round products explicitly where the CPU order matters).</summary>
    public static string[] Options(string arch) => [$"--gpu-architecture={arch}", "--std=c++17", "--fmad=true", "-default-device"];

    /// <summary>Compiles <paramref name="source"/> (named <paramref name="name"/> in messages) to a cubin for <paramref name="arch"/>.</summary>
    /// <exception cref="CudaException">The source does not compile; the message holds the compiler log.</exception>
    public byte[] CompileCubin(string source, string name, string arch)
    {
        IntPtr program;
        byte[] src = Encoding.UTF8.GetBytes(source + "\0"), file = Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* s = src) fixed (byte* f = file) Check(_createProgram(&program, s, f, 0, null, null), "nvrtcCreateProgram");
        try
        {
            string[] options = Options(arch);
            var utf8 = options.Select(o => Encoding.UTF8.GetBytes(o + "\0")).ToArray();
            var handles = utf8.Select(b => GCHandle.Alloc(b, GCHandleType.Pinned)).ToArray();
            int result;
            try
            {
                byte** pointers = stackalloc byte*[utf8.Length];
                for (int i = 0; i < utf8.Length; i++) pointers[i] = (byte*)handles[i].AddrOfPinnedObject();
                result = _compileProgram(program, utf8.Length, pointers);
            }
            finally
            {
                foreach (var h in handles) h.Free();
            }
            if (result != 0)
                throw new CudaException($"CUDA backend: kernel source {name} does not compile for {arch} ({Marshal.PtrToStringUTF8((IntPtr)_getErrorString(result))}):\n{Log(program)}");
            nuint size;
            Check(_getCubinSize(program, &size), "nvrtcGetCUBINSize");
            var cubin = new byte[(int)size];
            fixed (byte* c = cubin) Check(_getCubin(program, c), "nvrtcGetCUBIN");
            return cubin;
        }
        finally
        {
            _destroyProgram(&program);
        }
    }

    private string Log(IntPtr program)
    {
        nuint size;
        if (_getProgramLogSize(program, &size) != 0 || size <= 1) return "(no compiler log)";
        var log = new byte[(int)size];
        fixed (byte* l = log) if (_getProgramLog(program, l) != 0) return "(no compiler log)";
        return Encoding.UTF8.GetString(log, 0, log.Length - 1);
    }
}
