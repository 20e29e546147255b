"""The learning path's harness: every version validated and kept on record, nothing
timed without a GPU, exercise checks that can fail."""
import torch

from tritonlab.bench.ladder import error, exercise, ladder


def test_every_version_is_kept_on_record():
    x = torch.randn(5, 7)
    df = ladder("softmax", {
        "right": lambda: torch.softmax(x, -1),
        "wrong": lambda: torch.softmax(x, 0),
        "broken": lambda: x.view(3),
        "not here": "needs a GPU",
    }, expected=torch.softmax(x, -1), show=False)
    status = dict(zip(df["version"], df["status"]))
    assert status["right"] == "ok" and status["wrong"] == "wrong"
    assert status["broken"].startswith("failed: RuntimeError")
    assert status["not here"] == "skipped: needs a GPU"
    assert "ms_p50" not in df  # no CUDA here: validated, never timed


def test_expected_can_depend_on_the_output():
    x = torch.rand(100) + 1
    keep = torch.rand(100) > 0.5
    out = torch.where(keep, x * 2, 0)
    from_mask = lambda o: x * (o != 0) * 2  # noqa: E731
    assert error(out, from_mask) == (0.0, True)
    assert error(out * 1.1, from_mask)[1] is False


def test_tolerance_is_relative_to_the_expected_magnitude():
    p = torch.full((1000,), 1e-3)
    assert error(p * 1.5, p)[1] is False  # 50% off, though 5e-4 absolute
    assert error(p * (1 + 1e-5), p)[1] is True


def test_a_tuple_is_checked_item_by_item():
    out, grad = torch.ones(3), torch.zeros(2)
    assert error((out, grad), (out, grad)) == (0.0, True)
    assert error((out, grad + 1), (out, grad))[1] is False
    assert error((out, grad), out) == (0.0, True)  # one tensor expected: the first item


def test_shape_mismatch_is_wrong():
    assert error(torch.zeros(3), torch.zeros(4)) == (float("inf"), False)


def test_exercise_reports_not_attempted_pass_and_fail(capsys):
    want = torch.arange(4.0)

    def todo():
        raise NotImplementedError

    assert exercise("1", todo, want) is None
    assert exercise("1", lambda: torch.arange(4.0), want) is True
    assert exercise("1", lambda: torch.ones(4), want) is False
    out = capsys.readouterr().out
    assert "not attempted" in out and "PASSED" in out and "FAILED" in out
