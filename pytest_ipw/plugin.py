"""The pytest plugin: options, parametrization, fixtures and the end-of-session report.

Kept thin: run state lives in :class:`~pytest_ipw.session.IPWSession`; maths, meters, backends,
reports and files live in their own modules and are imported only when a benchmark needs them.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

from pytest_ipw.core.errors import IPWUsageError
from .options import RunOptions, add_options, marker_thresholds, read_options

if TYPE_CHECKING:
    from pytest_ipw.run.session import IPWSession, Target

OPTIONS_KEY = pytest.StashKey[RunOptions]()
SESSION_KEY = pytest.StashKey["IPWSession"]()
REPORT_KEY = pytest.StashKey[str]()
PROGRESS_KEY = pytest.StashKey[Any]()  # the progress writer, or None when silenced
STARTED_KEY = pytest.StashKey[float]()
EXPECTED_SENT_KEY = pytest.StashKey[bool]()
RECORD_PROPERTY = "ipw_record"
#: on an xdist worker's first benchmark item: how many queries the collection holds (the controller's total)
EXPECTED_PROPERTY = "ipw_expected_queries"
WARMUP_PROMPT = "Reply with the word OK."


def _ipw(config: pytest.Config) -> IPWSession:
    """The run state, made on first use: a session that runs no benchmark never imports it."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        from pytest_ipw.run.session import IPWSession

        session = config.stash[SESSION_KEY] = IPWSession(config.stash[OPTIONS_KEY])
    return session


def _stop(message: str) -> None:
    """End the session with one clear line (no traceback); what was recorded so far is still reported."""
    pytest.exit(f"pytest-ipw: {message}", returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[STARTED_KEY] = time.monotonic()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ipw(min_accuracy=None, min_ipw=None, domains=None): IPW thresholds for a benchmark, "
        "and the query domains it runs on",
    )
    try:
        options = config.stash[OPTIONS_KEY] = read_options(config)
        config.pluginmanager.register(_RecordCollector(config), "ipw-record-collector")
        if options.explicitly_used:
            _ipw(config).validate()  # bad input fails before any test runs
    except IPWUsageError as exc:
        raise pytest.UsageError(f"pytest-ipw: {exc}") from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if "ipw_target" not in names and "ipw_query" not in names:
        return
    session = _ipw(metafunc.config)
    try:
        if "ipw_target" in names:
            targets = session.targets
            metafunc.parametrize("ipw_target", targets, ids=[t.id for t in targets], indirect=True, scope="session")
        if "ipw_query" in names:
            marker = metafunc.definition.get_closest_marker("ipw")
            domains = marker_thresholds(marker)["domains"] if marker else None
            queries = session.queries(domains)
            if session.options.granularity != "query":
                queries = session.batches(queries)
            metafunc.parametrize("ipw_query", queries, ids=[q.id for q in queries], indirect=True)
    except IPWUsageError as exc:
        # Errors raised here would become a collection traceback; report them once collection is done.
        where = metafunc.definition.nodeid
        session.collection_errors.setdefault(str(exc), where)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = _ipw(config)
    if session.collection_errors:
        message, where = next(iter(session.collection_errors.items()))
        raise pytest.UsageError(f"pytest-ipw: {message} (while collecting {where})")
    benchmarks = [item for item in items if "ipw_target" in getattr(item, "fixturenames", ())]
    if benchmarks and not session.options.explicitly_used:  # (options the user named were checked at start-up)
        try:
            session.check_models()  # e.g. the default model without the [llama] extra: one line, no test run
        except IPWUsageError as exc:
            raise pytest.UsageError(f"pytest-ipw: {exc}") from None
    for item in benchmarks:
        marker = item.get_closest_marker("ipw")
        benchmark = item.nodeid.split("[", 1)[0]
        if benchmark not in session.benchmark_markers:
            try:
                session.benchmark_markers[benchmark] = marker_thresholds(marker) if marker else {}
            except IPWUsageError as exc:
                raise pytest.UsageError(f"pytest-ipw: {benchmark}: {exc}") from None


def pytest_collection_finish(session: pytest.Session) -> None:
    ipw = _ipw(session.config)
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "ipw_query" in params:
            ipw.expected_records += len(getattr(params["ipw_query"], "queries", (None,))) * ipw.options.repeat
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller collects nothing, so it learns the count here
        workeroutput["ipw_expected_records"] = ipw.expected_records
    if ipw.expected_records:
        _start_progress(session.config, ipw.expected_records)


def _start_progress(config: pytest.Config, total: int) -> None:
    """The progress line (:mod:`pytest_ipw.run.progress`), fed by every record the run session receives;
    only in the process that writes the report (not on an xdist worker), unless silenced."""
    if PROGRESS_KEY in config.stash:
        progress = config.stash[PROGRESS_KEY]
        if progress is not None:
            progress.progress.total = max(progress.progress.total, total)
        return
    config.stash[PROGRESS_KEY] = None
    mode = config.stash[OPTIONS_KEY].progress
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    from pytest_ipw.run.progress import QUIET_VERBOSITY, ProgressWriter, RunProgress

    quiet = (config.getoption("verbose", 0) or 0) <= QUIET_VERBOSITY
    if reporter is None or hasattr(config, "workerinput") or mode == "off" or (mode == "auto" and quiet):
        return
    ipw = _ipw(config)
    capture = config.pluginmanager.get_plugin("capturemanager")
    writer = ProgressWriter(reporter, RunProgress(total, started=config.stash.get(STARTED_KEY, None)),
                            always=mode == "on",
                            uncaptured=capture.global_and_fixture_disabled if capture is not None else contextlib.nullcontext)
    config.stash[PROGRESS_KEY] = writer

    def on_record(record: dict[str, Any]) -> None:
        writer.progress.add(record, resumed=ipw.is_resumed(record))
        writer.update()

    ipw.record_listeners.append(on_record)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    config = item.config
    # An xdist worker tells the controller the size of the run once, with its first benchmark item's reports.
    if (hasattr(config, "workerinput") and SESSION_KEY in config.stash and EXPECTED_SENT_KEY not in config.stash
            and "ipw_query" in getattr(item, "fixturenames", ())):
        config.stash[EXPECTED_SENT_KEY] = True
        item.user_properties.append((EXPECTED_PROPERTY, config.stash[SESSION_KEY].expected_records))


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    """In a terminal the progress line owns its row: a benchmark item that passed writes no dot beside it."""
    progress = config.stash.get(PROGRESS_KEY, None)
    if progress is None or not progress.terminal or report.when != "call" or not report.passed:
        return None
    if any(name == RECORD_PROPERTY for name, _ in report.user_properties):
        return "passed", "", "PASSED"
    return None


class _RecordCollector:
    """Collects the records that xdist workers attach to their test reports."""

    def __init__(self, config: pytest.Config):
        self.config = config

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        # every worker collects every item: any one that finished tells the controller how many queries were due
        expected = (getattr(node, "workeroutput", None) or {}).get("ipw_expected_records")
        if expected:
            session = _ipw(self.config)
            session.expected_records = max(session.expected_records, int(expected))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        progress = self.config.stash.get(PROGRESS_KEY, None)
        if progress is not None and report.failed:
            progress.progress.failed += 1
        # Only reports from xdist workers (they carry .node): in-process records were added directly.
        if not hasattr(report, "node"):
            return
        for name, value in report.user_properties:
            if name == EXPECTED_PROPERTY and report.when == "setup":
                ipw = _ipw(self.config)
                ipw.expected_records = max(ipw.expected_records, int(value))
                _start_progress(self.config, ipw.expected_records)
            elif name == RECORD_PROPERTY and report.when == "call":
                _add_record(self.config, json.loads(value))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    ipw = config.stash.get(SESSION_KEY, None)
    if ipw is None:
        return
    progress = config.stash.get(PROGRESS_KEY, None)
    if progress is not None:
        progress.finish()
    if "journal" in ipw.__dict__:  # opened by a benchmark in this process
        ipw.journal.close()
    if "judge" in ipw.__dict__:  # created by a judged query in this process
        ipw.judge.close()
    if not (ipw.records or ipw.skipped_queries) or hasattr(config, "workerinput"):
        return  # nothing measured, or an xdist worker: the controller reports
    from pytest_ipw.run.finish import finish_run

    outcome = finish_run(ipw)
    failed = outcome.failed
    for category, message in outcome.warnings:
        try:
            warnings.warn(category(message), stacklevel=1)
        except Warning as exc:  # -W error::pytest_ipw.X or filterwarnings = error::...: the run fails, with its line
            ipw.warning_errors.append(f"{type(exc).__name__}: {exc}")
            failed = True
    if failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if outcome.report_line:
        config.stash[REPORT_KEY] = outcome.report_line
    config.hook.pytest_ipw_results(config=config, results=ipw.results)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    ipw = config.stash.get(SESSION_KEY, None)
    if ipw is None or ipw.results is None:
        return
    from pytest_ipw.analysis.metrics import coverage
    from pytest_ipw.report.terminal import (domain_table, error_lines, phase_notes, phase_table, provenance_notes,
                                            repeat_lines, summary_table)

    write = terminalreporter.write_line
    terminalreporter.section("intelligence per watt")
    if ipw.partial:
        write(f"PARTIAL RUN: {len(ipw.records)} of {ipw.expected_records} queries finished; the figures below cover "
              "those only (resume with --ipw-resume)", yellow=True, bold=True)
    write(summary_table(ipw.summaries))
    write("")
    phases = phase_table(ipw.summaries)
    if phases:
        write("energy by phase: prefill = until the first token, decode = after it (J/out tok: per token after the first)")
        write(phases)
        write("")
    write("accuracy by domain; coverage = share of queries at least one model × accelerator answered correctly")
    write(domain_table(ipw.table, coverage(ipw.table)))
    write("")
    notes = {t: info["fallback_reason"] for t, info in ipw.meter_info.items() if info.get("fallback_reason")}
    for line in provenance_notes(ipw.table, notes, workers=getattr(config.option, "numprocesses", None) or 0):
        write(line)
    for line in phase_notes(ipw.table) + repeat_lines(ipw.table):
        write(line)
    from pytest_ipw.analysis.quality import quality_lines
    from pytest_ipw.queries.sources import skipped_lines

    for line in skipped_lines(ipw.query_set.sources) + quality_lines(ipw.table, ipw.options.max_tokens):
        write(line, red=line.startswith("OUTPUT TRUNCATED"))
    for line in error_lines(ipw.results["query_errors"]):
        write(line, red=True)
    if ipw.options.json_path:
        error = ipw.results.get("write_error")
        write(error if error else f"results: {ipw.options.json_path}")
    report_line = config.stash.get(REPORT_KEY, None)
    if report_line:
        write(report_line, red=report_line.startswith("IPW REPORT FAILED"))
    for miss in ipw.misses:
        write(f"IPW THRESHOLD MISSED: {miss.line()}", red=True, bold=True)
    for error in ipw.warning_errors:
        write(f"IPW WARNING AS ERROR: {error}", red=True, bold=True)
    if ipw.history is not None:
        _write_history(terminalreporter, ipw.history)


def _write_history(terminalreporter: Any, history: Any) -> None:
    from pytest_ipw.history.compare import changes_table

    write = terminalreporter.write_line
    if history.baseline is not None and history.comparison is not None:
        write("")
        legend = " (paired by query; 'within noise' = not significant)" if history.changes else ""
        write(f"compared with {history.baseline.id}{legend}")
        write("queries per model × accelerator: paired = in both runs")
        write(history.comparison.coverage_table())
        if history.changes:
            write(changes_table(history.changes))
    for note in history.notes:
        write(f"compare: {note}")
    for _, warning in history.warnings:
        if not any(error.startswith(warning) for error in history.errors):  # else said once, as a failure
            write(f"IPW COMPARE WARNING: {warning}", yellow=True, bold=True)
    if history.saved is not None:
        write(f"saved: {history.saved.path}")
    for error in history.errors:
        write(f"IPW COMPARE FAILED: {error}", red=True, bold=True)
    for failure in history.failures:
        write(f"IPW REGRESSION: {failure.line()}", red=True, bold=True)


def _add_record(config: pytest.Config, record: dict[str, Any]) -> None:
    _ipw(config).add_record(record)
    config.hook.pytest_ipw_record(config=config, record=record)


def _publish(request: pytest.FixtureRequest, record: dict[str, Any]) -> None:
    """Attach a record to the test report (JUnit XML shows the flat properties), and to pytest-benchmark's
    ``extra_info`` when the test also uses its ``benchmark`` fixture."""
    flat = {f"ipw_{key}": record[key] for key in ("correct", "unscorable", "joules", "watts", "provenance", "meter",
                                                   "latency_s", "tokens_out")}
    request.node.user_properties.extend(flat.items())
    request.node.user_properties.append(("ipw_error", (record.get("error") or {}).get("kind") or ""))
    # the whole record, for JUnit XML readers; on an xdist worker it is also how it reaches the controller
    request.node.user_properties.append((RECORD_PROPERTY, json.dumps(record)))
    if not hasattr(request.config, "workerinput"):
        # recorded at once, so a test interrupted after its query still counts it
        _add_record(request.config, record)
    if "benchmark" in request.fixturenames:
        request.getfixturevalue("benchmark").extra_info.update(flat)


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def ipw_target(request: pytest.FixtureRequest) -> Target:
    """The model × accelerator of this test (parametrized by pytest-ipw)."""
    return request.param


@pytest.fixture
def ipw_query(request: pytest.FixtureRequest):
    """The query of this test (parametrized by pytest-ipw over the selected query set)."""
    return request.param


@pytest.fixture(scope="session")
def ipw_model(ipw_target: Target, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The loaded model of this test's target, behind :class:`~pytest_ipw.backends.base.Backend`.

    Loaded once per (model, accelerator), warmed up with ``--ipw-warmup`` unmeasured generations.
    """
    from .backends import load_backend

    session = _ipw(request.config)
    try:
        backend = load_backend(ipw_target.model, session.generation_settings, ipw_target.device)
    except IPWUsageError as exc:
        _stop(str(exc))
    try:
        for _ in range(session.options.warmup):
            backend.generate(WARMUP_PROMPT)
        from .backends.models import model_provenance

        info = backend.info()
        # what stands behind the system's name (an alias names a file, a hash, a server model)
        info["source"] = model_provenance(ipw_target.model, info)
        session.model_info[ipw_target.id] = info
        yield backend
    finally:
        backend.close()


@pytest.fixture(scope="session")
def power_meter(ipw_target: Target, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The meter of this test's accelerator: ``with power_meter.window() as w: ...; w.measurement``."""
    from .meters.registry import select_meter

    session = _ipw(request.config)
    device = ipw_target.device
    try:
        choice = select_meter(device.profile, device.index, requested=session.options.meter,
                              sample_hz=session.options.sample_hz)
    except IPWUsageError as exc:
        _stop(str(exc))
    from .hardware.card import host_state

    info = {**choice.meter.describe(), "fallback_reason": choice.fallback_reason, "thermal_start": choice.meter.thermal(),
            "host_start": host_state()}
    session.meter_info[ipw_target.id] = info
    try:
        if session.options.idle_seconds > 0:  # after the model is loaded: idle with the model resident
            try:
                info["idle_baseline"] = choice.meter.measure_idle(session.options.idle_seconds).to_dict()
            except IPWUsageError as exc:
                _stop(f"idle baseline: {exc}")
        yield choice.meter
    finally:
        info["thermal_end"] = choice.meter.thermal()
        info["host_end"] = host_state()
        choice.meter.close()


@pytest.fixture
def ipw_bench(request: pytest.FixtureRequest, ipw_target: Target, ipw_model: Any, power_meter: Any,
              ipw_query: Any) -> Callable[..., Any]:
    """Run a query through the model under the meter, score it and record it; returns the record.

    A wrong answer is recorded, not raised: accuracy and IPW are judged over the whole run. So is a query the
    model cannot answer (its record has ``error`` set; ``--ipw-on-error`` decides the rest). With
    ``--ipw-granularity=domain|model`` the item's query is a batch, and with ``--ipw-repeat=N`` (N > 1) each
    query runs N rounds: a list of records is returned then.

    Example::

        def test_answer(ipw_bench):
            record = ipw_bench()
            assert record["provenance"] in ("measured", "estimated")
    """
    from pytest_ipw.run.batching import upcoming_queries
    from pytest_ipw.run.bench import BenchStep
    from pytest_ipw.run.session import QueryBatch

    session = _ipw(request.config)
    step = BenchStep(session, ipw_target, ipw_model, power_meter, benchmark=request.node.nodeid.split("[", 1)[0],
                     upcoming=lambda: upcoming_queries(request.node, request.session.items))

    def measure(query: Any, rest: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        try:
            records = step.records(query, rest)  # one per round of --ipw-repeat
        except IPWUsageError as exc:  # e.g. the server went away: stop, keep what finished
            _stop(f"{ipw_target.model.name}: {exc}")
        for record in records:
            _publish(request, record)
        for record in records:
            reason = step.stop_reason(record)  # --ipw-on-error=stop, or a backend that keeps failing
            if reason:
                _stop(f"{ipw_target.model.name}: {reason}")
        return records

    def run(query: Any = None) -> Any:
        query = ipw_query if query is None else query
        if isinstance(query, QueryBatch):
            return [r for i, q in enumerate(query.queries) for r in measure(q, query.queries[i + 1:])]
        records = measure(query)
        return records[0] if len(records) == 1 else records

    return run


@pytest.fixture
def ipw_record(request: pytest.FixtureRequest, ipw_target: Target, ipw_model: Any, power_meter: Any) -> Iterator[Any]:
    """Hand over what a benchmark of your own measured; it becomes a record like ``ipw_bench``'s.

    Every window opened on ``power_meter`` during the test is counted (summed, each kept as a part); the
    response is scored by the query's scorer unless ``correct=`` gives the verdict. ``ipw_record.resumed``
    is the record an interrupted run already finished (``--ipw-resume``): skip the work then.

    Example (a 3-sample vote)::

        def test_vote(ipw_model, power_meter, ipw_query, ipw_record):
            if ipw_record.resumed:
                return
            answers = []
            for seed in range(3):
                with power_meter.window():
                    answers.append(ipw_model.generate(ipw_query.prompt))
            best = majority(answers)
            ipw_record(best.text, generations=answers)
    """
    from pytest_ipw.run.custom import PipelineRecorder

    query = request.getfixturevalue("ipw_query") if "ipw_query" in request.fixturenames else None
    recorder = PipelineRecorder(_ipw(request.config), ipw_target, power_meter,
                                benchmark=request.node.nodeid.split("[", 1)[0], query=query)

    resumed = recorder.resumed
    if resumed is not None:  # finished by an interrupted run: it counts now, whether or not the test skips its work
        _publish(request, resumed)

    def record(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            result = recorder(*args, **kwargs)
        except IPWUsageError as exc:  # misuse in the test: one clear failure, no traceback from inside
            pytest.fail(f"pytest-ipw: {exc}", pytrace=False)
        if result is not resumed:
            _publish(request, result)
        return result

    record.resumed = resumed  # type: ignore[attr-defined]
    try:
        yield record
    finally:
        recorder.close()
