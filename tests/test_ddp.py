"""Data-parallel `tritonlab train` with two CPU processes (torchrun, gloo): the losses of
a 1-process run, one checkpoint written by rank 0, resume across world sizes, exact
resume with dropout on the same world size, and a clear error for an uneven batch.

Two torchrun launches in all (each costs a few seconds of interpreter start-up): the real
command line, and this file run as a script, which makes several train() calls inside
one process group (see `_worker`).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tritonlab.cli import main
from tritonlab.train import TrainConfig, load_checkpoint, load_model, train

ROOT = Path(__file__).resolve().parent.parent
N = 4  # steps of a half run; full runs go to 2 * N
LOSS_TOL = 1e-5  # DDP's bucketed all-reduce sums in another order than one backward does


def tiny(data, out, model="lstm", dropout=0.0, **kw) -> TrainConfig:
    """Small enough for a 2-core CI box; eval_every=N puts a validation and a checkpoint mid-run."""
    sizes = {"embed": 4, "layers": 1, "channels" if model == "cnn" else "hidden": 16, "dropout": dropout}
    base = dict(data=str(data), steps=N, batch=8, seq=32, eval_every=N, out=str(out), progress=False,
                backend="reference", model=model, model_config=sizes)
    return TrainConfig(**{**base, **kw})


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def one_proc(dna, tmp_path_factory):
    """1-process runs, no dropout: to N steps (the 2-process run's reference and a
    checkpoint to resume on two processes) and straight to 2N (what every resume must give)."""
    root = tmp_path_factory.mktemp("one")
    return {"half": train(tiny(dna, root / "half")), "full": train(tiny(dna, root / "full", steps=2 * N))}


@pytest.fixture(scope="module")
def cli_run(dna, tmp_path_factory):
    """`tritonlab train` under torchrun with two processes, N steps, no dropout."""
    out = tmp_path_factory.mktemp("cli")
    done = torchrun("-m", "tritonlab", "train", "--data", str(dna), "--steps", str(N), "--eval-every", str(N),
                    "--batch", "8", "--seq", "32", "--embed", "4", "--hidden", "16", "--layers", "1",
                    "--dropout", "0", "--backend", "reference", "--out", str(out))
    return out, done.stdout


@pytest.fixture(scope="module")
def worker_runs(dna, one_proc, tmp_path_factory):
    """This file's `_worker` on two processes; returns its output folder."""
    root = tmp_path_factory.mktemp("worker")
    shutil.copytree(Path(one_proc["half"]["checkpoint"]).parent, root / "one_to_two")
    torchrun(__file__, str(dna), str(root))
    return root


def test_two_processes_give_the_one_process_losses(cli_run, one_proc):
    out, stdout = cli_run
    ckpt = load_checkpoint(out / "checkpoint.pt", expect_kind="lstm")
    ref = one_proc["half"]
    torch.testing.assert_close(torch.tensor(ckpt["losses"]), torch.tensor(ref["losses"]), rtol=0, atol=LOSS_TOL)
    assert ckpt["val"][-1][0] == N and ckpt["val"][-1][1] == pytest.approx(ref["val"][-1][1], abs=LOSS_TOL)
    assert f"step {N}: validation" in stdout
    # The unwrapped model: no DDP "module." prefix, and a plain load gives the 1-process weights.
    assert ckpt["world_size"] == 2 and not any(k.startswith("module.") for k in ckpt["model"])
    net, _, _ = load_model(out / "checkpoint.pt")
    ref_net, _, _ = load_model(ref["checkpoint"])
    for (name, p), q in zip(net.named_parameters(), ref_net.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=LOSS_TOL, msg=name)


def test_one_checkpoint_written_by_rank_zero(cli_run, worker_runs):
    out, _ = cli_run
    assert os.listdir(out) == ["checkpoint.pt"]  # no temporary file of either rank left behind
    seen = json.loads((worker_runs / "seen.json").read_text())
    assert seen[0]["saves"] > 0 and seen[1]["saves"] == 0


def test_each_rank_trains_on_its_half_of_the_batch(worker_runs):
    seen = json.loads((worker_runs / "seen.json").read_text())
    assert [r["train_rows"] for r in seen] == [[4], [4]]  # of the global batch of 8


def test_ddp_over_a_swapped_model_gives_the_full_batch_gradient(worker_runs):
    seen = json.loads((worker_runs / "seen.json").read_text())
    assert [r["swapped_grad_err"] < 1e-6 for r in seen] == [True, True], seen


def test_resume_two_processes_on_one(dna, cli_run, one_proc, tmp_path):
    shutil.copytree(cli_run[0], tmp_path / "run")
    resumed = train(tiny(dna, tmp_path / "run", steps=2 * N, resume=True))
    assert resumed["world_size"] == 1
    torch.testing.assert_close(torch.tensor(resumed["losses"]), torch.tensor(one_proc["full"]["losses"]),
                               rtol=0, atol=LOSS_TOL)


def test_resume_one_process_on_two(worker_runs, one_proc):
    ckpt = load_checkpoint(worker_runs / "one_to_two" / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 2 * N
    torch.testing.assert_close(torch.tensor(ckpt["losses"]), torch.tensor(one_proc["full"]["losses"]),
                               rtol=0, atol=LOSS_TOL)
    assert [s for s, _ in ckpt["val"]] == [N, 2 * N]


def test_resume_on_two_processes_is_exact_with_dropout(worker_runs):
    straight, resumed = (load_checkpoint(worker_runs / name / "checkpoint.pt") for name in ("straight", "halves"))
    assert resumed["losses"] == straight["losses"] and resumed["val"] == straight["val"]
    for k in straight["model"]:
        assert torch.equal(resumed["model"][k], straight["model"][k]), k
    # Each rank draws its own dropout masks: the two ranks' generators differ.
    ranks = straight["rng"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])


def test_batch_not_divisible_by_world_size(dna, tmp_path, monkeypatch, capsys):
    # The checks run before the process group is joined, so one process sees them.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="must be a multiple of 2; got batch 5"):
        train(tiny(dna, tmp_path, batch=5))
    assert main(["train", "--data", str(dna), "--batch", "7", "--out", str(tmp_path)]) == 2
    assert "multiple of 2; got batch 7" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cuda:LOCAL_RANK; pass device 'cuda', got 'cuda:1'"):
        train(tiny(dna, tmp_path, device="cuda:1"))
    assert not list(tmp_path.iterdir())


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL data parallelism needs two GPUs")
def test_gpu_two_processes_follow_one(dna, tmp_path):
    """NCCL on cuda:0 and cuda:1, the triton tier: the 1-GPU losses within TF32 tolerance."""
    args = ["--data", str(dna), "--steps", "10", "--batch", "16", "--seq", "64", "--device", "cuda",
            "--dropout", "0", "--backend", "triton"]
    torchrun("-m", "tritonlab", "train", *args, "--out", str(tmp_path / "two"))
    assert main(["train", *args, "--out", str(tmp_path / "one")]) == 0
    two, one = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("two", "one"))
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=0, atol=5e-3)


def _worker(data: str, root: Path) -> None:
    """One torchrun process: several runs inside one process group (which train() uses
    and leaves up), then DDP over a torch.nn model swapped to the lab's layers. Writes
    seen.json: per rank, its checkpoint writes, the batch sizes its model was trained on
    and how far its DDP gradient is from the 1-process full-batch gradient."""
    import tritonlab.train as tr
    from torch import distributed as dist
    from torch.distributed.nn import functional  # noqa: F401  before init: see train._join_group

    dist.init_process_group("gloo")
    rank, seen = dist.get_rank(), {"saves": 0, "train_rows": set()}
    real_save, real_build = tr.save_checkpoint, tr.build_model

    def counting_save(*args, **kwargs):
        seen["saves"] += 1
        real_save(*args, **kwargs)

    def record_rows(module, inputs):
        if module.training:  # evaluation batches are not the training share
            seen["train_rows"].add(len(inputs[0]))

    def watched_build(*args, **kwargs):
        net = real_build(*args, **kwargs)
        net.register_forward_pre_hook(record_rows)
        return net

    tr.save_checkpoint, tr.build_model = counting_save, watched_build
    try:
        train(tiny(data, root / "one_to_two", steps=2 * N, resume=True))
        # The CNN with dropout: 2N straight, and N then a resume to 2N.
        train(tiny(data, root / "straight", model="cnn", dropout=0.2, steps=2 * N))
        train(tiny(data, root / "halves", model="cnn", dropout=0.2))
        train(tiny(data, root / "halves", model="cnn", steps=2 * N, resume=True))
        seen["swapped_grad_err"] = _swapped_ddp_grad_err(rank)
        everyone = [None, None]
        dist.all_gather_object(everyone, {**seen, "train_rows": sorted(seen["train_rows"])})
        if rank == 0:
            (root / "seen.json").write_text(json.dumps(everyone))
    finally:
        dist.destroy_process_group()


def _swapped_ddp_grad_err(rank: int) -> float:
    """Largest gap between this rank's DDP gradient (its half of a batch of 8) and the
    1-process full-batch gradient of a torch.nn model swapped to the lab's layers. The
    DDP object dies on return, before the group is destroyed (see train._train)."""
    import copy

    import tritonlab

    torch.manual_seed(0)  # the same weights and batch on both ranks
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    assert len(tritonlab.swap(net, backend="reference").changed) == 3
    full, x = copy.deepcopy(net), torch.randn(8, 6)
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    ddp(x[4 * rank:4 * rank + 4]).pow(2).mean().backward()
    full(x).pow(2).mean().backward()
    return max((p.grad - q.grad).abs().max().item() for p, q in zip(net.parameters(), full.parameters()))


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
