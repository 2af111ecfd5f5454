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
    for item in items:
        if "ipw_target" not in getattr(item, "fixturenames", ()):
            continue
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
            ipw.expected_records += len(getattr(params["ipw_query"], "queries", (None,)))
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
                _ipw(self.config).add_record(json.loads(value))


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
    if not ipw.records or hasattr(config, "workerinput"):
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
    from pytest_ipw.report.terminal import domain_table, provenance_notes, summary_table

    write = terminalreporter.write_line
    terminalreporter.section("intelligence per watt")
    if ipw.partial:
        write(f"PARTIAL RUN: {len(ipw.records)} of {ipw.expected_records} queries finished; the figures below cover "
              "those only (resume with --ipw-resume)", yellow=True, bold=True)
    write(summary_table(ipw.summaries))
    write("")
    write("accuracy by domain; coverage = share of queries at least one model × accelerator answered correctly")
    write(domain_table(ipw.records, coverage(ipw.records)))
    write("")
    notes = {t: info["fallback_reason"] for t, info in ipw.meter_info.items() if info.get("fallback_reason")}
    for line in provenance_notes(ipw.records, notes, workers=getattr(config.option, "numprocesses", None) or 0):
        write(line)
    from pytest_ipw.analysis.quality import quality_lines

    for line in quality_lines(ipw.records, ipw.options.max_tokens):
        write(line, red=line.startswith("OUTPUT TRUNCATED"))
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
    if history.baseline is not None and history.changes:
        write("")
        write(f"compared with {history.baseline.id} (paired by query; 'within noise' = not significant)")
        write(changes_table(history.changes))
    for note in history.notes:
        write(f"compare: {note}")
    if history.saved is not None:
        write(f"saved: {history.saved.path}")
    for error in history.errors:
        write(f"IPW COMPARE FAILED: {error}", red=True, bold=True)
    for failure in history.failures:
        write(f"IPW REGRESSION: {failure.line()}", red=True, bold=True)


def _publish(request: pytest.FixtureRequest, record: dict[str, Any]) -> None:
    """Attach a record to the test report (JUnit XML shows the flat properties), and to pytest-benchmark's
    ``extra_info`` when the test also uses its ``benchmark`` fixture."""
    flat = {f"ipw_{key}": record[key] for key in ("correct", "unscorable", "joules", "watts", "provenance", "meter",
                                                   "latency_s", "tokens_out")}
    request.node.user_properties.extend(flat.items())
    # the whole record, for JUnit XML readers; on an xdist worker it is also how it reaches the controller
    request.node.user_properties.append((RECORD_PROPERTY, json.dumps(record)))
    if not hasattr(request.config, "workerinput"):
        # recorded at once, so a test interrupted after its query still counts it
        _ipw(request.config).add_record(record)
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
        session.model_info[ipw_target.id] = backend.info()
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
    info = {**choice.meter.describe(), "fallback_reason": choice.fallback_reason, "thermal_start": choice.meter.thermal()}
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
        choice.meter.close()


@pytest.fixture
def ipw_bench(request: pytest.FixtureRequest, ipw_target: Target, ipw_model: Any, power_meter: Any,
              ipw_query: Any) -> Callable[..., Any]:
    """Run a query through the model under the meter, score it and record it; returns the record.

    A wrong answer is recorded, not raised: accuracy and IPW are judged over the whole run. With
    ``--ipw-granularity=domain|model`` the item's query is a batch, and a list of records is returned.

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

    def measure(query: Any, rest: tuple[Any, ...] = ()) -> dict[str, Any]:
        try:
            record = step.record(query, rest)
        except IPWUsageError as exc:  # e.g. the server went away: stop, keep what finished
            _stop(f"{ipw_target.model.name}: {exc}")
        _publish(request, record)
        return record

    def run(query: Any = None) -> Any:
        query = ipw_query if query is None else query
        if isinstance(query, QueryBatch):
            return [measure(q, query.queries[i + 1:]) for i, q in enumerate(query.queries)]
        return measure(query)

    return run
