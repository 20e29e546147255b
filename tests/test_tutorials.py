"""Every lesson of the learning path runs on CPU (Triton's interpreter, small sizes) with
every version validated, pairs with a notebook through jupytext, and every exercise
check tells a right answer (tutorials/solutions/) from a wrong one."""
import re
import runpy
from pathlib import Path

import pytest

pytest.importorskip("triton")

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
LESSONS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))


def test_the_path_has_its_nine_lessons():
    assert [p.name[:2] for p in LESSONS] == [f"{i:02d}" for i in range(1, 10)]


@pytest.fixture(scope="module", params=LESSONS, ids=lambda p: p.stem)
def lesson(request):
    return request.param, runpy.run_path(str(request.param), run_name="__main__")


def test_lesson_runs_and_every_version_validates(lesson):
    path, scope = lesson
    tables = [v for k, v in scope.items() if k.startswith("table")]
    assert tables, f"{path.name} keeps each ladder's result in a variable named table*"
    for df in tables:
        ran = df[~df["status"].str.startswith("skipped")]
        assert len(ran) >= 2, f"{path.name}: a ladder needs at least two versions that run"
        assert (ran["status"] == "ok").all(), df[["version", "status"]].to_string()
    for name in (k for k in scope if k.endswith("_match")):  # a printed check kept as {version: bool}
        assert scope[name] and all(scope[name].values()), f"{path.name}: {name} = {scope[name]}"


def test_lesson_is_a_percent_notebook(lesson):
    jupytext = pytest.importorskip("jupytext")
    path, _ = lesson
    nb = jupytext.read(path)
    kinds = {c.cell_type for c in nb.cells}
    assert kinds == {"markdown", "code"} and len(nb.cells) >= 10


def test_exercise_checks_tell_right_from_wrong(lesson):
    path, scope = lesson
    checks = sorted(k for k in scope if re.fullmatch(r"check_\d+", k))
    assert checks, f"{path.name} has no exercises (check_1, ...)"
    solution = runpy.run_path(str(TUTORIALS / "solutions" / path.name))
    for name in checks:
        k = name.split("_")[1]
        assert scope[name](scope[f"exercise_{k}"]) is None, f"{name}: the stub counts as attempted"
        assert scope[name](solution[f"exercise_{k}"]) is True, f"{name}: the solution fails its check"
        assert scope[name](solution[f"wrong_{k}"]) is False, f"{name}: a wrong answer passes its check"
        # a learner reruns the exercise cell, then the check cell: check_k() sees the new exercise_k
        namespace = scope[name].__globals__
        stub, namespace[f"exercise_{k}"] = namespace[f"exercise_{k}"], solution[f"exercise_{k}"]
        try:
            assert scope[name]() is True, f"{name}() still checks the exercise it was defined with"
        finally:
            namespace[f"exercise_{k}"] = stub

