"""The run journal: every finished query appended (and flushed) as it completes, so a crash or
``kill -9`` loses at most the query in flight, and ``--ipw-resume`` continues where the run stopped.

One file per process (``journal.jsonl``, or ``journal.gw0.jsonl`` for an xdist worker). The first line
is a header with a fingerprint of the settings that decide the answers; resuming under other settings
is refused, since the aggregate would silently mix two different runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Iterable, Mapping

from pytest_ipw.core.errors import IPWUsageError

JOURNAL_VERSION = 1

Key = tuple[str, str, str, str, int]  # benchmark, model, accelerator, query id, round (--ipw-repeat)


def record_key(record: Mapping[str, Any]) -> Key:
    return (record["benchmark"], record["model"], record["accelerator"], record["query_id"], int(record.get("round") or 1))


def fingerprint(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as plain JSON values (kept in the header, so a mismatch can be named)."""
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def journal_path(base: str | os.PathLike[str], worker: str | None) -> Path:
    base = Path(base)
    return base if worker is None else base.with_name(f"{base.stem}.{worker}{base.suffix}")


def journal_files(base: str | os.PathLike[str]) -> list[Path]:
    """The main journal and every worker's journal written beside it."""
    base = Path(base)
    if not base.parent.is_dir():
        return []
    return sorted(p for p in base.parent.glob(f"{base.stem}*{base.suffix}")
                  if p == base or p.name.startswith(f"{base.stem}."))


class Journal:
    """Append-only writer. Each record is one line, flushed before the next query starts."""

    def __init__(self, path: Path, settings_fingerprint: Mapping[str, Any], append: bool):
        self.path = path
        self._stream: IO[str] | None = None
        self._fingerprint = settings_fingerprint
        self._append = append

    def _open(self) -> IO[str]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self._append or not self.path.exists() or self.path.stat().st_size == 0
            stream = self.path.open("w" if not self._append else "a", encoding="utf-8")
        except OSError as exc:
            raise IPWUsageError(f"cannot write the run journal {self.path}: {exc.strerror or exc}; "
                                "set --ipw-journal to a writable file") from None
        if fresh:
            stream.write(json.dumps({"pytest_ipw_journal": JOURNAL_VERSION, "fingerprint": self._fingerprint}) + "\n")
            stream.flush()
        return stream

    def append(self, record: Mapping[str, Any]) -> None:
        if self._stream is None:
            self._stream = self._open()
        self._stream.write(json.dumps(record, allow_nan=True) + "\n")
        self._stream.flush()  # in the kernel now: survives the death of this process

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def read_journal(paths: Iterable[Path], settings_fingerprint: Mapping[str, Any]) -> dict[Key, dict[str, Any]]:
    """Finished records by key. A torn last line (the query in flight at a kill) is ignored; any other
    damage, or a journal written under other settings, is an error naming the file and line."""
    done: dict[Key, dict[str, Any]] = {}
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            raise IPWUsageError(f"cannot read the run journal {path}: {exc.strerror or exc}") from None
        if not lines:
            continue
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("pytest_ipw_journal") != JOURNAL_VERSION:
            raise IPWUsageError(f"{path}, line 1: not a pytest-ipw journal (no header); resume needs the journal of an "
                                "earlier run of this version")
        recorded = header.get("fingerprint")
        if recorded != settings_fingerprint:
            differ = sorted(key for key in set(settings_fingerprint) | set(recorded if isinstance(recorded, dict) else {})
                            if not isinstance(recorded, dict) or recorded.get(key) != settings_fingerprint.get(key))
            raise IPWUsageError(
                f"{path} was written by a run with other settings ({', '.join(differ)} differ): resuming would mix "
                "two runs. Rerun without --ipw-resume, or with the same options as the interrupted run"
            )
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = record_key(record)
            except (json.JSONDecodeError, KeyError, TypeError):
                if number == len(lines):
                    break  # the line being written when the process died
                raise IPWUsageError(f"{path}, line {number}: damaged journal entry; delete the journal to start over") from None
            done[key] = record
    return done
