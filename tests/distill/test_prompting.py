"""Stage 2's mixed prompts: the mix grammar, the drawn sequences, and gradients through the last answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdsam.distill.prompting import DEFAULT_MIX, KINDS, PromptMix, parse_mix, prompted_logits
from kdsam.errors import KdsamError

from .tiny import make_tiny_teacher


def test_mix_grammar_and_draws():
    mix = parse_mix(DEFAULT_MIX, max_clicks=2)
    assert dict(mix.weights) == {"box": 0.5, "point": 0.25, "box+point": 0.25}
    rng = np.random.default_rng(0)
    target = np.zeros((256, 256), bool)
    target[100:120, 50:60] = True
    draws = [mix.draw(target, rng) for _ in range(4000)]
    share = {k: sum(KINDS[d.kind] == k for d in draws) / len(draws) for k in KINDS}
    assert share["box"] == pytest.approx(0.5, abs=0.03) and share["point"] == pytest.approx(0.25, abs=0.03)
    assert {d.clicks for d in draws} == {0, 1, 2}
    assert all(target[d.point[1], d.point[0]] for d in draws)  # first points lie on the object
    assert parse_mix("box").boxes_only and not mix.boxes_only


@pytest.mark.parametrize("text", ["boxes=1", "box=-1", "box=0", "point"])
def test_bad_mix_is_refused(text):
    with pytest.raises(KdsamError, match="--prompt-mix"):
        parse_mix(text)


@pytest.mark.parametrize("kind", ["box", "point", "box+point"])
def test_each_first_prompt_gives_logits_with_gradient_to_the_decoder(kind):
    model = make_tiny_teacher()
    model.mask_decoder.requires_grad_(True)
    target = torch.zeros(1, 256, 256)
    target[0, 64:192, 96:160] = 1
    box = torch.tensor([[48.0, 32.0, 80.0, 96.0]])  # the object in the 128 px prompt frame
    plan = PromptMix(((kind, 1.0),), max_clicks=2).draw(target[0].numpy() > 0.5, np.random.default_rng(1))
    logits = prompted_logits(model, torch.randn(1, 256, 64, 64), target[None], box, [plan])
    assert logits.shape == (1, 1, 256, 256)
    logits.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.mask_decoder.parameters())


@pytest.mark.parametrize("batched", [False, True], ids=["loop", "vmap"])
def test_a_batch_of_sequences_answers_as_each_object_alone(batched):
    """Objects advance together and decode in groups of alike prompts; each must get the logits and
    the gradient it would get alone."""
    model = make_tiny_teacher()
    model.mask_decoder.requires_grad_(True)
    rng = np.random.default_rng(0)
    targets = torch.zeros(6, 1, 256, 256)
    boxes = torch.zeros(6, 4)
    for i in range(6):
        y, x = 20 + 25 * i, 30 + 10 * i
        targets[i, 0, y : y + 60, x : x + 80] = 1
        boxes[i] = torch.tensor([x, y, x + 80, y + 60]) / 2  # low-res frame (256) -> prompt frame (128)
    plans = [parse_mix(DEFAULT_MIX).draw(t[0].numpy() > 0.5, rng) for t in targets]
    assert len({(p.kind, p.clicks) for p in plans}) > 2  # mixed kinds and clicks: several groups
    torch.manual_seed(0)
    embeddings = torch.randn(6, 256, 64, 64)

    def logits_and_gradient(indices: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.mask_decoder.zero_grad()
        logits = prompted_logits(model, embeddings[indices], targets[indices], boxes[indices],
                                 [plans[i] for i in indices], batched=batched)  # fmt: skip
        logits.square().mean().backward()
        params = model.mask_decoder.parameters()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad * len(indices) for p in params]
        return logits.detach(), grads

    together, grad_together = logits_and_gradient(list(range(6)))
    alone = [logits_and_gradient([i]) for i in range(6)]
    assert torch.allclose(together, torch.cat([logits for logits, _ in alone]), atol=1e-4)
    for k, g in enumerate(grad_together):
        assert torch.allclose(g, sum(grads[k] for _, grads in alone), rtol=1e-3, atol=1e-5)


def test_finetune_trains_on_the_mix_and_records_it(tmp_path, tiny_teacher, splits):
    from kdsam.distill.items import TrainingSet, index_dataset
    from kdsam.distill.process import TrainingProcess
    from kdsam.distill.stage1 import distill
    from kdsam.distill.stage2 import finetune
    from kdsam.models.loading import load_saved_student

    from .tiny import FAST, STUDENT

    run = tmp_path / "run"
    distill(
        tiny_teacher, splits["train"], splits["val"], run, cache_dir=tmp_path, cfg=FAST, perceptual="none", **STUDENT
    )
    mix = parse_mix("point=1", max_clicks=1)
    finetune(run, splits["train"], splits["val"], cfg=FAST, cache_dir=tmp_path, prompt_mix=mix)
    config = json.loads((run / "config.json").read_text())["finetune"]
    assert config["prompts"]["first_prompt"] == {"point": 1.0} and config["prompts"]["max_corrective_clicks"] == 1
    assert config["prompts"]["validation"].startswith("boxes")
    # every training item carries its drawn plan, the same on every load (seeded by epoch and item)
    student = load_saved_student(run)
    assert student.card["prompts"] == ["box", "point"]  # so a server and an export can say it answers clicks
    index = index_dataset(splits["train"], TrainingProcess(torch.device("cpu")))
    items = TrainingSet(splits["train"], index, student, seed=0, prompt_mix=mix)
    first, again = items[0], items[0]
    assert KINDS[int(first["prompt_kind"])] == "point" and int(first["prompt_clicks"]) in (0, 1)
    assert torch.equal(first["prompt_point"], again["prompt_point"])
    # a resumed fine-tuning must keep its prompts
    with pytest.raises(KdsamError, match="--prompts"):
        finetune(run, splits["train"], splits["val"], cfg=FAST, cache_dir=tmp_path, resume=True)
