"""calibkit's TensorRT adapter against TensorRT's real Python bindings, one process per release.

TensorRT's libraries cannot be installed here, but its Python bindings can (PyPI wheels of a few
MB). tests/trt_real/kit.py fetches them once into a cache folder, builds a stub of the handful of
entry points they import from TensorRT's libraries (C, at test time) and a C++ harness that calls
calibkit's calibrators through TensorRT's C++ calibrator interface and the bindings' own
trampolines. Each release then runs tests/trt_real/calibrators.py (8.6, 10.x) or refusal.py
(11.x) in a fresh process, since only one ``tensorrt`` can be imported per process.

Needs the network the first time (PyPI), gcc and g++. Offline, set CALIBKIT_SKIP_REAL_TRT=1 to
skip with that reason; CI does not set it, so there a failed download fails these tests.
"""

from __future__ import annotations

import os
import re

import pytest
from trt_real import kit

pytestmark = pytest.mark.slow

CALIBRATOR_RELEASES = ["8.6.1", "10.0.1", "10.16.1.11"]  # oldest supported, first and last 10.x
REFUSED_RELEASE = "11.4.0.106"


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """Prepare a release on first use: ``prepared(version) -> kit.Prepared``."""
    if os.environ.get(kit.SKIP_VARIABLE):
        pytest.skip(f"{kit.SKIP_VARIABLE} is set: TensorRT's real bindings are not fetched")
    workdir = tmp_path_factory.mktemp("trt-real")
    done: dict[str, kit.Prepared] = {}

    def get(version: str) -> kit.Prepared:
        if version not in done:
            try:
                done[version] = kit.prepare(version, workdir)
            except kit.Unavailable as err:
                pytest.fail(
                    f"{err}\n(offline? set {kit.SKIP_VARIABLE}=1 to skip these tests)",
                    pytrace=False,
                )
        return done[version]

    return get


def _passed(result, module: str) -> int:
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{module} failed in its own process:\n{output}"
    summary = output.strip().splitlines()[-1]
    assert not re.search(r"skipped|xfail|error", summary), summary
    passed = re.search(r"(\d+) passed", summary)
    assert passed, summary
    return int(passed.group(1))


@pytest.mark.parametrize("version", CALIBRATOR_RELEASES)
def test_adapter_against_the_real_bindings(prepared, version):
    release = prepared(version)
    result = release.run_pytest("calibrators.py")
    # 10.x adds the IVersionedInterface slots (4 algorithms)
    expected = 31 + (4 if release.release.layout == 10 else 0)
    assert _passed(result, f"calibrators.py ({version})") == expected


def test_tensorrt_11_bindings_are_refused(prepared):
    result = prepared(REFUSED_RELEASE).run_pytest("refusal.py")
    assert _passed(result, f"refusal.py ({REFUSED_RELEASE})") == 5
