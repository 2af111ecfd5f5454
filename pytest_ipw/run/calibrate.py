"""``pytest-ipw calibrate``: a fixed reference workload under the chosen meter, so that two machines' meters
can be compared before their IPW figures are.

The workload is a seeded matrix product of fixed size, repeated a fixed number of times: on a CPU through
numpy, on a GPU through torch (CUDA or ROCm builds, or Apple's MPS). It reports:

- joules per unit of reference work (per GFLOP of the products, total and above the idle floor) and the
  throughput, so a meter that reads half the energy of another on the same work stands out;
- the idle watts, measured by the same meter before the workload;
- the sensor's *observed* update period: its raw reading polled as fast as possible, and the median time
  between changes, beside the period the meter declares;
- where the sensor offers both a counter and a power gauge (NVML), the energy of the same window from each,
  and how far they disagree;
- the workload split in two equal halves at a mark (the path a query's first token takes): both halves did
  the same work, so their energies should agree;
- the comparability card of the meter (:mod:`pytest_ipw.hardware.card`).

Nothing here imports llama_cpp, datasets, matplotlib or pyarrow; torch only when the accelerator is a GPU.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.hardware.card import comparability_card, host_state
from pytest_ipw.hardware.profiles import LocalDevice, detect_devices, load_profiles, resolve_accelerators
from pytest_ipw.meters.base import Meter

CALIBRATION_VERSION = 1
#: the mark that splits the workload in two halves of equal work
HALF = "half"
#: reference work per device kind: (matrix size, products); large enough to outlast the sensors' periods
DEFAULT_WORK = {"cpu": (1024, 64), "gpu": (8192, 100)}
SEED = 0


@dataclass(frozen=True)
class Workload:
    """The reference work: ``count`` products of two seeded ``size`` × ``size`` float32 matrices."""

    engine: str  # "numpy" | "torch"
    device: str  # "cpu", "cuda:0", "mps"
    size: int
    count: int
    seed: int = SEED
    dtype: str = "float32"

    @property
    def gflop_per_product(self) -> float:
        return 2.0 * self.size ** 3 / 1e9

    @property
    def gflop(self) -> float:
        return self.gflop_per_product * self.count


Runner = Callable[[int], None]  # runs n products and returns when they are done


def numpy_runner(size: int, seed: int = SEED) -> tuple[Runner, dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty((size, size), dtype=np.float32)

    def run(n: int) -> None:
        for _ in range(n):
            np.matmul(a, b, out=out)

    return run, {"engine": "numpy", "engine_version": np.__version__, "blas": _numpy_blas(np)}


def _numpy_blas(np: Any) -> str | None:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}".strip()
    except Exception:  # noqa: BLE001 - older numpy prints its config instead of returning it
        return None


def torch_runner(size: int, device: str, seed: int = SEED) -> tuple[Runner, dict[str, Any]]:
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    a = torch.randn((size, size), generator=generator, device=device, dtype=torch.float32)
    b = torch.randn((size, size), generator=generator, device=device, dtype=torch.float32)
    out = torch.empty((size, size), device=device, dtype=torch.float32)

    def synchronize() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        elif device == "mps":
            torch.mps.synchronize()

    def run(n: int) -> None:
        for _ in range(n):
            torch.matmul(a, b, out=out)
        synchronize()  # the window must cover the work, not its queueing

    facts = {"engine": "torch", "engine_version": torch.__version__, "device": device,
             "cuda": getattr(torch.version, "cuda", None), "hip": getattr(torch.version, "hip", None),
             "tf32": bool(torch.backends.cuda.matmul.allow_tf32) if device.startswith("cuda") else None}
    if device.startswith("cuda"):
        facts["device_name"] = torch.cuda.get_device_name(device)
    return run, facts


def choose_workload(device: LocalDevice, size: int | None, count: int | None,
                    local: list[LocalDevice] | None = None) -> tuple[Workload, Runner, dict[str, Any]]:
    """numpy on a CPU; torch on a GPU (an error naming the fix when torch or its GPU is missing); on an Apple
    SoC torch's MPS when installed, else numpy on the SoC's CPU."""
    profile = device.profile
    kind = "gpu" if profile.kind == "gpu" else "cpu"
    default_size, default_count = DEFAULT_WORK[kind]
    size, count = size or default_size, count or default_count
    if size < 1 or count < 2:
        raise IPWUsageError(f"calibrate: --size must be at least 1 and --count at least 2 (got {size}, {count})")
    if profile.kind == "gpu":
        try:
            import torch
        except ImportError:
            raise IPWUsageError(f"calibrate on {profile.name} runs its reference work on the GPU through torch, which "
                                "is not installed: pip install torch (a build for your GPU), or calibrate the CPU "
                                "with --accelerator=cpu") from None
        if not torch.cuda.is_available():
            raise IPWUsageError(f"calibrate on {profile.name}: torch {torch.__version__} sees no GPU (a CPU-only build, "
                                "or CUDA_VISIBLE_DEVICES hides it); install a CUDA or ROCm build of torch")
        # torch numbers the GPUs it can see; the meter measures the NVML/AMD SMI index of the same GPU
        torch_device = f"cuda:{_torch_index(device, local or [device])}"
        run, facts = torch_runner(size, torch_device)
        return Workload("torch", torch_device, size, count), run, facts
    if profile.kind == "soc":
        try:
            import torch

            if torch.backends.mps.is_available():
                run, facts = torch_runner(size, "mps")
                return Workload("torch", "mps", size, count), run, facts
        except ImportError:
            pass
    run, facts = numpy_runner(size)
    return Workload("numpy", "cpu", size, count), run, facts


def _torch_index(device: LocalDevice, local: list[LocalDevice]) -> int:
    """torch's index of the detected GPU: its position among the visible GPUs of its vendor (CUDA's order is
    the PCI bus order that NVML uses when CUDA_DEVICE_ORDER=PCI_BUS_ID; on a one-GPU machine it is 0)."""
    same = [d for d in local if d.profile.kind == "gpu" and d.profile.vendor == device.profile.vendor]
    return same.index(device) if device in same else 0


def observed_update_period(probe: Callable[[], float | None], seconds: float,
                           clock: Callable[[], float] = time.perf_counter,
                           sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll the raw sensor reading for ``seconds`` and time its changes: the median gap between changes is the
    period the sensor really updates at (a counter that advances every 100 ms, a gauge refreshed each second)."""
    if probe() is None:
        return {"median_s": None, "changes": 0, "polled_s": 0.0, "reads": 0,
                "note": "this meter offers no raw reading to poll"}
    changes: list[float] = []
    reads = 0
    started = clock()
    last = probe()
    while clock() - started < seconds:
        sleep(0.0005)
        value = probe()
        reads += 1
        if value != last:
            changes.append(clock())
            last = value
    gaps = [b - a for a, b in zip(changes, changes[1:])]
    return {"median_s": statistics.median(gaps) if gaps else None, "min_s": min(gaps) if gaps else None,
            "changes": len(changes), "polled_s": clock() - started, "reads": reads,
            "note": None if gaps else "the reading changed fewer than twice: poll longer (--probe-seconds)"}


def _relative(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return (a - b) / b


def measure_workload(meter: Meter, run: Runner, workload: Workload, twin: Meter | None = None) -> dict[str, Any]:
    """The workload in one window, marked halfway; the gauge twin (if any) measures the same work."""
    first_half = workload.count // 2
    with contextlib.ExitStack() as stack:
        # the twin's window opens first and closes last: it covers the main window and a few reads more
        twin_handle = stack.enter_context(twin.window()) if twin is not None else None
        with meter.window() as window:
            run(first_half)
            window.mark(HALF)
            run(workload.count - first_half)
    measurement = window.measurement
    assert measurement is not None
    idle = measurement.idle_watts
    active = measurement.joules_active
    half = measurement.phase_mark(HALF)
    result: dict[str, Any] = {
        "joules": measurement.joules, "seconds": measurement.seconds, "watts": measurement.watts,
        "joules_active": active, "samples": measurement.samples, "flags": list(measurement.flags),
        "gflop_per_s": workload.gflop / measurement.seconds if measurement.seconds > 0 else None,
        "joules_per_gflop": measurement.joules / workload.gflop,
        "joules_per_gflop_active": None if active is None else active / workload.gflop,
        "joules_per_product": measurement.joules / workload.count,
        "idle_watts": idle,
    }
    if half is not None and half.joules is not None:
        second = measurement.joules - half.joules
        result["halves"] = {"products": [first_half, workload.count - first_half], "joules": [half.joules, second],
                            "seconds": [half.seconds, measurement.seconds - half.seconds], "method": half.method,
                            "relative_difference": _relative(second, half.joules), "precise": half.precise}
    else:
        result["halves"] = {"note": half.method if half is not None else "the window was not marked"}
    if twin_handle is not None and twin_handle.measurement is not None:
        gauge = twin_handle.measurement
        result["counter_vs_gauge"] = {
            "counter_joules": measurement.joules, "gauge_joules": gauge.joules, "gauge_samples": gauge.samples,
            "gauge_sensor": gauge.sensor, "relative_difference": _relative(gauge.joules, measurement.joules),
            "note": "the same work measured by the energy counter and by the power gauge sampled and integrated"}
    return result


def calibrate(*, meter: str | None = None, accelerators: list[str] | None = None, profiles_file: str | None = None,
              sample_hz: float | None = None, idle_seconds: float | None = None, size: int | None = None,
              count: int | None = None, probe_seconds: float = 1.0) -> dict[str, Any]:
    """Run the reference workload under the meter of the chosen accelerator; the report as a JSON-able dict."""
    from pytest_ipw.core import defaults
    from pytest_ipw.meters.registry import select_meter

    profiles = load_profiles(profiles_file)
    local = detect_devices(profiles)
    device = resolve_accelerators(accelerators, profiles, local)[0]
    sample_hz = defaults.SAMPLE_HZ if sample_hz is None else sample_hz
    idle_seconds = 2.0 if idle_seconds is None else idle_seconds
    if idle_seconds < 0 or probe_seconds < 0:
        raise IPWUsageError("calibrate: --idle-seconds and --probe-seconds must not be negative")
    workload, run, facts = choose_workload(device, size, count, local)
    choice = select_meter(device.profile, device.index, requested=meter, sample_hz=sample_hz)
    chosen = choice.meter
    twin = None
    try:
        info: dict[str, Any] = {**chosen.describe(), "fallback_reason": choice.fallback_reason,
                                "thermal_start": chosen.thermal(), "host_start": host_state()}
        run(1)  # warm-up: libraries, caches, the GPU's context and clocks
        idle = chosen.measure_idle(idle_seconds) if idle_seconds > 0 else None
        if idle is not None:
            info["idle_baseline"] = idle.to_dict()
        period = observed_update_period(chosen.probe, probe_seconds) if probe_seconds > 0 else None
        make_twin = getattr(chosen, "gauge_twin", None)
        twin = make_twin() if make_twin is not None else None
        load = measure_workload(chosen, run, workload, twin)
        info["thermal_end"], info["host_end"] = chosen.thermal(), host_state()
        if twin is None:
            load["counter_vs_gauge"] = {"note": f"the {chosen.name} meter reads one kind of sensor only"}
    finally:
        if twin is not None:
            twin.close()
        chosen.close()
    return {
        "calibration_version": CALIBRATION_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "accelerator": device.profile.name,
        "device_name": device.device_name,
        "sensor": info.get("sensor"),
        "provenance": info.get("provenance"),
        "domain": info.get("domain"),
        "workload": {**asdict(workload), "gflop": workload.gflop, "gflop_per_product": workload.gflop_per_product,
                     **facts},
        "idle": None if idle is None else {"seconds": idle.seconds, "watts": idle.watts, "joules": idle.joules},
        "declared_update_period_s": info.get("update_period_s"),
        "observed_update_period": period,
        "load": load,
        "card": comparability_card(info, facts, sample_hz=sample_hz),
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The calibration in a few lines for a terminal; provenance first, so an estimate is never read as measured."""
    load, work = report["load"], report["workload"]
    lines = [f"calibrate: {report['accelerator']} ({report['device_name']}), energy {str(report['provenance']).upper()} "
             f"by {report['sensor']}"]
    lines.append(f"work: {work['count']} products of {work['size']}x{work['size']} {work['dtype']} on "
                 f"{work['engine']} {work['device']} = {work['gflop']:.4g} GFLOP in {load['seconds']:.3g} s "
                 f"({(load['gflop_per_s'] or 0):.4g} GFLOP/s)")
    active = load["joules_per_gflop_active"]
    lines.append(f"energy: {load['joules']:.4g} J = {load['joules_per_gflop']:.4g} J/GFLOP"
                 + ("" if active is None else f", {active:.4g} J/GFLOP above idle")
                 + f"; {load['watts']:.4g} W mean")
    if report["idle"] is not None:
        lines.append(f"idle: {report['idle']['watts']:.4g} W over {report['idle']['seconds']:.3g} s")
    period = report["observed_update_period"] or {}
    observed = period.get("median_s")
    lines.append(f"update period: declared {report['declared_update_period_s']} s, observed "
                 + (f"{observed:.4g} s (median of {period['changes'] - 1} gaps)" if observed is not None
                    else f"n/a ({period.get('note') or 'not polled'})"))
    halves = load.get("halves") or {}
    if "joules" in halves:
        lines.append(f"halves (equal work, split at a mark): {halves['joules'][0]:.4g} J and {halves['joules'][1]:.4g} J, "
                     f"{halves['relative_difference']:+.1%}" if halves["relative_difference"] is not None else
                     f"halves: {halves['joules']}")
    agreement = load.get("counter_vs_gauge") or {}
    if agreement.get("relative_difference") is not None:
        lines.append(f"counter vs gauge: {agreement['counter_joules']:.4g} J vs {agreement['gauge_joules']:.4g} J "
                     f"({agreement['relative_difference']:+.1%})")
    card = report["card"]
    lines.append(f"card: scope {card['scope']}, {card['reading']} read, power limit {card['power_limit_w']}, "
                 f"driver {card['driver']}, permissions {card['permissions']['level']}")
    return lines
