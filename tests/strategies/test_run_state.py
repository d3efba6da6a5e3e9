"""Every strategy follows the run-state protocol, and a handler resumed from its saved state draws what an
uninterrupted one draws (the run checkpoints' promise)."""

from __future__ import annotations

import io

import pytest
import torch
from ignite.engine import Engine
from monai.data import CacheDataset, DataLoader
from monai.transforms import RandSpatialCropd

import medunlearn_monai.strategies as strategies
from medunlearn_monai.strategies import LearnOthers, NoisyLabel, RandomRelabel
from medunlearn_monai.strategies._state import NoRunState, has_run_state


@pytest.mark.parametrize("name", strategies.__all__)
def test_every_strategy_can_be_checkpointed(name):
    assert has_run_state(getattr(strategies, name))


def test_an_empty_state_refuses_a_saved_one():
    with pytest.raises(
        ValueError, match=r"GradientAscent keeps no run state, but the checkpoint holds \['generator'\]"
    ):
        strategies.GradientAscent().load_state_dict({"generator": torch.zeros(1)})
    assert isinstance(strategies.GradientAscent(), NoRunState)


def _round_trip(state: dict) -> dict:
    """``state`` as a run checkpoint stores and reloads it (weights-only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _draws(handler, batches: list[dict]) -> list[torch.Tensor]:
    """The labels ``handler`` leaves in each batch; the training between iterations draws from torch too."""
    engine = Engine(lambda engine, batch: None)
    labels = []
    for batch in batches:
        engine.state.batch = batch
        handler(engine)
        labels.append(engine.state.batch["label"].clone())
        torch.rand(3)
    return labels


def _resumes_like_uninterrupted(make_handler, batches: list[dict], stop: int) -> None:
    """Run ``make_handler()`` over all batches; run a second one to ``stop``, save it and torch's generator (as
    ``RandomStates`` does), and resume a third one from them: it must draw what the first one drew."""
    torch.manual_seed(0)
    uninterrupted = _draws(make_handler(), batches)
    torch.manual_seed(0)
    interrupted = make_handler()
    _draws(interrupted, batches[:stop])
    state, torch_state = _round_trip(interrupted.state_dict()), torch.get_rng_state()
    torch.manual_seed(1)  # a fresh process
    resumed = make_handler()
    torch.set_rng_state(torch_state)
    resumed.load_state_dict(state)
    after = _draws(resumed, batches[stop:])
    assert all(_same(a, b) for a, b in zip(after, uninterrupted[stop:], strict=True))
    assert not all(_same(a, b) for a, b in zip(after, uninterrupted[:stop], strict=False))  # draws do vary


def _same(first: torch.Tensor, second: torch.Tensor) -> bool:
    """Equal, unknown (NaN) labels included."""
    return torch.equal(torch.nan_to_num(first, nan=-1.0), torch.nan_to_num(second, nan=-1.0))


def _forget_batches(labels: torch.Tensor, count: int = 8) -> list[dict]:
    return [{"label": labels.clone(), "forget": torch.tensor([1, 0, 1, 1])} for _ in range(count)]


def test_random_relabel_resumes_its_draws():
    _resumes_like_uninterrupted(lambda: RandomRelabel(5, seed=3), _forget_batches(torch.tensor([0, 1, 2, 3])), 3)
    nan = float("nan")
    multilabel = torch.tensor([[1.0, nan, 0.0], [0.0, 1.0, 1.0], [nan, nan, 1.0], [1.0, 1.0, nan]])
    _resumes_like_uninterrupted(lambda: RandomRelabel(3, seed=3, multilabel=True), _forget_batches(multilabel), 3)


def test_noisy_label_resumes_its_draws():
    maps = torch.zeros(4, 1, 3, 3, 3, dtype=torch.long)
    _resumes_like_uninterrupted(lambda: NoisyLabel(3, noise_fraction=0.5, seed=3), _forget_batches(maps), 3)


def test_learn_others_resumes_mid_donor_pass_with_the_same_donors_in_the_same_crops():
    # 5 donors in shuffled batches of 2, cropped at random: 3 forget items per iteration end passes mid-batch.
    donors = [{"label": torch.arange(6**3).reshape(1, 6, 6, 6) + 1000 * index} for index in range(5)]

    def make_handler():
        crop = RandSpatialCropd(keys="label", roi_size=(4, 4, 4), random_size=False)
        return LearnOthers(DataLoader(CacheDataset(donors, crop, progress=False), batch_size=2, shuffle=True))

    maps = torch.zeros(4, 1, 4, 4, 4, dtype=torch.long)
    for stop in (1, 2, 4):
        _resumes_like_uninterrupted(make_handler, _forget_batches(maps), stop)
