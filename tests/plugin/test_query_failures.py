"""A query that cannot be answered is an outcome, not a crash (issue 13).

A real too-long prompt on the embedded model, a stdlib stand-in server that refuses single requests, files
with a UTF-8 byte-order mark, the three ``--ipw-on-error`` modes, resuming, and comparisons that count
errors on each side. The modes run on the recorded backend (answers and failures known in advance) with a
fixed meter, so their figures are exact.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import JsonHandler, fixed_meter_conftest, llama_server

from pytest_ipw.backends import load_backend
from pytest_ipw.backends.base import (
    Backend,
    Generation,
    GenerationSettings,
    QueryFailed,
)
from pytest_ipw.backends.models import parse_model_spec
from pytest_ipw.core.errors import IPWUsageError

BENCHMARK = """
def test_answer(ipw_bench):
    ipw_bench()
"""
#: far past a 256-token context window once tokenised (about 1,400 tokens)
LONG_PROMPT = "Here is some background. " + "The quick brown fox jumps over the lazy dog near the river bank. " * 100 \
    + "What is 2 + 2? Answer with just the number."


def query(number: int, prompt: str | None = None) -> dict[str, Any]:
    """Query ``q<number>``: "What is n + n?" (answer 2n), or ``prompt``, which asks what 2 + 2 is."""
    return {"id": f"q{number}", "prompt": prompt or f"What is {number} + {number}? Answer with just the number.",
            "answer": str(2 * number) if prompt is None else "4", "domain": "math", "split": "reasoning",
            "scorer": "numeric"}


def write_jsonl(path: Path, rows: list[dict[str, Any]], bom: bool = False) -> str:
    path.write_text(("\ufeff" if bom else "") + "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def results(pytester: pytest.Pytester, name: str = "run.json") -> dict[str, Any]:
    return json.loads((pytester.path / name).read_text())


@pytest.fixture(scope="module")
def cpu():
    from pytest_ipw.hardware.profiles import detect_devices, load_profiles

    return next(d for d in detect_devices(load_profiles()) if d.profile.name == "cpu")


# --------------------------------------------------------------------------------------------------
# the embedded model: a real prompt longer than the context window
# --------------------------------------------------------------------------------------------------


def test_an_overlong_prompt_fails_that_query_only_on_the_embedded_model(cpu):
    backend = load_backend(parse_model_spec("smollm2-135m"), GenerationSettings(context_size=256, max_tokens=4), cpu)
    try:
        with pytest.raises(QueryFailed) as failure:
            backend.generate(LONG_PROMPT)
        after = backend.generate("What is 2 + 2? Answer with just the number.")
    finally:
        backend.close()
    error = failure.value
    assert error.kind == "context-overflow" and error.context_window == 256 and error.tokens_in > 256
    assert f"the prompt is {error.tokens_in} tokens with the chat template" in error.message
    # the model is still usable: the next query is answered
    assert after.tokens_out > 0 and 0 < after.tokens_in < 256


def test_a_run_with_an_overlong_prompt_records_it_as_wrong_and_finishes(pytester: pytest.Pytester):
    write_jsonl(pytester.path / "queries.jsonl", [query(1), query(2, LONG_PROMPT), query(3)])
    pytester.makepyfile(test_bench=BENCHMARK)
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-context=256",
                                "--ipw-max-tokens=4", "--ipw-warmup=0", "--ipw-idle-seconds=0",
                                "--ipw-meter=estimate", "--ipw-json=run.json")
    output = result.stdout.str()
    assert result.ret == 0, output[-3000:]
    assert "Traceback" not in output and "PARTIAL RUN" not in output
    document = results(pytester)
    by_id = {r["query_id"]: r for r in document["records"]}
    failed = by_id["q2"]
    assert failed["error"]["kind"] == "context-overflow" and failed["error"]["context_window"] == 256
    assert failed["correct"] is False and failed["unscorable"] is False and failed["response"] == ""
    assert failed["tokens_in"] > 256 and failed["tokens_out"] == 0 and failed["prompt"] == LONG_PROMPT  # not truncated
    # the window that ran was metered, like any other query's, and says how
    assert failed["joules"] >= 0 and failed["seconds"] >= 0 and failed["provenance"] == "estimated"
    assert by_id["q1"]["error"] is None and by_id["q3"]["error"] is None
    assert document["summary"][0]["queries"] == 3  # in the denominator
    assert document["partial"] is False and document["skipped_queries"] == []
    assert document["query_errors"] == [{
        "system": "smollm2-135m@cpu", "model": "smollm2-135m", "accelerator": "cpu", "kind": "context-overflow",
        "queries": 1, "counted": "wrong",
        "query_ids": ["q2"], "context_window": 256, "longest_prompt_tokens": failed["tokens_in"],
        "example": failed["error"]["message"]}]
    result.stdout.fnmatch_lines([
        (f"QUERY ERRORS: smollm2-135m@cpu: 1 query exceeded the context window of 256 tokens (longest prompt "
        f"{failed['tokens_in']} tokens); raise --ipw-context (or the server's context size) or drop them; counted as "
        "wrong, in the denominator: q2")])
    assert "QueryErrorsWarning" in output


# --------------------------------------------------------------------------------------------------
# a stand-in HTTP server that refuses single requests
# --------------------------------------------------------------------------------------------------

OVERFLOW_MESSAGE = ("This model's maximum context length is 2048 tokens. However, you requested 3059 tokens "
                    "(3043 in the messages, 16 in the completion). Please reduce the length of the messages.")


class RefusingServer:
    """OpenAI-compatible: a prompt holding "REJECT" gets HTTP 400 (a content filter), one holding "TOOLONG" a
    400 context-length error, one holding "BROKEN" an error event mid-stream, one holding "SLOW" its answer after
    2 s; others a streamed "The answer is 4."."""

    def __init__(self) -> None:
        self.requests = 0
        server = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real servers: a refusal must not spoil the connection

            def do_GET(self) -> None:
                self._json(200, {"data": [{"id": "stub-model", "owned_by": "stub"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests += 1
                prompt = body["messages"][0]["content"]
                if "REJECT" in prompt:
                    return self._json(400, {"error": {"message": "Your request was rejected by the content filter.",
                                                      "code": "content_filter"}})
                if "TOOLONG" in prompt:
                    return self._json(400, {"error": {"message": OVERFLOW_MESSAGE, "code": "context_length_exceeded"}})
                if "SLOW" in prompt:
                    time.sleep(2.0)
                events: list[dict[str, Any]] = [{"choices": [{"delta": {"content": "The answer"}}]}]
                if "BROKEN" in prompt:
                    events.append({"error": {"message": "CUDA error: an illegal memory access"}})
                events += [{"choices": [{"delta": {"content": " is 4."}, "finish_reason": "stop"}]},
                           {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5}}]
                self._stream(events)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def model(self) -> str:
        return f"openai+http://127.0.0.1:{self.server.server_address[1]}/v1#stub-model"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def refusing() -> Iterator[RefusingServer]:
    server = RefusingServer()
    yield server
    server.close()


def test_http_400_fails_one_query_and_the_next_is_answered(refusing):
    backend = load_backend(parse_model_spec(refusing.model), GenerationSettings(retries=3), None)
    try:
        with pytest.raises(QueryFailed) as rejected:
            backend.generate("REJECT this")
        with pytest.raises(QueryFailed) as overflow:
            backend.generate("TOOLONG prompt")
        with pytest.raises(QueryFailed) as broken:
            backend.generate("BROKEN answer")
        answered = backend.generate("2 + 2?")
    finally:
        backend.close()
    assert rejected.value.kind == "rejected"
    assert rejected.value.message == "HTTP 400: Your request was rejected by the content filter."
    assert overflow.value.kind == "context-overflow" and overflow.value.context_window == 2048
    assert overflow.value.tokens_in == 3043
    assert broken.value.kind == "backend-error" and "illegal memory access" in broken.value.message
    assert answered.text == "The answer is 4."
    assert refusing.requests == 4  # a refusal is not retried: it would be refused again


def test_a_refused_request_through_pytest_is_recorded_and_the_run_goes_on(pytester, refusing):
    write_jsonl(pytester.path / "queries.jsonl", [query(1, "What is 2 + 2?"), query(2, "REJECT me: what is 2 + 2?"),
                                                  query(3, "What is 2 + 2, again?")])
    pytester.makeconftest(fixed_meter_conftest(2.0))
    pytester.makepyfile(test_bench=BENCHMARK)
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", f"--ipw-model={refusing.model}",
                                "--ipw-idle-seconds=0", "--ipw-json=run.json")
    assert result.ret == 0, result.stdout.str()[-3000:]
    records = {r["query_id"]: r for r in results(pytester)["records"]}
    assert records["q2"]["error"] == {"kind": "rejected", "context_window": None,
                                      "message": "HTTP 400: Your request was rejected by the content filter."}
    assert records["q2"]["joules"] == 2.0 and records["q2"]["correct"] is False  # metered, counted wrong
    assert records["q1"]["correct"] and records["q3"]["correct"]
    result.stdout.fnmatch_lines([("QUERY ERRORS: stub-model@cpu: 1 query was rejected by the server (HTTP 400: Your "
                                 "request was rejected by the content filter.); counted as wrong, in the denominator: q2")])


def test_a_timeout_fails_the_query_not_the_run(refusing):
    """One request that outlives --ipw-timeout is that query's failure (the run-level failures, a server that
    cannot be reached or keeps answering 5xx, stay errors: tests/unit/backends/test_backend_openai.py)."""
    backend = load_backend(parse_model_spec(refusing.model), GenerationSettings(request_timeout_s=0.3, retries=2), None)
    try:
        with pytest.raises(QueryFailed) as failure:
            backend.generate("SLOW: 2 + 2?")
        answered = backend.generate("2 + 2?")
    finally:
        backend.close()
    assert failure.value.kind == "timeout" and refusing.requests == 2  # not retried: it would be as slow again
    assert "did not answer /chat/completions within 0.3 s (--ipw-timeout)" in failure.value.message
    assert answered.text == "The answer is 4."


def test_a_real_server_refuses_an_overlong_prompt_as_a_context_overflow():
    """llama-cpp-python's own server (n_ctx 2048) sends a 200 and an empty stream for an overlong prompt (the
    error comes after the headers); asked again without streaming it answers HTTP 400 in OpenAI's wording."""
    with llama_server() as (url, _):
        backend = load_backend(parse_model_spec(url.replace("http://", "openai+http://") + "#smollm2"),
                               GenerationSettings(max_tokens=4), None)
        try:
            with pytest.raises(QueryFailed) as failure:
                backend.generate(LONG_PROMPT * 3)
            answered = backend.generate("What is 2 + 2? Answer with just the number.")
        finally:
            backend.close()
    assert failure.value.kind == "context-overflow" and failure.value.context_window == 2048
    assert failure.value.tokens_in > 2048 and failure.value.message.startswith("HTTP 400: ")
    assert answered.tokens_out > 0


# --------------------------------------------------------------------------------------------------
# files with a UTF-8 byte-order mark
# --------------------------------------------------------------------------------------------------


def test_a_jsonl_file_with_a_byte_order_mark_loads(tmp_path):
    from pytest_ipw.queries.schema import load_queries

    path = write_jsonl(tmp_path / "bom.jsonl", [query(1), query(2)], bom=True)
    assert (tmp_path / "bom.jsonl").read_bytes().startswith(b"\xef\xbb\xbf")
    assert [q.id for q in load_queries(path)] == ["q1", "q2"]


def test_a_csv_file_with_a_byte_order_mark_loads(tmp_path):
    from pytest_ipw.queries.schema import load_queries
    from pytest_ipw.queries.sources import load_query_set

    path = tmp_path / "bom.csv"
    # as Excel's "CSV UTF-8" writes it: a byte-order mark, then the header
    path.write_bytes("\ufeffid,prompt,answer,domain,split,scorer\r\n007,What is 2 + 2?,4,math,reasoning,numeric\r\n"
                     .encode("utf-8"))
    (loaded,) = load_queries(path)
    assert (loaded.id, loaded.answer) == ("007", "4")
    # columns mapped by name (--ipw-columns) read the first column's name without the mark as well
    other = tmp_path / "other.csv"
    other.write_bytes("\ufeffquestion,label\r\nWhat is 2 + 2?,4\r\n".encode("utf-8"))
    (mapped,) = load_query_set(str(other), "prompt=question,answer=label").queries
    assert (mapped.prompt, mapped.answer) == ("What is 2 + 2?", "4")


# --------------------------------------------------------------------------------------------------
# --ipw-on-error=record|skip|stop, resuming, and a backend that keeps failing
# --------------------------------------------------------------------------------------------------

QUERIES = [query(n) for n in range(1, 6)]


def answers(pytester: pytest.Pytester, failures: dict[str, str] | None = None, wrong: tuple[str, ...] = ()) -> str:
    """Recorded answers: right unless ``wrong``; ``failures`` maps a query id to the kind it fails with."""
    rows = []
    for q in QUERIES:
        row: dict[str, Any] = {"prompt": q["prompt"], "response": "0" if q["id"] in wrong else q["answer"],
                               "tokens_in": 12, "tokens_out": 2}
        kind = (failures or {}).get(q["id"])
        if kind:
            row.update(response="", tokens_in=3000,
                       error={"kind": kind, "message": f"{kind} for {q['id']}", "context_window": 2048
                              if kind == "context-overflow" else None})
        rows.append(row)
    return write_jsonl(pytester.path / "answers.jsonl", rows)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    write_jsonl(pytester.path / "queries.jsonl", QUERIES)
    pytester.makeconftest(fixed_meter_conftest(2.0))
    pytester.makepyfile(test_bench=BENCHMARK)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-model=recorded:answers.jsonl",
                              "--ipw-idle-seconds=0", "--ipw-json=run.json", *args)


def test_record_keeps_failed_queries_in_the_denominator(project):
    answers(project, {"q2": "context-overflow", "q4": "rejected"})
    result = run(project)  # the default
    assert result.ret == 0, result.stdout.str()[-3000:]
    document = results(project)
    (summary,) = document["summary"]
    assert (summary["queries"], summary["correct"], summary["accuracy"]) == (5, 3, 0.6)
    assert summary["mean_joules"] == 2.0  # the failed windows' energy counts too
    assert [r["query_id"] for r in document["records"] if r["error"]] == ["q2", "q4"]
    assert document["settings"]["options"]["ipw_on_error"] == {"value": "record", "from": "default"}
    result.stdout.fnmatch_lines([
        ("QUERY ERRORS: answers@cpu: 1 query exceeded the context window of 2048 tokens (longest prompt 3000 tokens); "
        "raise --ipw-context (or the server's context size) or drop them; counted as wrong, in the denominator: q2"),
        ("QUERY ERRORS: answers@cpu: 1 query was rejected by the server (rejected for q4); counted as wrong, in the "
        "denominator: q4")])


def test_skip_leaves_failed_queries_out_of_accuracy_and_lists_them(project):
    answers(project, {"q2": "context-overflow"}, wrong=("q5",))
    result = run(project, "--ipw-on-error=skip")
    assert result.ret == 0, result.stdout.str()[-3000:]
    document = results(project)
    (summary,) = document["summary"]
    assert (summary["queries"], summary["correct"], summary["accuracy"]) == (4, 3, 0.75)
    assert [r["query_id"] for r in document["records"]] == ["q1", "q3", "q4", "q5"]
    (skipped,) = document["skipped_queries"]
    assert skipped["query_id"] == "q2" and skipped["error"]["kind"] == "context-overflow" and skipped["joules"] == 2.0
    assert document["query_errors"][0]["counted"] == "skipped" and document["partial"] is False
    assert document["coverage"]["queries"] == 4
    result.stdout.fnmatch_lines([("QUERIES SKIPPED: answers@cpu: 1 query exceeded the context window of 2048 tokens*; "
                                 "left out of accuracy and every figure (--ipw-on-error=skip): q2")])
    assert "PARTIAL RUN" not in result.stdout.str()


def test_skip_with_every_query_failing_still_reports(project):
    answers(project, {q["id"]: "rejected" for q in QUERIES})
    result = run(project, "--ipw-on-error=skip")
    assert result.ret == 0, result.stdout.str()[-3000:]
    document = results(project)
    assert document["records"] == [] and len(document["skipped_queries"]) == 5 and document["summary"] == []
    result.stdout.fnmatch_lines(["QUERIES SKIPPED: answers@cpu: 5 queries were rejected*: q1, q2, q3, q4, q5"])


def test_stop_ends_the_run_at_the_first_failure_and_keeps_what_finished(project):
    answers(project, {"q3": "context-overflow", "q4": "context-overflow"})
    result = run(project, "--ipw-on-error=stop")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output[-3000:]
    assert "pytest-ipw: answers: --ipw-on-error=stop: query q3 failed (context-overflow: context-overflow for q3); " \
           "the queries before it are reported" in output
    assert "Traceback" not in output
    document = results(project)
    assert [r["query_id"] for r in document["records"]] == ["q1", "q2", "q3"]
    assert document["partial"] is True and document["records"][2]["error"]["kind"] == "context-overflow"
    result.stdout.fnmatch_lines(["PARTIAL RUN: 3 of 5 queries finished*"])


def test_resume_refuses_another_on_error_and_runs_transient_failures_again(project):
    answers(project, {"q2": "timeout", "q4": "context-overflow"})
    first = run(project)
    assert first.ret == 0, first.stdout.str()[-3000:]
    second = run(project, "--ipw-resume", "--ipw-on-error=skip")
    assert second.ret == pytest.ExitCode.USAGE_ERROR
    assert "was written by a run with other settings (ipw_on_error differ)" in second.stdout.str() + second.stderr.str()
    # the server is fixed, and q1's answer changes: a resumed run takes q1 and q4 from the journal, runs q2 again
    answers(project, {"q4": "context-overflow"}, wrong=("q1",))
    third = run(project, "--ipw-resume")
    assert third.ret == 0, third.stdout.str()[-3000:]
    records = {r["query_id"]: r for r in results(project)["records"]}
    assert records["q1"]["correct"] is True  # from the journal
    assert records["q2"]["error"] is None and records["q2"]["correct"] is True  # the timeout, tried again
    assert records["q4"]["error"]["kind"] == "context-overflow"  # an overflow would only repeat
    assert results(project)["settings"]["resumed_records"] == 5


def test_a_backend_that_keeps_timing_out_stops_the_run(project):
    answers(project, {"q2": "timeout", "q3": "timeout", "q4": "timeout"})
    result = run(project)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output[-3000:]
    assert "3 queries in a row failed with timeout, the last: query q4 failed (timeout: timeout for q4). The " \
           "backend, not the queries, looks broken" in output
    assert [r["query_id"] for r in results(project)["records"]] == ["q1", "q2", "q3", "q4"]


def test_recorded_answers_with_an_unknown_error_kind_are_refused(tmp_path):
    from pytest_ipw.backends.recorded import read_answers

    path = tmp_path / "answers.jsonl"
    write_jsonl(path, [{"prompt": "p", "response": "", "error": {"kind": "overheated", "message": "x"}}])
    with pytest.raises(IPWUsageError, match=r"answers\.jsonl, line 1: 'error' must be null or an object whose 'kind' "
                                            r"is one of context-overflow, rejected, timeout, backend-error"):
        read_answers(path)


# --------------------------------------------------------------------------------------------------
# batches and comparisons
# --------------------------------------------------------------------------------------------------


class _HalfBroken(Backend):
    batches = True

    def generate(self, prompt: str) -> Generation:
        if "long" in prompt:
            raise QueryFailed("context-overflow", "too long", tokens_in=999, context_window=256)
        return Generation(text="4", tokens_in=3, tokens_out=1, latency_s=0.01, ttft_s=0.01)


def test_a_failed_prompt_in_a_batch_does_not_cost_the_others_their_answers():
    from pytest_ipw.queries.schema import query_from_row
    from pytest_ipw.run.batching import Batcher

    queries = [query_from_row(query(1, "short")), query_from_row(query(2, "long one")), query_from_row(query(3, "short too"))]
    meter = _FixedWindowMeter()
    batcher = Batcher(3)
    first = batcher.answer(queries[0], queries[1:], _HalfBroken(), meter)
    second = batcher.answer(queries[1], queries[2:], _HalfBroken(), meter)
    third = batcher.answer(queries[2], [], _HalfBroken(), meter)
    assert meter.windows == 1  # one engine call for the three
    assert isinstance(first[0], Generation) and isinstance(third[0], Generation)
    assert isinstance(second[0], QueryFailed) and second[0].kind == "context-overflow"
    assert "batched:3" in second[1].flags
    from pytest_ipw.run.records import FAILED_SCORE, failed_generation, make_record

    record = make_record(query=queries[1], model="m", accelerator="cpu", benchmark="b", score=FAILED_SCORE,
                         generation=failed_generation(second[0], 1.0), measurement=second[1], failure=second[0])
    assert record["joules"] == pytest.approx(1.0) and record["error"]["kind"] == "context-overflow"  # its share


class _FixedWindowMeter:
    """A meter whose every window costs 3 J over 1 s."""

    def __init__(self) -> None:
        self.windows = 0

    def window(self):
        import contextlib

        from pytest_ipw.meters.base import MEASURED, Measurement, Window

        @contextlib.contextmanager
        def block():
            handle = Window()
            self.windows += 1
            try:
                yield handle
            finally:  # like Meter.window: a failing block still gets its measurement
                handle.measurement = Measurement(joules=3.0, seconds=1.0, sensor="fixed", provenance=MEASURED,
                                                 domain="system")
        return block()


def test_a_judge_that_cannot_grade_gives_no_verdict_instead_of_a_crash(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from pytest_ipw.queries.schema import query_from_row
    from pytest_ipw.scoring.judge import Judge, judge_prompt

    monkeypatch.setenv("PYTEST_IPW_CACHE", str(tmp_path / "cache"))
    question = query_from_row({**query(1, "Why is the sky blue?"), "answer": "Rayleigh scattering", "scorer": "judge"})
    answer = "Because of Rayleigh scattering."
    write_jsonl(tmp_path / "judge.jsonl", [{"prompt": judge_prompt(question, answer), "response": "",
                                            "error": {"kind": "context-overflow", "message": "judge prompt too long"}}])
    device = SimpleNamespace(profile=SimpleNamespace(name="cpu", offload=False), index=None)
    judge = Judge(f"recorded:{tmp_path / 'judge.jsonl'}", GenerationSettings(), device)
    meter = _FixedWindowMeter()
    verdict = judge(question, answer, meter=meter)
    assert verdict.correct is False and verdict.unscorable is True  # counted wrong, in the denominator
    assert verdict.judge["error"]["kind"] == "context-overflow" and verdict.judge["joules"] == 3.0
    assert judge(question, answer, meter=meter).judge["cached"] is False  # a failed grading is not cached
    judge.close()


def test_compare_counts_failed_queries_as_wrong_and_shows_errors_per_side(project):
    answers(project)
    assert run(project, "--ipw-autosave").ret == 0
    answers(project, {"q2": "context-overflow", "q5": "context-overflow"})
    result = run(project, "--ipw-compare")
    output = result.stdout.str()
    assert result.ret == 0, output[-3000:]
    result.stdout.fnmatch_lines([
        "*answers@cpu*accuracy*1*0.6*-40.0 pt*",
        "*answers@cpu*errors*0*0.4*+40.0 pt*",
        "compare: query errors answers@cpu: baseline 0, now 2 (context-overflow 2)",
    ])
    comparison = results(project)["comparison"]
    assert comparison["query_errors"] == [{"scope": "answers@cpu", "baseline": {"wrong": {}, "skipped": {}},
                                           "current": {"wrong": {"context-overflow": 2}, "skipped": {}}}]
    # a run that skips them says so on its side, and that the two runs treat failures differently
    result = run(project, "--ipw-compare", "--ipw-on-error=skip")
    result.stdout.fnmatch_lines([
        "compare: the baseline ran with --ipw-on-error=record, this run with skip*",
        "compare: query errors answers@cpu: baseline 0, now 2 (context-overflow 2 skipped)",
    ])


def test_compare_reads_runs_saved_before_errors_were_recorded():
    from pytest_ipw.history.compare import compare_runs, error_changes

    def record(query_id: str, correct: bool, **extra: Any) -> dict[str, Any]:
        return {"query_id": query_id, "model": "m", "accelerator": "cpu", "domain": "math", "correct": correct,
                "joules": 1.0, "watts": 1.0, "latency_s": 0.1, "tokens_out": 2, **extra}

    old = {"records": [record("a", True), record("b", True)]}  # no "error" field at all
    new = {"records": [record("a", True, error=None), record("b", False, error={"kind": "timeout", "message": "t"})]}
    changes = {c.metric: c for c in compare_runs(old, new, by_domain=False)}
    assert (changes["errors"].baseline, changes["errors"].current) == (0.0, 0.5)
    assert (changes["accuracy"].baseline, changes["accuracy"].current) == (1.0, 0.5)
    assert error_changes(old, new)[0]["current"]["wrong"] == {"timeout": 1}
    assert "errors" not in {c.metric for c in compare_runs(old, old, by_domain=False)}  # shown only when any failed


class _OverflowingLLM:
    """vLLM's ``LLM`` as far as the adapter uses it: ``chat`` refuses the whole call, before running anything,
    when a prompt is over ``max_model_len`` (vllm/entrypoints/llm.py adds a call's requests all or none)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def get_tokenizer(self) -> Any:
        return None

    def reset_prefix_cache(self) -> bool:
        return True

    def chat(self, conversations: list[Any], sampling_params: Any, **kwargs: Any) -> list[Any]:
        from types import SimpleNamespace

        self.calls.append(len(conversations))
        for conversation in conversations:
            length = len(conversation[0]["content"].split())
            if length > 50:
                raise ValueError(f"The decoder prompt (length {length}) is longer than the maximum model length of "
                                 "64. Make sure that `max_model_len` is no smaller than the number of text tokens.")
        return [SimpleNamespace(outputs=[SimpleNamespace(text="4", token_ids=[7], finish_reason="stop")],
                                prompt_token_ids=[1, 2, 3], metrics=None, num_cached_tokens=0)
                for _ in conversations]


def test_vllm_fails_only_the_overlong_prompt_of_a_batch():
    from types import SimpleNamespace

    from pytest_ipw.backends.vllm import VLLMBackend

    llm = _OverflowingLLM()
    backend = VLLMBackend(llm, lambda **kw: SimpleNamespace(**kw), "stand-in", GenerationSettings(batch_size=3),
                          "0.33.0", {})
    answers = backend.generate_batch(["short", "word " * 80, "short too"])
    assert [type(a).__name__ for a in answers] == ["Generation", "QueryFailed", "Generation"]
    assert answers[1].kind == "context-overflow" and (answers[1].tokens_in, answers[1].context_window) == (80, 64)
    assert llm.calls == [3, 1, 1, 1]  # refused as a batch, then one at a time
    with pytest.raises(QueryFailed, match="the prompt is 80 tokens"):
        backend.generate("word " * 80)


def test_the_report_lists_the_queries_that_could_not_be_answered(project):
    pytest.importorskip("matplotlib")
    from pytest_ipw.cli import main as cli_main

    answers(project, {"q2": "context-overflow"}, wrong=("q5",))
    assert run(project, "--ipw-on-error=skip").ret == 0
    assert cli_main(["report", str(project.path / "run.json"), "-o", str(project.path / "report")]) == 0
    markdown = (project.path / "report" / "summary.md").read_text()
    html = (project.path / "report" / "index.html").read_text()
    assert "## Queries that could not be answered" in markdown
    assert "QUERIES SKIPPED: answers@cpu: 1 query exceeded the context window" in markdown
    assert "Queries that could not be answered" in html and "QUERIES SKIPPED: answers@cpu" in html
