"""Report generation time and oracle-routing savings on synthetic runs of a given size.

A seeded synthetic study: S models of growing size (a larger model answers harder queries, and spends
more energy per query), each on a measured GPU and an estimated CPU, over Q queries in six domains. Prints
the time to analyse and write the report folder, and the oracle's energy saving against always using the
largest model. Run from the repository root:

    python perf/report_generation.py [--queries Q] [--models S] [--out DIR]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_ipw.analysis.study import routing_analysis  # noqa: E402
from pytest_ipw.report.html import write_report  # noqa: E402
from pytest_ipw.analysis.model_info import ModelInfo  # noqa: E402

DOMAINS = ("arithmetic", "units", "knowledge", "science_mc", "logic", "strings")


def synthetic(queries: int, models: int, seed: int = 0) -> tuple[dict, dict[str, ModelInfo]]:
    rng = random.Random(seed)
    hardness = [rng.random() for _ in range(queries)]
    records, infos = [], {}
    for m in range(models):
        name = f"model-{m}"
        skill = 0.3 + 0.6 * m / max(1, models - 1)  # share of queries it can answer
        joules = 2.0 * 2.2 ** m  # energy per query grows with size
        infos[name] = ModelInfo(name, parameters=0.135e9 * 2.2 ** m)
        for accelerator, provenance, scale in (("h100", "measured", 0.4), ("cpu", "estimated", 1.0)):
            for q in range(queries):
                latency = 0.05 * 1.8 ** m * rng.uniform(0.8, 1.2)
                energy = joules * scale * rng.uniform(0.8, 1.2)
                records.append({
                    "query_id": f"q{q:06d}", "domain": DOMAINS[q % len(DOMAINS)], "split": "chat" if q % 3 else "reasoning",
                    "model": name, "accelerator": accelerator, "correct": hardness[q] + rng.gauss(0, 0.08) < skill,
                    "unscorable": False, "joules": energy, "watts": energy / latency, "seconds": latency,
                    "latency_s": latency, "tokens_out": 20, "provenance": provenance,
                    "meter": "synthetic " + provenance, "energy_domain": "gpu" if accelerator == "h100" else "cpu",
                    "prompt": f"query {q}", "response": f"answer {q}",
                })
    return {"schema_version": 1, "records": records, "settings": {}, "machine_info": {"node": "synthetic"}}, infos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--out", default=None, help="report folder (default: a temporary one)")
    args = parser.parse_args()
    document, infos = synthetic(args.queries, args.models)
    out = args.out or tempfile.mkdtemp(prefix="ipw-report-")
    started = time.perf_counter()
    files = write_report(document, out, model_info=infos)
    elapsed = time.perf_counter() - started
    print(f"records: {len(document['records'])}; report written in {elapsed:.2f} s to {files.html}")
    gpu = [r for r in document["records"] if r["accelerator"] == "h100"]
    routing = routing_analysis(gpu, parameters={n: i.parameters for n, i in infos.items() if i.parameters})
    for result in routing.results:
        saving = routing.energy_saving(result)
        print(f"{result.strategy:28s} accuracy {result.accuracy:.3f}  J/query {result.mean_joules:8.2f}  "
              f"energy saved {saving:6.1%}  ({result.provenance})")


if __name__ == "__main__":
    main()
