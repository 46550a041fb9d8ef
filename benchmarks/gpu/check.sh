#!/usr/bin/env bash
# The one prepared script for a GPU machine: builds the device tests and benchmarks with nvcc
# alone (no CMake configure: that machine has none of Debian's packages), from this checkout's
# headers and a folder staged by benchmarks/gpu/stage.sh; checks that every header came from the
# checkout, that folder, the CUDA toolkit or the C/C++ system; runs the device tests (exit 77 =
# skipped, no device) and the scan bandwidth benchmark; writes a summary.
#
#   bash benchmarks/gpu/check.sh [DEPS]      (default build/gpu-deps)
#   NVCC=/path/to/nvcc bash benchmarks/gpu/check.sh   (default: nvcc on PATH, else /usr/local/cuda)
#   SEQSWAP_CHECK_BUILD="test_cuda_scan test_cuda_backend" bash benchmarks/gpu/check.sh DEPS
#       header-checks every target but builds and runs only those named (ctest's proof on a
#       machine without a GPU: the CMake build has already compiled every device target there)
#   SEQSWAP_CHECK_REUSE=1 bash benchmarks/gpu/check.sh DEPS
#       runs the binaries already in build/gpu-check (built here by an earlier run and carried:
#       nvcc on 2 cores is cheaper than on a leased GPU machine) where every library they need
#       loads there (ldd), and builds only the others; the header check ran where they were built
#
# Output: build/gpu-check/ (binaries, logs) and summary.txt there, also copied to $OUT when the
# caller sets it (the device tool's folder that comes back). On a machine without a GPU the
# build and the header check run and every device step reports "skipped".
# Status: the device code is the linear-recurrence scan (forward, reverse, backward), the
# streamed masked softmax attention (forward and backward, every policy; key tiles in shared
# memory, one query row per thread), layer norm, GELU, softmax cross-entropy, AdamW, the linear
# maps through cuBLAS, halting's row gather/scatter, the embeddings, every mixer's step, and the
# ViT's layers on backend::Cuda (test_cuda_vit: the teacher's logits, gradients and training
# steps against the host; students and the halting ViT too). Timed: the scans against a device
# copy, the attention forward beside PyTorch's SDPA and the teacher's training step beside
# PyTorch eager's (both when torch imports with CUDA), and a selective-SSM student's training
# step. First run on an H200 on 2026-12-04: every test passed (after a fix to two of
# test_cuda_rows's references); the numbers are in docs/results/gpu-h200-2026-12-04.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
deps=${1:-build/gpu-deps}
work=build/gpu-check
fail() { echo "check.sh: $*" >&2; exit 1; }
[ -d "$deps/include/Eigen" ] && [ -d "$deps/include/nlohmann" ] ||
  { echo "check.sh: expected $deps/include/Eigen and $deps/include/nlohmann (stage them with benchmarks/gpu/stage.sh on a machine with Debian's packages and carry the folder)" >&2; exit 2; }
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[ -x "$nvcc" ] || { echo "check.sh: no nvcc (expected on PATH or at /usr/local/cuda/bin/nvcc; set NVCC)" >&2; exit 2; }
cuda_root=$(cd "$(dirname "$(readlink -f "$nvcc")")/.." && pwd)
deps_abs=$(cd "$deps" && pwd)
mkdir -p "$work"
summary="$work/summary.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }

say "== seqswap GPU check, $(git rev-parse --short HEAD 2>/dev/null || echo 'no git'), $(date -u +%Y-%m-%dT%H:%MZ)"
say "nvcc: $("$nvcc" --version | tail -1)"
say "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'none found')"
say "deps: $deps ($(head -1 "$deps/MANIFEST" 2>/dev/null || echo 'no MANIFEST'))"

flags=(-std=c++20 -O3 -arch=sm_90 --expt-relaxed-constexpr -Xcudafe=--diag_suppress=20012 -Xcudafe=--diag_suppress=554
       -Iinclude -Itests/cuda -isystem "$deps_abs/include")
declare -A sources=(
  [test_cuda_scan]="tests/cuda/test_cuda_scan.cu"
  [test_cuda_link]="tests/cuda/link_a.cu tests/cuda/link_b.cu"
  [test_cuda_backend]="tests/cuda/test_cuda_backend.cu"
  [test_cuda_attention]="tests/cuda/test_cuda_attention.cu"
  [test_cuda_rows]="tests/cuda/test_cuda_rows.cu"
  [test_cuda_gemm]="tests/cuda/test_cuda_gemm.cu"
  [test_cuda_pack]="tests/cuda/test_cuda_pack.cu"
  [test_cuda_vit]="tests/cuda/test_cuda_vit.cpp examples/cuda/device_ops.cu"
  [bench_cuda_teacher]="benchmarks/gpu/bench_cuda_teacher.cu"
  [bench_cuda_scan]="benchmarks/gpu/bench_cuda_scan.cu"
  [bench_cuda_attention]="benchmarks/gpu/bench_cuda_attention.cu"
)
names=(test_cuda_scan test_cuda_link test_cuda_backend test_cuda_attention test_cuda_rows test_cuda_gemm test_cuda_pack
       test_cuda_vit bench_cuda_scan bench_cuda_attention bench_cuda_teacher)
build=("${names[@]}")
if [ -n "${SEQSWAP_CHECK_BUILD:-}" ]; then
  read -r -a build <<<"$SEQSWAP_CHECK_BUILD"
  for n in "${build[@]}"; do
    [ -n "${sources[$n]:-}" ] || fail "SEQSWAP_CHECK_BUILD: expected target names among ${names[*]}, found '$n'"
  done
fi
built() { [[ " ${build[*]} " == *" $1 "* ]]; }

# The header check: every dependency is in the checkout (relative), the staged folder, the CUDA
# toolkit, or the C/C++ system headers; a Debian package's header (/usr/include/eigen3,
# /usr/include/nlohmann, ...) would be missing on the GPU machine.
loads() { [ -x "$work/$1" ] && ldd "$work/$1" >/dev/null 2>&1 && ! ldd "$work/$1" | grep -q 'not found'; }
reused=()
if [ -n "${SEQSWAP_CHECK_REUSE:-}" ]; then
  rest=()
  for n in "${build[@]}"; do if loads "$n"; then reused+=("$n"); else rest+=("$n"); fi; done
  build=(${rest[@]+"${rest[@]}"})
fi
for n in "${names[@]}"; do
  [ ${#reused[@]} -eq 0 ] || [[ " ${reused[*]} " != *" $n "* ]] || continue
  for src in ${sources[$n]}; do
    "$nvcc" "${flags[@]}" -M "$src" 2>"$work/$n.deps.err" | tr ' \\' '\n\n' | grep -v -e '^$' -e ':$' >"$work/$n.deps" ||
      { cat "$work/$n.deps.err"; fail "listing the headers of $src failed"; }
    foreign=$(grep '^/' "$work/$n.deps" | xargs -r realpath -m | grep -v -e "^$deps_abs/" -e "^$cuda_root/" -e '^/usr/include/c++/' \
      -e '^/usr/lib/gcc/' -e '^/usr/include/x86_64-linux-gnu/' -e '^/usr/include/aarch64-linux-gnu/' \
      -e '^/usr/include/linux/' -e '^/usr/include/asm' -e '^/usr/include/[A-Za-z0-9_-]*\.h$' \
      -e '^/usr/include/sys/' -e '^/usr/include/bits/' -e '^/usr/include/gnu/' -e "^$PWD/" || true)
    [ -z "$foreign" ] || fail "$src includes headers outside the checkout, $deps and the toolchain: $(echo $foreign | head -c 400)"
  done
done
say "headers: every one from the checkout, $deps, the CUDA toolkit or the C/C++ system${reused[0]:+ (reused binaries: checked where they were built)}"

# Build them (all, unless SEQSWAP_CHECK_BUILD names some) side by side.
pids=()
for n in ${build[@]+"${build[@]}"}; do
  # shellcheck disable=SC2086
  "$nvcc" "${flags[@]}" -o "$work/$n" ${sources[$n]} -lcublas >"$work/$n.build.log" 2>&1 &
  pids+=($!)
done
for i in ${build[@]+"${!build[@]}"}; do
  wait "${pids[$i]}" || { cat "$work/${build[$i]}.build.log"; fail "building ${build[$i]} failed (log: $work/${build[$i]}.build.log)"; }
done
[ ${#reused[@]} -eq 0 ] || say "reused (built earlier, every library found): ${reused[*]}"
say "built: ${build[*]:-none} in $(( $(date +%s) - start )) s"
build+=(${reused[@]+"${reused[@]}"})
[ ${#build[@]} -eq ${#names[@]} ] || say "not built (SEQSWAP_CHECK_BUILD; header-checked only): $(for n in "${names[@]}"; do built "$n" || echo -n "$n "; done)"

failed=0
for n in test_cuda_scan test_cuda_link test_cuda_backend test_cuda_attention test_cuda_rows test_cuda_gemm test_cuda_pack \
         test_cuda_vit; do
  built "$n" || continue
  set +e
  timeout "${SEQSWAP_CHECK_TIMEOUT:-300}" "$work/$n" >"$work/$n.log" 2>&1
  rc=$?
  set -e
  case $rc in
    0) say "test $n: passed ($(tail -1 "$work/$n.log"))" ;;
    77) say "test $n: skipped ($(tail -1 "$work/$n.log"))" ;;
    124) say "test $n: FAILED (still running after ${SEQSWAP_CHECK_TIMEOUT:-300} s: stopped)"; sed 's/^/    /' "$work/$n.log" | tee -a "$summary"; failed=1 ;;
    *) say "test $n: FAILED (exit $rc)"; sed 's/^/    /' "$work/$n.log" | tee -a "$summary"; failed=1 ;;
  esac
done
if built bench_cuda_scan; then
  say "== scan bandwidth vs device-to-device copy"
  timeout "${SEQSWAP_CHECK_TIMEOUT:-300}" "$work/bench_cuda_scan" 2>&1 | tee -a "$summary" || { say "bench_cuda_scan: FAILED or stopped"; failed=1; }
fi
if built bench_cuda_attention; then
  say "== attention forward vs PyTorch scaled_dot_product_attention (same shapes, float32)"
  timeout "${SEQSWAP_CHECK_TIMEOUT:-300}" "$work/bench_cuda_attention" 2>&1 | tee -a "$summary" || { say "bench_cuda_attention: FAILED or stopped"; failed=1; }
fi
if built bench_cuda_attention && python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  python3 - <<'PY' 2>&1 | tee -a "$summary"
import torch, torch.nn.functional as F
torch.backends.cuda.matmul.allow_tf32 = False
for N, B in ((197, 64), (1024, 8), (4096, 1)):
    q, k, v = (torch.randn(B, 6, N, 64, device="cuda") for _ in range(3))
    F.scaled_dot_product_attention(q, k, v); torch.cuda.synchronize()
    ms = []
    for _ in range(7):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(); F.scaled_dot_product_attention(q, k, v); e1.record(); torch.cuda.synchronize()
        ms.append(e0.elapsed_time(e1))
    ms.sort()
    print(f"attention forward B {B} H 6 N {N} d 64: torch {torch.__version__} SDPA {ms[3]:.3f} ms (median of 7)")
PY
elif built bench_cuda_attention; then
  say "PyTorch with CUDA not importable here: SDPA not timed"
fi
if built bench_cuda_teacher; then
  say "== training steps (forward, cross-entropy, backward, clip, AdamW; FP32): the teacher vs PyTorch eager, a selective-SSM student"
  timeout "${SEQSWAP_CHECK_TIMEOUT:-300}" "$work/bench_cuda_teacher" 2>&1 | tee -a "$summary" || { say "bench_cuda_teacher: FAILED or stopped"; failed=1; }
fi
if built bench_cuda_teacher && python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  python3 - <<'PY' 2>&1 | tee -a "$summary"
import torch, torch.nn as nn, torch.nn.functional as F
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
class Block(nn.Module):  # timm's pre-norm block: qkv attention (SDPA), GELU MLP
    def __init__(s, d, h, r=4):
        super().__init__()
        s.h, s.n1, s.qkv, s.proj = h, nn.LayerNorm(d, eps=1e-6), nn.Linear(d, 3 * d), nn.Linear(d, d)
        s.n2, s.mlp = nn.LayerNorm(d, eps=1e-6), nn.Sequential(nn.Linear(d, r * d), nn.GELU(), nn.Linear(r * d, d))
    def forward(s, x):
        B, N, D = x.shape
        q, k, v = s.qkv(s.n1(x)).view(B, N, 3, s.h, D // s.h).permute(2, 0, 3, 1, 4)
        x = x + s.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D))
        return x + s.mlp(s.n2(x))
class Vit(nn.Module):
    def __init__(s, img, ch, patch, d, depth, h, classes):
        super().__init__()
        s.pe = nn.Conv2d(ch, d, patch, patch)
        s.cls, s.pos = nn.Parameter(torch.zeros(1, 1, d)), nn.Parameter(torch.zeros(1, (img // patch) ** 2 + 1, d))
        s.blocks = nn.Sequential(*[Block(d, h) for _ in range(depth)])
        s.norm, s.head = nn.LayerNorm(d, eps=1e-6), nn.Linear(d, classes)
    def forward(s, x):
        t = s.pe(x).flatten(2).transpose(1, 2)
        t = torch.cat([s.cls.expand(t.shape[0], -1, -1), t], 1) + s.pos
        return s.head(s.norm(s.blocks(t))[:, 0])
for name, shape, B in (("fmnist", (28, 1, 4, 64, 8, 4, 10), 128), ("deit_tiny", (224, 3, 16, 192, 12, 3, 1000), 64)):
    m = Vit(*shape).cuda()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.05, foreach=True)
    x = torch.randn(B, shape[1], shape[0], shape[0], device="cuda")
    y = torch.arange(B, device="cuda") % shape[6]
    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y, label_smoothing=0.1).backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    for _ in range(3): step()
    torch.cuda.synchronize()
    ms = []
    for _ in range(15):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(); step(); e1.record(); torch.cuda.synchronize()
        ms.append(e0.elapsed_time(e1))
    ms.sort()
    print(f"teacher training step {name} B {B}: torch {torch.__version__} eager {ms[7]:.3f} ms (median of 15; min {ms[0]:.3f}, max {ms[-1]:.3f})")
PY
elif built bench_cuda_teacher; then
  say "PyTorch with CUDA not importable here: the eager training step not timed"
fi
say "== done in $(( $(date +%s) - start )) s"
if [ -n "${OUT:-}" ]; then cp "$summary" "$OUT/summary.txt"; cp "$work"/*.log "$OUT/" 2>/dev/null || true; fi
exit $failed
