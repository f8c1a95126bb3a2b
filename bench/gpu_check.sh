#!/usr/bin/env bash
# The one prepared check for a lent GPU (see the README, "The engine"): the CUDA scan
# against the compiled kernel, the engine tests, then `make bench` with its GPU rows.
# From the project root, after `dvc repro` here (the data travels with the call):
#   device tool: run(command="bash bench/gpu_check.sh", carry=["data/raw", "data/prepared"])
# The device image's python3 has torch with CUDA, numba, pandas, scikit-learn, pytest and
# hypothesis but no dvc: the benchmark then leaves out its pipeline rows. Results are
# copied to $OUT when it is set (the device tool brings that folder back).
set -euo pipefail
PY=${PYTHON:-python3}
export AIRFOIL_SOURCE=${AIRFOIL_SOURCE:-$PWD/data/raw/airfoil_self_noise.dat}
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'
print(torch.cuda.get_device_name())"
$PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_seeds.py tests/test_engine.py
$PY -m bench.benchmark
if [ -n "${OUT:-}" ]; then cp bench/results.json bench/results.png "$OUT/"; fi
