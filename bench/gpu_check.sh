#!/usr/bin/env bash
# The one prepared check for a lent GPU (see the README, "The engine"): the CUDA scan
# against the compiled kernel, the engine tests, then `make bench` with its GPU rows.
# Run from the project root with the venv's python on PATH and the data built (dvc repro).
set -euo pipefail
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_seeds.py tests/test_engine.py
python -m bench.benchmark
