"""Long fuzz campaign over every calibkit reader: inputs tried / escapes / crashes per reader.

Each reader gets valid seed files (the bundled caches and files written by calibkit itself) and
mutations of them (bit flips, byte insertions and deletions, truncation, splices of two seeds,
format-specific tokens such as huge numbers, deep nesting, NUL bytes, CRLF). An *escape* is any
exception that is not a ``CalibkitError`` (or the ``OSError`` of a file): it would be a
traceback on the command line. A *crash* is the interpreter dying (segfault, abort): the
campaign runs each reader in a child process and counts a child that dies as a crash.

Two engines: ``atheris`` (coverage-guided libFuzzer, ``pip install atheris``; the default when
it imports), started from the same seeds, and ``mutate``, a fixed-seed mutation fuzzer needing
nothing but calibkit (hypothesis drives the bounded tests in tests/test_fuzz_readers.py with the
same readers and mutations).

    python scripts/fuzz.py --count 100000                 # every reader, 100,000 inputs each
    python scripts/fuzz.py --count 2000 --reader csv      # one reader
    python scripts/fuzz.py --engine mutate --count 5000   # without atheris
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import multiprocessing
import random
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibkit.cache.format import read_cache  # noqa: E402
from calibkit.cache.formats import parse_scales, to_format_bytes  # noqa: E402
from calibkit.errors import CalibkitError  # noqa: E402

TOKENS = [
    b"\x00",
    b"\r\n",
    b"\n",
    b": ",
    b"-",
    b"9" * 400,
    b"1e999",
    b"nan",
    b"inf",
    b"-0",
    b"[" * 5000,
    b"{" * 5000,
    b'"',
    b",",
    b"\xff\xfe",
    b"TRT-",
    b"TRT-" + b"9" * 4400 + b"-EntropyCalibration2",
    b"0 ",
    b"ffffffff",
    b"7fc00000",
    b"\x1b[2J",
    b"\xe2\x80\xae",
]


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs per reader: the bundled caches and calibkit's own output of them."""
    caches = sorted((ROOT / "examples" / "caches").glob("*.cache"))
    shared = ROOT.parent / "shared" / "testdata"
    if shared.is_dir():
        caches += sorted(shared.rglob("*.cache"))[:20]
    trt = [p.read_bytes() for p in caches if not p.read_bytes().startswith(b"0 ")]
    legacy = [p.read_bytes() for p in caches if p.read_bytes().startswith(b"0 ")]
    small = [read_cache(d) for d in trt[:5]]
    out = {"trt": trt or [b"TRT-8601-EntropyCalibration2\nx: 3c010204\n"]}
    out["legacy"] = legacy or [b"0 3ff0000000000000 3fefffeb074a771d\nx: 3c010204\n"]
    for fmt in ("json", "csv", "ranges", "ranges-json", "ort", "ort-text", "ort-overrides"):
        out[fmt] = [to_format_bytes(c, fmt) for c in small]
    out["ort-json"] = [
        json.dumps(
            {n: {"CLS": "TensorData", "lowest": -a, "highest": a} for n, a in c.amax.items()}
        )
        .replace("Infinity", "1e38")
        .encode()
        for c in small
    ]
    out["stats"] = [_stats_seed()]
    return out


def _stats_seed() -> bytes:
    from calibkit.histogram import Histogram
    from calibkit.stats import save_stats

    rng = np.random.default_rng(0)
    hists = {}
    for name in ("a", "b:0"):
        h = Histogram(64)
        h.fill(rng.normal(size=500).astype(np.float32))
        hists[name] = h
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.npz"
        save_stats(path, hists, settings={"trt_version": "10.16"})
        return path.read_bytes()


def _read_stats(data: bytes) -> None:
    from calibkit.stats import load_stats

    with tempfile.NamedTemporaryFile(suffix=".npz") as f:
        f.write(data)
        f.flush()
        load_stats(f.name)


def collect_quietly() -> None:
    """Collect garbage with ResourceWarnings off: a failed ``np.load`` leaves its file open."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def reader(name: str):
    """Return a function bytes -> None that parses one input the way the CLI does."""
    if name in ("trt", "legacy"):
        return lambda data: read_cache(data)
    if name == "stats":
        return _read_stats
    return lambda data: parse_scales(data, name, "<fuzz>")


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """Return a mutation of `data`: 1-4 random edits from a fixed repertoire."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:  # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert random bytes
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and b:  # delete a run
            del b[pos : pos + rng.randint(1, 16)]
        elif op == 3:  # truncate
            del b[pos:]
        elif op == 4:  # insert a token
            b[pos:pos] = rng.choice(TOKENS)
        elif op == 5 and pool:  # splice another seed
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            b = b[:pos] + other[cut:]
        elif op == 6 and b:  # overwrite with an interesting byte
            b[rng.randrange(len(b))] = rng.choice((0, 0x0A, 0x0D, 0x20, 0x3A, 0x7F, 0x80, 0xFF))
        elif op == 7 and b:  # duplicate a run (duplicate names, repeated headers)
            end = min(len(b), pos + rng.randint(1, 64))
            b[pos:pos] = b[pos:end]
    return bytes(b)


def run_reader(name: str, count: int, seed: int, queue=None) -> dict:
    """Feed `count` inputs to one reader; return the tally (and a few escapes)."""
    rng = random.Random(f"{seed}:{name}")
    pool = seeds()[name]
    parse = reader(name)
    tally = {"reader": name, "tried": 0, "accepted": 0, "rejected": 0, "escapes": 0, "examples": []}
    for i in range(count):
        if i % 500 == 499:
            collect_quietly()
        data = pool[i % len(pool)] if i < len(pool) else mutate(rng.choice(pool), rng, pool)
        tally["tried"] += 1
        try:
            parse(data)
            tally["accepted"] += 1
        except CalibkitError:
            tally["rejected"] += 1
        except Exception as err:  # an escape: the CLI would show a traceback  # noqa: BLE001
            tally["escapes"] += 1
            if len(tally["examples"]) < 3:
                tb = traceback.format_exception_only(type(err), err)[-1].strip()
                tally["examples"].append({"input": data[:200].hex(), "error": tb[:300]})
    if queue is not None:
        queue.put(tally)
    return tally


def atheris_child(name: str, count: int, seed: int, out: str) -> None:
    """Run libFuzzer on one reader for `count` inputs; write the tally to `out` at exit."""
    import atexit

    import atheris

    pool = seeds()[name]  # before instrumenting: the seeds run the Numba kernels
    # Re-import the readers with coverage instrumentation (not the Numba kernels: Numba cannot
    # compile instrumented functions). CalibkitError stays the same class (errors.py is kept).
    readers = ("calibkit.cache", "calibkit.stats", "calibkit.inputs")
    for module in [m for m in sys.modules if m.startswith(readers)]:
        del sys.modules[module]
    with atheris.instrument_imports(include=list(readers)):
        import calibkit.cache.format as fmt
        import calibkit.cache.formats as fmts
        import calibkit.stats  # noqa: F401
    if name in ("trt", "legacy"):
        parse = fmt.read_cache
    elif name == "stats":
        parse = _read_stats
    else:
        parse = lambda data: fmts.parse_scales(data, name, "<fuzz>")  # noqa: E731
    tally = {"reader": name, "tried": 0, "accepted": 0, "rejected": 0, "escapes": 0, "examples": []}

    def one_input(data: bytes) -> None:
        tally["tried"] += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parse(data)
            tally["accepted"] += 1
        except CalibkitError:
            tally["rejected"] += 1
        except Exception as err:  # an escape: counted, and fuzzing goes on  # noqa: BLE001
            tally["escapes"] += 1
            if len(tally["examples"]) < 3:
                tb = traceback.format_exception_only(type(err), err)[-1].strip()
                tally["examples"].append({"input": data[:200].hex(), "error": tb[:300]})
        if tally["tried"] % 500 == 0 or tally["tried"] == count:
            collect_quietly()
            save()  # libFuzzer ends the process without running atexit handlers

    def save() -> None:
        Path(out).write_text(json.dumps(tally))

    atexit.register(save)
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for i, data in enumerate(pool):
        (corpus / f"seed{i}").write_bytes(data)
    argv = [sys.argv[0], f"-runs={count}", f"-seed={seed + 1}", "-max_len=65536"]
    argv += ["-print_final_stats=0", "-close_fd_mask=3", str(corpus)]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def _run_atheris(name: str, count: int, seed: int) -> tuple[dict | None, int]:
    import subprocess

    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, __file__, "--atheris-child", name, "--count", str(count)]
        cmd += ["--seed", str(seed), "--json", out.name]
        proc = subprocess.run(cmd, check=False, capture_output=True)
        text = Path(out.name).read_text()
        return (json.loads(text) if text else None), proc.returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="inputs per reader")
    parser.add_argument("--reader", action="append", help="only these readers (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=("atheris", "mutate"), help="default: atheris if found")
    parser.add_argument("--json", help="also write the tallies as JSON")
    parser.add_argument("--atheris-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.atheris_child:
        atheris_child(args.atheris_child, args.count, args.seed, args.json)
        return 0
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "mutate"
    print(f"engine: {engine}", flush=True)
    names = args.reader or list(seeds())
    rows = []
    ctx = multiprocessing.get_context("fork")
    for name in names:
        t0 = time.perf_counter()
        if engine == "atheris":
            tally, code = _run_atheris(name, args.count, args.seed)
            crashed = tally is None or code not in (0,)
            tally = tally or {"reader": name, "tried": "?", "escapes": "?", "examples": []}
            tally["crashes"] = int(crashed)
            tally["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(tally)
            _print_row(tally)
            continue
        queue = ctx.Queue()
        child = ctx.Process(target=run_reader, args=(name, args.count, args.seed, queue))
        child.start()
        tally = queue.get() if child.is_alive() or not queue.empty() else None
        child.join()
        crashed = child.exitcode != 0 or tally is None
        tally = tally or {"reader": name, "tried": "?", "escapes": "?", "examples": []}
        tally["crashes"] = int(crashed)
        tally["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(tally)
        _print_row(tally)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if any(r["escapes"] or r["crashes"] for r in rows) else 0


def _print_row(tally: dict) -> None:
    print(
        f"{tally['reader']:12s} tried {tally['tried']:>8}  "
        f"accepted {tally.get('accepted', '?'):>7}  rejected {tally.get('rejected', '?'):>8}  "
        f"escapes {tally['escapes']:>5}  crashes {tally['crashes']}  ({tally['seconds']} s)",
        flush=True,
    )
    for ex in tally["examples"]:
        print(f"    escape: {ex['error']}  input[:200]={ex['input'][:120]}...", flush=True)


if __name__ == "__main__":
    io.DEFAULT_BUFFER_SIZE = 1 << 16
    sys.exit(main())
