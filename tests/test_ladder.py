"""The learning path's harness: every version validated and kept on record, nothing
timed without a GPU, exercise checks that can fail and say why."""
import pytest
import torch

from tritonlab.bench.ladder import Mismatch, error, exercise, ladder, require_plausible_mask


def test_every_version_is_kept_on_record():
    x = torch.randn(5, 7)
    df = ladder("softmax", {
        "right": lambda: torch.softmax(x, -1),
        "wrong": lambda: torch.softmax(x, 0),
        "broken": lambda: x.view(3),
        "not here": "needs a GPU",
    }, expected=torch.softmax(x, -1), show=False)
    status = dict(zip(df["version"], df["status"]))
    assert status["right"] == "ok" and status["wrong"].startswith("wrong: largest relative error")
    assert status["broken"].startswith("failed: RuntimeError")
    assert status["not here"] == "skipped: needs a GPU"
    assert "ms_p50" not in df  # no CUDA here: validated, never timed


def test_expected_can_depend_on_the_output():
    x = torch.rand(100) + 1
    keep = torch.rand(100) > 0.5
    out = torch.where(keep, x * 2, 0)
    from_mask = lambda o: x * (o != 0) * 2  # noqa: E731
    assert error(out, from_mask) == (0.0, None)
    assert error(out * 1.1, from_mask)[1] is not None


def test_tolerance_is_relative_to_the_expected_magnitude():
    p = torch.full((1000,), 1e-3)
    assert error(p * 1.5, p)[1] is not None  # 50% off, though 5e-4 absolute
    assert error(p * (1 + 1e-5), p)[1] is None


def test_a_tuple_is_checked_item_by_item():
    out, grad = torch.ones(3), torch.zeros(2)
    assert error((out, grad), (out, grad)) == (0.0, None)
    assert error((out, grad + 1), (out, grad))[1].startswith("item 1: ")
    assert error((out, grad), out) == (0.0, None)  # one tensor expected: the first item
    assert error((out,), (out, grad)) == (float("inf"), "expected 2 tensors, got a tuple of 1 item, the first a Tensor")


@pytest.mark.parametrize("result, message", [
    (None, "expected a tensor or a tuple of tensors, got NoneType"),
    ([1, 2, 3], "expected a tensor or a tuple of tensors, got a list of 3 items, the first a int"),
    (torch.zeros(3), "shape (3,), expected (4,)"),
    (torch.zeros(4, dtype=torch.float64), "dtype torch.float64, expected torch.float32"),
])
def test_a_result_that_cannot_be_compared_says_why(result, message):
    assert error(result, torch.zeros(4)) == (float("inf"), message)


def test_a_mismatch_names_its_first_index():
    want = torch.arange(12.0).view(3, 4)
    got = want.clone()
    got[1, 2] += 1
    got[2, 0] = float("nan")
    err, problem = error(got, want)
    assert problem == ("largest relative error nan, first mismatch at index (1, 2): got 7, expected 6; "
                       "1 mismatch not finite, the first at index (2, 0): got nan, expected 8 "
                       "(an infinity must match exactly, a NaN never matches)")


def test_integers_must_match_exactly():
    want = torch.tensor([[0, 1], [2, 3]])
    assert error(want.clone(), want) == (0.0, None)
    got = want.clone()
    got[1, 1] = 2
    assert error(got, want)[1] == "largest relative error 0.333, first mismatch at index (1, 1): got 2, expected 3"


def test_an_expectation_can_refuse_with_a_reason():
    def expected(out):
        require_plausible_mask(out != 0, 0.5)
        return out
    assert "kept fraction 1.0000, implausible for p=0.5" in error(torch.ones(1000), expected)[1]

    def refuses(out):
        raise Mismatch("not one coin per row")
    assert error(torch.ones(3), refuses) == (float("inf"), "not one coin per row")


def test_exercise_reports_not_attempted_pass_and_fail(capsys):
    want = torch.arange(4.0)

    def todo():
        raise NotImplementedError

    assert exercise("1", todo, want) is None
    assert exercise("1", lambda: torch.arange(4.0), want) is True
    assert exercise("1", lambda: torch.ones(4), want) is False
    assert exercise("1", lambda: None, want) is False
    assert exercise("1", lambda: torch.ones(5), want) is False
    out = capsys.readouterr().out
    assert "not attempted" in out and "PASSED" in out
    assert "FAILED (largest relative error 0.667, first mismatch at index (0,): got 1, expected 0)" in out
    assert "FAILED (expected a tensor or a tuple of tensors, got NoneType)" in out
    assert "FAILED (shape (5,), expected (4,))" in out


def test_bools_must_match_exactly():
    want = torch.tensor([True, False])
    assert error(want.clone(), want) == (0.0, None)
    assert error(torch.tensor([True, True]), want)[1] == \
        "largest relative error 1, first mismatch at index (1,): got True, expected False"
    assert exercise("bool", lambda: want.clone(), want) is True
    df = ladder("mask", {"right": lambda: want.clone(), "wrong": lambda: ~want}, expected=want, show=False)
    assert list(df["status"]) == ["ok", "wrong: largest relative error 1, first mismatch at index (0,): "
                                        "got False, expected True"]


def test_large_integers_are_compared_exactly():
    want = torch.tensor([2**53 + 1])
    assert error(want - 1, want)[1] == \
        "largest relative error 1.11e-16, first mismatch at index (0,): got 9007199254740992, expected 9007199254740993"


def test_equal_infinities_match_and_the_scale_is_finite():
    inf = float("inf")
    want = torch.tensor([1.0, -inf, inf, 2.0])
    assert error(want.clone(), want) == (0.0, None)
    assert error(torch.tensor([1.0, -inf, inf, 2.0001]), want) == (pytest.approx(5e-5, rel=1e-2), None)  # 1e-4 of 2, not of inf
    assert error(torch.tensor([-inf]), torch.tensor([-inf])) == (0.0, None)


@pytest.mark.parametrize("got, want, message", [
    ([1.0, 2.0], [1.0, float("inf")],
     "largest relative error inf, first mismatch at index (1,): got 2, expected inf; "
     "1 mismatch not finite (an infinity must match exactly, a NaN never matches)"),
    ([float("-inf"), 2.0], [float("inf"), 2.0],
     "largest relative error inf, first mismatch at index (0,): got -inf, expected inf; "
     "1 mismatch not finite (an infinity must match exactly, a NaN never matches)"),
    ([1.0, float("nan")], [1.0, float("nan")],
     "largest relative error nan, first mismatch at index (1,): got nan, expected nan; "
     "1 mismatch not finite (an infinity must match exactly, a NaN never matches)"),
    ([float("inf"), float("inf")], [float("inf"), float("-inf")],  # no finite value: scale 1
     "largest relative error inf, first mismatch at index (1,): got inf, expected -inf; "
     "1 mismatch not finite (an infinity must match exactly, a NaN never matches)"),
])
def test_a_non_finite_mismatch_is_named(got, want, message):
    assert error(torch.tensor(got), torch.tensor(want))[1] == message
