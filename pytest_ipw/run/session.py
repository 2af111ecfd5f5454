"""Run state of one pytest session: what to run (targets, queries), what was measured, and the verdict.

Everything is resolved lazily, so an installed-but-unused pytest-ipw costs nothing.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from pytest_ipw import __version__
from pytest_ipw.hardware.profiles import AcceleratorProfile, LocalDevice, detect_devices, load_profiles, resolve_accelerators
from pytest_ipw.backends.base import GenerationSettings
from pytest_ipw.analysis.table import RecordTable
from pytest_ipw.analysis.metrics import Summary, accuracy_by_domain_rows, coverage, query_rounds, round_noise, summarize_systems
from pytest_ipw.core.systems import assign_systems
from pytest_ipw.hardware.card import run_cards
from pytest_ipw.backends.models import ModelSpec, parse_model_list
from pytest_ipw.options import RunOptions
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.analysis.quality import judge_cost, quality_summary
from pytest_ipw.queries.schema import DEFAULT_QUERY_SET, Query, select_queries

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Target:
    """One value of the models × accelerators axis."""

    model: ModelSpec
    device: LocalDevice

    @property
    def id(self) -> str:
        return f"{self.model.name}-{self.device.profile.name}"

    def __hash__(self) -> int:
        # pytest hashes a session-scoped parameter once per collected item (to order items by it); the
        # dataclass hash would hash the whole model spec and device profile each time. Equal targets share these.
        return hash((self.model.name, self.device.profile.name, self.device.index))


def pin_to_worker(chosen: list[LocalDevice], local: list[LocalDevice], worker: str | None) -> list[LocalDevice]:
    """On a host with several GPUs of one profile, xdist worker gwK takes GPU K mod count, so each worker
    runs on, and measures, its own device (``pytest -n 8`` on an 8-GPU host)."""
    if worker is None or not worker.startswith("gw") or not worker[2:].isdigit():
        return chosen
    number = int(worker[2:])
    pinned = []
    for device in chosen:
        same = [d for d in local if d.profile.name == device.profile.name and d.index is not None]
        pinned.append(same[number % len(same)] if len(same) > 1 else device)
    return pinned


@dataclass(frozen=True)
class QueryBatch:
    """Many queries run by one test item (``--ipw-granularity=domain|model``)."""

    id: str
    queries: tuple[Query, ...]


def shard_of(query_id: str, shards: int) -> int:
    """Stable shard (0-based) of a query: the same on every host, Python version and run."""
    return int(hashlib.sha1(query_id.encode("utf-8")).hexdigest()[:12], 16) % shards


@dataclass(frozen=True)
class ThresholdMiss:
    scope: str  # "run" or the benchmark's node id
    system: str  # model@accelerator, with [benchmark] where several benchmarks ran
    metric: str
    value: float | None
    threshold: float
    source: str  # the option or marker that set it
    provenance: str

    def line(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.4g}"
        where = "" if self.scope == "run" else f" in {self.scope}"
        note = " (energy estimated, not measured)" if self.metric == "ipw" and self.provenance != "measured" else ""
        return (f"{self.system}{where}: {self.metric} {shown} is below {self.threshold:g} "
                f"set by {self.source}{note}")


class IPWSession:
    def __init__(self, options: RunOptions):
        self.options = options
        # the records, and their aggregated fields read as each arrives (the end of a run reads columns)
        self.table = RecordTable(capture=True)
        self.records: list[dict[str, Any]] = self.table.records  # type: ignore[assignment]
        #: records of queries that could not be answered, left out of accuracy by --ipw-on-error=skip
        self.skipped_queries: list[dict[str, Any]] = []
        self.failure_streaks: dict[str, int] = {}  # target id -> transient failures in a row (run/bench.py)
        self.benchmark_markers: dict[str, dict[str, Any]] = {}
        self.collection_errors: dict[str, str] = {}  # message -> where it arose
        self.meter_info: dict[str, dict[str, Any]] = {}  # target id -> meter description
        self.model_info: dict[str, dict[str, Any]] = {}  # target id -> backend info
        self.started_at = time.time()
        self.summaries: list[Summary] = []
        self.misses: list[ThresholdMiss] = []
        self.results: dict[str, Any] | None = None
        self.history: Any = None  # history.HistoryOutcome when comparing or saving
        self.expected_records = 0  # queries the collected items will run
        self._batchers: dict[str, Any] = {}
        self.warning_errors: list[str] = []  # pytest-ipw warnings a filter turned into errors
        self.record_listeners: list[Callable[[dict[str, Any]], None]] = []  # told of each record (progress)

    # -- what to run -------------------------------------------------------------------------------
    @functools.cached_property
    def profiles(self) -> dict[str, AcceleratorProfile]:
        return load_profiles(self.options.profiles_file)

    @functools.cached_property
    def local_devices(self) -> list[LocalDevice]:
        return detect_devices(self.profiles)

    @functools.cached_property
    def devices(self) -> list[LocalDevice]:
        chosen = resolve_accelerators(self.options.accelerators, self.profiles, self.local_devices)
        return pin_to_worker(chosen, self.local_devices, os.environ.get("PYTEST_XDIST_WORKER"))

    @functools.cached_property
    def models(self) -> list[ModelSpec]:
        return parse_model_list(self.options.models)

    @functools.cached_property
    def targets(self) -> list[Target]:
        return [Target(model, device) for model in self.models for device in self.devices]

    @functools.cached_property
    def query_set(self) -> Any:
        """The loaded data set(s): file, hub data set or mix (:mod:`pytest_ipw.sources`)."""
        from pytest_ipw.queries.sources import load_query_set

        return load_query_set(self.options.dataset, self.options.columns, self.options.skip_invalid)

    @functools.cached_property
    def all_queries(self) -> list[Query]:
        return self.query_set.queries

    def queries(self, domains: list[str] | None = None) -> list[Query]:
        """The selected queries; a benchmark's marker ``domains`` narrows the run's selection further."""
        source = f"query set {self.options.dataset or DEFAULT_QUERY_SET}"
        selected = select_queries(self.all_queries, domains=self.options.domains, limit=self.options.limit, source=source,
                                  seed=self.options.sample_seed, weights=self.query_set.weights)
        if domains:
            selected = select_queries(selected, domains=domains, source=f"the selection from {source}")
        if self.options.shard is not None:
            k, n = self.options.shard
            selected = [q for q in selected if shard_of(q.id, n) == k - 1]
            if not selected:
                raise IPWUsageError(f"--ipw-shard={k}/{n} holds no queries of {source}; use fewer shards")
        return selected

    def batches(self, queries: list[Query]) -> list[QueryBatch]:
        """Queries grouped into test items by ``--ipw-granularity`` (domain or model)."""
        if self.options.granularity == "model":
            return [QueryBatch("all", tuple(queries))]
        by_domain: dict[str, list[Query]] = {}
        for query in queries:
            by_domain.setdefault(query.domain, []).append(query)
        return [QueryBatch(domain, tuple(items)) for domain, items in by_domain.items()]

    # -- journal -------------------------------------------------------------------------------------
    @functools.cached_property
    def fingerprint(self) -> dict[str, Any]:
        """What decides the answers: resuming is refused when any of it changed."""
        from pytest_ipw.run.journal import fingerprint

        o = self.options
        dataset = o.dataset or str(DEFAULT_QUERY_SET)
        size = os.path.getsize(dataset) if os.path.isfile(dataset) else None
        # the options declared as deciding the answers, plus what they resolved to
        return fingerprint({
            **o.answer_settings(), "dataset_file": [os.path.abspath(dataset), size],
            "model_specs": [(m.backend, m.location) for m in self.models],
            "accelerator_profiles": [t.device.profile.name for t in self.targets],
        })

    @property
    def journal_base(self) -> str:
        return self.options.journal or os.path.join(self.options.storage, "journal.jsonl")

    @functools.cached_property
    def journal(self):
        from pytest_ipw.run.journal import Journal, journal_path

        return Journal(journal_path(self.journal_base, os.environ.get("PYTEST_XDIST_WORKER")), self.fingerprint,
                       append=self.options.resume)

    @functools.cached_property
    def resumed(self) -> dict[tuple[str, str, str, str, int], dict[str, Any]]:
        """Records finished by the interrupted run (``--ipw-resume``), by journal key."""
        if not self.options.resume:
            return {}
        from pytest_ipw.run.journal import journal_files, read_journal

        base = self.journal_base
        files = journal_files(base)
        if not files:
            raise IPWUsageError(f"--ipw-resume: no journal at {base}; nothing to resume (run without --ipw-resume)")
        return read_journal(files, self.fingerprint)

    @functools.cached_property
    def generation_settings(self) -> GenerationSettings:
        o = self.options
        return GenerationSettings(temperature=o.temperature, seed=o.seed, max_tokens=o.max_tokens,
                                  context_size=o.context_size, threads=o.threads, keep_prefix_cache=not o.reset_state,
                                  batch_size=o.batch_size, request_timeout_s=o.request_timeout, retries=o.retries,
                                  api_key_env=o.api_key_env)

    @functools.cached_property
    def judge(self) -> Any:
        """The judge for scorer ``judge`` (its model loads on the first judged answer, on the first device)."""
        from pytest_ipw.scoring.judge import Judge

        return Judge(self.options.judge, self.generation_settings, self.devices[0])

    def batcher(self, target_id: str) -> Any:
        """The batcher of one target (``--ipw-batch-size`` > 1): queries answered together share the energy."""
        from pytest_ipw.run.batching import Batcher

        size = self.options.batch_size
        if os.environ.get("PYTEST_XDIST_WORKER"):
            # A worker sees every collected item but runs only some: it would batch (and charge) queries that
            # other workers run.
            raise IPWUsageError(f"--ipw-batch-size={size} does not combine with pytest-xdist (-n); batch in one "
                                "process, or use --ipw-batch-size=1")
        if target_id not in self._batchers:
            self._batchers[target_id] = Batcher(size)
        return self._batchers[target_id]

    def judge_scorer(self, meter: Any) -> Any:
        """The judge as ``score(..., judge=)`` wants it; its energy is read from ``meter`` in its own window."""
        return functools.partial(self.judge, meter=meter)

    def check_models(self) -> None:
        """The models (and judge) can be loaded here: files exist, backends and their extras are installed.
        Cheap (no runtime is imported), so even a run with every default checks it before any test."""
        from pytest_ipw.backends import check_backend_spec

        for model in self.models:
            check_backend_spec(model)
        if self.options.judge:
            from pytest_ipw.backends.models import parse_model_spec

            check_backend_spec(parse_model_spec(self.options.judge, option="--ipw-judge"))

    def validate(self) -> None:
        """Resolve everything the user named, so bad input fails before any test runs."""
        self.check_models()
        if self.options.batch_size > 1:
            from pytest_ipw.backends import backend_batches

            single = sorted(m.name for m in self.models if not backend_batches(m))
            if single:
                raise IPWUsageError(f"--ipw-batch-size={self.options.batch_size}: {', '.join(single)} run(s) one "
                                    "query at a time; batching applies to vllm models (use --ipw-batch-size=1)")
        _ = self.targets, self.queries(), self.resumed
        if self.options.meter:
            from pytest_ipw.meters.registry import select_meter

            for device in self.devices:
                select_meter(device.profile, device.index, requested=self.options.meter).meter.close()

    # -- results -----------------------------------------------------------------------------------
    def add_record(self, record: dict[str, Any]) -> None:
        """A finished query; one that could not be answered stays in the denominator unless
        ``--ipw-on-error=skip`` (then it is kept, and listed, apart)."""
        if record.get("error") and self.options.on_error == "skip":
            self.skipped_queries.append(record)
        else:
            self.table.append(record)
        for listener in self.record_listeners:
            listener(record)

    def is_resumed(self, record: dict[str, Any]) -> bool:
        """Whether ``record`` was finished by the interrupted run this one resumes (``--ipw-resume``)."""
        if not self.options.resume:
            return False
        from pytest_ipw.run.journal import record_key

        try:
            return record_key(record) in self.resumed
        except (IPWUsageError, KeyError):  # an unreadable journal is reported by the run itself
            return False

    def finish(self) -> None:
        """Aggregate records, check thresholds. Pure computation over what was recorded."""
        from pytest_ipw.run.records import share_overlapping_energy

        # skipped queries (--ipw-on-error=skip) ran too: their windows take part in sharing, and they get a label
        kept = len(self.records)
        everything = assign_systems(share_overlapping_energy(self.records + self.skipped_queries))
        for index, record in enumerate(everything[:kept]):
            if record is not self.records[index]:  # a new record: its energy shared with overlapping windows
                self.table.replace(index, record)
        self.table.reread("system")  # set on every record in place
        self.skipped_queries = everything[kept:]
        self.summaries = summarize_systems(self.table)
        self.misses = self._threshold_misses()

    def _threshold_misses(self) -> list[ThresholdMiss]:
        misses: list[ThresholdMiss] = []
        o = self.options
        for summary in self.summaries:
            misses.extend(_check(summary, "run", o.min_accuracy, o.min_ipw, "--ipw-min-accuracy", "--ipw-min-ipw"))
        for benchmark, marker in self.benchmark_markers.items():
            if marker.get("min_accuracy") is None and marker.get("min_ipw") is None:
                continue
            records = [r for r in self.records if r["benchmark"] == benchmark]
            for summary in summarize_systems(records):
                misses.extend(_check(summary, benchmark, marker.get("min_accuracy"), marker.get("min_ipw"),
                                     "@pytest.mark.ipw(min_accuracy)", "@pytest.mark.ipw(min_ipw)"))
        return misses

    @property
    def partial(self) -> bool:
        """True when fewer queries finished than were collected (interrupted, crashed, -x, a failing test,
        ``--ipw-on-error=stop``); a skipped query did finish."""
        return len(self.records) + len(self.skipped_queries) < self.expected_records

    def results_document(self, machine_info: dict[str, Any]) -> dict[str, Any]:
        """The ``--ipw-json`` document (schema in README)."""
        from pytest_ipw.analysis.failures import run_query_errors

        cov = coverage(self.table)
        per_domain = accuracy_by_domain_rows(self.table)
        return {
            "schema_version": SCHEMA_VERSION,
            "pytest_ipw_version": __version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "duration_s": time.time() - self.started_at,
            "partial": self.partial,
            "expected_records": self.expected_records,
            "machine_info": machine_info,
            "settings": {
                "options": self.options.recorded(),  # every option's value and where it came from
                "generation": self.generation_settings.to_dict(),
                "dataset": self.query_set.label,
                "dataset_sources": self.query_set.sources,
                "columns": self.options.columns,
                "sample_seed": self.options.sample_seed,
                "limit": self.options.limit,
                "domains": self.options.domains,
                "warmup": self.options.warmup,
                "shard": list(self.options.shard) if self.options.shard else None,
                "granularity": self.options.granularity,
                "resumed_records": len(self.resumed),
                "thresholds": {"min_accuracy": self.options.min_accuracy, "min_ipw": self.options.min_ipw,
                               "benchmarks": self.benchmark_markers},
                "models": self.model_info,
                "meters": self.meter_info,
                "judge": self.judge.describe() if "judge" in self.__dict__ else None,
                # which energy IPW used, and how it was sampled (README: methodology)
                "energy": {"basis": self.options.energy, "idle_seconds": self.options.idle_seconds,
                           "sample_hz": self.options.sample_hz, "meter": self.options.meter},
            },
            # what the energy figures depend on (sensor, scope, period, idle floor, clocks...), per target
            "comparability": run_cards(self.meter_info, self.model_info, self.options.sample_hz),
            "records": self.records,
            # --ipw-on-error=skip: the queries left out of every figure, with their records (energy included)
            "skipped_queries": self.skipped_queries,
            "query_errors": run_query_errors(self.table, self.skipped_queries),
            "summary": [s.to_dict() for s in self.summaries],
            # --ipw-repeat: run-to-run noise per model × accelerator, and each query's mean and spread
            "repeats": {"rounds": self.options.repeat, "noise": round_noise(self.table),
                        "queries": query_rounds(self.table)} if self.options.repeat > 1 else None,
            "accuracy_by_domain": per_domain,
            "coverage": cov.to_dict(),
            "threshold_failures": [m.line() for m in self.misses],
            # strict/flexible accuracy, output-length guard; the judge's cost, never in the model's energy
            "quality": quality_summary(self.table, self.options.max_tokens),
            "judge_cost": judge_cost(self.table),
        }


def _check(summary: Summary, scope: str, min_accuracy: float | None, min_ipw: float | None,
           accuracy_source: str, ipw_source: str) -> list[ThresholdMiss]:
    misses = []
    if min_accuracy is not None and summary.accuracy < min_accuracy:
        misses.append(ThresholdMiss(scope, summary.system, "accuracy", summary.accuracy,
                                    min_accuracy, accuracy_source, summary.provenance))
    if min_ipw is not None and (summary.ipw is None or summary.ipw < min_ipw):
        misses.append(ThresholdMiss(scope, summary.system, "ipw", summary.ipw,
                                    min_ipw, ipw_source, summary.provenance))
    return misses
