"""Data-parallel stage 1 (DistributedDataParallel) on the CPU with 2 gloo processes (forked, so
each test takes seconds).

The student here is a ConvNeXt (LayerNorm, no BatchNorm): plain BatchNorm normalises with per-rank batch
statistics, so 2 ranks x batch 2 and 1 rank x batch 4 would differ by design, not by a bug; `--sync-bn`
(SyncBatchNorm) removes that difference, but torch runs it on CUDA only.
"""

from __future__ import annotations

import shutil
import socket
import traceback
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from kdsam.data import open_dataset
from kdsam.distill.process import TrainingProcess, close_process, init_process
from kdsam.distill.stage1 import distill
from kdsam.distill.stage2 import finetune
from kdsam.errors import KdsamError
from tests.distill.tiny import FAST, make_tiny_teacher

STUDENT = {"backbone": "convnext_atto", "input_size": 64, "perceptual": "none"}
CFG = replace(FAST, batch_size=2, epochs=2)  # per rank
STEPS = 3  # per epoch and rank: 10 training images, 5 per rank, batches of 2
TOLERANCE = 1e-5  # max |difference| of any parameter: float summation order is all that differs


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _splits(root: Path):
    return [open_dataset(f"folder:{root}", s, max_side=128) for s in ("train", "val")]


def _rank(rank: int, world: int, port: int, root: Path, run: Path, cache: Path, mode: str, resume: bool) -> None:
    """One rank of a distill run; its outcome (weights, or the error) goes to run/rank<N>.pt."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    from torch.nn.parallel import DistributedDataParallel as DDP

    real = DDP.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):  # one call per training step
        calls["n"] += 1
        if mode == "interrupt" and calls["n"] == STEPS + 2:  # every rank, second step of epoch 2
            raise KeyboardInterrupt
        if mode == "die" and rank == 1 and calls["n"] == 2:
            os._exit(1)  # a rank killed outright (OOM, node lost)
        return real(self, *args, **kwargs)

    DDP.forward = forward
    out = run.parent / f"{run.name}-rank{rank}.pt"
    try:
        process = init_process("cpu", timeout_s=30)
        if mode == "finetune":
            student = finetune(run, *_splits(root), cfg=CFG, cache_dir=cache, process=process)
        else:  # the cut run checkpoints after every step, so it stops mid-epoch with a checkpoint
            cfg = {"interrupt": replace(CFG, checkpoint_minutes=1e-9),
                   "accumulate": replace(CFG, batch_size=3, accumulate=2)}.get(mode, CFG)  # fmt: skip
            student = distill(make_tiny_teacher(), *_splits(root), run, cache_dir=cache, cfg=cfg, resume=resume,
                              process=process, **STUDENT)  # fmt: skip
        torch.save({"state": student.state_dict()}, out)
    except KeyboardInterrupt:
        torch.save({"error": "interrupted"}, out)
    except Exception as err:
        torch.save({"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()}, out)
    finally:
        close_process()


def _launch(world: int, root: Path, run: Path, cache: Path, mode: str = "", resume: bool = False) -> list[dict]:
    """Fork `world` ranks and wait (each has a 30 s collective timeout, so none can hang the test)."""
    ctx = mp.get_context("fork")
    port = _port()
    procs = [ctx.Process(target=_rank, args=(r, world, port, root, run, cache, mode, resume)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    files = [run.parent / f"{run.name}-rank{r}.pt" for r in range(world)]
    return [torch.load(f, weights_only=False) if f.is_file() else {"error": "no result"} for f in files]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synthetic_root):
    """The same training three ways: 1 rank x batch 4, 2 ranks x batch 2, and 2 ranks cut mid-run."""
    tmp = tmp_path_factory.mktemp("ddp")
    assert len(_splits(synthetic_root)[0]) == 2 * 5
    cache = tmp / "cache"
    torch.manual_seed(0)
    single = distill(make_tiny_teacher(), *_splits(synthetic_root), tmp / "one", cache_dir=cache,
                     cfg=replace(CFG, batch_size=4), process=TrainingProcess(torch.device("cpu")),
                     **STUDENT)  # fmt: skip
    two = _launch(2, synthetic_root, tmp / "two", cache)
    return {"tmp": tmp, "cache": cache, "single": single.state_dict(), "two": two}


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_ranks_take_the_steps_of_one_with_the_global_batch(runs, tmp_path):
    two = runs["two"]
    assert all("state" in r for r in two), two
    assert _max_diff(two[0]["state"], two[1]["state"]) == 0  # ranks hold identical weights
    assert _max_diff(two[0]["state"], runs["single"]) < TOLERANCE
    import json

    config = json.loads((runs["tmp"] / "two" / "config.json").read_text())["distill"]
    assert (config["world_size"], config["batch_size_per_rank"], config["global_batch_size"]) == (2, 2, 4)


def test_two_rank_run_cut_mid_epoch_resumes_with_two_or_one_rank(runs, synthetic_root):
    tmp = runs["tmp"]
    cut = _launch(2, synthetic_root, tmp / "cut", runs["cache"], mode="interrupt")
    assert all(r.get("error") == "interrupted" for r in cut)
    state = torch.load(tmp / "cut" / "checkpoint-distill.pt", weights_only=True)["state"]
    assert (state["epoch"], state["partial"]["position"]) == (1, 4)  # one global step of 2 x 2 into epoch 2
    shutil.copytree(tmp / "cut", tmp / "cut1")
    resumed = _launch(2, synthetic_root, tmp / "cut", runs["cache"], resume=True)
    assert _max_diff(resumed[0]["state"], runs["two"][0]["state"]) < TOLERANCE
    torch.manual_seed(0)
    one = distill(make_tiny_teacher(), *_splits(synthetic_root), tmp / "cut1", cache_dir=runs["cache"],
                  cfg=replace(CFG, batch_size=4), resume=True, **STUDENT)  # fmt: skip
    assert _max_diff(one.state_dict(), runs["two"][0]["state"]) < TOLERANCE  # world size changed, same steps


def test_a_dead_rank_stops_the_others_with_one_line(runs, synthetic_root):
    out = _launch(2, synthetic_root, runs["tmp"] / "dead", runs["cache"], mode="die")
    assert "another rank has stopped" in out[0]["error"], out[0]
    assert out[0]["error"].startswith(KdsamError.__name__)


def test_two_rank_finetune_with_clicks_takes_the_steps_of_one(runs, synthetic_root):
    """Stage 2 under DDP: the decoder runs once per prompt (boxes, points, corrective clicks with
    the previous logits fed back) within one step, and its IoU head gets no gradient."""
    tmp = runs["tmp"]
    shutil.copytree(tmp / "two", tmp / "two-ft")
    shutil.copytree(tmp / "two", tmp / "one-ft")
    two = _launch(2, synthetic_root, tmp / "two-ft", runs["cache"], mode="finetune")
    assert all("state" in r for r in two), two
    torch.manual_seed(0)
    one = finetune(tmp / "one-ft", *_splits(synthetic_root), cfg=replace(CFG, batch_size=4), cache_dir=runs["cache"])
    assert _max_diff(two[0]["state"], two[1]["state"]) == 0
    assert _max_diff(two[0]["state"], one.state_dict()) < TOLERANCE


def test_sync_bn_swaps_every_batchnorm_and_keeps_parameters_and_keys():
    """The conversion itself needs no GPU (only SyncBatchNorm's forward does)."""
    from kdsam.models.student import build_student

    encoder = build_student(make_tiny_teacher(), "resnet18", 64).image_encoder
    params, keys = list(encoder.parameters()), list(encoder.state_dict())
    assert TrainingProcess(torch.device("cpu")).sync_batchnorm(encoder) is encoder  # one process: nothing to sync
    synced = TrainingProcess(torch.device("cuda", 0), rank=0, world_size=2).sync_batchnorm(encoder)
    norms = [type(m) for m in synced.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and set(norms) == {torch.nn.SyncBatchNorm}
    assert all(a is b for a, b in zip(synced.parameters(), params, strict=True))  # the optimizer's tensors
    assert list(synced.state_dict()) == keys  # checkpoints and model.pt load either way


def test_sync_bn_on_cpu_ranks_is_refused_before_any_teacher_work(synthetic_root, tmp_path):
    teacher = make_tiny_teacher()
    teacher.image_encoder.forward = None  # the teacher must not run: its cache would be filled first
    with pytest.raises(KdsamError, match=r"--sync-bn: .*CUDA only"):
        distill(teacher, *_splits(synthetic_root), tmp_path / "run", cfg=replace(CFG, sync_bn=True),
                process=TrainingProcess(torch.device("cpu"), rank=0, world_size=2), **STUDENT)  # fmt: skip


def test_accumulated_forwards_take_the_steps_of_one_big_batch(runs, synthetic_root):
    """One step per epoch over all 10 images, three ways: 1 rank x batch 10; 1 rank x 3 x accumulate 4
    (forwards of 3, 3, 3 and 1 images); 2 ranks x 3 x accumulate 2 (3 and 2 images each; DDP
    all-reduces only in the last backward). Uneven forwards make the weighting matter: AdamW would
    hide a plain sum of equal forwards, whose direction is the same."""
    tmp = runs["tmp"]
    common = {"cache_dir": runs["cache"], **STUDENT}

    def one_rank(name: str, batch: int, accumulate: int) -> dict:
        torch.manual_seed(0)
        cfg = replace(CFG, batch_size=batch, accumulate=accumulate)
        return distill(make_tiny_teacher(), *_splits(synthetic_root), tmp / name, cfg=cfg, **common).state_dict()

    big = one_rank("batch10", 10, 1)
    assert _max_diff(one_rank("acc4", 3, 4), big) < TOLERANCE
    two = _launch(2, synthetic_root, tmp / "acc2", runs["cache"], mode="accumulate")
    assert all("state" in r for r in two), two
    assert _max_diff(two[0]["state"], big) < TOLERANCE
    import json

    config = json.loads((tmp / "acc2" / "config.json").read_text())["distill"]
    assert (config["batch_size_per_rank"], config["accumulate"], config["global_batch_size"]) == (3, 2, 12)
