#!/usr/bin/env bash
# Every GPU check of the project in one command, for a session lent a GPU (about 5 minutes on an H100;
# each step stops at its own limit, 10 minutes at most in all).
#
# The device image has torch, typer, rich, pyyaml, matplotlib, pytest and hypothesis, but not pydantic.
# Once, here (the machine with the network), in the repository root:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
#
# then run `bash benchmarks/gpu_session.sh` there with `.whl` carried. Results go to $OUT (the device
# tool's folder) or /tmp/gpu-out: the tests, the sync check and engine-vs-plain table per precision,
# the optimizer kernels and the large-net table. Record them in benchmarks/README.md (section GPU),
# with the GPU's name.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
step() { echo; echo "=== $*  ($(date +%T))"; }
# each step has its own time limit, so that one slow step cannot spend the whole lease
limit() { local s=$1; shift; timeout --kill-after=5 "$s" "$@"; local rc=$?; [ $rc -eq 124 ] && echo "(stopped at its ${s} s limit)"; return $rc; }

step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/machine.txt"
python3 -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name())" 2>&1 | tee -a "$out/machine.txt"

step "tests on CUDA (tests/test_cuda.py) and a CLI smoke run"
limit 150 python3 -m pytest -q -p no:cacheprovider -n 4 tests/test_cuda.py 2>&1 | tee "$out/test_cuda.txt"
limit 60 python3 -m backprop_cli train --config configs/regression.yaml --set device=cuda --steps 200 2>&1 | tail -6 | tee "$out/smoke.txt"

step "sync check and engine vs plain loop (benchmarks/cuda_check.py)"
limit 150 python3 benchmarks/cuda_check.py --precision fp32 bf16 fp16 2>&1 | tee "$out/cuda_check.txt"

step "optimizer kernels (benchmarks/bench_optimizers.py)"
limit 120 python3 benchmarks/bench_optimizers.py --device cuda 2>&1 | tee "$out/bench_optimizers.txt"

step "large net (benchmarks/bench_scale.py)"
limit 120 python3 benchmarks/bench_scale.py --device cuda --skip-ddp 2>&1 | tee "$out/bench_scale.txt"
