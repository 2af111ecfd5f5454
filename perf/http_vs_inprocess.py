"""Time to first token and latency: the embedded SmolLM2 in-process (llama-cpp backend) versus the same
model behind llama-cpp-python's OpenAI-compatible server on 127.0.0.1 (openai+http backend, streamed).

Same GGUF, n_ctx 2048, temperature 0, max_tokens 64, CPU, the first N shipped queries, one warm-up each.
Queries alternate between the two (never at once, so they do not share the cores, and background load
hits both alike). Prints medians; run from the repository root:

    python perf/http_vs_inprocess.py [--limit N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def figures(runs: list) -> dict[str, float]:
    ttft = [g.ttft_s for g in runs if g.ttft_s is not None]
    return {"ttft_p50_ms": 1000 * statistics.median(ttft), "latency_p50_ms": 1000 * statistics.median(g.latency_s for g in runs),
            "tok_per_s": sum(g.tokens_out for g in runs) / sum(g.latency_s for g in runs),
            "tokens_out": statistics.mean(g.tokens_out for g in runs)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=30)
    args = parser.parse_args()

    from pytest_ipw.hardware.profiles import detect_devices, load_profiles
    from pytest_ipw.backends import load_backend
    from pytest_ipw.backends.base import GenerationSettings
    from pytest_ipw.backends.models import embedded_gguf_path, parse_model_spec
    from pytest_ipw.queries.schema import load_queries, select_queries

    prompts = [q.prompt for q in select_queries(load_queries(), limit=args.limit)]
    settings = GenerationSettings(max_tokens=64)
    cpu = next(d for d in detect_devices(load_profiles()) if d.profile.name == "cpu")

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()),
                               "--host", "127.0.0.1", "--port", str(port), "--model_alias", "smollm2",
                               "--n_ctx", "2048", "--verbose", "false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        spec = parse_model_spec(f"openai+http://127.0.0.1:{port}/v1#smollm2")
        for _ in range(600):
            try:
                remote = load_backend(spec, settings, cpu)
                break
            except Exception:  # not listening yet
                time.sleep(0.2)
        else:
            raise SystemExit("llama_cpp.server did not start")
        local = load_backend(parse_model_spec("smollm2-135m"), settings, cpu)
        local_runs, remote_runs = [], []
        for backend in (local, remote):
            backend.generate("Reply with the word OK.")  # warm-up, as the plugin does
        for prompt in prompts:
            local_runs.append(local.generate(prompt))
            remote_runs.append(remote.generate(prompt))
        in_process, over_http = figures(local_runs), figures(remote_runs)
        local.close()
        remote.close()
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"{len(prompts)} queries, max_tokens 64, medians")
    print(f"{'':<28}{'TTFT ms':>10}{'latency ms':>12}{'tok/s':>8}{'tok out':>9}")
    # (the server's default sampling adds a repeat penalty, so its answers, and their lengths, can differ)
    for label, f in (("in-process (llama-cpp)", in_process), ("HTTP (llama_cpp.server)", over_http)):
        print(f"{label:<28}{f['ttft_p50_ms']:>10.1f}{f['latency_p50_ms']:>12.1f}{f['tok_per_s']:>8.1f}{f['tokens_out']:>9.1f}")


if __name__ == "__main__":
    main()
