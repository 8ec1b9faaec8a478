#!/usr/bin/env bash
# The test suite, as the README gives it: lint, the tests, then the kernel tests again with
# Numba's JIT off, so the kernel bodies themselves run as Python against their NumPy twins.
set -euo pipefail
cd "$(dirname "$0")/.."

ruff check calibkit tests benchmarks examples scripts
ruff format --check calibkit tests benchmarks examples scripts
python -m pytest -q
NUMBA_DISABLE_JIT=1 python -m pytest -q \
    tests/test_kernels.py tests/test_histogram.py tests/test_fidelity.py
