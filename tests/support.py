"""Helpers shared by the tests: paths, a fixed meter for pytester runs, a real llama-cpp-python server."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from pytest_ipw.backends.models import embedded_gguf_path

#: the repository, the tests' data and the real captured hardware outputs (wherever a test file lives)
REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
REAL_SAMPLES = TEST_DATA / "real-samples"

FIXED_METER_CONFTEST = '''
import pytest
from pytest_ipw.meters.base import MEASURED, Measurement, Meter
from pytest_ipw.plugin import SESSION_KEY

class FixedMeter(Meter):
    name = "fixed"
    provenance = MEASURED
    domain = "{domain}"

    @property
    def sensor(self):
        return "fixed test meter"

    def _begin(self):
        pass

    def _end(self):
        return Measurement(joules={joules}, seconds=0.5, sensor=self.sensor, provenance=MEASURED, domain="{domain}")

@pytest.fixture(scope="session")
def power_meter(ipw_target, request):
    meter = FixedMeter()
    request.config.stash[SESSION_KEY].meter_info[ipw_target.id] = meter.describe()
    return meter
'''


def fixed_meter_conftest(joules: float = 2.0, domain: str = "system") -> str:
    """A conftest whose ``power_meter`` override costs every window ``joules`` over 0.5 s, measured:
    comparisons and aggregates then see no measurement noise at all."""
    return FIXED_METER_CONFTEST.format(joules=joules, domain=domain)


# -- a stand-in for the pynvml module (nvidia-ml-py), used by the NVML meter and GPU-mapping tests


class NVMLError(Exception):
    pass


class FakeNvml(types.SimpleNamespace):
    """Several GPUs; GPU i's counter rises by ``step_mj[i]`` on every read; ``fail`` breaks reads."""

    def __init__(self, names, step_mj=None, counters=True, power_mw=None, uuids=None, mig=None, pci=None,
                 mig_mode=None):
        super().__init__()
        self.names = names
        self.pci = pci  # PCI bus id of each NVML index, when the test gives them
        self.mig_mode = mig_mode or {}  # NVML index -> (current, pending) MIG mode
        self.step_mj = step_mj or [1000 * (i + 1) for i in range(len(names))]
        self.power_mw = power_mw or [100_000 * (i + 1) for i in range(len(names))]
        self.uuids = uuids or [f"GPU-{i:08d}-aaaa-bbbb-cccc-dddddddddddd" for i in range(len(names))]
        self.mig = mig or {}  # MIG uuid -> parent index
        self.counters, self.reads, self.fail, self.shutdowns = counters, [0] * len(names), False, 0
        self.NVMLError = NVMLError
        self.NVML_TEMPERATURE_GPU, self.NVML_CLOCK_SM, self.NVML_CLOCK_MEM = 0, 1, 2

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, index):
        if not 0 <= index < len(self.names):
            raise NVMLError("Invalid Argument")
        return ("gpu", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid in self.mig:
            return ("mig", uuid)
        raise NVMLError("Not Found")

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        return ("gpu", self.mig[handle[1]])

    def nvmlDeviceGetIndex(self, handle):
        return handle[1]

    def nvmlDeviceGetUUID(self, handle):
        return self.uuids[handle[1]].encode()

    def nvmlDeviceGetPciInfo(self, handle):
        if self.pci is None:
            raise NVMLError("Not Supported")
        return types.SimpleNamespace(busId=self.pci[handle[1]].encode())

    def nvmlDeviceGetMigMode(self, handle):
        if handle[1] not in self.mig_mode:
            raise NVMLError("Not Supported")
        return self.mig_mode[handle[1]]

    def nvmlDeviceGetName(self, handle):
        return self.names[handle[1]]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.counters:
            raise NVMLError("Not Supported")
        if self.fail:
            raise NVMLError("GPU is lost")
        i = handle[1]
        self.reads[i] += 1
        return 7_000_000 + self.reads[i] * self.step_mj[i]

    def nvmlDeviceGetPowerUsage(self, handle):
        if self.fail:
            raise NVMLError("GPU is lost")
        return self.power_mw[handle[1]]

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 40 + handle[1]

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return {1: 1980, 2: 2619}[clock]

    def nvmlSystemGetDriverVersion(self):
        return "565.57.01"

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000


H100x4 = ["NVIDIA H100 80GB HBM3"] * 4


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(port: int) -> bool:
    import http.client

    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/v1/models")
        return connection.getresponse().status == 200
    except OSError:
        return False


@contextlib.contextmanager
def llama_server(alias: str = "smollm2") -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m llama_cpp.server`` with the embedded model; yields (base URL, process)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()), "--host", "127.0.0.1",
         "--port", str(port), "--model_alias", alias, "--n_ctx", "2048", "--verbose", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not _ready(port):
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {process.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not start within 120 s")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1", process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stderr.close()


class JsonHandler(BaseHTTPRequestHandler):
    """Base of the stand-in HTTP servers: quiet logs and one way to answer with JSON."""

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: list[Any]) -> None:
        """Answer with a server-sent event stream, as OpenAI-compatible servers stream: each event as it is
        written, then ``[DONE]``. A client that left (a timeout, a stopped run) gets nothing, and nothing is
        printed: a late write's traceback would land in whatever test runs next."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for event in events:
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


#: the benchmark most pytester projects run: every selected query through ipw_bench
BENCHMARK = """
def test_answer(ipw_bench):
    ipw_bench()
"""


def addition_queries(n: int, domains: tuple[str, ...] = ("math",)) -> list[dict]:
    """``n`` numeric queries "What is i + 1?", their domains taking turns."""
    return [{"id": f"q-{i:03d}", "prompt": f"What is {i} + 1? Answer with just the number.", "answer": str(i + 1),
             "domain": domains[i % len(domains)], "split": "reasoning", "scorer": "numeric"} for i in range(n)]


def recorded_answers(path: Path, queries: list[dict], wrong_every: int | None = None, wrong_by: int = 6) -> str:
    """Recorded answers to :func:`addition_queries`: all right, or off by ``wrong_by`` on every
    ``wrong_every``-th query. Returns the path as text (for ``--ipw-model=recorded:PATH``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for i, query in enumerate(queries):
            right = wrong_every is None or i % wrong_every
            handle.write(json.dumps({"prompt": query["prompt"], "response": str(i + 1 if right else i + 1 + wrong_by),
                                     "tokens_in": 10, "tokens_out": 2}) + "\n")
    return str(path)
