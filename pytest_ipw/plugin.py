"""The pytest plugin: options, parametrization, fixtures and the end-of-session report.

Kept thin: run state lives in :class:`~pytest_ipw.session.IPWSession`; maths, meters, backends,
reports and files live in their own modules and are imported only when a benchmark needs them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

from .errors import IPWUsageError
from .options import RunOptions, add_options, marker_thresholds, read_options

if TYPE_CHECKING:
    from .session import IPWSession, Target

OPTIONS_KEY = pytest.StashKey[RunOptions]()
SESSION_KEY = pytest.StashKey["IPWSession"]()
REPORT_KEY = pytest.StashKey[str]()
RECORD_PROPERTY = "ipw_record"
WARMUP_PROMPT = "Reply with the word OK."


def _ipw(config: pytest.Config) -> IPWSession:
    """The run state, made on first use: a session that runs no benchmark never imports it."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        from .session import IPWSession

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
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller collects nothing, so it learns the count here
        workeroutput["ipw_expected_records"] = ipw.expected_records


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
        # Only reports from xdist workers (they carry .node): in-process records were added directly.
        if report.when != "call" or not hasattr(report, "node"):
            return
        for name, value in report.user_properties:
            if name == RECORD_PROPERTY:
                _ipw(self.config).add_record(json.loads(value))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    ipw = config.stash.get(SESSION_KEY, None)
    if ipw is None:
        return
    if "journal" in ipw.__dict__:  # opened by a benchmark in this process
        ipw.journal.close()
    if "judge" in ipw.__dict__:  # created by a judged query in this process
        ipw.judge.close()
    if not ipw.records or hasattr(config, "workerinput"):
        return  # nothing measured, or an xdist worker: the controller reports
    from .machine import machine_info
    from .results import write_json_atomic

    ipw.finish()
    if ipw.misses and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    ipw.results = ipw.results_document(machine_info(ipw.devices))
    from .history import process_history

    ipw.history = process_history(ipw.options, ipw.results)
    if ipw.history is not None:
        ipw.results["comparison"] = ipw.history.to_dict()
        if ipw.history.failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if ipw.options.json_path:
        try:
            write_json_atomic(ipw.options.json_path, ipw.results)
        except IPWUsageError as exc:
            ipw.results["write_error"] = str(exc)
    if ipw.options.parquet_path:
        from .results import write_parquet

        try:
            write_parquet(ipw.options.parquet_path, ipw.records)
        except IPWUsageError as exc:
            ipw.results["write_error"] = str(exc)
    if ipw.options.report_dir:
        config.stash[REPORT_KEY] = _make_report(ipw)
    config.hook.pytest_ipw_results(config=config, results=ipw.results)


def _make_report(ipw: IPWSession) -> str:
    """Write ``--ipw-report``; returns the line for the terminal summary (the report's path, or why not)."""
    from .html_report import history_entries, write_report
    from .model_info import load_model_info
    from .storage import Storage, load_run

    try:
        history: list[Any] = []
        if ipw.history is not None:
            history, _ = history_entries(Storage(ipw.options.storage).runs(ipw.history.machine), load_run)
        files = write_report(ipw.results, ipw.options.report_dir, model_info=load_model_info(ipw.options.model_info),
                             history=history)
    except IPWUsageError as exc:
        return f"IPW REPORT FAILED: {exc}"
    return f"report: {files.html} (Markdown: {files.markdown}; {files.seconds:.1f} s)"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    ipw = config.stash.get(SESSION_KEY, None)
    if ipw is None or ipw.results is None:
        return
    from .metrics import coverage
    from .report import domain_table, provenance_notes, summary_table

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
    from .quality import quality_lines

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
    if ipw.history is not None:
        _write_history(terminalreporter, ipw.history)


def _write_history(terminalreporter: Any, history: Any) -> None:
    from .compare import changes_table

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
    if hasattr(request.config, "workerinput"):
        # an xdist worker: the whole record travels to the controller in the report
        request.node.user_properties.append((RECORD_PROPERTY, json.dumps(record)))
    else:
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
              ipw_query: Any) -> Callable[..., dict[str, Any]]:
    """Run a query through the model under the meter, score it and record it; returns the record.

    A wrong answer is recorded, not raised: accuracy and IPW are judged over the whole run.
    """
    from .records import make_record
    from .scoring import score
    from .session import QueryBatch

    session = _ipw(request.config)
    benchmark = request.node.nodeid.split("[", 1)[0]

    def measure(query: Any, rest: tuple[Any, ...] = ()) -> dict[str, Any]:
        key = (benchmark, ipw_target.model.name, ipw_target.device.profile.name, query.id)
        record = session.resumed.get(key)
        if record is None:  # not finished by an interrupted run: run it now
            try:
                if session.options.batch_size > 1:  # vLLM: this query and the next ones in one call; it shares the energy
                    from .batching import batcher_for, upcoming_queries

                    upcoming = [*rest, *upcoming_queries(request.node, request.session.items)]
                    generation, measurement = batcher_for(request.config, ipw_target.id, session.options.batch_size
                                                          ).answer(query, upcoming, ipw_model, power_meter)
                else:
                    with power_meter.window() as window:
                        generation = ipw_model.generate(query.prompt)
                    measurement = window.measurement  # carries its wall-clock window (xdist sharing)
                # after the model's window: a judge's own window never adds to the model's energy
                result = score(query, generation.text, judge=session.judge_scorer(power_meter))
            except IPWUsageError as exc:  # e.g. the server went away: stop, keep what finished
                _stop(f"{ipw_target.model.name}: {exc}")
            record = make_record(
                query=query,
                model=ipw_target.model.name,
                accelerator=ipw_target.device.profile.name,
                benchmark=benchmark,
                generation=generation,
                measurement=measurement,
                score=result,
                energy_basis=session.options.energy,
            )
            session.journal.append(record)
        _publish(request, record)
        return record

    def run(query: Any = None) -> Any:
        """One record for a query; a list of records for a batch (``--ipw-granularity=domain|model``)."""
        query = ipw_query if query is None else query
        if isinstance(query, QueryBatch):
            return [measure(q, query.queries[i + 1:]) for i, q in enumerate(query.queries)]
        return measure(query)

    return run
