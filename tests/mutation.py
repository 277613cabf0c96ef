#!/usr/bin/env python3
"""Mutation testing of calyx's data plane: do the unit tests notice when the code is wrong?

    tests/mutation.py [--seed N] [--sample K] [--work DIR] [--timeout S] [--fail-under PCT]
                      [--json FILE] [--list] [--tree DIR] [--before DIR]

Every mutation site in src/dp/*.cpp and src/cp/reload.cpp is listed in a fixed order:
  condition     an `if`/`while` condition negated, `&&` <-> `||`, a `!` removed
  comparison    == <-> !=, < -> <=, <= -> <, > -> >=, >= -> >
  boolean       true <-> false
  constant      an integer literal n -> n + 1, and n -> 0 (or 0 -> 1)
A sample of K of them, chosen by `--seed` (the same seed and sources give the same mutants),
is applied one at a time to a copy of the tree (never to the checkout: the copy is `--work`,
by default a sibling directory of the repository, or one git ignores such as BUILD/mutation;
kept for the next run); only the
`unit_tests` binary is rebuilt, then run with a timeout and --gtest_fail_fast (a killed mutant
stops at its first failure). A mutant is killed when the tests fail (or time out), survives when
they pass; one that does not compile is stillborn and not
counted. The score is killed / (killed + survived). Prints the survivors with file:line and
the mutated line; exit 1 when the score is below --fail-under.

`--before DIR` scores a second checkout's tests (e.g. main before tests were added) on the same
mutants in the same run: its sources under test must be the same; each mutant is applied to
both copies, and the second build of the mutated file is a ccache hit, so a before/after
comparison costs little more than one run.

Operators are found on the text (comments, strings and preprocessor lines are skipped, and a
comparison needs spaces around it, as the house style writes them, so `<` of a template is
never one); that keeps the tool small and needs no compiler front end.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import signal
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the checkout measured (--tree changes it)
SOURCES = ["src/dp/*.cpp", "src/cp/reload.cpp"]


@dataclass(frozen=True)
class Mutant:
    file: str        # relative to the repository
    line: int        # 1-based
    column: int      # 0-based, in the line
    kind: str
    original: str    # the replaced text
    replacement: str

    def describe(self) -> str:
        return f"{self.file}:{self.line}:{self.column + 1}: {self.kind}: '{self.original}' -> '{self.replacement}'"


# ------------------------------------------------------------------------------ finding sites
def code_mask(text: str) -> list[str]:
    """The file's lines with comments, string and character literals and preprocessor lines
    blanked out (same lengths), so operators are only found in code."""
    out, i, n = [], 0, len(text)
    buf = []
    state = "code"
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if state == "code":
            if c == "/" and nxt == "/":
                state = "line_comment"
                buf.append(" ")
            elif c == "/" and nxt == "*":
                state = "block_comment"
                buf.append(" ")
            elif c == '"':
                state = "string"
                buf.append(" ")
            elif c == "'" and not (i > 0 and text[i - 1].isalnum()):  # not a digit separator
                state = "char"
                buf.append(" ")
            else:
                buf.append(c)
        elif state == "line_comment":
            if c == "\n":
                state = "code"
                buf.append(c)
            else:
                buf.append(" ")
        elif state == "block_comment":
            if c == "*" and nxt == "/":
                buf.append("  ")
                i += 2
                state = "code"
                continue
            buf.append("\n" if c == "\n" else " ")
        elif state in ("string", "char"):
            quote = '"' if state == "string" else "'"
            if c == "\\":
                buf.append("  ")
                i += 2
                continue
            if c == quote:
                state = "code"
            buf.append("\n" if c == "\n" else " ")
        i += 1
    lines = "".join(buf).split("\n")
    for k, line in enumerate(lines):
        if line.lstrip().startswith("#") or "static_assert" in line:
            lines[k] = " " * len(line)
    return lines


COMPARISONS = {" == ": " != ", " != ": " == ", " < ": " <= ", " <= ": " < ", " > ": " >= ", " >= ": " > "}
LOGICAL = {" && ": " || ", " || ": " && "}
# Digit separators (1'000'000) belong to the literal.
INTEGER = re.compile(r"(?<![\w.'])(0x[0-9a-fA-F']+|\d[\d']*)(u|U|ull|ULL|ul|UL|ll|LL)?(?![\w.'])")


def condition_end(code: str, open_paren: int) -> int | None:
    depth = 0
    for j in range(open_paren, len(code)):
        if code[j] == "(":
            depth += 1
        elif code[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return None


def sites(rel: str, text: str) -> list[Mutant]:
    lines = text.split("\n")
    masked = code_mask(text)
    found = []
    for no, (line, code) in enumerate(zip(lines, masked), 1):
        if not code.strip():
            continue
        for op, rep in {**COMPARISONS, **LOGICAL}.items():
            for m in re.finditer(re.escape(op), code):
                kind = "comparison" if op in COMPARISONS else "condition"
                found.append(Mutant(rel, no, m.start(), kind, op, rep))
        for m in re.finditer(r"\b(if|while) \(", code):
            start = m.end() - 1
            end = condition_end(code, start)
            if end is None:  # a condition over several lines: its first line's operators suffice
                continue
            cond = line[start + 1:end]
            found.append(Mutant(rel, no, start, "condition", f"({cond})", f"(!({cond}))"))
        for m in re.finditer(r"!(?!=)(?=[\w(])", code):
            found.append(Mutant(rel, no, m.start(), "condition", "!", ""))
        for m in re.finditer(r"\b(true|false)\b", code):
            found.append(Mutant(rel, no, m.start(), "boolean", m.group(1), "false" if m.group(1) == "true" else "true"))
        for m in INTEGER.finditer(code):
            literal, suffix = m.group(1), m.group(2) or ""
            digits = literal.replace("'", "")
            # C++ reads a leading 0 as octal (0600); Python's base 0 refuses it.
            octal = len(digits) > 1 and digits[0] == "0" and digits.isdigit()
            value = int(digits, 8) if octal else int(digits, 0)
            # operator[] sizes of std::array and template arguments compile either way; fine.
            mutated = {value + 1, 0 if value else 1}
            for v in sorted(mutated):
                text_v = (hex(v) if literal.lower().startswith("0x") else oct(v).replace("0o", "0") if octal else str(v)) + suffix
                found.append(Mutant(rel, no, m.start(), "constant", m.group(0), text_v))
    return found


def all_sites(root: Path) -> list[Mutant]:
    files = sorted({p for pattern in SOURCES for p in root.glob(pattern)})
    out = []
    for f in files:
        out += sites(str(f.relative_to(root)), f.read_text())
    return out


def apply(text: str, m: Mutant) -> str:
    lines = text.split("\n")
    line = lines[m.line - 1]
    assert line[m.column:m.column + len(m.original)] == m.original, m.describe()
    lines[m.line - 1] = line[:m.column] + m.replacement + line[m.column + len(m.original):]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the copy
def prepare_copy(repo: Path, work: Path, jobs: int) -> None:
    """`work` becomes a copy of the repository's tracked and untracked (not ignored) files, with
    a build directory of its own; files that did not change keep their time stamps, so the
    rebuild compiles only what differs from the last run."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split("\0")
    work.mkdir(parents=True, exist_ok=True)
    for rel in filter(None, listed):
        src, dst = repo / rel, work / rel
        if not src.is_file():
            continue
        if dst.is_file() and dst.read_bytes() == src.read_bytes():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)  # a fresh time stamp: newer than any object built from the old text
    # A run stopped during a mutant (power cut, SIGKILL) may have left that file's object built
    # from the mutant while the text is the original again: rebuild it.
    marker = work / ".mutant-in-progress"
    if marker.exists():
        (work / marker.read_text().strip()).touch()
        marker.unlink()
    if not (work / "build" / "build.ninja").exists():
        subprocess.run(["meson", "setup", "build", "--buildtype=debugoptimized"], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)
    build(work, jobs, timeout=None, check=True)


def build_env(work: Path) -> dict:
    # ccache: paths under the common parent of checkout and copy hash alike, so the copy's
    # first build reuses the checkout's objects where ccache is used.
    env = dict(os.environ)
    env.setdefault("CCACHE_BASEDIR", os.path.commonpath([str(REPO), str(work)]))
    # Debug info names the build directory; without this, ccache hashes it and never hits.
    env.setdefault("CCACHE_NOHASHDIR", "true")
    return env


def build(work: Path, jobs: int, timeout: float | None, check: bool = False) -> bool:
    r = subprocess.run(["ninja", "-C", "build", f"-j{jobs}", "tests/unit_tests"], cwd=work, env=build_env(work),
                       capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        sys.exit(f"mutation: the unmutated copy does not build:\n{r.stdout[-3000:]}")
    return r.returncode == 0


def run_tests(work: Path, timeout: float, fail_fast: bool = True) -> tuple[str, float]:
    """'passed', 'failed' or 'timeout', and the seconds it took."""
    start = time.monotonic()
    env = dict(os.environ)
    env.pop("GTEST_FILTER", None)
    env.pop("GTEST_OUTPUT", None)
    try:
        r = subprocess.run([str(work / "build" / "tests" / "unit_tests"), "--gtest_brief=1"]
                           + (["--gtest_fail_fast"] if fail_fast else []), cwd=work,
                           capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start
    return ("passed" if r.returncode == 0 else "failed"), time.monotonic() - start


# ------------------------------------------------------------------------------ main
def main() -> int:
    global REPO
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends a listing quietly
    # SIGTERM (a CI timeout, kill PID) unwinds like Ctrl-C: the copy gets its sources back.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--sample", type=int, default=150, help="mutants to try (0: all)")
    ap.add_argument("--work", type=Path, help=f"the copy (default {REPO.parent / (REPO.name + '-mutation')})")
    ap.add_argument("--jobs", type=int, default=2, help="ninja -j")
    ap.add_argument("--timeout", type=float, help="seconds per unit-test run (default 5x the unmutated run, >= 30)")
    ap.add_argument("--fail-under", type=float, help="exit 1 when the score (percent) is below this")
    ap.add_argument("--json", type=Path, help="write every mutant's outcome here")
    ap.add_argument("--list", action="store_true", help="print the sample and stop")
    ap.add_argument("--tree", type=Path, help="measure this checkout's tests instead (a git work tree), "
                                             "e.g. the main branch before tests were added")
    ap.add_argument("--before", type=Path, help="also score this checkout's tests on the same mutants (same sources "
                                               "under test), e.g. main before tests were added")
    ap.add_argument("--survivors-of", type=Path, metavar="JSON",
                    help="try again only the mutants that survived in this earlier --json report (after adding tests)")
    ap.add_argument("--before-work", type=Path, help="the copy for --before (default DIR-mutation)")
    args = ap.parse_args()
    if args.tree:
        REPO = args.tree.resolve()

    everything = all_sites(REPO)
    rng = random.Random(args.seed)
    sample = everything if args.sample == 0 or args.sample >= len(everything) else rng.sample(everything, args.sample)
    if args.survivors_of:
        earlier = json.loads(args.survivors_of.read_text())
        wanted = {Mutant(**{k: v for k, v in m.items() if k != "outcome"})
                  for m in earlier["mutants"] if m["outcome"] == "survived"}
        sample = [m for m in everything if m in wanted]
        if len(sample) != len(wanted):
            sys.exit("mutation: the sources changed since that report: its survivors are not all found")
    # In file order: consecutive mutants of one file recompile only that file.
    sample.sort(key=lambda m: (m.file, m.line, m.column, m.replacement))
    print(f"mutation: {len(sample)} of {len(everything)} sites (seed {args.seed})", flush=True)
    if args.list:
        for m in sample:
            print("  " + m.describe())
        return 0

    copies = [("", REPO, (args.work or REPO.parent / (REPO.name + "-mutation")).resolve())]
    if args.before:
        before = args.before.resolve()
        if all_sites(before) != everything:
            sys.exit(f"mutation: {before} has other sources under test than {REPO}: not the same mutants")
        copies.append(("before", before, (args.before_work or before.parent / (before.name + "-mutation")).resolve()))
    for _, repo, work in copies:
        # Never the checkout's own sources: outside it, or in a directory git ignores (BUILD/...).
        ignored = repo in work.parents and subprocess.run(
            ["git", "-C", str(repo), "check-ignore", "-q", str(work)]).returncode == 0
        if work == repo or work in repo.parents or (repo in work.parents and not ignored):
            sys.exit("mutation: --work must be outside the checkout's sources (elsewhere, or in an ignored directory)")
    started = time.monotonic()
    timeouts = []
    for name, repo, work in copies:
        prepare_copy(repo, work, args.jobs)
        status, seconds = run_tests(work, timeout=600, fail_fast=False)
        if status != "passed":
            sys.exit(f"mutation: the unit tests of {repo} fail without any mutant ({status}): fix that first")
        timeouts.append(args.timeout or max(30.0, 5 * seconds))
        print(f"mutation: copy {work} ready at {time.monotonic() - started:.0f} s, unit tests take {seconds:.1f} s "
              f"(timeout {timeouts[-1]:.0f} s)", flush=True)

    outcomes: list[list[tuple[Mutant, str]]] = [[] for _ in copies]
    originals: dict[str, str] = {}
    try:
        for k, m in enumerate(sample, 1):
            original = originals.setdefault(m.file, (REPO / m.file).read_text())
            t0 = time.monotonic()
            line = []
            for c, (name, _, work) in enumerate(copies):
                path = work / m.file
                (work / ".mutant-in-progress").write_text(m.file)
                path.write_text(apply(original, m))
                if not build(work, args.jobs, timeout=900):
                    outcome = "stillborn"
                else:
                    status, _ = run_tests(work, timeouts[c])
                    outcome = {"passed": "survived", "failed": "killed", "timeout": "killed (timeout)"}[status]
                path.write_text(original)
                outcomes[c].append((m, outcome))
                line.append(f"{name + ': ' if name else ''}{outcome:<16}")
            print(f"  [{k}/{len(sample)}] {' '.join(line)} {time.monotonic() - t0:5.1f} s  {m.describe()}", flush=True)
    finally:
        for _, _, work in copies:
            for rel, text in originals.items():
                (work / rel).write_text(text)
            (work / ".mutant-in-progress").unlink(missing_ok=True)

    report = {"seed": args.seed, "sites": len(everything)}
    score = 0.0
    for c in reversed(range(len(copies))):  # the measured tree's score last: it decides --fail-under
        score = summarize(copies[c], outcomes[c], args, len(everything), time.monotonic() - started, report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.fail_under is not None and score < args.fail_under:
        print(f"mutation: score {score:.1f} % is below {args.fail_under} %")
        return 1
    return 0


def summarize(copy, results, args, sites_count: int, seconds: float, report: dict) -> float:
    name, repo, _ = copy
    results = list(results)
    killed = sum(1 for _, o in results if o.startswith("killed"))
    survived = [m for m, o in results if o == "survived"]
    stillborn = sum(1 for _, o in results if o == "stillborn")
    scored = killed + len(survived)
    score = 100.0 * killed / scored if scored else 0.0
    print(f"\nmutation score{' (' + name + ', ' + str(repo) + ')' if name else ''}: {score:.1f} % "
          f"({killed} killed, {len(survived)} survived, {stillborn} stillborn; "
          f"seed {args.seed}, {len(results)} of {sites_count} sites, {seconds:.0f} s)")
    for m in survived:
        line = (repo / m.file).read_text().split("\n")[m.line - 1].strip()
        print(f"  survived: {m.describe()}\n            {line}")
    report[name or "score"] = score if not name else {"score": score}
    if name:
        report[name]["mutants"] = [{**m.__dict__, "outcome": o} for m, o in results]
    else:
        report["mutants"] = [{**m.__dict__, "outcome": o} for m, o in results]
    return score


if __name__ == "__main__":
    sys.exit(main())
