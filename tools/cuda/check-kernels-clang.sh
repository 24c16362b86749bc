#!/usr/bin/env bash
# Compiles the embedded CUDA kernels to PTX with clang (no CUDA toolkit needed) to catch syntax and type errors before a
# GPU run: the CUDA built-ins NVRTC provides are mapped onto clang's NVPTX built-ins in a small prelude.
# Usage: tools/cuda/check-kernels-clang.sh [clang]   (default: the first of clang, clang-18 … clang-14 found)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
kernels="$root/src/Pregate.Cuda/Kernels"
clang="${1:-}"
if [ -z "$clang" ]; then
  for c in clang clang-18 clang-17 clang-16 clang-15 clang-14; do
    if command -v "$c" >/dev/null; then clang="$c"; break; fi
  done
fi
[ -n "$clang" ] || { echo "no clang found" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/crt"
touch "$work/crt/sm_70_rt.hpp"
cat > "$work/prelude.h" <<'PRELUDE'
#include <stddef.h>
#include <limits.h>
#define HUGE_VAL __builtin_huge_val()
#define HUGE_VALF __builtin_huge_valf()
#define __host__ __attribute__((host))
#define __device__ __attribute__((device))
#define __global__ __attribute__((global))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __align__(n) __attribute__((aligned(n)))
#define CUDA_VERSION 11000
#include <__clang_cuda_builtin_vars.h>
#include <__clang_cuda_libdevice_declares.h>
#undef __DEVICE__
#define __DEVICE__ static __device__ __forceinline__
#include <__clang_cuda_device_functions.h>
#include <__clang_cuda_math.h>
#undef __DEVICE__
__device__ void __syncwarp(unsigned m = 0xffffffff) { __nvvm_bar_warp_sync(m); }
__device__ int __shfl_xor_sync(unsigned m, int v, int o) { return __nvvm_shfl_sync_bfly_i32(m, v, o, 0x1f); }
__device__ float __shfl_xor_sync(unsigned m, float v, int o) { return __nvvm_shfl_sync_bfly_f32(m, v, o, 0x1f); }
__device__ double __shfl_xor_sync(unsigned m, double v, int o)
{
    long long x = __double_as_longlong(v);
    int lo = __shfl_xor_sync(m, (int)x, o), hi = __shfl_xor_sync(m, (int)(x >> 32), o);
    return __longlong_as_double(((long long)hi << 32) | (unsigned)lo);
}
PRELUDE
{
  echo "#include \"$work/prelude.h\""
  for f in common.cuh $(cd "$kernels" && ls *.cu | sort); do
    echo "#line 1 \"$f\""
    cat "$kernels/$f"
  done
} > "$work/all.cu"
"$clang" -x cuda --cuda-device-only -nocudainc -nocudalib --cuda-gpu-arch=sm_80 -Xclang -target-feature -Xclang +ptx70 \
  -std=c++17 -Wall -I"$work" -S -o "$work/all.ptx" "$work/all.cu"
grep -o '\.entry [a-z_0-9]*' "$work/all.ptx" | sed 's/.entry /kernel: /'
