"""The judge scorer: verdict parsing, the on-disk cache keyed by (judge, query, answer), the judge's
identity and prompt in the results, and its cost kept apart from the measured model's energy."""

from __future__ import annotations

import contextlib
import hashlib
import json
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from support import JsonHandler, fixed_meter_conftest

from pytest_ipw.backends.base import GenerationSettings
from pytest_ipw.scoring.judge import (
    JUDGE_MAX_TOKENS,
    JUDGE_PROMPT,
    PROMPT_SHA256,
    VERDICTS,
    Judge,
    judge_prompt,
    parse_verdict,
)
from pytest_ipw.meters.base import MEASURED, Measurement
from pytest_ipw.queries.schema import Query
from pytest_ipw.scoring.scorers import score

QUESTION = Query(id="open-1", prompt="Why is the sky blue?", answer="Rayleigh scattering of sunlight.",
                 domain="science", split="chat", scorer="judge")
RIGHT = "Because air molecules scatter blue light more (Rayleigh scattering)."
WRONG = "Because the ocean reflects onto it."


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_IPW_CACHE", str(tmp_path / "cache"))


def judge_answers(path, verdicts: dict[tuple[Query, str], str]) -> str:
    """A recorded judge: the judge prompt of (query, answer) -> its verdict text."""
    with path.open("w") as handle:
        for (query, answer), verdict in verdicts.items():
            handle.write(json.dumps({"prompt": judge_prompt(query, answer), "response": verdict, "tokens_in": 50,
                                     "tokens_out": 2}) + "\n")
    return f"recorded:{path}"


class CountingMeter:
    """Each window costs 3 J over 1 s; counts windows so that tests see when the judge ran."""

    def __init__(self) -> None:
        self.windows = 0

    @contextlib.contextmanager
    def window(self) -> Iterator[Any]:
        handle = SimpleNamespace(measurement=None)
        self.windows += 1
        yield handle
        handle.measurement = Measurement(joules=3.0, seconds=1.0, sensor="counting", provenance=MEASURED, domain="cpu")


def make_judge(tmp_path, verdicts) -> Judge:
    spec = judge_answers(tmp_path / "judge.jsonl", verdicts)
    device = SimpleNamespace(profile=SimpleNamespace(name="cpu", offload=False), index=None)
    return Judge(spec, GenerationSettings(), device)


@pytest.mark.parametrize(("text", "verdict"), [
    ("CORRECT", True), ("correct.", True), ("INCORRECT", False), (" **INCORRECT** ", False), ('"CORRECT"', True),
    # anything but exactly one of the two words is no verdict, never a guess at what the judge meant
    ("CORRECT or INCORRECT", None), ("The answer is not correct.", None), ("NOT CORRECT", None),
    ("Verdict: INCORRECT. It is CORRECT that...", None), ("The answer to the grade is CORRECT", None),
    ("CORRECT. INCORRECT.", None), ("I cannot tell.", None), ("", None),
])
def test_verdicts(text, verdict):
    assert parse_verdict(text) is verdict


def test_a_judge_that_echoes_both_words_gives_no_verdict(tmp_path):
    judge = make_judge(tmp_path, {(QUESTION, WRONG): "CORRECT or INCORRECT"})
    result = judge(QUESTION, WRONG)
    assert not result.correct and result.unscorable and result.extracted == "no verdict"
    assert result.judge["constrained"] is None  # a recorded judge cannot be constrained: its text is checked


def test_the_in_process_llama_cpp_judge_can_only_say_the_two_words(tmp_path):
    """A llama.cpp grammar holds the embedded model to CORRECT / INCORRECT (free, it writes sentences)."""
    judge = Judge(None, GenerationSettings(), SimpleNamespace(profile=SimpleNamespace(name="cpu", offload=False),
                                                              index=None))
    try:
        for answer in (RIGHT, WRONG, "I do not know.", "CORRECT or INCORRECT"):
            result = judge(QUESTION, answer)
            assert result.judge["verdict"] in VERDICTS and not result.unscorable, result.judge
            assert result.judge["constrained"] == "llama.cpp grammar" and result.judge["tokens_out"] <= JUDGE_MAX_TOKENS
    finally:
        judge.close()


class JudgeServer:
    """An OpenAI-compatible stand-in for a judge: answers every chat request with ``content``, or refuses a
    ``response_format`` it does not know (HTTP 400, or 500 as llama-cpp-python's server does)."""

    def __init__(self, content: str, refuse: tuple[str, ...] = (), refusal_status: int = 400):
        import threading
        from http.server import ThreadingHTTPServer

        self.bodies: list[dict[str, Any]] = []
        server = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                self._json(200 if self.path == "/v1/models" else 404, {"data": [{"id": "judge-model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bodies.append(body)
                kind = (body.get("response_format") or {}).get("type")
                if kind in refuse:
                    return self._json(refusal_status, {"error": {"message": f"response_format: {kind} is not supported"}})
                self._json(200, {"model": "judge-model", "choices": [{"message": {"content": content},
                                                                      "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 40, "completion_tokens": 6}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.spec = f"openai+http://127.0.0.1:{self.httpd.server_address[1]}/v1#judge-model"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def judge_server():
    servers: list[JudgeServer] = []

    def make(*args: Any, **kwargs: Any) -> JudgeServer:
        servers.append(JudgeServer(*args, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_a_server_judge_is_held_to_the_two_words_by_a_json_schema(judge_server):
    server = judge_server('{"answer": "INCORRECT"}')
    judge = Judge(server.spec, GenerationSettings(retries=0), None)
    result = judge(QUESTION, WRONG)
    judge.close()
    assert not result.correct and not result.unscorable and result.judge["verdict"] == "INCORRECT"
    assert result.judge["constrained"] == "json_schema"
    sent = server.bodies[0]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"]["properties"]["answer"]["enum"] == list(VERDICTS)


@pytest.mark.parametrize("status", [400, 500])
def test_a_server_refusing_json_schema_gets_llama_cpps_json_object_schema(judge_server, status):
    server = judge_server('{"answer": "CORRECT"}', refuse=("json_schema",), refusal_status=status)
    judge = Judge(server.spec, GenerationSettings(retries=2), None)
    first, second = judge(QUESTION, RIGHT), judge(QUESTION, WRONG)
    judge.close()
    assert first.correct and first.judge["constrained"] == "json_object" and second.judge["constrained"] == "json_object"
    # refused once, not asked again (and a 500 that names the field is not retried)
    assert [b["response_format"]["type"] for b in server.bodies] == ["json_schema", "json_object", "json_object"]
    assert server.bodies[1]["response_format"]["schema"]["properties"]["answer"]["enum"] == list(VERDICTS)


def test_a_server_refusing_both_formats_is_asked_freely_and_checked_strictly(judge_server):
    server = judge_server("CORRECT or INCORRECT", refuse=("json_schema", "json_object"))
    judge = Judge(server.spec, GenerationSettings(retries=0), None)
    result = judge(QUESTION, WRONG)
    judge.close()
    assert not result.correct and result.unscorable and result.judge["constrained"] is None
    assert [(b.get("response_format") or {}).get("type") for b in server.bodies] == ["json_schema", "json_object", None]


def test_judged_verdicts_are_cached_and_cost_nothing_the_second_time(tmp_path):
    judge = make_judge(tmp_path, {(QUESTION, RIGHT): "CORRECT", (QUESTION, WRONG): "INCORRECT"})
    meter = CountingMeter()
    first = score(QUESTION, RIGHT, judge=lambda q, a: judge(q, a, meter=meter))
    assert first.correct and not first.unscorable and first.extracted == "correct"
    assert first.judge["cached"] is False and first.judge["joules"] == 3.0 and first.judge["tokens_out"] == 2
    again = judge(QUESTION, RIGHT, meter=meter)
    assert again.correct and again.judge["cached"] is True and again.judge["joules"] == 0.0
    assert again.judge["tokens_in"] == 0 and again.judge["joules_first"] == 3.0
    assert meter.windows == 1  # the cached verdict ran no model
    wrong = judge(QUESTION, WRONG, meter=meter)  # another answer: another key
    assert not wrong.correct and not wrong.unscorable and wrong.judge["cached"] is False and meter.windows == 2
    # a new Judge object (a new run) finds the verdicts on disk
    fresh = make_judge(tmp_path, {})
    assert fresh(QUESTION, WRONG).judge["cached"] is True
    assert len(list((tmp_path / "cache" / "judge").glob("*.sqlite"))) == 1


def test_the_cache_key_covers_judge_query_reference_and_answer(tmp_path):
    judge = make_judge(tmp_path, {})
    other = Judge("smollm2-135m-q8_0", GenerationSettings(), None)
    keys = {judge.key(QUESTION, RIGHT), judge.key(QUESTION, WRONG), other.key(QUESTION, RIGHT),
            judge.key(Query(**{**QUESTION.__dict__, "answer": "Something else."}), RIGHT)}
    assert len(keys) == 4


def test_no_verdict_is_unscorable(tmp_path):
    judge = make_judge(tmp_path, {(QUESTION, RIGHT): "Hmm, hard to say."})
    result = judge(QUESTION, RIGHT)
    assert not result.correct and result.unscorable and result.extracted == "no verdict"


def test_identity_and_prompt_are_recorded(tmp_path):
    judge = make_judge(tmp_path, {(QUESTION, RIGHT): "CORRECT"})
    judge(QUESTION, RIGHT)
    described = judge.describe()
    assert described["prompt"] == JUDGE_PROMPT and described["prompt_sha256"] == PROMPT_SHA256
    assert PROMPT_SHA256 == hashlib.sha256(JUDGE_PROMPT.encode()).hexdigest()
    assert described["model"] == "judge" and described["backend"] == "recorded"
    assert described["backend_info"]["backend"] == "recorded"


def test_judge_prompt_shows_question_reference_and_answer_and_cuts_long_fields():
    prompt = judge_prompt(QUESTION, "x" * 5000)
    assert QUESTION.prompt in prompt and QUESTION.answer in prompt and "x" * 2000 + " [...]" in prompt
    assert "x" * 2001 not in prompt


def test_a_judged_query_without_a_judge_names_the_option():
    from pytest_ipw.core.errors import IPWUsageError

    with pytest.raises(IPWUsageError, match="scored by a judge model; name one with --ipw-judge=SPEC"):
        score(QUESTION, RIGHT)


# --------------------------------------------------------------------------------------------------
# through pytest: the judge's energy never lands in the model's figures
# --------------------------------------------------------------------------------------------------

PLUGIN_QUERIES = [
    Query(id="open-1", prompt="Why is the sky blue?", answer="Rayleigh scattering.", domain="science", split="chat",
          scorer="judge"),
    Query(id="open-2", prompt="What do bees make?", answer="Honey.", domain="nature", split="chat", scorer="judge"),
    Query(id="num-1", prompt="What is 2 + 2?", answer="4", domain="math", split="reasoning", scorer="numeric"),
]
MODEL_ANSWERS = {"open-1": "Scattering of light by air.", "open-2": "Wax and honey.", "num-1": "4"}


@pytest.fixture
def judged_project(pytester):
    (pytester.path / "queries.jsonl").write_text("".join(
        json.dumps({k: v for k, v in q.to_dict().items() if k != "source"}) + "\n" for q in PLUGIN_QUERIES))
    (pytester.path / "answers.jsonl").write_text("".join(
        json.dumps({"prompt": q.prompt, "response": MODEL_ANSWERS[q.id], "tokens_out": 5}) + "\n" for q in PLUGIN_QUERIES))
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    return pytester


def run(pytester, *args: str):
    return pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-model=recorded:answers.jsonl",
                              "--ipw-json=run.json", *args)


def test_judge_cost_is_reported_apart_and_never_added(judged_project):
    judged_project.makeconftest(fixed_meter_conftest())
    judge = judge_answers(judged_project.path / "judge.jsonl", {
        (PLUGIN_QUERIES[0], MODEL_ANSWERS["open-1"]): "CORRECT",
        (PLUGIN_QUERIES[1], MODEL_ANSWERS["open-2"]): "INCORRECT"})
    result = run(judged_project, f"--ipw-judge={judge}")
    assert result.ret == 0, result.stdout.str()[-3000:]
    document = json.loads((judged_project.path / "run.json").read_text())
    records = {r["query_id"]: r for r in document["records"]}
    assert records["open-1"]["correct"] and not records["open-2"]["correct"] and records["num-1"]["correct"]
    assert all(r["joules"] == 2.0 for r in records.values())  # the model's window only
    assert records["open-1"]["judge"]["joules"] == 2.0 and records["num-1"]["judge"] is None
    summary = document["summary"][0]
    assert summary["mean_joules"] == 2.0
    cost = document["judge_cost"]
    assert cost["verdicts"] == 2 and cost["cached"] == 0 and cost["joules"] == 4.0 and cost["tokens_in"] == 100
    settings_judge = document["settings"]["judge"]
    assert settings_judge["prompt"] == JUDGE_PROMPT and settings_judge["model"] == "judge"
    result.stdout.fnmatch_lines(["judge: judge: 2 verdicts (0 cached, 0 without a verdict), 100 tokens in, 4 out, "
                                 "4 J MEASURED; not included in the figures above"])
    # re-run: every verdict comes from the cache, the judge model is not even loaded
    (judged_project.path / "judge.jsonl").write_text("")
    result = run(judged_project, f"--ipw-judge={judge}")
    assert result.ret == 0
    cost = json.loads((judged_project.path / "run.json").read_text())["judge_cost"]
    assert cost["cached"] == 2 and cost["joules"] == 0.0 and cost["tokens_in"] == 0
    assert json.loads((judged_project.path / "run.json").read_text())["settings"]["judge"]["backend_info"] is None


def test_default_judge_is_the_local_embedded_model(judged_project):
    result = run(judged_project, "--ipw-warmup=0")
    assert result.ret == 0, result.stdout.str()[-3000:]
    document = json.loads((judged_project.path / "run.json").read_text())
    judged = [r for r in document["records"] if r["judge"]]
    assert len(judged) == 2 and all(r["judge"]["judge"] == "smollm2-135m" for r in judged)
    assert all(r["judge"]["joules"] > 0 and r["judge"]["energy_provenance"] == "estimated" for r in judged)
    info = document["settings"]["judge"]["backend_info"]
    assert info["backend"] == "llama-cpp" and info["max_tokens"] == 8 and info["temperature"] == 0.0
    assert document["judge_cost"]["energy_provenance"] == ["estimated"]


def test_an_unreachable_judge_stops_the_run_with_one_line(judged_project):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run(judged_project, f"--ipw-judge=openai+http://127.0.0.1:{port}/v1#judge", "--ipw-retries=0")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (f"the judge (--ipw-judge=openai+http://127.0.0.1:{port}/v1#judge) could not be loaded: cannot reach "
            "the OpenAI-compatible server") in output
    assert "Traceback" not in output


def test_an_unknown_judge_backend_is_a_usage_error_before_any_test(judged_project):
    result = run(judged_project, "--ipw-judge=foo:bar")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-ipw: --ipw-judge=foo:bar: unknown backend 'foo'*"])
