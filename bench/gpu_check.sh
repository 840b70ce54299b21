#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: fastopt's CUDA tests on the device (not the simulator),
# then `python -m fastopt bench --device cuda` (every rule, the ResNet-50 step, BatchNorm)
# and Adam in float64. Logs and the bench's JSON go to $OUT (default ./gpu_check).
#   bash bench/gpu_check.sh                # sizes 1e4 1e6 1e7 5e7
#   bash bench/gpu_check.sh 1e8            # other sizes
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_check}
mkdir -p "$out"
py=${PYTHON:-python3}
sizes=${*:-1e4 1e6 1e7 5e7}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
  --format=csv || exit 1
# Can numba-cuda compile and run a kernel here? (numba-cuda 0.30 fails to compile under
# numpy 2.5, which removed np.row_stack.) If not, install the wheels carried in .whl/
# (e.g. numpy 2.4 and numba-cuda for that Python) to /tmp/site and try again.
probe='import numpy as np
from numba import cuda
@cuda.jit
def k(a):
    a[0] = 1.0
a = cuda.to_device(np.zeros(1, np.float32)); k[1, 1](a); assert a.copy_to_host()[0] == 1'
if ! $py -c "$probe" 2>/dev/null; then
  if [ -d .whl ]; then
    $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site
  fi
  $py -c "$probe" || { echo "numba-cuda cannot run a kernel on this machine"; exit 1; }
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 FASTOPT_TEST_GPU=1
$py - <<'PY'
import importlib, platform
print("python", platform.python_version())
for name in ("numpy", "numba", "numba_cuda", "llvmlite", "torch", "cupy", "pytest"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:  # noqa: BLE001
        print(name, "unavailable:", exc)
PY
t0=$SECONDS
timeout 300 $py -m pytest -q -p no:cacheprovider tests/test_cuda_optim.py \
  tests/test_cuda_batchnorm.py tests/test_cuda_interop.py tests/test_cuda_ptx.py \
  tests/test_cuda_precision.py 2>&1 \
  | tee "$out/tests.log" | tail -25
echo "tests: $((SECONDS - t0)) s"
# The README's GPU use, end to end: a torch model stepped in place on the device.
timeout 120 $py examples/torch_model.py --cuda 2>&1 | tail -3
t0=$SECONDS
timeout 300 $py -m fastopt bench --device cuda --sizes $sizes --json \
  --rules SGD Momentum Nesterov AdaGrad RMSprop Adam Nadam AMSGrad \
  > "$out/bench.json" 2> "$out/bench.err" || tail -20 "$out/bench.err"
timeout 120 $py -m fastopt bench --device cuda --sizes 1e7 --rules Adam --dtype float64 \
  --no-resnet --no-batchnorm --json > "$out/bench64.json" 2>> "$out/bench.err" \
  || tail -20 "$out/bench.err"
echo "bench: $((SECONDS - t0)) s"
$py -m fastopt.bench.gpu "$out/bench.json" | tee "$out/bench.txt"
$py -m fastopt.bench.gpu "$out/bench64.json" | tail -2
