"""The fuzz harness: a case is some files and a command line; ``run_case`` runs it in-process and
checks the rules every run must keep, whatever the input:

* the exit code is 0, 1 or 2; a failure prints exactly one ``Error:`` line on stderr (status 1:
  nothing else; status 2: click's usage lines around it), never "internal error", a traceback or
  a Python warning;
* a failure changes no file and leaves none behind; a success changes only the files the case
  names as ``writes`` and creates only its ``outputs``;
* it ends within ``TIME_LIMIT`` seconds;
* a success passes the case's own check of the result, when it has one.

A case that breaks a rule is written as JSON to ``EMBTOOL_FUZZ_SAVE`` (a folder) when set, ready
to be kept in ``tests/corpus/`` and replayed as a regression case by ``test_fuzz.py``.

``EMBTOOL_FUZZ_CASES`` sets the number of generated cases of a run (default 5000), and
``EMBTOOL_FUZZ_SEED`` other cases than the fixed ones of CI, for longer local campaigns.
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from helpers import Result, invoke

CASES = int(os.environ.get("EMBTOOL_FUZZ_CASES", "5000"))
SEED = os.environ.get("EMBTOOL_FUZZ_SEED")
TIME_LIMIT = float(os.environ.get("EMBTOOL_FUZZ_TIME_LIMIT", "30"))
CORPUS = Path(__file__).parent / "corpus"
#: cases run so far in this process (the suite reports it)
counter = {"cases": 0, "ok": 0, "usage": 0, "error": 0}


@dataclass
class Case:
    args: list
    files: dict = field(default_factory=dict)   #: name -> bytes, written before the run
    stdin: bytes | None = None
    outputs: tuple = ()                          #: files (or patterns) a success may create or replace
    writes: tuple = ()                           #: files a success may change
    note: str = ""
    expect: dict = field(default_factory=dict)   #: corpus cases: {"code": 1, "error": "..."}
    #: files the store's recovery may change whatever the command's outcome: the first opener of a
    #: table repairs its damaged or unfinished log (and replays it), before the command runs
    recovery: tuple = ()

    def to_json(self) -> str:
        enc = {name: base64.b64encode(data).decode() for name, data in sorted(self.files.items())}
        return json.dumps({"note": self.note, "args": [str(a) for a in self.args], "files": enc,
                           "stdin": None if self.stdin is None else base64.b64encode(self.stdin).decode(),
                           "outputs": list(self.outputs), "writes": list(self.writes),
                           "expect": self.expect, "recovery": list(self.recovery)},
                          indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Case":
        d = json.loads(text)
        return cls(d["args"], {k: base64.b64decode(v) for k, v in d["files"].items()},
                   None if d.get("stdin") is None else base64.b64decode(d["stdin"]),
                   tuple(d.get("outputs", ())), tuple(d.get("writes", ())), d.get("note", ""),
                   d.get("expect", {}), tuple(d.get("recovery", ())))


def _snapshot(folder: Path) -> dict:
    """Every file below ``folder`` by its relative path (folders as None)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None
            for p in folder.rglob("*")}


def _reset(folder: Path, files: dict) -> None:
    for p in folder.iterdir():
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for name, data in files.items():  # a name with "/" is a file in a sub-folder (a model folder)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def rule_problems(case: Case, r: Result, before: dict, after: dict, caught, elapsed) -> list[str]:
    problems = []
    lines = r.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    if r.code not in (0, 1, 2):
        problems.append(f"exit code {r.code}")
    if "Traceback" in r.err or "internal error" in r.err:
        problems.append("internal error")
    if r.code:
        if len(errors) != 1 or (r.code == 1 and len(lines) != 1):
            problems.append(f"not exactly one Error line ({len(lines)} lines)")
        changed = sorted(set(before) ^ set(after) | {n for n in before if before[n] != after.get(n)})
        changed = [n for n in changed if n not in case.recovery]
        if changed:
            problems.append(f"a failed command changed or left files: {changed}")
    else:
        if errors:
            problems.append("an Error line with exit code 0")
        for name, data in before.items():
            if name not in case.writes and after.get(name) != data and \
                    not any(fnmatch.fnmatchcase(name, pattern) for pattern in case.outputs):
                problems.append(f"{name} changed")
        # a table written in place keeps its write-ahead log beside it until a checkpoint
        logs = {f"{name}-wal" for name in case.writes}
        extra = {n for n in set(after) - set(before) - logs
                 if not any(fnmatch.fnmatchcase(n, pattern) for pattern in case.outputs)}
        if extra:
            problems.append(f"files left behind: {sorted(extra)}")
    if caught:
        problems.append("warnings: " + "; ".join(f"{w.category.__name__}: {w.message}" for w in caught[:3]))
    if elapsed > TIME_LIMIT:
        problems.append(f"took {elapsed:.1f} s (limit {TIME_LIMIT} s)")
    return problems


def run_case(case: Case, folder: Path, check=None) -> Result:
    """Run ``case`` in ``folder`` (emptied first) and assert the rules; ``check(result, folder)``
    asserts the result of a successful run."""
    _reset(folder, case.files)
    before = _snapshot(folder)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.monotonic()
            r = invoke(*case.args, input=case.stdin, env={"EMBTOOL_SYNC": "off"})
            elapsed = time.monotonic() - start
    finally:
        os.chdir(cwd)
    counter["cases"] += 1
    counter[("ok", "error", "usage")[r.code] if r.code in (0, 1, 2) else "error"] += 1
    problems = rule_problems(case, r, before, _snapshot(folder), caught, elapsed)
    if not problems and r.code == 0 and check is not None:
        try:
            check(r, folder)
        except AssertionError as exc:
            problems.append(f"wrong result: {exc}")
    expect = case.expect
    if expect and not problems:
        if "code" in expect and r.code != expect["code"]:
            problems.append(f"exit code {r.code}, expected {expect['code']}")
        if expect.get("error") and expect["error"] not in r.err:
            problems.append(f"the error does not say {expect['error']!r}")
    if problems:
        where = save(case, problems)
        raise AssertionError(f"{'; '.join(problems)}\n  args: {case.args}\n  stderr: {r.err[-600:]}"
                             + (f"\n  saved: {where}" if where else ""))
    return r


def save(case: Case, problems) -> Path | None:
    folder = os.environ.get("EMBTOOL_FUZZ_SAVE")
    if not folder:
        return None
    case.note = case.note or "; ".join(problems)
    text = case.to_json()
    path = Path(folder) / f"{hashlib.sha1(text.encode()).hexdigest()[:16]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def corpus_cases() -> list[Path]:
    return sorted(CORPUS.glob("*.json"))
