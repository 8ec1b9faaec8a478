"""TensorRT's real Python bindings, made importable without TensorRT's libraries.

For each release below: the bindings wheel from PyPI (``pip install --target`` into a cache
folder, never into the virtual environment), a stub of the few entry points the bindings' extension
module imports from TensorRT's libraries (``stub.c``, built with the system C compiler at test
time), and the C++ harness (``harness.cpp``, built with the system C++ compiler against the pybind11
release whose internals match the bindings' build, so that the bindings' own pybind11 registration
hands the calibrator's C++ object to it).

The cache folder is ``$CALIBKIT_TRT_BINDINGS_CACHE`` or ``~/.cache/calibkit-trt``; a release
already there is used without the network. Where the network is unavailable, set
``CALIBKIT_SKIP_REAL_TRT=1`` to skip these tests with that reason; CI never sets it, so there a
failed download fails the tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
ROOT = TESTS.parent
SKIP_VARIABLE = "CALIBKIT_SKIP_REAL_TRT"

# pybind11 options matching the 8.6 / 10.0 builds: internals "v4_gcc_libstdcpp_cxxabi1013"
# (gcc 8) and the pre-C++11 std::string ABI (their docstring signatures mangle std::string as Ss)
_GCC8_ABI = ("-D_GLIBCXX_USE_CXX11_ABI=0", '-DPYBIND11_BUILD_ABI="_cxxabi1013"')


@dataclasses.dataclass(frozen=True)
class Release:
    """One TensorRT bindings release and what it takes to load and drive it."""

    version: str  # tensorrt.__version__
    wheel: str  # the bindings wheel on PyPI
    header: str | None  # the calibration-cache header prefix TensorRT writes (None: no calibrators)
    sonames: tuple[str, ...]  # TensorRT libraries the extension module links against
    pybind11: str | None = None  # pybind11 whose internals match the build (None: no harness)
    layout: int | None = None  # harness.cpp's TRT_LAYOUT (published vtable order)
    flags: tuple[str, ...] = ()  # compiler flags of the harness for this build of the bindings


_LIBS8 = ("libnvinfer.so.8", "libnvonnxparser.so.8", "libnvparsers.so.8", "libnvinfer_plugin.so.8")
_LIBS10 = ("libnvinfer.so.10", "libnvonnxparser.so.10", "libnvinfer_plugin.so.10")
_LIBS11 = ("libnvinfer.so.11", "libnvonnxparser.so.11", "libnvinfer_plugin.so.11")

RELEASES = {
    r.version: r
    for r in (
        Release(
            "8.6.1", "tensorrt-bindings==8.6.1", "TRT-8601-", _LIBS8,
            "pybind11==2.10.4", 8, _GCC8_ABI,
        ),
        Release(
            "10.0.1", "tensorrt-cu12-bindings==10.0.1", "TRT-100001-", _LIBS10,
            "pybind11==2.10.4", 10, _GCC8_ABI,
        ),
        Release(
            "10.16.1.11", "tensorrt-cu12-bindings==10.16.1.11", "TRT-101601-", _LIBS10,
            "pybind11==3.0.1", 10,
        ),
        Release("11.4.0.106", "tensorrt-cu12-bindings==11.4.0.106", None, _LIBS11),
    )
}  # fmt: skip


class Unavailable(RuntimeError):
    """A wheel could not be fetched or a part could not be built."""


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "calibkit-trt"
    return Path(os.environ.get("CALIBKIT_TRT_BINDINGS_CACHE", default))


@contextlib.contextmanager
def _locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:  # another pytest may be installing the same wheel
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def install(requirement: str) -> Path:
    """``pip install --target`` `requirement` (no dependencies) once; return its folder."""
    root = cache_dir()
    target = root / f"py{sys.version_info[0]}{sys.version_info[1]}" / requirement.replace("==", "-")
    with _locked(root):
        if (target / ".complete").is_file():
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile"]
        command += ["--only-binary=:all:", "--target", str(partial), requirement]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            tail = [line for line in lines if not line.startswith("WARNING:")][-3:]
            msg = f"pip could not install {requirement}: {' | '.join(tail)}"
            raise Unavailable(msg)
        (partial / ".complete").write_text(requirement + "\n")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


def _compile(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"building {what} failed:\n{' '.join(command)}\n{done.stderr[-3000:]}"
        raise Unavailable(msg)


def build_stub(release: Release, out: Path) -> Path:
    """Build stub.c once and expose it under each soname the bindings need; return the folder."""
    out.mkdir(parents=True, exist_ok=True)
    library = out / "libcalibkit_trt_stub.so"
    if not library.exists():
        cc = os.environ.get("CC", "gcc")
        _compile([cc, "-shared", "-fPIC", "-O1", str(HERE / "stub.c"), "-o", str(library)], "stub")
    for soname in release.sonames:
        link = out / soname
        if not link.exists():
            link.symlink_to(library.name)
    return out


def build_harness(release: Release, out: Path) -> Path:
    """Compile harness.cpp for `release` into `out`; return the folder holding the module."""
    pybind11 = install(release.pybind11) / "pybind11" / "include"
    out.mkdir(parents=True, exist_ok=True)
    module = out / f"calibkit_trt_harness{sysconfig.get_config_var('EXT_SUFFIX')}"
    command = [os.environ.get("CXX", "g++"), "-shared", "-fPIC", "-O0", "-std=c++17"]
    command += [f"-DTRT_LAYOUT={release.layout}", *release.flags]
    command += ["-I", str(pybind11), "-I", sysconfig.get_paths()["include"]]
    command += [str(HERE / "harness.cpp"), "-o", str(module)]
    _compile(command, f"the C++ harness for TensorRT {release.version}")
    return out


@dataclasses.dataclass
class Prepared:
    """A release ready to import: where its bindings, stub and harness are."""

    release: Release
    site: Path
    stub: Path
    harness: Path | None

    def env(self) -> dict[str, str]:
        """Environment of a process that imports these bindings as ``tensorrt``."""
        env = dict(os.environ)
        paths = [str(self.site), str(TESTS), str(ROOT)]
        if self.harness is not None:
            paths.insert(1, str(self.harness))
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        libs = [str(self.stub), *filter(None, [env.get("LD_LIBRARY_PATH")])]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        env["CALIBKIT_TRT_RELEASE"] = self.release.version
        return env

    def run_pytest(self, module: str) -> subprocess.CompletedProcess:
        """Run the inner test module `module` (under tests/trt_real/) in a fresh process."""
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs"]
        command += [str(HERE / module)]
        return subprocess.run(
            command, cwd=ROOT, env=self.env(), capture_output=True, text=True, check=False
        )


def prepare(version: str, workdir: Path) -> Prepared:
    """Install (or find) `version`'s bindings and build its stub and harness under `workdir`."""
    release = RELEASES[version]
    site = install(release.wheel)
    stub = build_stub(release, workdir / "stub")
    harness = None
    if release.layout is not None:
        harness = build_harness(release, workdir / f"harness-{version}")
    return Prepared(release, site, stub, harness)
