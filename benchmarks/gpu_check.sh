#!/usr/bin/env bash
# The CUDA backend on a real GPU (the device machine: numba, numba-cuda, CuPy and PyTorch CUDA
# installed, no network): every op and the example networks against the reference at
# realistic shapes (pytest -m gpu), then the latency benchmark against PyTorch CUDA eager.
# Runs from a checkout without installing cnnir (cnnir/_checkout.py maps the packages).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -c "import numba, numpy; from numba import cuda; print('numba', numba.__version__, \
'numpy', numpy.__version__, cuda.get_current_device().name)"
timeout "${GPU_TEST_SECONDS:-300}" python -m pytest -q -m gpu -x tests_cuda
tests=$?
timeout "${GPU_BENCH_SECONDS:-200}" python benchmarks/bench_cuda.py --runs 30
exit $tests
