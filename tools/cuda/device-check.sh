#!/usr/bin/env bash
# The CUDA backend's check on a GPU machine that has no .NET: runs the self-contained CLI published beforehand into
# .device/pregate (see tools/cuda/README.md), writing seven logs to the folder $OUT:
#   environment.txt   nvidia-smi, and where libcuda / libnvrtc / libcublas are on this machine
#   selftest.txt      CUDA vs CPU logits on the tiny models of every family (F32, F16, Q8_0), offloaded = resident, cuBLAS
#   selftest-mini.txt the same on a larger synthetic Mixtral (4 layers of mixtral-mini, Q8_0)
#   bench-*.txt       decode/prefill speed (the JSON with its log): CUDA resident, CUDA with half the experts in VRAM, CPU
#   summary.txt       one line per step with its exit code, and the synth output
# Each step has its own time limit; the script always finishes and returns non-zero when a step failed.
set -u
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${OUT:-$root/.device/out}"
mkdir -p "$out"
bin="$root/.device/pregate/Pregate.Cli"
work="$(mktemp -d)"
export PREGATE_CUDA_CACHE="$work/kernel-cache"
export DOTNET_BUNDLE_EXTRACT_BASE_DIR="$work/bundle"
# NVRTC loads its builtins library through the loader path; the toolkit folder goes last so a pip install can win.
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64"
summary="$out/summary.txt"
: > "$summary"
failed=0

step() {   # step NAME LIMIT_SECONDS LOG COMMAND...
  local name="$1" limit="$2" log="$3"
  shift 3
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - start)) s ($log)" | tee -a "$summary"
  [ $rc -eq 0 ] || failed=1
  return 0
}

if [ ! -x "$bin" ]; then
  echo "missing $bin: publish the CLI first (tools/cuda/README.md)" | tee -a "$summary"
  exit 2
fi

step environment 60 environment.txt bash -c 'nvidia-smi; ldconfig -p | grep -E "libcuda\.|libnvrtc|libcublas"; ls -d /usr/local/cuda*/lib64 2>/dev/null; echo "CUDA_HOME=${CUDA_HOME:-}"; echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"'
step selftest 300 selftest.txt "$bin" selftest --backend cuda
step synth-mini 120 synth-mini.txt "$bin" synth --shape mixtral-mini --layers 4 --dtype q8_0 --out "$work/mini.gguf"
cat "$out/synth-mini.txt" >> "$summary"
rm -f "$out/synth-mini.txt"
if [ -f "$work/mini.gguf" ]; then
  step selftest-mini 180 selftest-mini.txt "$bin" selftest --backend cuda --model "$work/mini.gguf" --tokens 8
  step bench-cuda-resident 120 bench-cuda-resident.txt "$bin" bench --model "$work/mini.gguf" --backend cuda --expert-memory all --prompt-tokens 32 --gen-tokens 32 --rounds 2 --json
  step bench-cuda-offload 120 bench-cuda-offload.txt "$bin" bench --model "$work/mini.gguf" --backend cuda --expert-memory 50% --prompt-tokens 32 --gen-tokens 32 --rounds 2 --json
  step bench-cpu 180 bench-cpu.txt "$bin" bench --model "$work/mini.gguf" --backend cpu --expert-memory all --prompt-tokens 32 --gen-tokens 32 --rounds 2 --json
fi
rm -rf "$work"
echo "overall: $([ $failed -eq 0 ] && echo passed || echo FAILED)" | tee -a "$summary"
exit $failed
