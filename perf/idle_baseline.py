"""Does the idle baseline depend on the model loaded? (Whether it could be measured once per device per
session instead of once per model × device, as the ``power_meter`` fixture does today.)

For each model (none, and each GGUF given or found), in rounds that alternate the order: load it on the CPU,
make the plugin's warm-up generation, then measure the idle baseline as the fixture does
(``meter.measure_idle``) with the meter pytest-ipw selects for this machine's CPU; unload. Prints, per model,
the mean and spread of idle power over the rounds, and the largest difference between two models' means
against the run-to-run spread of one model. Run from the repository root:

    python perf/idle_baseline.py [--seconds 2] [--rounds 5] [GGUF ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

NO_MODEL = "(no model)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="GGUF files (default: the embedded model and any in the cache)")
    parser.add_argument("--seconds", type=float, default=2.0, help="idle window, as --ipw-idle-seconds (default 2)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures to FILE")
    args = parser.parse_args()

    import llama_cpp

    from pytest_ipw.backends.models import embedded_gguf_path
    from pytest_ipw.core import defaults
    from pytest_ipw.hardware.profiles import detect_devices, load_profiles
    from pytest_ipw.meters.registry import select_meter
    from pytest_ipw.plugin import WARMUP_PROMPT

    models = [Path(m) for m in args.models] or [embedded_gguf_path(), *sorted(
        (Path.home() / ".cache" / "pytest-ipw" / "models").glob("*.gguf"))]
    cpu = next(d for d in detect_devices(load_profiles()) if d.profile.name == "cpu")
    choice = select_meter(cpu.profile, cpu.index)
    meter = choice.meter
    described = meter.describe()
    print(f"meter: {described.get('sensor')} ({described.get('provenance')})"
          + (f"; {choice.fallback_reason}" if choice.fallback_reason else ""))
    names = [NO_MODEL, *(m.name for m in models)]
    watts: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        for name in names if round_number % 2 == 0 else list(reversed(names)):
            llm = None
            if name != NO_MODEL:
                path = next(m for m in models if m.name == name)
                llm = llama_cpp.Llama(model_path=str(path), n_ctx=defaults.CONTEXT_SIZE, n_gpu_layers=0,
                                      seed=defaults.SEED, verbose=False)
                for _ in llm.create_chat_completion(messages=[{"role": "user", "content": WARMUP_PROMPT}],
                                                    temperature=defaults.TEMPERATURE, seed=defaults.SEED,
                                                    max_tokens=defaults.MAX_TOKENS, stream=True):
                    pass
            watts[name].append(meter.measure_idle(args.seconds).watts)
            if llm is not None:
                llm.close()
            del llm
            gc.collect()
            time.sleep(0.2)
    meter.close()
    rows = {name: {"mean_w": statistics.fmean(v), "sd_w": statistics.stdev(v) if len(v) > 1 else 0.0, "rounds": v}
            for name, v in watts.items()}
    for name, row in rows.items():
        print(f"{name:48s} idle {row['mean_w']:7.3f} W  (sd {row['sd_w']:.3f} W over {args.rounds} rounds)")
    means = [row["mean_w"] for row in rows.values()]
    noise = statistics.fmean(row["sd_w"] for row in rows.values())
    spread = max(means) - min(means)
    print(f"largest difference between models: {spread:.3f} W; run-to-run spread of one model: {noise:.3f} W (mean sd)")
    if args.json:
        Path(args.json).write_text(json.dumps({"meter": described, "fallback_reason": choice.fallback_reason,
                                               "rows": rows, "spread_w": spread, "noise_w": noise,
                                               "seconds": args.seconds}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
