"""Mutation testing of the core modules with Cosmic Ray, one session per group of modules.

    .venv/bin/python mutation/run.py [GROUP ...]            run (or resume) the groups' sessions, then report
    .venv/bin/python mutation/run.py --report [GROUP ...]   report only
    .venv/bin/python mutation/run.py --fresh GROUP          start a group's session again (after code changes)
    .venv/bin/python mutation/run.py --recheck GROUP        run the survivors again against today's tests
    .venv/bin/python mutation/run.py --list                 the groups, their modules and tests

Each group mutates its modules in a copy of the working tree (``mutation/work/<group>/tree``, the tracked
and untracked-but-not-ignored files; ``../shared`` is linked beside it so data-dependent tests run as in
CI), with ``PYTHONPATH`` pointing the tests at the copy, so the checkout is never modified. A mutant is
killed when the group's tests fail (``pytest -x``) or time out. Sessions are SQLite files in
``mutation/work/``: an interrupted run resumes where it stopped.

Every outcome is also written to a ledger committed beside this script (``mutation/ledger/<group>.jsonl``:
module, its sha256, operator, occurrence, line, outcome, and for survivors the sha256 of the group's test
files they survived and their mutated line). A new session (a fresh checkout, or ``--fresh``) takes its results from
the ledger and runs only what the ledger cannot answer: mutants of a module whose text changed, and
survivors of a run against other tests. A killed mutant stays killed while its module is unchanged;
``--fresh --no-ledger`` runs everything again.

Why Cosmic Ray: it mutates files where they lie and runs any test command, so it works with this package's
ament layout (``ros2_ws/src/deep_vision``); mutmut 3 imports mutants only from ``./``, ``src/`` or ``source/``.

Operators: Cosmic Ray's core set cut to PIT's default mutators' kinds, so that a run fits in hours on two
cores: ``+``↔``-`` and ``*``↔``/`` (not bitwise, shift, modulo, power: type errors on numpy floats), the
comparison boundaries (``<``↔``<=``, ``>``↔``>=``) and negations (``<``↔``>=``, ``>``↔``<=``, ``==``↔``!=``),
a deleted minus or ``not``, every number ±1, ``True``↔``False``, an added ``not``, ``and``↔``or``,
``break``↔``continue``, exception handlers, decorators and zero-iteration loops. Excluded: the other
comparison swaps, identity/membership tests, ``~`` and the variable replacer/inserter (thousands of mutants,
mostly incompetent or implied by the ones kept).

The report (``--out``, default ``bench/results/mutation-<date>.md``) gives the score per module and lists every
surviving mutant with its verdict from ``mutation/verdicts.yaml`` (keyed by module, operator and the
mutated source line, so verdicts survive edits elsewhere in the file); a survivor without a verdict is
marked ``NO VERDICT``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "mutation" / "work"
LEDGER = REPO / "mutation" / "ledger"
VERDICTS = REPO / "mutation" / "verdicts.yaml"
PKG = "ros2_ws/src/deep_vision/deep_vision"
BIN = Path(sys.executable).parent

#: group → (modules relative to the package, test files, seconds per mutant before it counts as killed)
GROUPS: dict[str, tuple[list[str], list[str], int]] = {
    "geometry": (["geometry/transforms.py", "geometry/homography.py", "geometry/camera.py", "geometry/kitti.py"],
                 ["test_geometry.py", "test_homography_geometry.py", "test_convert.py", "test_pose_graph.py",
                  "test_vo_eval.py"], 120),
    "io_conversion": (["io/convert.py", "io/kitti.py", "io/image.py"],
                      ["test_convert.py", "test_image_conversion.py", "test_convert_kitti_raw.py",
                       "test_convert_robotcar.py", "test_bag_io.py", "test_ros_messages.py"], 180),
    "pose_graph": (["estimators/pose_graph.py"], ["test_pose_graph.py", "test_pose_graph_node.py"], 180),
    "homography": (["estimators/homography.py", "models/homography_input.py"],
                   ["test_homography_estimator.py", "test_homography_node.py"], 180),
    "odometry": (["estimators/odometry.py", "estimators/ground_scale.py"],
                 ["test_visual_odometry.py", "test_ground_scale.py", "test_odometry_node.py"], 300),
    "verification": (["estimators/loop_closure.py"],
                     ["test_place_verification.py", "test_place_database.py", "test_place_node.py"], 300),
    "stages": (["stages/inputs.py", "stages/homography.py", "stages/odometry.py", "stages/place.py",
                "stages/pose_graph.py", "stages/messages.py", "stages/queue.py"],
               ["test_homography_node.py", "test_odometry_node.py", "test_place_node.py", "test_pose_graph_node.py",
                "test_pipeline.py", "test_one_system.py", "test_stages.py", "test_frame_queue.py"], 300),
}

EXCLUDED_OPERATORS = [
    # arithmetic: keep the swaps + <-> - and * <-> / (PIT's "math" mutator); the rest are type errors on floats
    r"core/ReplaceBinaryOperator_.*_(BitOr|BitAnd|BitXor|LShift|RShift|FloorDiv|Mod|Pow)$",
    r"core/ReplaceBinaryOperator_(BitOr|BitAnd|BitXor|LShift|RShift|FloorDiv|Mod|Pow)_.*",
    r"core/ReplaceBinaryOperator_(Add_Mul|Add_Div|Sub_Mul|Sub_Div|Mul_Add|Mul_Sub|Div_Add|Div_Sub)$",
    # comparisons: keep the boundary (< <-> <=, > <-> >=) and the negation (< <-> >=, > <-> <=, == <-> !=)
    r"core/ReplaceComparisonOperator_.*_(Is|IsNot|In|NotIn)$",
    r"core/ReplaceComparisonOperator_(Is|IsNot|In|NotIn)_.*",
    r"core/ReplaceComparisonOperator_(Lt_Gt|Lt_Eq|Lt_NotEq|LtE_GtE|LtE_Eq|LtE_NotEq)$",
    r"core/ReplaceComparisonOperator_(Gt_Lt|Gt_Eq|Gt_NotEq|GtE_LtE|GtE_Eq|GtE_NotEq)$",
    r"core/ReplaceComparisonOperator_(Eq_Lt|Eq_LtE|Eq_Gt|Eq_GtE|NotEq_Lt|NotEq_LtE|NotEq_Gt|NotEq_GtE)$",
    # unary: keep deleting a minus or a not; ~ and not on numbers are type errors
    r"core/ReplaceUnaryOperator_(USub_UAdd|USub_Invert|USub_Not|UAdd_.*|Invert_.*|Delete_Invert)$",
    r"core/VariableReplacer",
    r"core/VariableInserter",
]


def copy_tree(dest: Path) -> None:
    """The working tree's tracked and untracked-but-not-ignored files, fresh, under ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True).stdout.decode().split("\0")
    if dest.exists():
        shutil.rmtree(dest)
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_symlink():  # the package's links to config/, models/, launch/ and the messages
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).symlink_to(os.readlink(src))
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    shared = REPO.parent / "shared"
    link = dest.parent / "shared"
    if shared.is_dir() and not link.exists():
        link.symlink_to(shared)


def environment(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree / "ros2_ws/src/deep_vision"), "DEEP_VISION_REQUIRE_ROS": "1",
            "PYTHONDONTWRITEBYTECODE": "1"}


def write_config(group: str) -> Path:
    modules, tests, timeout = GROUPS[group]
    config = WORK / group / "cosmic-ray.toml"
    paths = ", ".join(f'"{PKG}/{m}"' for m in modules)
    test_cmd = f"{BIN / 'python'} -m pytest -x -q -p no:cacheprovider " + " ".join(f"tests/{t}" for t in tests)
    excluded = ",\n    ".join(json.dumps(e) for e in EXCLUDED_OPERATORS)
    config.write_text(f"""[cosmic-ray]
module-path = [{paths}]
timeout = {timeout}
excluded-modules = []
test-command = "{test_cmd}"

[cosmic-ray.distributor]
name = "local"

[cosmic-ray.filters.operators-filter]
exclude-operators = [
    {excluded},
]
""")
    return config


def run_group(group: str, fresh: bool, use_ledger: bool = True) -> None:
    folder = WORK / group
    session = folder / "session.sqlite"
    tree = folder / "tree"
    folder.mkdir(parents=True, exist_ok=True)
    (WORK / "COLCON_IGNORE").touch()  # the trees hold copies of the packages: not for a workspace build
    if fresh or not session.exists() or not tree.exists():
        session.unlink(missing_ok=True)
        copy_tree(tree)
        # The modules' hashes as copied: while a mutant is being tested the tree's file is the mutant.
        (folder / "module_sha.json").write_text(json.dumps(
            {m: sha256((tree / PKG / m).read_bytes()) for m in GROUPS[group][0]}, indent=1))
        config = write_config(group)
        # The unmutated code must pass the group's tests in the copy, or every mutant would count as killed.
        if subprocess.run([BIN / "cosmic-ray", "baseline", config], cwd=tree, env=environment(tree)).returncode:
            raise SystemExit(f"[{group}] the tests fail on the unmutated copy in {tree}: fix that first")
        subprocess.run([BIN / "cosmic-ray", "init", config, session], cwd=tree, check=True, env=environment(tree))
        subprocess.run([BIN / "cr-filter-operators", session, config], cwd=tree, check=True, env=environment(tree))
        if use_ledger:
            seed_from_ledger(group, session)
    config = folder / "cosmic-ray.toml"
    t0 = time.time()
    print(f"[{group}] running {pending(session)} pending mutants (tests: {', '.join(GROUPS[group][1])})", flush=True)
    # Cosmic Ray restores each file after its mutant; the tree is a copy, so an interrupted run harms nothing.
    subprocess.run([BIN / "cosmic-ray", "exec", config, session], cwd=tree, check=True, env=environment(tree))
    print(f"[{group}] done in {time.time() - t0:.0f} s", flush=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tests_sha(root: Path, group: str) -> str:
    """One hash of the group's test files and ``tests/conftest.py``, the only module they import from
    ``tests/``: a survivor is run again when any of them changes."""
    h = hashlib.sha256()
    for name in sorted(["conftest.py", *GROUPS[group][1]]):
        h.update(name.encode() + b"\0" + (root / "tests" / name).read_bytes())
    return h.hexdigest()


def ledger_key(module: str, operator: str, occurrence: int) -> tuple[str, str, int]:
    return module, operator.removeprefix("core/"), int(occurrence)


def read_ledger(group: str) -> dict[tuple[str, str, int], dict]:
    path = LEDGER / f"{group}.jsonl"
    if not path.exists():
        return {}
    entries = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {ledger_key(e["module"], e["operator"], e["occurrence"]): e for e in entries}


def seed_from_ledger(group: str, session: Path) -> None:
    """Give the session the ledger's outcomes that still hold; the rest stay pending."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    ledger = read_ledger(group)
    module_sha = {m: sha256((REPO / PKG / m).read_bytes()) for m in GROUPS[group][0]}
    current_tests = tests_sha(REPO, group)
    known = Counter()
    with use_db(session, WorkDB.Mode.open) as db:
        for item in db.pending_work_items:
            m = item.mutations[0]
            module = str(m.module_path).removeprefix(PKG + "/")
            e = ledger.get(ledger_key(module, m.operator_name, m.occurrence))
            if e is None or e["module_sha"] != module_sha.get(module) or e["line"] != m.start_pos[0]:
                continue
            if e["outcome"] == "survived" and e.get("tests_sha") != current_tests:
                continue  # the tests changed since it survived: run it again
            diff = f"+++ {module}\n+{e['mutated']}\n" if e.get("mutated") else None
            db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.NORMAL,
                                                  test_outcome=TestOutcome(e["outcome"]), diff=diff,
                                                  output="outcome from mutation/ledger"))
            known[e["outcome"]] += 1
    print(f"[{group}] from the ledger: {dict(known) or 'nothing'}", flush=True)


def write_ledger(group: str, session: Path, tree: Path) -> None:
    """The session's outcomes, merged into the group's committed ledger."""
    ledger = read_ledger(group)
    shas = tree.parent / "module_sha.json"
    module_sha = (json.loads(shas.read_text()) if shas.exists()
                  else {m: sha256((tree / PKG / m).read_bytes()) for m in GROUPS[group][0]})
    survived_against = tests_sha(tree, group)
    for r in records(session):
        res, m = r["result"], r["item"]["mutations"][0]
        if res is None or res["worker_outcome"] != "normal":
            continue
        module = m["module_path"].removeprefix(PKG + "/")
        entry = {"module": module, "module_sha": module_sha[module], "operator": m["operator_name"].removeprefix("core/"),
                 "occurrence": m["occurrence"], "line": m["start_pos"][0], "outcome": res["test_outcome"]}
        if res["test_outcome"] == "survived":
            entry.update(tests_sha=survived_against, mutated=mutated_line(res["diff"] or ""))
        ledger[ledger_key(module, entry["operator"], entry["occurrence"])] = entry
    LEDGER.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(e, sort_keys=True) for _, e in sorted(ledger.items())]
    (LEDGER / f"{group}.jsonl").write_text("\n".join(lines) + "\n")


def recheck_group(group: str) -> None:
    """Copy today's tests into the group's tree and run its survivors again (the modules must be unchanged:
    the session's mutation positions refer to them)."""
    import sqlite3

    folder = WORK / group
    session, tree = folder / "session.sqlite", folder / "tree"
    if not session.exists():
        raise SystemExit(f"[{group}] no session yet: run it first")
    changed = [m for m in GROUPS[group][0] if (REPO / PKG / m).read_bytes() != (tree / PKG / m).read_bytes()]
    if changed:
        raise SystemExit(f"[{group}] {', '.join(changed)} changed since the session began: run --fresh {group}")
    shutil.rmtree(tree / "tests")
    shutil.copytree(REPO / "tests", tree / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    with sqlite3.connect(session) as db:
        n = db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'").rowcount
    print(f"[{group}] {n} survivors to run again", flush=True)
    subprocess.run([BIN / "cosmic-ray", "exec", folder / "cosmic-ray.toml", session], cwd=tree, check=True,
                   env=environment(tree))


def records(session: Path) -> list[dict]:
    out = subprocess.run([BIN / "cosmic-ray", "dump", session], check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        item, result = json.loads(line)
        rows.append({"item": item, "result": result})
    return rows


def pending(session: Path) -> int:
    return sum(1 for r in records(session) if r["result"] is None)


def mutated_line(diff: str) -> str:
    """The mutated line of a mutant's one-line diff, stripped; for a removal (a decorator), ``removed: <line>``."""
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    if added:
        return " ".join(added)
    removed = [line[1:].strip() for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    return "removed: " + " ".join(r for r in removed if r) if any(removed) else ""


def verdict_key(module: str, operator: str, mutated: str) -> str:
    """A survivor's key in verdicts.yaml: stable while its own line is unchanged."""
    return f"{module} | {operator.removeprefix('core/')} | {mutated}"


def report(groups: list[str], out: Path, command: str) -> int:
    verdicts = yaml.safe_load(VERDICTS.read_text()) if VERDICTS.exists() else {}
    verdicts = verdicts or {}
    per_module: dict[str, Counter] = defaultdict(Counter)
    survivors = []
    for group in groups:
        session = WORK / group / "session.sqlite"
        if not session.exists():
            print(f"[{group}] no session yet: run it first")
            continue
        for r in records(session):
            m = r["item"]["mutations"][0]
            module = m["module_path"].removeprefix(PKG + "/")
            res = r["result"]
            if res is None:
                per_module[module]["pending"] += 1
                continue
            if res["worker_outcome"] == "skipped":
                per_module[module]["excluded"] += 1
                continue
            if res["worker_outcome"] != "normal":
                per_module[module][res["worker_outcome"]] += 1  # abnormal / exception: the mutant broke the run
                continue
            outcome = res["test_outcome"]  # killed | survived | incompetent
            per_module[module][outcome] += 1
            if outcome == "survived":
                mutated = mutated_line(res["diff"])
                key = verdict_key(module, m["operator_name"], mutated)
                survivors.append((module, m["start_pos"][0], m["operator_name"].removeprefix("core/"), mutated,
                                  verdicts.get(key), key))
    lines = [f"# Mutation testing of the core modules ({datetime.date.today().isoformat()})", "",
             f"Command: `{command}` (Cosmic Ray {cosmic_ray_version()}; groups, tests and operators: "
             "`mutation/run.py`). Score = killed / (killed + survived); incompetent mutants (the mutated "
             "code does not import) and excluded operators are not counted.", "",
             "| module | mutants run | killed | survived | incompetent | pending | score |", "|---|---|---|---|---|---|---|"]
    total = Counter()
    for module, c in sorted(per_module.items()):
        total.update(c)
        run = c["killed"] + c["survived"] + c["incompetent"]
        score = c["killed"] / max(c["killed"] + c["survived"], 1)
        lines.append(f"| {module} | {run} | {c['killed']} | {c['survived']} | {c['incompetent']} | {c['pending']} "
                     f"| {100 * score:.1f} % |")
    score = total["killed"] / max(total["killed"] + total["survived"], 1)
    lines.append(f"| **all** | {total['killed'] + total['survived'] + total['incompetent']} | {total['killed']} "
                 f"| {total['survived']} | {total['incompetent']} | {total['pending']} | **{100 * score:.1f} %** |")
    lines += ["", "## Surviving mutants and verdicts", "",
              "Verdicts live in `mutation/verdicts.yaml`: `equivalent: why` (no test can tell; \"in effect\" where "
              "the difference is below any meaning, e.g. 1 ns of a 0.5 s margin), `test: <test>` (a test now kills "
              "it; a recheck no longer lists it), or `tuning: why` (a default or threshold moved by one step: a "
              "different tuning, not a defect a test can name; where the value comes from).", "",
              "| module:line | operator | mutated line | verdict |", "|---|---|---|---|"]
    missing = 0
    for module, line_no, op, mutated, verdict, _ in sorted(survivors):
        missing += verdict is None
        text = "NO VERDICT" if verdict is None else str(verdict).replace("|", "\\|")
        lines.append(f"| {module}:{line_no} | {op} | `{mutated.replace('|', '/')[:100]}` | {text} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:len(per_module) + 8]))
    print(f"\nreport: {out}; {len(survivors)} survivors, {missing} without a verdict")
    if missing:
        print("keys of the survivors without a verdict (for mutation/verdicts.yaml):")
        for *_, verdict, key in sorted(survivors):
            if verdict is None:
                print(f"  {json.dumps(key)}")
    return 0


def cosmic_ray_version() -> str:
    from importlib.metadata import version

    return version("cosmic-ray")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="*", help=f"groups (default all): {', '.join(GROUPS)}")
    parser.add_argument("--report", action="store_true", help="report only")
    parser.add_argument("--fresh", action="store_true", help="start the groups' sessions again")
    parser.add_argument("--recheck", action="store_true", help="run the survivors again against today's tests")
    parser.add_argument("--no-ledger", action="store_true", help="with --fresh: ignore mutation/ledger, run all")
    parser.add_argument("--list", action="store_true", help="list the groups")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" /
                        f"mutation-{datetime.date.today().isoformat()}.md")
    args = parser.parse_args(argv)
    unknown = set(args.groups) - set(GROUPS)
    if unknown:
        print(f"unknown group(s) {', '.join(sorted(unknown))}; groups: {', '.join(GROUPS)}")
        return 2
    groups = args.groups or list(GROUPS)
    if args.list:
        for g in groups:
            modules, tests, timeout = GROUPS[g]
            print(f"{g}: {', '.join(modules)}\n    tests: {', '.join(tests)} (timeout {timeout} s)")
        return 0
    if shutil.which("cosmic-ray", path=str(BIN)) is None:
        print("cosmic-ray is not installed in this environment: make mutation installs it")
        return 2
    if args.recheck:
        for g in groups:
            recheck_group(g)
    elif not args.report:
        for g in groups:
            run_group(g, args.fresh, use_ledger=not args.no_ledger)
    for g in groups:  # what the sessions know, finished or not, goes into the committed ledger
        if (WORK / g / "session.sqlite").exists():
            write_ledger(g, WORK / g / "session.sqlite", WORK / g / "tree")
    command = "make mutation" if not args.groups else f".venv/bin/python mutation/run.py {' '.join(args.groups)}"
    return report(groups, args.out, command)


if __name__ == "__main__":
    sys.exit(main())
