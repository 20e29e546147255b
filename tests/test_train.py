"""tritonlab.train and the `tritonlab train` / `tritonlab sample` commands on a small slice
of the genome: loss goes down, resume continues exactly, sampling, checkpoints, bad input."""
import os
import warnings

import pytest
import torch

from tritonlab.cli import main
from tritonlab.train import (TrainConfig, load_checkpoint, load_model, resume_config, sample, save_checkpoint,
                             train)


def cfg(dna, out, model="lstm", sizes=None, **kw):
    tiny = {"embed": 4, "layers": 1, "channels" if model == "cnn" else "hidden": 16, **(sizes or {})}
    base = dict(data=str(dna), steps=6, batch=8, seq=32, out=str(out), progress=False,
                backend="reference", model=model, model_config=tiny)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("model", ["lstm", "gru", "cnn"])
def test_training_lowers_the_loss(dna, tmp_path, model):
    result = train(cfg(dna, tmp_path, model=model, steps=40, lr=1e-2))
    first, last = sum(result["losses"][:5]) / 5, sum(result["losses"][-5:]) / 5
    assert last < first - 0.02
    assert len(result["losses"]) == 40
    step, bpb = result["val"][-1]
    assert step == 40 and 1.0 < bpb < 2.5
    assert 1.8 < result["order0"] < 2.0  # the AT-rich chloroplast genome
    assert torch.load(result["checkpoint"], weights_only=True)["order0"] == result["order0"]  # viz draws it


@pytest.mark.parametrize("model", ["lstm", "cnn"])
def test_resume_continues_exactly(dna, tmp_path, model):
    extra = {"dropout": 0.2} if model == "cnn" else {"layers": 2, "dropout": 0.2}  # dropout draws RNG
    straight = train(cfg(dna, tmp_path / "a", model=model, sizes=extra))
    train(cfg(dna, tmp_path / "b", model=model, steps=3, sizes=extra))
    resumed = train(cfg(dna, tmp_path / "b", model=model, resume=True))  # sizes from the checkpoint
    assert resumed["losses"] == straight["losses"]
    assert resumed["val"][-1] == straight["val"][-1]
    a, b = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (tmp_path / "a", tmp_path / "b"))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@pytest.mark.parametrize("model", ["lstm", "gru", "cnn", "transformer"])
def test_amp_trains_in_bfloat16_with_float32_weights(dna, tmp_path, model, monkeypatch):
    """--amp: the model's logits come out in bfloat16 in training and validation forwards
    (autocast reached every layer), the weights stay float32, the losses and validation
    follow the float32 run within bfloat16 rounding, and the checkpoint records amp."""
    import tritonlab.train as train_module

    dtypes = {True: [], False: []}  # logits' dtypes of the training and the validation forwards
    build = train_module.build_model

    def spy(*args, **kwargs):
        net = build(*args, **kwargs)
        net.register_forward_hook(lambda mod, inputs, out: dtypes[mod.training].append(out.dtype))
        return net

    monkeypatch.setattr(train_module, "build_model", spy)
    sizes = {"heads": 2} if model == "transformer" else None
    plain = train(cfg(dna, tmp_path / "fp32", model=model, sizes=sizes))
    assert set(dtypes[True]) == set(dtypes[False]) == {torch.float32}
    dtypes[True].clear(), dtypes[False].clear()
    mixed = train(cfg(dna, tmp_path / "amp", model=model, sizes=sizes, amp=True))
    assert set(dtypes[True]) == set(dtypes[False]) == {torch.bfloat16}
    ckpt = torch.load(mixed["checkpoint"], weights_only=True)
    assert {w.dtype for w in ckpt["model"].values() if w.is_floating_point()} == {torch.float32}
    assert ckpt["train_config"]["amp"] is True
    torch.testing.assert_close(torch.tensor(mixed["losses"]), torch.tensor(plain["losses"]), atol=3e-2, rtol=0)
    torch.testing.assert_close(torch.tensor(mixed["val"]), torch.tensor(plain["val"]), atol=3e-2, rtol=0)


def test_amp_refuses_a_gpu_without_native_bfloat16(monkeypatch):
    import tritonlab.train as train_module

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    with pytest.raises(ValueError, match=r"bfloat16, which Tesla V100 \(compute capability 7.0\)"):
        train_module._check_amp(True, cuda)
    train_module._check_amp(False, cuda)  # without amp it trains
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    train_module._check_amp(True, cuda)


def test_resuming_with_a_different_amp_setting_warns(dna, tmp_path):
    """amp is how to compute, so a resume may change it, but the run then differs from
    one uninterrupted run: the warning says so."""
    train(cfg(dna, tmp_path, steps=2, amp=True))
    with pytest.warns(UserWarning, match="amp=True.*resumed with amp=False"):
        train(cfg(dna, tmp_path, steps=3, resume=True))


def test_cli_resume_takes_the_checkpoints_settings(dna, tmp_path, capsys):
    """`train --resume` names only what changes: batch, seq, lr, data and backend come
    from the checkpoint, so two halves give the losses of one run, without a warning."""
    args = ["train", "--data", str(dna), "--batch", "4", "--seq", "16", "--hidden", "8", "--lr", "0.01",
            "--backend", "reference", "--eval-every", "2"]
    assert main([*args, "--steps", "4", "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--steps", "2", "--out", str(tmp_path / "b")]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["train", "--resume", "--steps", "4", "--out", str(tmp_path / "b")]) == 0
    a, b = (load_checkpoint(tmp_path / p / "checkpoint.pt") for p in "ab")
    assert b["losses"] == a["losses"] and b["val"] == a["val"]
    assert b["train_config"] == {**a["train_config"], "out": str(tmp_path / "b"), "resume": True}

    assert main(["train", "--resume", "--steps", "5", "--hidden", "16", "--out", str(tmp_path / "b")]) == 2
    assert "holds a model with hidden=8" in capsys.readouterr().err  # sizes are the checkpoint's


def test_a_new_run_does_not_replace_a_checkpoint_unless_asked(dna, tmp_path, capsys):
    train(cfg(dna, tmp_path, steps=3))
    with pytest.raises(FileExistsError, match="holds a run already: resume it"):
        train(cfg(dna, tmp_path, steps=2))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    args = ["train", "--data", str(dna), "--steps", "2", "--batch", "4", "--seq", "16", "--hidden", "8",
            "--out", str(tmp_path)]
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert "overwrite" not in load_checkpoint(tmp_path / "checkpoint.pt")["train_config"]  # not a setting to resume


def test_resume_from_another_folder_finds_the_data_or_says_where_it_was(dna, tmp_path, monkeypatch, capsys):
    """The data path is recorded absolute; a moved file is named with the way out."""
    data = tmp_path / "d" / "genome.fasta"
    data.parent.mkdir()
    data.write_bytes(dna.read_bytes())
    monkeypatch.chdir(data.parent)
    train(cfg("genome.fasta", tmp_path / "run", steps=2))
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["train_config"]["data"] == str(data)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same file: no "changed data" warning
        train(resume_config(tmp_path / "run", steps=3, data="d/genome.fasta"))
    data.rename(tmp_path / "moved.fasta")
    with pytest.raises(FileNotFoundError, match="genome.fasta, the file .* was trained on, is not there"):
        resume_config(tmp_path / "run", steps=4)
    assert main(["train", "--resume", "--steps", "4", "--out", str(tmp_path / "run"),
                 "--data", str(tmp_path / "moved.fasta")]) == 0


def test_resume_refuses_a_new_seed_and_says_when_there_is_nothing_to_train(dna, tmp_path, capsys):
    train(cfg(dna, tmp_path, steps=3))
    with pytest.raises(ValueError, match="trained with seed=0, and a resume carries on its random state"):
        train(cfg(dna, tmp_path, steps=4, seed=5, resume=True))
    with pytest.warns(UserWarning, match="at step 3 already, at or past steps=2: nothing to train"):
        result = train(cfg(dna, tmp_path, steps=2, resume=True))
    assert len(result["losses"]) == 3
    assert main(["train", "--resume", "--steps", "2", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("tritonlab train: warning: ") and "nothing to train" in err and ".py:" not in err


def test_cli_resume_says_which_settings_do_not_fit(dna, tmp_path, capsys, monkeypatch):
    train(cfg(dna, tmp_path / "g", model="gru", steps=1))
    assert main(["train", "--resume", "--out", str(tmp_path / "g"), "--channels", "8"]) == 2
    assert "channels does not apply to the 'gru' model" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # out/train-lstm does not exist here
    assert main(["train", "--resume"]) == 2
    assert "(pass --model KIND or --out DIR)" in capsys.readouterr().err


def test_cli_interrupt_says_where_the_run_stands(dna, tmp_path, capsys, monkeypatch):
    import tritonlab.train as train_module
    train(cfg(dna, tmp_path, steps=2))

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", interrupted)
    assert main(["train", "--resume", "--steps", "9", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == (f"tritonlab train: interrupted; {tmp_path / 'checkpoint.pt'} holds "
                                               f"step 2: continue with --resume")


def test_resume_with_changed_settings_applies_them_and_warns(dna, tmp_path):
    """A resume may change batch or lr (say, to fit memory or to anneal by hand): the new
    values are used and recorded, and the warning says the run is no longer one run."""
    train(cfg(dna, tmp_path, steps=2))
    with pytest.warns(UserWarning, match=r"batch=8 and is resumed with batch=4; lr=0.003 and is resumed with lr=0.001"):
        train(cfg(dna, tmp_path, steps=3, batch=4, lr=1e-3, resume=True))
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["train_config"]["batch"] == 4 and ckpt["train_config"]["lr"] == 1e-3
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [1e-3]
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        resume_config(tmp_path / "empty")


def test_checkpoint_contents(dna, tmp_path):
    train(cfg(dna, tmp_path, steps=4, eval_every=2))
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt", expect_kind="lstm")
    assert ckpt["step"] == 4 and len(ckpt["losses"]) == 4
    assert [s for s, _ in ckpt["val"]] == [2, 4]
    assert ckpt["vocab"] == list("ACGT")
    assert ckpt["config"] == {"vocab_size": 4, "embed": 4, "hidden": 16, "layers": 1, "dropout": 0.2}
    assert {"torch", "batches"} <= set(ckpt["rng"]) and ckpt["optimizer"]["state"]
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind


def test_crash_mid_write_keeps_the_previous_checkpoint(dna, tmp_path, monkeypatch):
    train(cfg(dna, tmp_path, steps=2))
    before = (tmp_path / "checkpoint.pt").read_bytes()
    model, vocab, _ = load_model(tmp_path / "checkpoint.pt")

    def crash(obj, f, *a, **k):
        open(f, "wb").write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "checkpoint.pt", model, vocab, opt, [1.0], [], torch.Generator(),
                        cfg(dna, tmp_path))
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


@pytest.mark.parametrize("model", ["gru", "cnn"])
def test_sample_uses_the_vocab_and_has_the_length(dna, tmp_path, model):
    train(cfg(dna, tmp_path, model=model, steps=3))
    net, vocab, _ = load_model(tmp_path / "checkpoint.pt")
    text = sample(net, vocab, "ACGT", 50, seed=1)
    assert len(text) == 50 and set(text) <= set("ACGT")
    assert sample(net, vocab, "ACGT", 50, seed=1) == text  # a seed reproduces it
    assert sample(net, vocab, "A", 0) == ""


def test_cli_train_resume_and_sample(dna, tmp_path, capsys):
    args = ["train", "--data", str(dna), "--steps", "2", "--batch", "4", "--seq", "16", "--hidden", "8",
            "--out", str(tmp_path), "--backend", "reference"]
    assert main(args) == 0
    assert "validation" in capsys.readouterr().out
    assert main([*args[:4], "4", *args[5:], "--resume"]) == 0
    assert "step 4: validation" in capsys.readouterr().out
    assert main(["sample", str(tmp_path / "checkpoint.pt"), "--prime", "GATTACA", "--length", "30",
                 "--seed", "0"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("GATTACA") and len(line) == 37 and set(line) <= set("ACGT")
    assert main(["sample", str(tmp_path / "checkpoint.pt"), "--prime", "gattaca", "--length", "30",
                 "--seed", "0"]) == 0  # DNA is read in any case
    assert capsys.readouterr().out.strip() == line


@pytest.mark.parametrize("command", ["train", "sample", "viz"])
def test_cli_refuses_a_device_or_backend_it_cannot_run_in_one_line(dna, tmp_path, capsys, monkeypatch, command):
    args = ["--data", str(dna), "--out", str(tmp_path)] if command == "train" else [str(tmp_path / "c.pt")]
    assert main([command, *args, "--device", "cuda:99"]) == 2
    assert "--device cuda:99 asked for, but torch sees" in capsys.readouterr().err
    assert main([command, *args, "--device", "gpu"]) == 2
    assert "expected cpu, cuda or cuda:N" in capsys.readouterr().err
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert main([command, *args, "--backend", "triton"]) == 2
    err = capsys.readouterr().err
    assert "set TRITON_INTERPRET=1" in err and "Traceback" not in err
    assert not (tmp_path / "checkpoint.pt").exists()


def test_bad_inputs(dna, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="nope.fasta"):
        train(cfg(tmp_path / "nope.fasta", tmp_path))
    assert main(["train", "--data", str(tmp_path / "nope.fasta"), "--out", str(tmp_path)]) == 2
    assert "nope.fasta" in capsys.readouterr().err

    letters = tmp_path / "n.fasta"
    letters.write_text(">x\nACGTNACGT\n")
    with pytest.raises(ValueError, match="line 2, column 5: 'N' is not a DNA base"):
        train(cfg(letters, tmp_path))

    train(cfg(dna, tmp_path / "lstm", steps=1))
    with pytest.raises(ValueError, match="holds a 'lstm' model, but a 'gru' model was asked for"):
        train(cfg(dna, tmp_path / "lstm", model="gru", resume=True))
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        train(cfg(dna, tmp_path / "empty", resume=True))

    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable tritonlab checkpoint") as err:
        load_model(junk)
    assert "weights_only" not in str(err.value)  # torch's advice to unpickle untrusted files is not passed on

    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not a tritonlab char-model checkpoint"):
        load_model(other)
    assert main(["sample", str(other)]) == 2
    assert "not a tritonlab" in capsys.readouterr().err

    net, vocab, _ = load_model(tmp_path / "lstm" / "checkpoint.pt")
    with pytest.raises(ValueError, match="'N' at index 2 is not in the vocabulary"):
        sample(net, vocab, "ACN", 5)
    with pytest.raises(ValueError, match="prime must hold at least one character"):
        sample(net, vocab, "", 5)
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        train(cfg(dna, tmp_path, steps=0))
    with pytest.raises(ValueError, match="model must be one of"):
        train(cfg(dna, tmp_path, model="mlp"))
    with pytest.raises(ValueError, match="amp must be True or False, got 'bfloat16'"):
        train(cfg(dna, tmp_path, amp="bfloat16"))


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["lstm", "gru", "cnn", "transformer"])
def test_gpu_triton_training_tracks_the_reference_tier(tmp_path, model, monkeypatch):
    """The default sizes on the GPU: the triton tier's losses follow the reference tier's
    and both go down. TF32 off for the triton convs too (they follow cuDNN's flag, on by
    default), as for the reference tier's matmuls, so 30 steps of rounding do not part them."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    sizes = {"cnn": {"channels": 64}, "transformer": {"embed": 128, "heads": 2, "hidden": 256, "layers": 2}
             }.get(model, {"hidden": 64}) | {"dropout": 0.0}  # the transformer's head dim: 64
    runs = [train(TrainConfig(model=model, steps=30, batch=64, seq=128, device="cuda", backend=b,
                              out=str(tmp_path / b), progress=False, model_config=sizes))
            for b in ("reference", "triton")]
    ref, tri = (torch.tensor(r["losses"]) for r in runs)
    torch.testing.assert_close(tri, ref, rtol=0, atol=5e-2)
    assert tri[-5:].mean() < tri[:5].mean()
    net, vocab, _ = load_model(runs[1]["checkpoint"], device="cuda", backend="triton")
    assert len(sample(net, vocab, "ACGT", 100, seed=0)) == 100
