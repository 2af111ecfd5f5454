"""Which commit a run measured: a few ``git`` calls with a timeout, nothing else.

Saved runs are named and found by commit (:mod:`pytest_ipw.history.storage`), so every run records the commit
id, the branch, whether the work tree had uncommitted changes, and the commit's times. Outside a git work tree,
or without git, the run is ``unversioned`` and says why; a slow or hung git never holds up the run.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

#: seconds each git call may take (a network file system, a huge repository) before the run goes on without it
GIT_TIMEOUT_S = 5.0


class _GitUnavailable(Exception):
    pass


def _git(args: list[str], cwd: str, timeout: float) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"})
    except FileNotFoundError:
        raise _GitUnavailable("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise _GitUnavailable(f"git {args[0]} took longer than {timeout:g} s") from None
    except OSError as exc:
        raise _GitUnavailable(f"git could not run ({exc})") from None
    if done.returncode != 0:
        raise _GitUnavailable((done.stderr.strip().splitlines() or [f"git {args[0]} failed"])[0])
    return done.stdout.strip()


def commit_info(cwd: str | os.PathLike[str] | None = None, timeout: float = GIT_TIMEOUT_S) -> dict[str, Any]:
    """``id`` (full hash, or ``unversioned``), ``branch``, ``dirty``, ``time`` and ``author_time`` (ISO 8601) and
    ``project`` (the work tree's folder name) of the git work tree holding ``cwd`` (default: the current
    directory). ``error`` says why the id is ``unversioned``."""
    where = os.fspath(cwd) if cwd is not None else os.getcwd()
    info: dict[str, Any] = {"id": "unversioned", "time": None, "author_time": None, "dirty": False,
                            "project": os.path.basename(os.path.abspath(where)), "branch": "(unknown)"}
    try:
        top = _git(["rev-parse", "--show-toplevel"], where, timeout)
        info["project"] = os.path.basename(top)
        info["id"] = _git(["rev-parse", "HEAD"], where, timeout)
        info["time"], info["author_time"] = _git(["show", "-s", "--format=%cI%n%aI", "HEAD"], where, timeout).splitlines()
        branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], where, timeout)
        info["branch"] = "(detached head)" if branch == "HEAD" else branch
        # tracked files only: an untracked results file written by this very run must not make it "dirty"
        info["dirty"] = bool(_git(["status", "--porcelain", "--untracked-files=no"], where, timeout))
    except _GitUnavailable as exc:
        info["error"] = str(exc)
    except ValueError:  # git show printed an unexpected shape
        info["error"] = "git show gave no commit times"
    return info
