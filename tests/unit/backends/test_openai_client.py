"""The OpenAI-compatible client's manners: Retry-After and exponential back-off with jitter, proxies from the
environment, and a clear error for a body that is not a chat completion. A small standard-library server on
localhost plays the server (or the proxy); waits are recorded, not slept."""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest

from pytest_ipw.backends import openai_http
from pytest_ipw.backends.openai_http import (
    BACKOFF_CAP_S,
    Endpoint,
    OpenAIHTTPClient,
    backoff_seconds,
    parse_endpoint,
    proxy_for,
    retry_after_seconds,
)
from pytest_ipw.core.errors import IPWUsageError

COMPLETION = {"model": "m", "choices": [{"message": {"content": "The answer is 4."}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 9, "completion_tokens": 5}}


class Server:
    """Answers each request with ``respond(handler) -> (status, headers, body bytes)``; keeps what it saw."""

    def __init__(self, respond: Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]):
        self.seen: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.seen.append({"method": self.command, "target": self.path, "headers": dict(self.headers),
                                    "body": body})
                status, headers, data = respond(self)
                self.send_response(status)
                for name, value in {"Content-Length": str(len(data)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_CONNECT = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers: list[Server] = []

    def start(respond):
        servers.append(Server(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def client_for(url: str, retries: int = 3, environ: dict[str, str] | None = None) -> tuple[OpenAIHTTPClient, list[float]]:
    waits: list[float] = []
    client = OpenAIHTTPClient(parse_endpoint(url), None, timeout_s=5.0, retries=retries, sleep=waits.append,
                              rng=random.Random(0), environ=environ or {})
    return client, waits


def json_answer(status: int, body: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


def answers(*responses: tuple[int, dict[str, str], bytes]):
    queue = list(responses)
    return lambda handler: queue.pop(0) if len(queue) > 1 else queue[0]


def chat(client: OpenAIHTTPClient) -> dict[str, Any]:
    return next(iter(client.stream_chat({"model": "m", "messages": []})))


# --------------------------------------------------------------------------- waiting


@pytest.mark.parametrize("headers, seconds", [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),  # OpenAI's finer header first
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:20 GMT"}, 20.0),  # an HTTP date, 20 s after "now" below
    ({"Retry-After": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),  # in the past: at once
    ({"Retry-After": "soon"}, None),
    ({}, None),
])
def test_retry_after(headers, seconds):
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_seconds(headers, now=now) == seconds


def test_backoff_grows_exponentially_with_jitter_up_to_a_cap():
    rng = random.Random(1)
    for attempt in range(12):
        step = min(BACKOFF_CAP_S, 2.0 ** attempt)
        waits = [backoff_seconds(attempt, rng) for _ in range(50)]
        assert all(step / 2 <= w <= step for w in waits)
        assert len(set(waits)) > 1  # jittered: clients refused together do not return together
    assert max(backoff_seconds(30, rng) for _ in range(20)) <= BACKOFF_CAP_S


def test_a_429_with_retry_after_is_waited_out(serve):
    server = serve(answers(json_answer(429, {"error": {"message": "rate limited"}}, **{"Retry-After": "3"}),
                           json_answer(200, COMPLETION)))
    client, waits = client_for(f"http://127.0.0.1:{server.port}/v1")
    assert chat(client)["choices"][0]["message"]["content"] == "The answer is 4."
    assert waits == [3.0]


def test_without_retry_after_the_waits_grow(serve):
    server = serve(answers(*[json_answer(503, {"error": {"message": "loading"}})] * 3, json_answer(200, COMPLETION)))
    client, waits = client_for(f"http://127.0.0.1:{server.port}/v1", retries=3)
    chat(client)
    assert len(waits) == 3
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0 and 2.0 <= waits[2] <= 4.0


def test_a_retry_after_longer_than_we_wait_is_one_clear_error(serve):
    server = serve(answers(json_answer(429, {"error": {"message": "quota"}}, **{"Retry-After": "3600"})))
    client, waits = client_for(f"http://127.0.0.1:{server.port}/v1")
    with pytest.raises(IPWUsageError, match=r"asks to retry after 3600 s \(HTTP 429: quota\); that is longer than "
                                            r"pytest-ipw waits \(120 s\)"):
        chat(client)
    assert waits == []


def test_the_default_retries_outlast_a_short_rate_limit():
    from pytest_ipw.core import defaults

    total = sum(2.0 ** attempt / 2 for attempt in range(defaults.RETRIES))  # the shortest possible waits
    assert defaults.RETRIES >= 4 and total >= 7.5


# --------------------------------------------------------------------------- malformed bodies


@pytest.mark.parametrize("body, problem", [
    (b"<html><body>Bad gateway</body></html>", "not JSON (Expecting value at line 1, column 1)"),
    (json.dumps({"object": "list", "data": []}).encode(), "JSON without choices"),
    (json.dumps({"choices": [{"text": "4"}]}).encode(), "JSON without choices[0].message.content"),
    (json.dumps([1, 2]).encode(), "JSON but not an object (list)"),
    (b"", "not JSON (Expecting value at line 1, column 1)"),
])
def test_a_non_streamed_body_that_is_not_a_completion_is_one_clear_error(serve, body, problem):
    server = serve(answers((200, {"Content-Type": "text/html"}, body)))
    client, _ = client_for(f"http://127.0.0.1:{server.port}/v1")
    with pytest.raises(IPWUsageError) as info:
        chat(client)
    message = str(info.value)
    assert f"answered /chat/completions (HTTP 200, text/html) with a body that is {problem}" in message
    assert "\n" not in message and "Is the URL an OpenAI-compatible server's base" in message


# --------------------------------------------------------------------------- proxies


def endpoint(url: str) -> Endpoint:
    return parse_endpoint(url)


def test_proxy_from_the_environment():
    remote = endpoint("https://api.example.com/v1")
    proxy = proxy_for(remote, {"HTTPS_PROXY": "http://user:p%40ss@proxy.corp:3128"})
    assert (proxy.host, proxy.port) == ("proxy.corp", 3128)
    assert proxy.authorization == "Basic dXNlcjpwQHNz"  # user:p@ss
    assert proxy_for(remote, {"HTTP_PROXY": "http://proxy.corp:3128"}) is None  # the other scheme's proxy
    assert proxy_for(endpoint("http://api.example.com/v1"), {"http_proxy": "proxy.corp"}).port == 8080
    lower_wins = proxy_for(remote, {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"})
    assert (lower_wins.host, lower_wins.port) == ("lower", 2)


@pytest.mark.parametrize("no_proxy", ["api.example.com", ".example.com", "example.com", "*", "other,api.example.com:443"])
def test_no_proxy_exempts_hosts(no_proxy):
    assert proxy_for(endpoint("https://api.example.com/v1"), {"HTTPS_PROXY": "http://p:1", "NO_PROXY": no_proxy}) is None


def test_a_loopback_server_is_reached_directly():
    assert proxy_for(endpoint("http://127.0.0.1:8080/v1"), {"HTTP_PROXY": "http://p:1"}) is None
    assert proxy_for(endpoint("http://localhost:8080/v1"), {"HTTP_PROXY": "http://p:1"}) is None


def test_plain_http_goes_through_the_proxy_with_the_absolute_url(serve):
    proxy = serve(answers(json_answer(200, COMPLETION)))
    client, _ = client_for("http://models.internal:8000/v1",
                           environ={"HTTP_PROXY": f"http://u:pw@127.0.0.1:{proxy.port}"})
    chat(client)
    request = proxy.seen[0]
    assert request["method"] == "POST" and request["target"] == "http://models.internal:8000/v1/chat/completions"
    assert request["headers"]["Proxy-Authorization"] == "Basic dTpwdw=="


def test_https_goes_through_a_connect_tunnel(serve):
    proxy = serve(answers((403, {}, b"")))  # the proxy refuses the tunnel
    client, waits = client_for("https://api.example.com/v1", retries=1,
                               environ={"https_proxy": f"http://u:pw@127.0.0.1:{proxy.port}"})
    with pytest.raises(IPWUsageError, match="cannot reach the OpenAI-compatible server at https://api.example.com:443/v1"):
        chat(client)
    assert [r["method"] for r in proxy.seen] == ["CONNECT", "CONNECT"] and len(waits) == 1
    assert proxy.seen[0]["target"] == "api.example.com:443"
    assert proxy.seen[0]["headers"]["Proxy-Authorization"] == "Basic dTpwdw=="


def test_a_malformed_proxy_is_named():
    with pytest.raises(IPWUsageError, match=r"HTTPS_PROXY='http://:x' is not a proxy URL"):
        proxy_for(endpoint("https://api.example.com/v1"), {"HTTPS_PROXY": "http://:x"})


def test_the_backend_records_the_proxy(serve, monkeypatch):
    proxy = serve(lambda handler: json_answer(200, {"data": [{"id": "m"}]}))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    from pytest_ipw.backends.base import GenerationSettings
    from pytest_ipw.backends.models import parse_model_spec

    backend = openai_http.load(parse_model_spec("openai+http://models.internal:8000/v1#m"), GenerationSettings(), None)
    assert backend.info()["proxy"] == f"127.0.0.1:{proxy.port}"
    backend.close()
