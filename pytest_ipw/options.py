"""Command-line options (one ``ipw`` group) and the settings object built from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from .errors import IPWUsageError


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("ipw", "intelligence per watt (pytest-ipw)")
    add = group.addoption
    add("--ipw-model", metavar="SPEC[,SPEC...]", default=None,
        help="model(s) to benchmark: a short name (smollm2-135m, smollm2-135m-q8_0, ...), a .gguf path, "
             "or BACKEND:LOCATION. Several, comma-separated, become a parameter axis. Default: smollm2-135m.")
    add("--ipw-accelerator", metavar="NAME[,NAME...]", default=None,
        help="accelerator profile(s) to run on (cpu, m4max, h100, a100, rtx4090, ...). "
             "Default: the best one detected here.")
    add("--ipw-meter", metavar="SPEC", default=None,
        help="power meter: nvml, nvml:all, rapl, rapl:psys, powermetrics, ioreport, "
             "prometheus+http://HOST:PORT/metrics[#gpu=0], replay:TRACE.csv, estimate; several joined by ',' "
             "or '+' are summed (nvml+rapl). Default: the accelerator's natural meter, else a labelled estimate.")
    add("--ipw-sample-hz", metavar="HZ", type=float, default=20.0,
        help="sampling rate of power gauges (default 20; never faster than the sensor updates).")
    add("--ipw-idle-seconds", metavar="S", type=float, default=2.0,
        help="idle baseline measured before each model's queries (default 2; 0 disables).")
    add("--ipw-energy", choices=("total", "active"), default="total",
        help="energy behind IPW/IPJ: total (default) or active = total minus the idle baseline.")
    add("--ipw-profiles", metavar="FILE", default=None,
        help="JSON file of extra accelerator profiles (same fields as the built-in registry).")
    add("--ipw-dataset", metavar="SPEC", default=None,
        help="query set: a file (JSONL, CSV or Parquet, README's schema, or any columns with --ipw-columns), "
             "hf:OWNER/NAME[?config=C&split=S] (a Hugging Face data set: MMLU-Pro, SuperGPQA, GPQA, "
             "NaturalReasoning, WildChat, GSM8K built in), or mix:SPEC[*W],SPEC[*W],... Default: the shipped set.")
    add("--ipw-limit", metavar="N", type=int, default=None,
        help="use at most N queries (taken round-robin across domains).")
    add("--ipw-domains", metavar="D[,D...]", default=None, help="only queries of these domains.")
    add("--ipw-min-accuracy", metavar="FRACTION", type=float, default=None,
        help="fail the run when a model × accelerator scores below this accuracy (0..1).")
    add("--ipw-min-ipw", metavar="PER_WATT", type=float, default=None,
        help="fail the run when a model × accelerator has IPW (accuracy per watt) below this.")
    add("--ipw-json", metavar="PATH", default=None, help="write all records and summaries to this JSON file.")
    add("--ipw-max-tokens", metavar="N", type=int, default=64, help="generation limit per answer (default 64).")
    add("--ipw-temperature", metavar="T", type=float, default=0.0, help="sampling temperature (default 0).")
    add("--ipw-seed", metavar="N", type=int, default=0, help="sampling seed (default 0).")
    add("--ipw-context", metavar="N", type=int, default=2048, help="context size in tokens (default 2048).")
    add("--ipw-threads", metavar="N", type=int, default=None, help="CPU threads for llama.cpp (default: its own).")
    add("--ipw-warmup", metavar="N", type=int, default=1,
        help="warm-up generations after loading each model, not measured (default 1).")
    add("--ipw-reset-state", action="store_true", default=False,
        help="reset the model state before each query instead of keeping the prompt-prefix cache.")
    # -- data sets, backends and judging --------------------------------------------------------------
    add("--ipw-columns", metavar="FIELD=COLUMN[,...]", default=None,
        help="map a data set's columns to query fields: prompt, answer, choices, domain, id, split, scorer, "
             "tolerance, difficulty (e.g. prompt=question,answer=label).")
    add("--ipw-skip-invalid", action="store_true", default=False,
        help="leave out rows of your own query file that are not valid queries (counted and named in the report) "
             "instead of stopping; hub data sets always do this.")
    add("--ipw-sample-seed", metavar="N", type=int, default=None,
        help="draw --ipw-limit queries at random with this seed (still stratified by domain); "
             "default: file order.")
    add("--ipw-judge", metavar="SPEC", default=None,
        help="model that grades open-ended answers (scorer judge), any --ipw-model spec. "
             "Default: smollm2-135m (local).")
    add("--ipw-api-key-env", metavar="NAME", default="OPENAI_API_KEY",
        help="environment variable holding the API key for openai+http(s) models and judges "
             "(default OPENAI_API_KEY; the key is never written anywhere).")
    add("--ipw-timeout", metavar="S", type=float, default=120.0,
        help="HTTP backends: seconds to wait for a connection or for the next bytes of an answer (default 120).")
    add("--ipw-retries", metavar="N", type=int, default=2,
        help="HTTP backends: extra tries after a refused connection or HTTP 429/5xx (default 2).")
    add("--ipw-batch-size", metavar="N", type=int, default=1,
        help="queries per engine call for batching backends (vllm); default 1, like the study.")
    # -- scale and reliability --------------------------------------------------------------------------
    add("--ipw-granularity", choices=("query", "domain", "model"), default="query",
        help="test items: one per query (default), or one per domain / per model that runs many queries "
             "(for sweeps of 100k+ queries; the same per-query records and reports).")
    add("--ipw-shard", metavar="K/N", default=None,
        help="run only shard K of N of the queries (stable by query id), to split a set across hosts; "
             "merge the runs afterwards.")
    add("--ipw-journal", metavar="PATH", default=None,
        help="run journal, one line per finished query (default: <--ipw-storage>/journal.jsonl).")
    add("--ipw-resume", action="store_true", default=False,
        help="continue an interrupted run from its journal: finished queries are not run again.")
    add("--ipw-parquet", metavar="PATH", default=None, help="also write the per-query records as Parquet.")
    # -- report ---------------------------------------------------------------------------------------
    add("--ipw-report", metavar="DIR", default=None,
        help="write a self-contained HTML report, a Markdown summary and the figures to DIR.")
    add("--ipw-model-info", metavar="FILE", default=None,
        help="JSON: model name -> release_date, parameters, role (local or reference), for the report's "
             "trends, routing baseline and local-vs-reference analysis.")
    # -- history and regression gates ---------------------------------------------------------------
    add("--ipw-storage", metavar="DIR", default=".ipw", help="where saved runs live (default .ipw/).")
    add("--ipw-autosave", action="store_true", default=False, help="save this run to --ipw-storage.")
    add("--ipw-save", metavar="NAME", default=None, help="save this run to --ipw-storage under NAME.")
    add("--ipw-compare", metavar="RUN", nargs="?", const="latest", default=None,
        help="compare with a saved run of this machine: latest (default), a number (0003), a save name, "
             "a commit prefix, a branch name, or a path to a results file.")
    add("--ipw-compare-fail", metavar="EXPR", action="append", default=[],
        help="fail when a metric gets significantly worse by more than the amount: ipw:5%%, accuracy:2pt, "
             "joules:10%%, coverage:1pt, latency_p95:20%%. Repeatable.")
    add("--ipw-compare-alpha", metavar="P", type=float, default=0.05,
        help="significance level of the comparison (default 0.05).")
    add("--ipw-compare-across-machines", action="store_true", default=False,
        help="allow comparing with runs saved by another machine id (different hardware or meter).")
    add("--ipw-require-baseline", action="store_true", default=False,
        help="fail when --ipw-compare finds no baseline (default: save, pass, and say so).")


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [part.strip() for part in value.split(",") if part.strip()]
    return items or None


@dataclass(frozen=True)
class RunOptions:
    models: str | None
    accelerators: list[str] | None
    meter: str | None
    profiles_file: str | None
    dataset: str | None
    limit: int | None
    domains: list[str] | None
    min_accuracy: float | None
    min_ipw: float | None
    json_path: str | None
    max_tokens: int
    temperature: float
    seed: int
    context_size: int
    threads: int | None
    warmup: int
    reset_state: bool
    sample_hz: float = 20.0
    idle_seconds: float = 2.0
    energy: str = "total"
    granularity: str = "query"
    shard: tuple[int, int] | None = None
    journal: str | None = None
    resume: bool = False
    parquet_path: str | None = None
    storage: str = ".ipw"
    autosave: bool = False
    save_name: str | None = None
    compare: str | None = None
    compare_fail: tuple[str, ...] = ()
    compare_alpha: float = 0.05
    compare_across_machines: bool = False
    require_baseline: bool = False
    report_dir: str | None = None
    model_info: str | None = None
    columns: str | None = None
    sample_seed: int | None = None
    judge: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    request_timeout: float = 120.0
    retries: int = 2
    batch_size: int = 1
    skip_invalid: bool = False

    @property
    def explicitly_used(self) -> bool:
        """Whether the user passed any option that names something to validate now."""
        return any(v is not None for v in (self.models, self.accelerators, self.meter, self.profiles_file,
                                           self.dataset, self.limit, self.domains, self.shard, self.columns,
                                           self.judge)) or self.resume or self.batch_size != 1


def read_options(config: pytest.Config) -> RunOptions:
    get = config.getoption
    options = RunOptions(
        models=get("ipw_model"),
        accelerators=_csv(get("ipw_accelerator")),
        meter=get("ipw_meter"),
        profiles_file=get("ipw_profiles"),
        dataset=get("ipw_dataset"),
        limit=get("ipw_limit"),
        domains=_csv(get("ipw_domains")),
        min_accuracy=get("ipw_min_accuracy"),
        min_ipw=get("ipw_min_ipw"),
        json_path=get("ipw_json"),
        max_tokens=get("ipw_max_tokens"),
        temperature=get("ipw_temperature"),
        seed=get("ipw_seed"),
        context_size=get("ipw_context"),
        threads=get("ipw_threads"),
        warmup=get("ipw_warmup"),
        reset_state=get("ipw_reset_state"),
        sample_hz=get("ipw_sample_hz"),
        idle_seconds=get("ipw_idle_seconds"),
        energy=get("ipw_energy"),
        granularity=get("ipw_granularity"),
        shard=parse_shard(get("ipw_shard")),
        journal=get("ipw_journal"),
        resume=get("ipw_resume"),
        parquet_path=get("ipw_parquet"),
        storage=get("ipw_storage"),
        autosave=get("ipw_autosave"),
        save_name=get("ipw_save"),
        compare=get("ipw_compare"),
        compare_fail=tuple(get("ipw_compare_fail") or ()),
        compare_alpha=get("ipw_compare_alpha"),
        compare_across_machines=get("ipw_compare_across_machines"),
        require_baseline=get("ipw_require_baseline"),
        report_dir=get("ipw_report"),
        model_info=get("ipw_model_info"),
        columns=get("ipw_columns"),
        sample_seed=get("ipw_sample_seed"),
        judge=get("ipw_judge"),
        api_key_env=get("ipw_api_key_env"),
        request_timeout=get("ipw_timeout"),
        retries=get("ipw_retries"),
        batch_size=get("ipw_batch_size"),
        skip_invalid=get("ipw_skip_invalid"),
    )
    _check_ranges(options)
    return options


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
        (bool(options.api_key_env.strip()), "--ipw-api-key-env needs the name of an environment variable"),
        (options.sample_hz > 0, f"--ipw-sample-hz must be positive, got {options.sample_hz}"),
        (options.idle_seconds >= 0, f"--ipw-idle-seconds must not be negative, got {options.idle_seconds}"),
        (options.energy != "active" or options.idle_seconds > 0,
         "--ipw-energy=active subtracts the idle baseline, which --ipw-idle-seconds=0 disables; give it a duration"),
        (0 < options.compare_alpha < 1, f"--ipw-compare-alpha must lie in (0, 1), got {options.compare_alpha}"),
    ]
    for ok, message in checks:
        if not ok:
            raise IPWUsageError(message)
    if options.compare_fail:  # imported only when used: pytest start-up stays light
        from .compare import Gate

        for expression in options.compare_fail:
            Gate.parse(expression)
        if options.compare is None:
            raise IPWUsageError("--ipw-compare-fail needs --ipw-compare (which run to compare with)")
    if options.save_name is not None:
        from .storage import check_save_name

        check_save_name(options.save_name)
    if options.model_info is not None:
        from .model_info import load_model_info

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
