"""The OpenAI-compatible HTTP backend against a real server on this machine (llama-cpp-python's
``llama_cpp.server`` with the embedded SmolLM2 model, on 127.0.0.1 and a free port), plus a small stdlib
server for what a real one cannot be made to do on demand (sleep past the timeout, refuse an API key, send
503s, send a usage block). Everything is on localhost."""

from __future__ import annotations

import json
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from pytest_ipw.backends import load_backend
from pytest_ipw.backends.base import GenerationSettings, QueryFailed
from pytest_ipw.backends.openai_http import parse_endpoint
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.backends.models import parse_model_spec
from support import JsonHandler, free_port, llama_server

SECRET = "sk-ipw-test-0123456789abcdef"  # must never appear in any output or file


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with llama_server() as (url, _):
        yield url


@pytest.fixture(scope="module")
def cpu():
    from pytest_ipw.hardware.profiles import detect_devices, load_profiles

    return next(d for d in detect_devices(load_profiles()) if d.profile.name == "cpu")


def http_model(url: str, model: str | None = "smollm2", **settings: Any):
    location = url.replace("http://", "openai+http://") + (f"#{model}" if model else "")
    return load_backend(parse_model_spec(location), GenerationSettings(**settings), None)


# --------------------------------------------------------------------------------------------------
# the real server
# --------------------------------------------------------------------------------------------------


def test_streams_with_real_ttft_and_labelled_token_counts(server):
    backend = http_model(server, max_tokens=48)
    try:
        long = backend.generate("Write a long poem about the sea.")
        short = backend.generate("What is the capital of France? Answer with one word.")
    finally:
        backend.close()
    # Streaming: the first token arrives before the 48th (no ratio: this machine's load must not decide it).
    assert 0 < long.ttft_s < long.latency_s
    assert long.finish_reason == "length" and long.tokens_out == 48  # one streamed chunk per token here
    assert short.finish_reason == "stop" and "Paris" in short.text and 0 < short.tokens_out < 48
    # llama_cpp.server sends no usage block when streaming: the counts say where they come from
    assert long.token_source == "chunks" and long.tokens_in is None


def test_records_the_server_identity_and_no_key(server, monkeypatch):
    monkeypatch.setenv("IPW_TEST_KEY", SECRET)
    backend = http_model(server, max_tokens=4, api_key_env="IPW_TEST_KEY")
    backend.generate("Say hi.")
    info = backend.info()
    backend.close()
    assert info["model"] == "smollm2" and info["served_model"] == "smollm2" and info["owned_by"] == "me"
    assert info["server_header"] == "uvicorn" and info["local_endpoint"] is True
    assert info["token_counts"] == "chunks (prompt tokens unknown)"
    assert info["api_key_env"] == "IPW_TEST_KEY" and info["api_key_set"] is True
    assert SECRET not in json.dumps(info)


def test_the_one_served_model_is_used_when_none_is_named(server):
    backend = http_model(server, model=None, max_tokens=2)
    assert backend.model == "smollm2"
    backend.close()


def test_a_wrong_model_name_lists_what_the_server_serves(server):
    with pytest.raises(IPWUsageError, match=r"does not serve the model 'smollm3'; it serves: smollm2\. "
                                            r"Fix the name after '#' in --ipw-model"):
        http_model(server, model="smollm3")


def test_the_server_formats_the_prompt_like_the_in_process_backend(server, cpu):
    """The server applies the GGUF's chat template like the in-process backend: the same prompt tokens.

    Token counts are exact on any machine; the answers' texts are not compared, since the server and the
    in-process model evaluate the prompt in other batch splits, whose floating point differs by CPU.
    """
    import http.client
    from urllib.parse import urlsplit

    prompt = "What is the capital of France? Answer with one word."
    local = load_backend(parse_model_spec("smollm2-135m"), GenerationSettings(max_tokens=4), cpu)
    try:
        in_process = local.generate(prompt)
    finally:
        local.close()
    address = urlsplit(server)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    body = {"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "max_tokens": 4}
    connection.request("POST", f"{address.path}/chat/completions", json.dumps(body),
                       {"Content-Type": "application/json"})
    usage = json.loads(connection.getresponse().read())["usage"]
    connection.close()
    assert usage["prompt_tokens"] == in_process.tokens_in > 0


BENCH = """
import os, signal

def test_answer(ipw_bench, ipw_query):
    if ipw_query.id == os.environ.get("IPW_KILL_AT"):
        os.kill(int(os.environ["IPW_SERVER_PID"]), signal.SIGKILL)
    ipw_bench()
"""
QUERIES = [{"id": f"q{i}", "prompt": f"What is {i} + {i}? Answer with just the number.", "answer": str(2 * i),
            "domain": "math", "split": "reasoning", "scorer": "numeric"} for i in range(1, 5)]


def _project(pytester: pytest.Pytester) -> None:
    (pytester.path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    pytester.makepyfile(test_bench=BENCH)


def test_a_server_that_dies_mid_run_stops_the_run_with_one_line_and_keeps_the_records(pytester, monkeypatch):
    _project(pytester)
    with llama_server() as (url, process):
        monkeypatch.setenv("IPW_SERVER_PID", str(process.pid))
        monkeypatch.setenv("IPW_KILL_AT", "q3")
        model = url.replace("http://", "openai+http://") + "#smollm2"
        started = time.monotonic()
        result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", f"--ipw-model={model}",
                                    "--ipw-max-tokens=8", "--ipw-retries=1", "--ipw-json=run.json")
        elapsed = time.monotonic() - started
        process.wait(timeout=10)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert "pytest-ipw: smollm2: cannot reach the OpenAI-compatible server at " in output
    assert "(connection refused, 2 tries); start it" in output
    assert "Traceback" not in output and elapsed < 60
    records = json.loads((pytester.path / "run.json").read_text())["records"]
    assert [r["query_id"] for r in records] == ["q1", "q2"]  # what finished is kept and reported
    assert all(r["token_source"] == "chunks" and r["ttft_s"] > 0 for r in records)


@pytest.mark.parametrize(("model", "message"), [
    ("#nope", "*does not serve the model 'nope'; it serves: smollm2*"),
    (None, "*cannot reach the OpenAI-compatible server at http://127.0.0.1:{port}/v1 (connection refused, 1 try)*"),
])
def test_wrong_model_or_unreachable_server_through_pytest(pytester, server, model, message):
    _project(pytester)
    port = free_port()
    spec = server.replace("http://", "openai+http://") + model if model else f"openai+http://127.0.0.1:{port}/v1#x"
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", f"--ipw-model={spec}",
                                "--ipw-retries=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    import fnmatch

    assert fnmatch.fnmatch(output.replace("\n", " "), message.format(port=port)), output[-2000:]
    assert "Traceback" not in output


# --------------------------------------------------------------------------------------------------
# a stdlib stand-in for what a real server cannot be made to do on demand
# --------------------------------------------------------------------------------------------------


class Stub:
    """An OpenAI-compatible stand-in: streams ``answer`` word by word, with a usage block when asked."""

    def __init__(self, key: str | None = None, sleep_s: float = 0.0, fail_first: int = 0, usage: bool = True,
                 answer: str = "The answer is 4.", stream: bool = True):
        self.key, self.sleep_s, self.fail_first, self.usage, self.answer, self.stream = \
            key, sleep_s, fail_first, usage, answer, stream
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(JsonHandler):
            def _authorised(self) -> bool:
                sent = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if stub.key is not None and sent != stub.key:
                    # Real servers echo the key they got: the client must scrub it.
                    self._json(401, {"error": {"message": f"Incorrect API key provided: {sent}"}})
                    return False
                return True

            def do_GET(self) -> None:
                if self.path == "/version":
                    return self._json(200, {"version": "9.9.9-stub"})
                if not self._authorised():
                    return
                self._json(200, {"data": [{"id": "stub-model", "owned_by": "stub"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"body": body, "authorization": self.headers.get("Authorization")})
                if not self._authorised():
                    return
                if stub.sleep_s:
                    time.sleep(stub.sleep_s)
                if stub.fail_first > 0:
                    stub.fail_first -= 1
                    return self._json(503, {"error": {"message": "loading model"}})
                words = stub.answer.split(" ")
                if not stub.stream:
                    return self._json(200, {"model": "stub-model", "choices": [
                        {"message": {"content": stub.answer}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 9, "completion_tokens": len(words)}})
                events = [{"model": "stub-model", "choices": [{"delta": {"role": "assistant"}}]}]
                events += [{"model": "stub-model", "system_fingerprint": "fp_stub", "choices": [
                    {"delta": {"content": (" " if i else "") + w}}]} for i, w in enumerate(words)]
                events.append({"model": "stub-model", "choices": [{"delta": {}, "finish_reason": "stop"}]})
                if stub.usage and body.get("stream_options", {}).get("include_usage"):
                    events.append({"model": "stub-model", "choices": [],
                                   "usage": {"prompt_tokens": 9, "completion_tokens": len(words) + 1}})
                self._stream(events)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub_factory() -> Iterator[Any]:
    stubs: list[Stub] = []

    def make(**kwargs: Any) -> Stub:
        stubs.append(Stub(**kwargs))
        return stubs[-1]

    yield make
    for stub in stubs:
        stub.close()


def test_usage_block_gives_the_token_counts_and_sampling_is_sent(stub_factory):
    stub = stub_factory()
    backend = http_model(stub.url, "stub-model", max_tokens=7, temperature=0.0, seed=3)
    generation = backend.generate("2 + 2?")
    info = backend.info()
    backend.close()
    assert generation.text == "The answer is 4." and generation.token_source == "usage"
    assert (generation.tokens_in, generation.tokens_out) == (9, 5)  # from usage, not the 4 chunks
    sent = stub.requests[0]["body"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert (sent["max_tokens"], sent["temperature"], sent["seed"], sent["model"]) == (7, 0.0, 3, "stub-model")
    assert info["server_version"] == "9.9.9-stub" and info["server_version_endpoint"] == "/version"
    assert info["system_fingerprint"] == "fp_stub" and info["token_counts"] == "usage"


def test_a_server_that_ignores_stream_still_answers_without_a_ttft(stub_factory):
    stub = stub_factory(stream=False)
    backend = http_model(stub.url, "stub-model")
    generation = backend.generate("2 + 2?")
    backend.close()
    assert generation.text == "The answer is 4." and generation.ttft_s is None and generation.tokens_out == 4


def test_timeout_is_one_clear_error_without_retrying(stub_factory):
    stub = stub_factory(sleep_s=3.0)
    backend = http_model(stub.url, "stub-model", request_timeout_s=0.5, retries=3)
    started = time.monotonic()
    # that query's failure (recorded, the run goes on: tests/test_query_failures.py)
    with pytest.raises(QueryFailed, match=r"did not answer /chat/completions within 0\.5 s \(--ipw-timeout\); "
                                          r"raise --ipw-timeout"):
        backend.generate("2 + 2?")
    assert time.monotonic() - started < 2.0  # not retried: a slow model would be as slow again
    backend.close()


def test_http_503_is_retried_a_bounded_number_of_times(stub_factory):
    stub = stub_factory(fail_first=2)
    backend = http_model(stub.url, "stub-model", retries=2)
    assert backend.generate("2 + 2?").text == "The answer is 4."
    backend.close()
    stub = stub_factory(fail_first=5)
    backend = http_model(stub.url, "stub-model", retries=1)
    with pytest.raises(IPWUsageError, match=r"kept failing \(HTTP 503: loading model\) after 2 tries"):
        backend.generate("2 + 2?")
    backend.close()


def test_wrong_api_key_names_the_variable_and_never_the_key(stub_factory, monkeypatch):
    stub = stub_factory(key="the-right-key")
    monkeypatch.setenv("IPW_TEST_KEY", SECRET)
    with pytest.raises(IPWUsageError) as info:
        http_model(stub.url, "stub-model", api_key_env="IPW_TEST_KEY")
    message = str(info.value)
    assert "rejected the request with HTTP 401 (Incorrect API key provided: ***)" in message
    assert "IPW_TEST_KEY is set but the key was refused; export IPW_TEST_KEY=<your key>" in message
    assert SECRET not in message
    monkeypatch.delenv("IPW_TEST_KEY")
    with pytest.raises(IPWUsageError, match="IPW_TEST_KEY is not set"):
        http_model(stub.url, "stub-model", api_key_env="IPW_TEST_KEY")


def test_the_api_key_is_sent_but_never_written_into_results_reports_or_logs(pytester, stub_factory, monkeypatch):
    stub = stub_factory(key=SECRET)
    monkeypatch.setenv("IPW_TEST_KEY", SECRET)
    _project(pytester)
    model = stub.url.replace("http://", "openai+http://") + "#stub-model"
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", f"--ipw-model={model}",
                                "--ipw-api-key-env=IPW_TEST_KEY", "--ipw-json=out/run.json", "--junitxml=out/junit.xml",
                                "--ipw-autosave", "-rA", "-v")
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert all(r["authorization"] == f"Bearer {SECRET}" for r in stub.requests)  # it was used...
    written = [p for p in pytester.path.rglob("*") if p.is_file()]
    assert any(p.name == "run.json" for p in written) and any(p.name == "junit.xml" for p in written)
    for path in written:  # ...and appears in no file the run left: results, JUnit, saved runs, journal
        assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in result.stdout.str() + result.stderr.str()
    document = json.loads((pytester.path / "out" / "run.json").read_text())
    info = document["settings"]["models"]["stub-model-cpu"]
    assert info["api_key_env"] == "IPW_TEST_KEY" and info["api_key_set"] is True
    assert {r["token_source"] for r in document["records"]} == {"usage"}


def test_endpoint_syntax_errors():
    with pytest.raises(IPWUsageError, match=r"expected openai\+http://HOST:PORT/v1#MODEL"):
        parse_endpoint("http:///v1")
    with pytest.raises(IPWUsageError, match="for an OpenAI-compatible server write openai\\+http://HOST:PORT/v1#MODEL"):
        parse_model_spec("openai:gpt-4o")
    assert parse_endpoint("https://api.example.com/v1#m").port == 443


def test_wrong_api_key_through_pytest_is_one_line(pytester, stub_factory, monkeypatch):
    stub = stub_factory(key="the-right-key")
    monkeypatch.setenv("IPW_TEST_KEY", SECRET)
    _project(pytester)
    model = stub.url.replace("http://", "openai+http://") + "#stub-model"
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", f"--ipw-model={model}",
                                "--ipw-api-key-env=IPW_TEST_KEY")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "rejected the request with HTTP 401 (Incorrect API key provided: ***): IPW_TEST_KEY is set but" in output
    assert SECRET not in output and "Traceback" not in output
