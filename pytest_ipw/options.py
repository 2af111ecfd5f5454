"""Every ``--ipw-*`` option, declared once.

Each field of :class:`RunOptions` carries its own declaration (flag, help, ini key, how a text value is
read, whether it names something to validate before the tests run, whether it decides the answers). From
that one place come the pytest options, the ini keys (``[tool.pytest.ini_options]``), the arguments the
``pytest-ipw`` command shares, the settings recorded in the results (with where each value came from) and
``docs/options.md``. The command line overrides the ini file, which overrides the default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from pytest_ipw.core import defaults
from pytest_ipw.core.errors import IPWUsageError

GROUP = ("ipw", "intelligence per watt (pytest-ipw)")


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [part.strip() for part in value.split(",") if part.strip()]
    return items or None


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``K/N`` with 1 <= K <= N."""
    if text is None:
        return None
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise IPWUsageError(f"--ipw-shard={text!r} is not K/N (for example 2/4)") from None
    if not 1 <= k <= n:
        raise IPWUsageError(f"--ipw-shard={text}: need 1 <= K <= N")
    return k, n


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a yes/no value: {text!r}")


@dataclass(frozen=True)
class OptionSpec:
    """How one option is declared on the command line, in ini files and in the docs."""

    flag: str
    help: str
    group: str
    metavar: str | None = None
    parse: Callable[[Any], Any] | None = None  # text (command line or ini) -> value
    choices: tuple[str, ...] | None = None
    kind: str = "value"  # "value" | "flag" (store_true) | "list" (repeatable) | "optional" (nargs="?")
    const: Any = None  # the value of a bare "optional" flag
    ini: bool = True  # also readable from the ini file as ipw_<name>
    cli: bool = False  # shared with the pytest-ipw command (as --NAME without the ipw- prefix)
    names_input: bool = False  # names something checked before any test runs
    decides_answers: bool = False  # part of the journal fingerprint: --ipw-resume refuses a change


def option(default: Any, flag: str, group: str, *, help: str, **spec: Any) -> Any:
    return field(default=default, metadata={"ipw": OptionSpec(flag=flag, help=help, group=group, **spec)})


_int, _float = int, float
MODEL, DATA, ENERGY, GENERATION, SCALE, REPORT, HISTORY = (
    "models and accelerators", "data sets", "energy", "generation", "scale and reliability", "report",
    "history and regression gates")


@dataclass(frozen=True)
class RunOptions:
    """The resolved options of one run (command line over ini over default)."""

    # -- models and accelerators ----------------------------------------------------------------------
    models: str | None = option(
        None, "--ipw-model", MODEL, metavar="SPEC[,SPEC...]", names_input=True, decides_answers=True,
        help="model(s) to benchmark: a short name (smollm2-135m, smollm2-135m-q8_0, ...), a .gguf path, or "
             "BACKEND:LOCATION (llama-cpp:, vllm:, openai+http://HOST/v1#MODEL, recorded:FILE). NAME=SPEC names "
             "the system NAME (assistant=./assistant-v2.gguf): history pairs runs by that name, so a model "
             "release is compared with the model it replaces; the file, its SHA-256 and the backend are still "
             "recorded. Several, comma-separated, become a parameter axis. Default: smollm2-135m.")
    accelerators: list[str] | None = option(
        None, "--ipw-accelerator", MODEL, metavar="NAME[,NAME...]", parse=_csv, names_input=True,
        decides_answers=True, cli=True,
        help="accelerator profile(s) to run on (cpu, m4max, h100, a100, rtx4090, ...). Default: the best one "
             "detected here.")
    profiles_file: str | None = option(
        None, "--ipw-profiles", MODEL, metavar="FILE", names_input=True, cli=True,
        help="JSON file of extra accelerator profiles (same fields as the built-in registry).")
    # -- energy ----------------------------------------------------------------------------------------
    meter: str | None = option(
        None, "--ipw-meter", ENERGY, metavar="SPEC", names_input=True, cli=True,
        help="power meter: nvml, nvml:all, rapl, rapl:psys, powermetrics, ioreport, "
             "prometheus+http://HOST:PORT/metrics[#gpu=0], replay:TRACE.csv, estimate; several joined by ',' or "
             "'+' are summed (nvml+rapl). Default: the accelerator's natural meter, else a labelled estimate.")
    sample_hz: float = option(
        defaults.SAMPLE_HZ, "--ipw-sample-hz", ENERGY, metavar="HZ", parse=_float, cli=True,
        help=f"sampling rate of power gauges (default {defaults.SAMPLE_HZ:g}; never faster than the sensor "
             "updates).")
    idle_seconds: float = option(
        2.0, "--ipw-idle-seconds", ENERGY, metavar="S", parse=_float, cli=True,
        help="idle baseline measured before each model's queries (default 2; 0 disables).")
    energy: str = option(
        "total", "--ipw-energy", ENERGY, choices=("total", "active"),
        help="energy behind IPW/IPJ: total (default) or active = total minus the idle baseline.")
    repeat: int = option(
        1, "--ipw-repeat", ENERGY, metavar="N", parse=_int, decides_answers=True,
        help="run each query N times (rounds), resetting the model's prompt-prefix cache before each round so "
             "that no round hides its prefill; every round is recorded (field round), and the report gives each "
             "query's mean energy and its coefficient of variation (default 1).")
    # -- data sets -------------------------------------------------------------------------------------
    dataset: str | None = option(
        None, "--ipw-dataset", DATA, metavar="SPEC", names_input=True, decides_answers=True,
        help="query set: a file (JSONL, CSV or Parquet, the schema of docs/datasets.md, or any columns with "
             "--ipw-columns), "
             "hf:OWNER/NAME[?config=C&split=S] (a Hugging Face data set: MMLU-Pro, SuperGPQA, GPQA, "
             "NaturalReasoning, WildChat, GSM8K built in), or mix:SPEC[*W],SPEC[*W],... Default: the shipped set.")
    columns: str | None = option(
        None, "--ipw-columns", DATA, metavar="FIELD=COLUMN[,...]", names_input=True, decides_answers=True,
        help="map a data set's columns to query fields: prompt, answer, choices, domain, id, split, scorer, "
             "tolerance, difficulty (e.g. prompt=question,answer=label).")
    limit: int | None = option(
        None, "--ipw-limit", DATA, metavar="N", parse=_int, names_input=True, decides_answers=True,
        help="use at most N queries (taken round-robin across domains).")
    sample_seed: int | None = option(
        None, "--ipw-sample-seed", DATA, metavar="N", parse=_int, decides_answers=True,
        help="draw --ipw-limit queries at random with this seed (still stratified by domain); default: file "
             "order.")
    domains: list[str] | None = option(
        None, "--ipw-domains", DATA, metavar="D[,D...]", parse=_csv, names_input=True, decides_answers=True,
        help="only queries of these domains.")
    skip_invalid: bool = option(
        False, "--ipw-skip-invalid", DATA, kind="flag", decides_answers=True,
        help="skip rows of your own query file that are not valid queries, counting and naming them in the report "
             "and JSON, instead of stopping at the first one (hub data sets always skip such rows).")
    judge: str | None = option(
        None, "--ipw-judge", DATA, metavar="SPEC", names_input=True, decides_answers=True,
        help="model that grades open-ended answers (scorer judge), any --ipw-model spec. Default: smollm2-135m "
             "(local).")
    # -- thresholds and outputs ------------------------------------------------------------------------
    min_accuracy: float | None = option(
        None, "--ipw-min-accuracy", REPORT, metavar="FRACTION", parse=_float,
        help="fail the run when a model × accelerator scores below this accuracy (0..1).")
    min_ipw: float | None = option(
        None, "--ipw-min-ipw", REPORT, metavar="PER_WATT", parse=_float,
        help="fail the run when a model × accelerator has IPW (accuracy per watt) below this.")
    json_path: str | None = option(
        None, "--ipw-json", REPORT, metavar="PATH", help="write all records and summaries to this JSON file.")
    report_dir: str | None = option(
        None, "--ipw-report", REPORT, metavar="DIR",
        help="write a self-contained HTML report, a Markdown summary and the figures to DIR.")
    model_info: str | None = option(
        None, "--ipw-model-info", REPORT, metavar="FILE", cli=False,
        help="JSON: model name -> release_date, parameters, role (local or reference), for the report's "
             "trends, routing baseline and local-vs-reference analysis.")
    progress: str = option(
        "auto", "--ipw-progress", REPORT, choices=("auto", "on", "off"),
        help="a progress line during the run: queries done of the total, elapsed time, ETA, running accuracy, "
             "J/query and W per model × accelerator. Rewritten in place in a terminal, one line every few "
             "seconds elsewhere (CI logs). auto (default) is silenced by -q -q; on also writes the last figures "
             "after a short run; off.")
    # -- generation ------------------------------------------------------------------------------------
    max_tokens: int = option(
        defaults.MAX_TOKENS, "--ipw-max-tokens", GENERATION, metavar="N", parse=_int, decides_answers=True,
        help=f"generation limit per answer (default {defaults.MAX_TOKENS}).")
    temperature: float = option(
        defaults.TEMPERATURE, "--ipw-temperature", GENERATION, metavar="T", parse=_float,
        decides_answers=True, help=f"sampling temperature (default {defaults.TEMPERATURE:g}).")
    seed: int = option(
        defaults.SEED, "--ipw-seed", GENERATION, metavar="N", parse=_int, decides_answers=True,
        help=f"sampling seed (default {defaults.SEED}).")
    context_size: int = option(
        defaults.CONTEXT_SIZE, "--ipw-context", GENERATION, metavar="N", parse=_int, decides_answers=True,
        help=f"context size in tokens (default {defaults.CONTEXT_SIZE}).")
    threads: int | None = option(
        None, "--ipw-threads", GENERATION, metavar="N", parse=_int, decides_answers=True,
        help="CPU threads for llama.cpp (default: its own, half the cores).")
    warmup: int = option(
        1, "--ipw-warmup", GENERATION, metavar="N", parse=_int, decides_answers=True,
        help="warm-up generations after loading each model, not measured (default 1).")
    reset_state: bool = option(
        False, "--ipw-reset-state", GENERATION, kind="flag", decides_answers=True,
        help="reset the model state before each query instead of keeping the prompt-prefix cache.")
    batch_size: int = option(
        defaults.BATCH_SIZE, "--ipw-batch-size", GENERATION, metavar="N", parse=_int, names_input=True,
        decides_answers=True,
        help=f"queries per engine call for batching backends (vllm); default {defaults.BATCH_SIZE}, like "
             "the study.")
    api_key_env: str = option(
        defaults.API_KEY_ENV, "--ipw-api-key-env", GENERATION, metavar="NAME",
        help=f"environment variable holding the API key for openai+http(s) models and judges (default "
             f"{defaults.API_KEY_ENV}; the key is never written anywhere).")
    request_timeout: float = option(
        defaults.REQUEST_TIMEOUT_S, "--ipw-timeout", GENERATION, metavar="S", parse=_float,
        help=f"HTTP backends: seconds to wait for a connection or for the next bytes of an answer (default "
             f"{defaults.REQUEST_TIMEOUT_S:g}).")
    retries: int = option(
        defaults.RETRIES, "--ipw-retries", GENERATION, metavar="N", parse=_int,
        help=f"HTTP backends: extra tries after a refused connection or HTTP 429/5xx (default "
             f"{defaults.RETRIES}), each after the server's Retry-After, else an exponential back-off with jitter "
             "(up to 1, 2, 4, 8... s, at most 30 s a wait).")
    # -- scale and reliability -------------------------------------------------------------------------
    granularity: str = option(
        "query", "--ipw-granularity", SCALE, choices=("query", "domain", "model"),
        help="test items: one per query (default), or one per domain / per model that runs many queries (for "
             "sweeps of 100k+ queries; the same per-query records and reports).")
    shard: tuple[int, int] | None = option(
        None, "--ipw-shard", SCALE, metavar="K/N", parse=parse_shard, ini=False, names_input=True,
        decides_answers=True,
        help="run only shard K of N of the queries (stable by query id), to split a set across hosts; merge "
             "the runs afterwards.")
    journal: str | None = option(
        None, "--ipw-journal", SCALE, metavar="PATH",
        help="run journal, one line per finished query (default: <--ipw-storage>/journal.jsonl).")
    resume: bool = option(
        False, "--ipw-resume", SCALE, kind="flag", ini=False, names_input=True,
        help="continue an interrupted run from its journal: finished queries are not run again.")
    on_error: str = option(
        "record", "--ipw-on-error", SCALE, choices=("record", "skip", "stop"), decides_answers=True,
        help="a query the model cannot answer (prompt over the context window, request rejected, timeout, runtime "
             "error for that input): record (default) keeps it as a wrong answer, error set, in the denominator; "
             "skip leaves it out of accuracy and lists it in the report and JSON; stop ends the run at the first "
             "one, keeping what finished.")
    parquet_path: str | None = option(
        None, "--ipw-parquet", SCALE, metavar="PATH",
        help="also write the per-query records as Parquet; pytest-ipw report and compare then read them from there, "
             "as columns (for runs of 100,000 queries and more: docs/performance.md).")
    # -- history and regression gates ------------------------------------------------------------------
    storage: str | None = option(
        None, "--ipw-storage", HISTORY, metavar="DIR", cli=True,
        help=f"where saved runs live (default: {defaults.STORAGE_DIR}/ in pytest's rootdir).")
    machine_id: str | None = option(
        None, "--ipw-machine-id", HISTORY, metavar="NAME", cli=True,
        help="the machine id runs are saved and compared under (default: derived from the accelerators, CPU "
             "model and meter, not the host name; `pytest-ipw machine-id` prints it).")
    autosave: bool = option(False, "--ipw-autosave", HISTORY, kind="flag", help="save this run to --ipw-storage.")
    save_partial: bool = option(
        True, "--ipw-save-partial", HISTORY, metavar="yes|no", parse=_bool,
        help="whether --ipw-autosave / --ipw-save keep a PARTIAL run (interrupted, or fewer queries finished than "
             "were collected): yes (default) saves it marked partial, which --ipw-compare=latest then skips; no "
             "refuses to save it.")
    save_name: str | None = option(
        None, "--ipw-save", HISTORY, metavar="NAME", ini=False, help="save this run to --ipw-storage under NAME.")
    compare: str | None = option(
        None, "--ipw-compare", HISTORY, metavar="RUN", kind="optional", const="latest",
        help="compare with a saved run of this machine: latest (default), a number (0003), a save name, a "
             "commit prefix, a branch name, or a path to a results file.")
    compare_fail: tuple[str, ...] = option(
        (), "--ipw-compare-fail", HISTORY, metavar="EXPR", kind="list",
        help="fail when a metric gets significantly worse by more than the amount: ipw:5%%, accuracy:2pt, "
             "joules:10%%, coverage:1pt, latency_p95:20%%. Repeatable (one per line in the ini file).")
    compare_alpha: float = option(
        0.05, "--ipw-compare-alpha", HISTORY, metavar="P", parse=_float,
        help="significance level of the comparison (default 0.05).")
    compare_across_machines: bool = option(
        False, "--ipw-compare-across-machines", HISTORY, kind="flag",
        help="allow comparing with runs saved under another machine id (different hardware or meter).")
    require_baseline: bool = option(
        False, "--ipw-require-baseline", HISTORY, kind="flag", cli=True,
        help="fail when --ipw-compare finds no baseline, or when a gate finds no model × accelerator present in "
             "both runs (default: pass, and say so with a warning).")
    #: where each value came from: option name -> "command line" | "ini" | "default" (filled by read_options)
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def explicitly_used(self) -> bool:
        """Whether the user set any option that names something to validate before the tests run."""
        return any(getattr(self, f.name) not in (None, False, f.default) for f, spec in declared_options()
                   if spec.names_input)

    def answer_settings(self) -> dict[str, Any]:
        """The options that decide the answers (the journal's fingerprint holds them)."""
        return {ini_name(f): _jsonable(getattr(self, f.name)) for f, spec in declared_options() if spec.decides_answers}

    def recorded(self) -> dict[str, Any]:
        """Every option's value and where it came from, for the results' settings (keyed by ini key)."""
        return {ini_name(f): {"value": _jsonable(getattr(self, f.name)), "from": self.sources.get(f.name, "default")}
                for f, _ in declared_options()}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def declared_options() -> Iterator[tuple[dataclasses.Field, OptionSpec]]:
    """Each option field with its declaration, in declaration order."""
    for f in dataclasses.fields(RunOptions):
        spec = f.metadata.get("ipw")
        if spec is not None:
            yield f, spec


def ini_name(f: dataclasses.Field) -> str:
    """The ini key (and pytest's dest) of an option: its flag, ``--ipw-max-tokens`` -> ``ipw_max_tokens``."""
    return f.metadata["ipw"].flag[2:].replace("-", "_")


def add_options(parser: pytest.Parser) -> None:
    """The pytest options and ini keys, from the declarations."""
    group = parser.getgroup(*GROUP)
    for f, spec in declared_options():
        kwargs: dict[str, Any] = {"dest": ini_name(f), "help": _help(spec, f), "default": None}
        if spec.kind == "flag":
            kwargs["action"] = "store_true"
        elif spec.kind == "list":
            kwargs["action"] = "append"
        elif spec.kind == "optional":
            kwargs.update(nargs="?", const=spec.const)
        if spec.metavar and spec.kind != "flag":
            kwargs["metavar"] = spec.metavar
        if spec.choices:
            kwargs["choices"] = spec.choices
        group.addoption(spec.flag, **kwargs)
        if spec.ini:
            kind = "linelist" if spec.kind == "list" else "string"  # yes/no read here, naming the key
            parser.addini(ini_name(f), f"{spec.flag}: {spec.help.split('. ')[0].rstrip('.')}", type=kind,
                          default=None)


def _help(spec: OptionSpec, f: dataclasses.Field) -> str:
    return spec.help + (f" [ini: {ini_name(f)}]" if spec.ini else "")


def add_cli_options(parser: Any, only: tuple[str, ...], prefix: str = "") -> None:
    """Options the ``pytest-ipw`` command shares with the plugin (``--storage``, ``--machine-id``,
    ``--accelerator``...), from the same declarations, as pytest-benchmark shares its options with its CLI.
    The command reads them as given; an ini file is pytest's, so its defaults are the declared ones."""
    for f, spec in declared_options():
        if f.name in only:
            if not spec.cli:
                raise ValueError(f"{spec.flag} is not declared as shared with the command (cli=True)")
            name = "--" + prefix + spec.flag[len("--ipw-"):]
            kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": spec.help}
            if spec.kind == "flag":
                kwargs["action"] = "store_true"
            else:
                kwargs.update(metavar=spec.metavar, type=spec.parse or str)
            parser.add_argument(name, **kwargs)


def _from_text(f: dataclasses.Field, spec: OptionSpec, value: Any, where: str) -> Any:
    if spec.kind == "flag":
        try:
            return _bool(value)
        except ValueError:
            raise IPWUsageError(f"{where}: expected true or false, got {value!r}") from None
    if spec.kind == "list":
        return tuple(str(v) for v in value)
    if spec.choices and value not in spec.choices:
        raise IPWUsageError(f"{where}: {value!r} is not one of {', '.join(spec.choices)}")
    if spec.parse is None:
        return value
    try:
        return spec.parse(value)
    except IPWUsageError:
        raise
    except (TypeError, ValueError):
        raise IPWUsageError(f"{where}: cannot read {value!r} (expected {spec.metavar or 'a value'})") from None


def read_options(config: pytest.Config) -> RunOptions:
    """Command line over ini over default, each value checked; ``sources`` says which one won."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for f, spec in declared_options():
        given = config.getoption(ini_name(f))
        if given is not None and given != []:
            values[f.name] = _from_text(f, spec, given, spec.flag) if spec.kind != "flag" else bool(given)
            sources[f.name] = "command line"
            continue
        ini_value = config.getini(ini_name(f)) if spec.ini else None
        if ini_value not in (None, "", []):
            values[f.name] = _from_text(f, spec, ini_value, f"ini key {ini_name(f)}")
            sources[f.name] = "ini"
    if "storage" not in values:  # like .pytest_cache: in the rootdir, wherever pytest is started from
        values["storage"] = str(Path(str(config.rootpath)) / defaults.STORAGE_DIR)
        sources["storage"] = "default (rootdir)"
    options = RunOptions(**values, sources=sources)
    _check_ranges(options)
    return options


def _check_ranges(options: RunOptions) -> None:
    checks: list[tuple[bool, str]] = [
        (options.min_accuracy is None or 0 <= options.min_accuracy <= 1,
         f"--ipw-min-accuracy must lie in 0..1 (a fraction), got {options.min_accuracy}"),
        (options.min_ipw is None or options.min_ipw >= 0, f"--ipw-min-ipw must not be negative, got {options.min_ipw}"),
        (options.max_tokens >= 1, f"--ipw-max-tokens must be at least 1, got {options.max_tokens}"),
        (options.temperature >= 0, f"--ipw-temperature must not be negative, got {options.temperature}"),
        (options.context_size >= 64, f"--ipw-context must be at least 64, got {options.context_size}"),
        (options.threads is None or options.threads >= 1, f"--ipw-threads must be at least 1, got {options.threads}"),
        (options.warmup >= 0, f"--ipw-warmup must not be negative, got {options.warmup}"),
        (options.limit is None or options.limit >= 1, f"--ipw-limit must be at least 1, got {options.limit}"),
        (options.request_timeout > 0, f"--ipw-timeout must be positive (seconds), got {options.request_timeout}"),
        (options.retries >= 0, f"--ipw-retries must not be negative, got {options.retries}"),
        (options.batch_size >= 1, f"--ipw-batch-size must be at least 1, got {options.batch_size}"),
        (options.repeat >= 1, f"--ipw-repeat must be at least 1, got {options.repeat}"),
        (options.repeat == 1 or options.batch_size == 1,
         f"--ipw-repeat={options.repeat} repeats single queries; it does not combine with --ipw-batch-size="
         f"{options.batch_size} (use one of them)"),
        (bool(options.api_key_env.strip()), "--ipw-api-key-env needs the name of an environment variable"),
        (options.sample_hz > 0, f"--ipw-sample-hz must be positive, got {options.sample_hz}"),
        (options.idle_seconds >= 0, f"--ipw-idle-seconds must not be negative, got {options.idle_seconds}"),
        (options.energy != "active" or options.idle_seconds > 0,
         "--ipw-energy=active subtracts the idle baseline, which --ipw-idle-seconds=0 disables; give it a duration"),
        (0 < options.compare_alpha < 1, f"--ipw-compare-alpha must lie in (0, 1), got {options.compare_alpha}"),
        (options.machine_id is None or bool(options.machine_id.strip()),
         "--ipw-machine-id needs a name (letters, digits, '-', '_', '.')"),
    ]
    for ok, message in checks:
        if not ok:
            raise IPWUsageError(message)
    if options.compare_fail:  # imported only when used: pytest start-up stays light
        from pytest_ipw.history.compare import Gate

        for expression in options.compare_fail:
            Gate.parse(expression)
        if options.compare is None:
            raise IPWUsageError("--ipw-compare-fail needs --ipw-compare (which run to compare with)")
    if options.save_name is not None or options.machine_id is not None:
        from pytest_ipw.history.storage import check_save_name

        for name in (options.save_name, options.machine_id):
            if name is not None:
                check_save_name(name)
    if options.report_dir is not None or options.parquet_path is not None:
        from pytest_ipw.core.extras import check_installed

        if options.report_dir is not None:
            check_installed("matplotlib", "--ipw-report")
        if options.parquet_path is not None:
            check_installed("pyarrow", "--ipw-parquet")
    if options.model_info is not None:
        from pytest_ipw.analysis.model_info import load_model_info

        load_model_info(options.model_info)  # a bad file fails before any test runs


def marker_thresholds(marker: Any) -> dict[str, Any]:
    """Validated keyword arguments of ``@pytest.mark.ipw(min_accuracy=..., min_ipw=..., domains=...)``."""
    allowed = {"min_accuracy", "min_ipw", "domains"}
    unknown = sorted(set(marker.kwargs) - allowed)
    if marker.args or unknown:
        raise IPWUsageError(
            f"@pytest.mark.ipw takes only the keywords {', '.join(sorted(allowed))}"
            + (f"; got {', '.join(unknown)}" if unknown else "; got positional arguments")
        )
    domains = marker.kwargs.get("domains")
    if isinstance(domains, str):
        domains = [domains]
    return {"min_accuracy": marker.kwargs.get("min_accuracy"), "min_ipw": marker.kwargs.get("min_ipw"),
            "domains": list(domains) if domains else None}


def options_markdown() -> str:
    """``docs/options.md``, generated from the declarations (a test keeps the file in step)."""
    lines = ["# Options", "",
             "Generated from `pytest_ipw/options.py` (`python -m pytest_ipw options-doc > docs/options.md`); a test "
             "fails when this file and the declarations differ.", "",
             "Every option can also be set in the ini file (`[tool.pytest.ini_options]` in pyproject.toml, or "
             "pytest.ini) under the key shown, unless marked *command line only*. The command line wins over the "
             "ini file; the results record where each value came from (`settings.options`).", ""]
    current = None
    for f, spec in declared_options():
        if spec.group != current:
            current = spec.group
            lines += ["", f"## {current[0].upper()}{current[1:]}", "", "| option | ini key | default | meaning |",
                      "|---|---|---|---|"]
        flag = spec.flag + ("" if spec.kind == "flag" else f"={spec.metavar or '|'.join(spec.choices or ())}")
        key = f"`{ini_name(f)}`" + (" (one per line)" if spec.kind == "list" else "") if spec.ini else "command line only"
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = "" if default in (None, (), False) else f"`{default}`"
        text = spec.help.replace("%%", "%").replace("|", "\\|")
        lines.append(f"| `{flag.replace('|', chr(92) + '|')}` | {key} | {shown} | {text} |")
    return "\n".join(lines) + "\n"
