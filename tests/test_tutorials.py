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



@pytest.mark.parametrize("lesson", [TUTORIALS / "03_dropout.py"], indirect=True, ids=["03_dropout"])
def test_dropout_checks_name_the_mistake_before_the_kept_fraction(lesson, capsys):
    """A wrong structure is reported as such, not as an implausible kept fraction inferred
    from a mask that assumes the structure is right."""
    _, scope = lesson
    solution = runpy.run_path(str(TUTORIALS / "solutions" / "03_dropout.py"))
    capsys.readouterr()
    assert scope["check_1"](solution["wrong_1"]) is False  # drops elements, not rows
    assert scope["check_2"](solution["wrong_2"]) is False  # drops the residual too
    assert scope["check_1"](lambda x, p, seed: x) is False  # keeps every row unscaled
    assert scope["check_2"](lambda x, res, p, seed: res + x) is False  # keeps every x unscaled
    assert scope["check_2"](lambda x, res, p, seed: res.clone()) is False  # drops every x
    lines = capsys.readouterr().out.splitlines()
    assert "kept fraction" not in "\n".join(lines[:4])
    assert "elements zeroed: drop or keep each row as a whole" in lines[0]
    assert "each of them is 0 or (residual + x)/(1-p): the residual was dropped" in lines[1]
    assert "row 0 is x itself: a kept row is scaled by 1/(1-p)" in lines[2]
    assert "each of them is residual + x: a kept x is scaled by 1/(1-p)" in lines[3]
    assert "kept fraction 0.0000, implausible for p=0.2" in lines[4]  # right structure, wrong coins
