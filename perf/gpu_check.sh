#!/usr/bin/env bash
# The NVML path on real hardware, in one short command (README: "Ready for a GPU").
#
# Runs `python -m pytest_ipw calibrate --meter=nvml --json` on an NVIDIA machine that has torch, nvidia-ml-py,
# pytest, numpy, psutil and tabulate, but no llama-cpp-python and no network: the source tree on PYTHONPATH is
# enough. llama_cpp, datasets, matplotlib and pyarrow are blocked from importing, so the run also proves that the
# command needs none of them. Prints one JSON document: the environment, the command and its exit status, and
# the calibration (J per GFLOP of seeded fp32 matrix products on the GPU, idle watts, the counter's observed
# update period, the energy counter against the integrated power gauge, and the two halves split at a mark).
# It takes under a minute on an H100/H200 (mostly torch's start-up); $OUT/gpu_check.json gets a copy when $OUT is set.
#
# Usage: perf/gpu_check.sh [more calibrate arguments, e.g. --count=50 --size=4096 --meter=nvml:all]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
cd "$root"
exec "${PYTHON:-python3}" - "$@" <<'PYTHON'
import importlib.util
import json
import os
import subprocess
import sys
import time

OPTIONAL = ("llama_cpp", "datasets", "matplotlib", "pyarrow")
# 300 products of 8192x8192 fp32: about 5-7 s of work on an H100/H200, long enough for the power gauge (averaged
# over up to 1 s on Hopper) to be compared with the counter; later arguments override these
argv = ["calibrate", "--meter=nvml", "--idle-seconds=2", "--probe-seconds=1", "--count=300", "--json", *sys.argv[1:]]


def version(name):
    if importlib.util.find_spec(name) is None:
        return None
    try:
        from importlib.metadata import version as dist_version

        return dist_version({"pynvml": "nvidia-ml-py", "llama_cpp": "llama-cpp-python"}.get(name, name))
    except Exception:  # noqa: BLE001 - installed without metadata
        return "installed"


environment = {"python": sys.version.split()[0], "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
               "packages": {name: version(name) for name in
                            ("torch", "pynvml", "numpy", "psutil", "tabulate", "pytest", *OPTIONAL)}}
blocker = f"""
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {OPTIONAL!r}:
            raise ImportError(name + " must not be needed by pytest-ipw calibrate")
sys.meta_path.insert(0, Block())
sys.argv = ["pytest-ipw", *{argv!r}]
runpy.run_module("pytest_ipw", run_name="__main__")
"""
started = time.perf_counter()
try:
    done = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True,
                          timeout=float(os.environ.get("GPU_CHECK_TIMEOUT", "300")))
    returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
except subprocess.TimeoutExpired as exc:
    returncode, stdout, stderr = 124, exc.stdout or "", f"timed out after {exc.timeout} s"
try:
    calibration = json.loads(stdout) if returncode == 0 else None
except json.JSONDecodeError:
    calibration = None
result = {"check": "pytest-ipw calibrate on NVML", "command": "python -m pytest_ipw " + " ".join(argv),
          "returncode": returncode, "seconds": round(time.perf_counter() - started, 1), "environment": environment,
          "blocked_imports": list(OPTIONAL), "stderr_tail": (stderr if isinstance(stderr, str) else "")[-3000:],
          "calibrate": calibration}
text = json.dumps(result, indent=1, default=str)
print(text)
if os.environ.get("OUT"):
    with open(os.path.join(os.environ["OUT"], "gpu_check.json"), "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
sys.exit(returncode if calibration is not None or returncode else 1)
PYTHON
