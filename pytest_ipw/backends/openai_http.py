"""OpenAI-compatible HTTP servers: llama.cpp's server, llama-cpp-python's server, Ollama, ``vllm serve``,
LM Studio, or any cloud endpoint that speaks ``POST /v1/chat/completions``.

``--ipw-model=openai+http://127.0.0.1:8080/v1#smollm2`` (``openai+https://...`` for TLS): the base URL up
to ``/v1``, and after ``#`` the model name the server knows (optional when it serves exactly one).

Answers are streamed, so time-to-first-token is the time to the first generated text, as a user sees it.
Token counts come from the server's usage block (asked for with ``stream_options.include_usage``); a
server that sends none gets its streamed chunks counted instead, and the record says so
(``token_source: chunks``, prompt tokens unknown). The API key is read from an environment variable
(``--ipw-api-key-env``, default ``OPENAI_API_KEY``); only the variable's name is ever recorded, and
server messages are scrubbed of the key before they are shown.

The client is the standard library's ``http.client``: one keep-alive connection, no SDK, nothing to
import at plugin load. Connection failures and HTTP 429/5xx are retried a bounded number of times
(``--ipw-retries``): after the server's ``Retry-After`` when it sends one, else after an exponential
back-off with jitter, each wait capped; a read that takes longer than ``--ipw-timeout`` is not retried
(the model would be just as slow again). ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` are honoured (a
loopback server is always reached directly). What belongs to one query (HTTP 400/413/422, a timeout,
an error event mid-answer) fails that query only (:class:`~pytest_ipw.backends.base.QueryFailed`); what
belongs to the run (unreachable, still failing after the retries, key refused) stops it.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import os
import random
import re
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from pytest_ipw.core import defaults
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.backends.models import ModelSpec
from .base import BACKEND_ERROR, CONTEXT_OVERFLOW, REJECTED, TIMEOUT, Backend, Generation, GenerationSettings, QueryFailed

SCHEMES = ("openai+http", "openai+https")
RETRY_STATUS = (429, 500, 502, 503, 504)
#: statuses that refuse one request for what it holds (too long, too large, filtered): that query fails, the run goes on
REJECT_STATUS = (400, 413, 422)
#: how servers say a prompt is too long (OpenAI, vLLM, llama-cpp-python: "maximum context length is N tokens";
#: llama.cpp's server: "exceeds the available context size")
_CONTEXT_MESSAGE = re.compile(r"context[ _](?:length|window|size)", re.IGNORECASE)
_CONTEXT_LIMIT = re.compile(r"maximum context length is (\d+)", re.IGNORECASE)
_PROMPT_TOKENS = re.compile(r"\((\d+) in the messages|request has (\d+) input tokens", re.IGNORECASE)
BACKOFF_S = (0.5, 1.0, 2.0, 4.0)
#: back-off without Retry-After: BACKOFF_BASE_S × 2^attempt, half of it random (jitter, so that clients
#: refused together do not all come back together), each wait at most BACKOFF_CAP_S
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0
#: the longest Retry-After honoured; a server asking for longer gets an error saying so
RETRY_AFTER_CAP_S = 120.0
#: endpoints that say which server and version answers (vLLM, Ollama, llama.cpp's server), tried once
VERSION_PROBES = ("/version", "/api/version", "/props")
#: room for the JSON object of a constrained answer ({"answer": "INCORRECT"} is about ten tokens)
CHOICE_MAX_TOKENS = 32
START_HINT = ("start it (python -m llama_cpp.server --model M.gguf, vllm serve MODEL, ollama serve, "
              "llama-server -m M.gguf) or fix the URL in --ipw-model")


@dataclass(frozen=True)
class Endpoint:
    """A parsed ``openai+http(s)://host:port/base#model`` location."""

    scheme: str  # "http" | "https"
    host: str
    port: int
    base_path: str  # e.g. "/v1"
    model: str | None

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.base_path}"

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")


def parse_endpoint(location: str) -> Endpoint:
    """``http://127.0.0.1:8080/v1#smollm2`` to an :class:`Endpoint`; a malformed one names the syntax."""
    parts = urlsplit(location)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise IPWUsageError(
            f"--ipw-model=openai+{location}: expected openai+http://HOST:PORT/v1#MODEL "
            "(or openai+https://...), e.g. openai+http://127.0.0.1:8080/v1#smollm2"
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise IPWUsageError(f"--ipw-model=openai+{location}: the port is not a number") from None
    return Endpoint(parts.scheme, parts.hostname, port, parts.path.rstrip("/"), parts.fragment or None)


class RequestRejected(IPWUsageError):
    """HTTP 400/422: the server refused the request itself (e.g. a field it does not support)."""


class _Retryable(Exception):
    """A failure worth another try (connection refused/reset, HTTP 429/5xx); ``retry_after`` is the server's
    Retry-After in seconds, when it sent one."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a server asks for: ``retry-after-ms`` (OpenAI), or ``Retry-After`` in seconds or as an HTTP
    date (RFC 9110); None when absent or unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        text = (lowered.get(name) or "").strip()
        if not text:
            continue
        try:
            return max(0.0, float(text) * scale)
        except ValueError:
            pass
        if scale == 1.0:
            try:
                when = email.utils.parsedate_to_datetime(text).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
            return max(0.0, when - (time.time() if now is None else now))
    return None


def backoff_seconds(attempt: int, rng: random.Random) -> float:
    """Exponential back-off with "equal jitter": half of the step fixed, half random, capped."""
    step = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** attempt)
    return step / 2 + rng.uniform(0, step / 2)


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None  # "Basic ..." from user:password in the proxy URL


def proxy_for(endpoint: "Endpoint", environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy the environment names for this endpoint (``HTTPS_PROXY`` / ``HTTP_PROXY``, upper or lower
    case), unless ``NO_PROXY`` exempts its host; a loopback server is always reached directly."""
    if endpoint.is_loopback:
        return None
    env = os.environ if environ is None else environ
    proxies: dict[str, str] = {}
    # as urllib.request reads them: SCHEME_proxy in either case, the lower-case name winning
    for lower_case in (False, True):
        for name, value in env.items():
            if value and name.lower().endswith("_proxy") and (name == name.lower()) == lower_case:
                proxies[name.lower()[:-len("_proxy")]] = value
    url = proxies.get(endpoint.scheme)
    if not url or urllib.request.proxy_bypass_environment(f"{endpoint.host}:{endpoint.port}", proxies):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        raise IPWUsageError(f"{endpoint.scheme.upper()}_PROXY={url!r} is not a proxy URL (http://HOST:PORT)")
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode()
    try:
        port = parts.port or 8080
    except ValueError:
        raise IPWUsageError(f"{endpoint.scheme.upper()}_PROXY={url!r}: the port is not a number") from None
    return Proxy(parts.hostname, port, authorization)


class _TimedOut(Exception):
    """No answer within ``--ipw-timeout``: the run stops while loading, one query fails while answering."""


def rejected_query(status: int, detail: str) -> QueryFailed:
    """HTTP 400/413/422 for one chat request: a context overflow where the server's message says so."""
    if _CONTEXT_MESSAGE.search(detail):
        limit = _CONTEXT_LIMIT.search(detail)
        tokens = _PROMPT_TOKENS.search(detail)
        return QueryFailed(CONTEXT_OVERFLOW, f"HTTP {status}: {detail}",
                           tokens_in=int(next(g for g in tokens.groups() if g)) if tokens else None,
                           context_window=int(limit.group(1)) if limit else None)
    return QueryFailed(REJECTED, f"HTTP {status}: {detail}")


class OpenAIHTTPClient:
    """A minimal OpenAI-compatible client: JSON GETs and streamed chat completions over one connection."""

    def __init__(self, endpoint: Endpoint, api_key: str | None, timeout_s: float, retries: int,
                 key_env: str = defaults.API_KEY_ENV, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, environ: Mapping[str, str] | None = None):
        self.endpoint = endpoint
        self._api_key = api_key
        self.key_env = key_env  # named in messages; the key itself never is
        self.timeout_s = timeout_s
        self.retries = retries
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.proxy = proxy_for(endpoint, environ)
        self._connection: http.client.HTTPConnection | None = None
        self.server_header: str | None = None
        self.waits: list[float] = []  # the back-off waits of this client, for its info

    # -- plumbing ----------------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        """``text`` with the API key replaced: servers echo keys in error messages."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text

    def _new_connection(self, timeout_s: float) -> http.client.HTTPConnection:
        """A connection to the server, through the proxy when the environment names one: HTTPS through a
        CONNECT tunnel, plain HTTP by asking the proxy for the absolute URL."""
        e, proxy = self.endpoint, self.proxy
        host, port = (proxy.host, proxy.port) if proxy else (e.host, e.port)
        if e.scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=timeout_s, context=ssl.create_default_context())
            if proxy:
                tunnel_headers = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
                connection.set_tunnel(e.host, e.port, headers=tunnel_headers)
            return connection
        return http.client.HTTPConnection(host, port, timeout=timeout_s)

    def _target(self, path: str) -> str:
        """The request target: the path, or the absolute URL when a plain-HTTP proxy forwards it."""
        if self.proxy and self.endpoint.scheme == "http":
            return f"http://{self.endpoint.host}:{self.endpoint.port}{path}"
        return path

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = self._new_connection(self.timeout_s)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _headers(self, streaming: bool = False) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if streaming else "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if self.proxy and self.proxy.authorization and self.endpoint.scheme == "http":
            headers["Proxy-Authorization"] = self.proxy.authorization
        return headers

    def _send(self, method: str, path: str, body: dict[str, Any] | None, streaming: bool) -> http.client.HTTPResponse:
        """One request; connection-level failures become :class:`_Retryable`, a timeout :class:`_TimedOut`."""
        connection = self._connect()
        payload = json.dumps(body).encode() if body is not None else None
        try:
            connection.request(method, self._target(self.endpoint.base_path + path), body=payload,
                               headers=self._headers(streaming))
            response = connection.getresponse()
        except (socket.timeout, TimeoutError):
            self.close()
            raise _TimedOut(path) from None
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, closed keep-alive...
            self.close()
            raise _Retryable(_describe(exc)) from None
        self.server_header = response.getheader("Server") or self.server_header
        if response.status in RETRY_STATUS:
            retry_after = retry_after_seconds(dict(response.getheaders()))
            detail = self._error_detail(response)
            self.close()
            if "response_format" in detail:  # some servers answer 500 to a field they refuse: no retry helps
                raise RequestRejected(f"the server at {self.endpoint.base_url} refused the request with HTTP "
                                      f"{response.status}: {detail}")
            raise _Retryable(f"HTTP {response.status}: {detail}", retry_after)
        return response

    def _with_retries(self, method: str, path: str, body: dict[str, Any] | None = None,
                      streaming: bool = False) -> http.client.HTTPResponse:
        last = ""
        for attempt in range(self.retries + 1):
            try:
                return self._send(method, path, body, streaming)
            except _Retryable as exc:
                last = str(exc)
                if attempt == self.retries:
                    break
                if exc.retry_after is not None and exc.retry_after > RETRY_AFTER_CAP_S:
                    raise IPWUsageError(
                        f"the server at {self.endpoint.base_url} asks to retry after {exc.retry_after:.0f} s "
                        f"({self.redact(last)}); that is longer than pytest-ipw waits ({RETRY_AFTER_CAP_S:.0f} s): "
                        "try later, or lower the request rate (fewer xdist workers)") from None
                wait = exc.retry_after if exc.retry_after is not None else backoff_seconds(attempt, self.rng)
                self.waits.append(wait)
                self.sleep(wait)
        tries = f"{self.retries + 1} tr{'y' if self.retries == 0 else 'ies'}"
        if last.startswith("HTTP "):
            raise IPWUsageError(f"the server at {self.endpoint.base_url} kept failing ({self.redact(last)}) after "
                                f"{tries}; check its log, or raise --ipw-retries")
        raise IPWUsageError(f"cannot reach the OpenAI-compatible server at {self.endpoint.base_url} ({last}, "
                            f"{tries}); {START_HINT}")

    def _timeout_message(self, path: str) -> str:
        return (f"the server at {self.endpoint.base_url} did not answer {path} within {self.timeout_s:g} s "
                "(--ipw-timeout); raise --ipw-timeout for slow models, or check that the server is not stuck")

    def _error_detail(self, response: http.client.HTTPResponse) -> str:
        try:
            raw = response.read(4096).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            raw = ""
        detail = raw
        try:
            data = json.loads(raw)
            error = data.get("error", data) if isinstance(data, dict) else data
            detail = error.get("message", raw) if isinstance(error, dict) else str(error)
        except (json.JSONDecodeError, AttributeError):
            pass
        return self.redact(" ".join(str(detail).split())[:300]) or response.reason

    def check_status(self, response: http.client.HTTPResponse, path: str) -> None:
        """Turn an HTTP error into one message that names the fix."""
        if response.status < 400:
            return
        detail = self._error_detail(response)
        self.close()
        url = self.endpoint.base_url
        if response.status in (401, 403):
            env = self.key_env
            state = f"{env} is set but the key was refused" if self._api_key else f"{env} is not set"
            raise IPWUsageError(f"the server at {url} rejected the request with HTTP {response.status} "
                                f"({detail}): {state}; export {env}=<your key>, or name another variable with "
                                "--ipw-api-key-env=NAME")
        if response.status == 404 and "model" in detail.lower():
            raise IPWUsageError(f"the server at {url} does not serve the model {self.endpoint.model!r} ({detail}); "
                                "fix the name after '#' in --ipw-model")
        if response.status == 404:
            raise IPWUsageError(f"the server at {url} has no {path} (HTTP 404); the base URL usually ends in /v1, "
                                "e.g. openai+http://127.0.0.1:8080/v1#MODEL")
        if response.status in (400, 422):
            raise RequestRejected(f"the server at {url} answered {path} with HTTP {response.status}: {detail}")
        raise IPWUsageError(f"the server at {url} answered {path} with HTTP {response.status}: {detail}")

    def _empty_stream_failure(self, body: dict[str, Any]) -> QueryFailed:
        """Why a stream ended before its first event. llama-cpp-python's server does this when the prompt
        exceeds its context window (the error is raised after the 200 is sent); asked again without streaming
        and for one token, it says why with a 400. Costs one prompt evaluation, within this query's window."""
        self.close()
        probe = {**body, "stream": False, "max_tokens": 1}
        probe.pop("stream_options", None)
        path = "/chat/completions"
        try:
            response = self._with_retries("POST", path, probe)
            status = response.status
            detail = self._error_detail(response) if status >= 400 else ""
        except _TimedOut:
            raise QueryFailed(TIMEOUT, self._timeout_message(path)) from None
        finally:
            self.close()
        if status in REJECT_STATUS:
            return rejected_query(status, detail)
        return QueryFailed(BACKEND_ERROR, f"the server at {self.endpoint.base_url} ended the answer's stream "
                                          f"before sending anything (asked again, HTTP {status}"
                                          f"{': ' + detail if detail else ''}); its log may say why")

    @property
    def has_api_key(self) -> bool:
        return bool(self._api_key)

    # -- requests ----------------------------------------------------------------------------------
    def get_json(self, path: str) -> Any:
        try:
            response = self._with_retries("GET", path)
        except _TimedOut:
            raise IPWUsageError(self._timeout_message(path)) from None
        self.check_status(response, path)
        try:
            return json.loads(response.read().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError, http.client.HTTPException) as exc:
            self.close()
            raise IPWUsageError(f"the server at {self.endpoint.base_url} sent invalid JSON for {path} "
                                f"({exc.__class__.__name__}); is it an OpenAI-compatible server?") from None

    def probe(self, root_path: str) -> tuple[int, Any] | None:
        """One quick GET outside the base path (e.g. vLLM's /version); None on any failure."""
        connection = self._new_connection(min(2.0, self.timeout_s))
        try:
            connection.request("GET", self._target(root_path), headers=self._headers())
            response = connection.getresponse()
            body = response.read(65536)
            self.server_header = response.getheader("Server") or self.server_header
            return response.status, json.loads(body) if response.status == 200 else None
        except (OSError, http.client.HTTPException, json.JSONDecodeError, UnicodeDecodeError):
            return None
        finally:
            connection.close()

    def _whole_completion(self, response: http.client.HTTPResponse, path: str) -> dict[str, Any]:
        """A non-streamed chat completion, checked: one clear error when the body is not one."""
        try:
            raw = response.read()
        except (socket.timeout, TimeoutError):
            self.close()
            raise self._timeout_error(path) from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise IPWUsageError(f"the server at {self.endpoint.base_url} dropped the connection mid-answer "
                                f"({_describe(exc)}); it may have crashed or been stopped: check its log") from None
        text = raw.decode("utf-8", "replace")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            data, problem = None, f"not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        else:
            problem = _completion_problem(data)
        if problem:
            self.close()
            start = self.redact(" ".join(text.split())[:200]) or "(empty)"
            raise IPWUsageError(
                f"the server at {self.endpoint.base_url} answered {path} (HTTP {response.status}, "
                f"{response.getheader('Content-Type') or 'no Content-Type'}) with a body that is {problem}; it begins: "
                f"{start!r}. Is the URL an OpenAI-compatible server's base (usually ending in /v1)?")
        return data

    def stream_chat(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The server-sent events of one streamed chat completion, as JSON objects.

        Raises :class:`QueryFailed` for what belongs to this request (refused with HTTP 400/413/422, no answer
        within ``--ipw-timeout`` (not retried: a slow model would be as slow again), an error event mid-answer),
        IPWUsageError for what belongs to the run (server unreachable or failing, key refused, connection lost).
        """
        path = "/chat/completions"
        try:
            response = self._with_retries("POST", path, body, streaming=True)
        except _TimedOut:
            raise QueryFailed(TIMEOUT, self._timeout_message(path)) from None
        if response.status in REJECT_STATUS:
            detail = self._error_detail(response)
            self.close()  # the body may be longer than what was read: start the next request afresh
            raise rejected_query(response.status, detail)
        self.check_status(response, path)
        content_type = response.getheader("Content-Type") or ""
        if "text/event-stream" not in content_type:
            # Some servers ignore "stream": true and answer in one JSON document.
            yield {"__whole__": True, **self._whole_completion(response, path)}
            return
        received = False
        try:
            for raw in response:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue  # comments (": ping"), "event:" lines, blank separators
                received = True
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except json.JSONDecodeError:
                    raise IPWUsageError(f"the server at {self.endpoint.base_url} sent a malformed stream event "
                                        f"({self.redact(data[:120])!r})") from None
                if isinstance(event, dict) and event.get("error"):
                    error = event["error"]
                    message = error.get("message", error) if isinstance(error, dict) else error
                    self.close()  # the rest of this stream is of no use
                    raise QueryFailed(BACKEND_ERROR, f"the server at {self.endpoint.base_url} reported an error "
                                                     f"mid-answer: {self.redact(str(message))[:300]}")
                yield event
            response.read()  # drain the end of the stream so that the keep-alive connection can be reused
        except (socket.timeout, TimeoutError):
            self.close()
            raise QueryFailed(TIMEOUT, self._timeout_message(path)) from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise IPWUsageError(f"the server at {self.endpoint.base_url} dropped the connection mid-answer "
                                f"({_describe(exc)}); it may have crashed or been stopped: check its log") from None
        if not received:
            raise self._empty_stream_failure(body)


def _completion_problem(data: Any) -> str | None:
    """What keeps ``data`` from being a chat completion with one message, or None."""
    if not isinstance(data, dict):
        return f"JSON but not an object ({type(data).__name__})"
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "JSON without choices"
    message = choices[0].get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content", ""), (str, type(None))):
        return "JSON without choices[0].message.content"
    usage = data.get("usage")
    if usage is not None and not isinstance(usage, dict):
        return "JSON whose usage is not an object"
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"unknown host: {exc.strerror or exc}"
    if isinstance(exc, (ConnectionResetError, http.client.RemoteDisconnected)):
        return "connection closed by the server"
    return f"{exc.__class__.__name__}: {exc}".rstrip(": ")


class OpenAIHTTPBackend(Backend):
    kind = "openai-http"
    marks_first_token = True

    def __init__(self, client: OpenAIHTTPClient, model: str, settings: GenerationSettings, server: dict[str, Any]):
        self.client = client
        self.model = model
        self.settings = settings
        self.server = server
        self.local = client.endpoint.is_loopback  # a remote endpoint's energy is not this machine's
        self._served_model: str | None = None
        self._fingerprint: str | None = None
        self.usage_supported: bool | None = None
        self.choice_format: str | None = None  # the response_format that constrained generate_choice, if any
        self._refused_formats: set[str] = set()

    def _body(self, prompt: str, max_tokens: int | None = None) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.settings.temperature,
            "seed": self.settings.seed,
            "max_tokens": max_tokens or self.settings.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def generate(self, prompt: str, on_first_token: Callable[[], None] | None = None) -> Generation:
        return self._run(self._body(prompt), on_first_token=on_first_token)

    def generate_choice(self, prompt: str, options: Sequence[str]) -> Generation:
        """The answer constrained by ``response_format`` to a JSON object ``{"answer": <one of options>}``,
        decoded to the option: OpenAI's ``json_schema`` (OpenAI, vLLM, llama.cpp's llama-server, Ollama), else
        llama.cpp's ``json_object`` with a ``schema`` (llama-cpp-python's server).

        A format the server refuses is not asked for again in this run; a server that refuses both is asked
        without one, and the generation says so (``constrained`` None): the caller then checks the free text.
        """
        schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": list(options)}},
                  "required": ["answer"], "additionalProperties": False}
        formats = {"json_schema": {"type": "json_schema", "json_schema": {"name": "answer", "strict": True,
                                                                         "schema": schema}},
                   "json_object": {"type": "json_object", "schema": schema}}
        for name, response_format in formats.items():
            if name in self._refused_formats:
                continue
            body = self._body(prompt, max_tokens=max(self.settings.max_tokens, CHOICE_MAX_TOKENS))
            body["response_format"] = response_format
            try:
                generation = self._run(body)
            except RequestRejected:
                self._refused_formats.add(name)
                continue
            except QueryFailed as failure:  # HTTP 400/413/422: the format refused, unless the prompt is too long
                if failure.kind != REJECTED:
                    raise
                self._refused_formats.add(name)
                continue
            self.choice_format = name
            try:
                answer = json.loads(generation.text).get("answer")
            except (json.JSONDecodeError, AttributeError):
                answer = None
            text = answer if isinstance(answer, str) else generation.text  # not decoded: left for the caller
            return replace(generation, text=text, extra={**generation.extra, "constrained": name,
                                                         "raw": generation.text})
        self.choice_format = None
        return super().generate_choice(prompt, options)

    def _run(self, body: dict[str, Any], on_first_token: Callable[[], None] | None = None) -> Generation:
        started = time.perf_counter()
        first_token_at: float | None = None
        parts: list[str] = []
        chunks = 0
        finish_reason = None
        usage: dict[str, Any] | None = None
        for event in self.client.stream_chat(body):
            if event.get("__whole__"):
                return self._from_whole(event, started)
            self._served_model = event.get("model") or self._served_model
            self._fingerprint = event.get("system_fingerprint") or self._fingerprint
            if isinstance(event.get("usage"), dict):
                usage = event["usage"]
            for choice in event.get("choices") or ():
                delta = choice.get("delta") or {}
                content = delta.get("content")
                # Reasoning models stream their thinking first: it is generated text, so it ends TTFT.
                thinking = delta.get("reasoning_content") or delta.get("reasoning")
                if content or thinking:
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                        if on_first_token is not None:
                            on_first_token()  # the first streamed token: prefill ends here
                    chunks += 1
                if content:
                    parts.append(content)
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
        latency = time.perf_counter() - started
        if usage and usage.get("completion_tokens") is not None:
            self.usage_supported = True
            tokens_in, tokens_out, source = usage.get("prompt_tokens"), int(usage["completion_tokens"]), "usage"
        else:
            self.usage_supported = False
            tokens_in, tokens_out, source = None, chunks, "chunks"
        return Generation(
            text="".join(parts),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_s=latency,
            ttft_s=(first_token_at - started) if first_token_at is not None else None,
            finish_reason=finish_reason,
            token_source=source,
        )

    def _from_whole(self, data: dict[str, Any], started: float) -> Generation:
        """A server that ignored ``stream``: no TTFT can be measured, say so with None."""
        latency = time.perf_counter() - started
        choice = (data.get("choices") or [{}])[0]
        usage = data.get("usage") or {}
        text = (choice.get("message") or {}).get("content") or ""
        self._served_model = data.get("model") or self._served_model
        return Generation(text=text, tokens_in=usage.get("prompt_tokens"),
                          tokens_out=int(usage.get("completion_tokens") or 0), latency_s=latency, ttft_s=None,
                          finish_reason=choice.get("finish_reason"), token_source="usage" if usage else "chunks")

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "base_url": self.client.endpoint.base_url,
            "model": self.model,
            "served_model": self._served_model,
            "system_fingerprint": self._fingerprint,
            **self.server,
            "server_header": self.client.server_header,
            "proxy": f"{self.client.proxy.host}:{self.client.proxy.port}" if self.client.proxy else None,
            "local_endpoint": self.local,
            "token_counts": {True: "usage", False: "chunks (prompt tokens unknown)", None: "unknown"}[self.usage_supported],
            # how generate_choice (the judge) held the output to its options
            "constrained_choice": self.choice_format or ("refused by the server: free text, checked strictly"
                                                         if self._refused_formats else "not used"),
            # The variable's name, never its value.
            "api_key_env": self.settings.api_key_env,
            "api_key_set": self.client.has_api_key,
            **self.settings.subset("temperature", "seed", "max_tokens", "request_timeout_s", "retries"),
        }

    def close(self) -> None:
        self.client.close()


def _server_identity(client: OpenAIHTTPClient) -> dict[str, Any]:
    """Which server and version answers, from the first version endpoint that works (best effort)."""
    for path in VERSION_PROBES:
        result = client.probe(path)
        if not result or result[0] != 200 or not isinstance(result[1], dict):
            continue
        data = result[1]
        version = data.get("version") or data.get("build_info")
        if version:
            return {"server_version": str(version), "server_version_endpoint": path}
    return {"server_version": None, "server_version_endpoint": None}


def check(spec: ModelSpec) -> None:
    parse_endpoint(spec.location)


def load(spec: ModelSpec, settings: GenerationSettings, accelerator: Any) -> OpenAIHTTPBackend:
    endpoint = parse_endpoint(spec.location)
    env = settings.api_key_env
    client = OpenAIHTTPClient(endpoint, os.environ.get(env) or None, settings.request_timeout_s, settings.retries, env)
    listing = client.get_json("/models")
    served = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)] if isinstance(listing, dict) else []
    model = endpoint.model
    if model is None:
        if len(served) != 1:
            client.close()
            raise IPWUsageError(
                f"--ipw-model=openai+{spec.location}: name the model after '#'; the server serves "
                f"{', '.join(map(str, served)) or 'no models'}"
            )
        model = str(served[0])
    elif served and model not in served:
        client.close()
        raise IPWUsageError(
            f"the server at {endpoint.base_url} does not serve the model {model!r}; it serves: "
            f"{', '.join(map(str, served))}. Fix the name after '#' in --ipw-model"
        )
    owner = next((m.get("owned_by") for m in listing.get("data", []) if isinstance(m, dict) and m.get("id") == model), None)
    server = {"owned_by": owner, **_server_identity(client)}
    return OpenAIHTTPBackend(client, model, settings, server)
