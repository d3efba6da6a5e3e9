import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import CacheDataset, MetaTensor
from monai.transforms import Compose, RandGaussianNoised

from medunlearn_monai.identities import ITEM_IDENTITY_KEY, with_item_identities
from medunlearn_monai.strategies import NoisyLabel
from medunlearn_monai.strategies.noisy_label import FIXED_NOISE_KEY, FixedNoiseLabeld
from medunlearn_monai.workflows import config_value

from .conftest import SEG_CLASSES, segmentation_items

FORGET = torch.tensor([1, 0, 1, 1])


def true_maps(dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Four label maps of 16^3 voxels, classes uniform over SEG_CLASSES."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, SEG_CLASSES, (4, 1, 16, 16, 16), generator=generator).to(dtype)


def noisy_batch(handler: NoisyLabel, labels: torch.Tensor, forget: torch.Tensor = FORGET, **extra) -> torch.Tensor:
    """The labels ``handler`` leaves in one batch."""
    engine = Engine(lambda engine, batch: None)
    engine.state.batch = {"label": labels, "forget": forget, **extra}
    handler(engine)
    return engine.state.batch["label"]


def run_and_record(trainer) -> list[dict]:
    """Run the trainer, recording each batch as the strategies left it (handlers attached later run later)."""
    seen = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda engine: seen.append(dict(engine.state.batch)))
    trainer.run()
    return seen


@pytest.mark.parametrize("noise_fraction", [0.25, 1.0])
def test_forget_maps_get_noise_at_the_expected_rate_and_retain_maps_and_the_dataset_stay(
    make_seg_trainer, noise_fraction
):
    items = segmentation_items(size=8)
    originals = [item["label"].clone() for item in items]
    noisy_label = NoisyLabel(SEG_CLASSES, noise_fraction=noise_fraction, seed=1)
    seen = run_and_record(make_seg_trainer(items=items, handlers=[noisy_label], epochs=3))
    changed = total = 0
    for iteration, batch in enumerate(seen):
        start = (iteration % 4) * 8  # 32 items in order, batches of 8
        true_maps = torch.stack(originals[start : start + 8])
        forget = batch["forget"].bool()
        labels = batch["label"]
        assert torch.equal(labels[~forget], true_maps[~forget])
        assert ((labels >= 0) & (labels < SEG_CLASSES)).all()
        changed += int((labels[forget] != true_maps[forget]).sum())
        total += true_maps[forget].numel()
    expected = noise_fraction * (1 - 1 / SEG_CLASSES)
    assert total == 3 * 8 * 8**3  # 8 forget items of 8^3 voxels, 3 epochs
    assert abs(changed / total - expected) < 0.03  # ~7 standard deviations at this sample size
    for item, original in zip(items, originals, strict=True):
        assert torch.equal(item["label"], original)


def test_batch_is_replaced_not_modified_in_place():
    items = segmentation_items(count=4, forget_every=2)
    labels = torch.stack([item["label"] for item in items])
    batch = {
        "image": torch.stack([item["image"] for item in items]),
        "label": labels,
        "forget": torch.tensor([1, 0, 1, 0]),
    }
    before = labels.clone()
    engine = Engine(lambda engine, batch: None)
    engine.state.batch = batch
    NoisyLabel(SEG_CLASSES)(engine)
    assert torch.equal(batch["label"], before)
    assert engine.state.batch is not batch and engine.state.batch["label"] is not labels
    assert not torch.equal(engine.state.batch["label"][0], before[0])


def test_noise_is_fresh_each_epoch_and_reproducible_from_the_seed(make_seg_trainer):
    def forget_maps(seed: int) -> list[torch.Tensor]:
        trainer = make_seg_trainer(handlers=[NoisyLabel(SEG_CLASSES, seed=seed)], epochs=2, batch_size=32)
        return [batch["label"][batch["forget"].bool()] for batch in run_and_record(trainer)]

    first, again, other = forget_maps(seed=3), forget_maps(seed=3), forget_maps(seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])  # the same items, seen in two epochs, get different noise
    assert not torch.equal(first[0], other[0])


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="at least 2"):
        NoisyLabel(1)
    with pytest.raises(TypeError, match="integer"):
        NoisyLabel(2.5)
    for fraction in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"\(0, 1\], got {fraction}"):
            NoisyLabel(SEG_CLASSES, noise_fraction=fraction)
    with pytest.raises(ValueError, match="noise must be one of fresh, fixed, flip, background; got 'uniform'"):
        NoisyLabel(SEG_CLASSES, noise="uniform")
    with pytest.raises(ValueError, match=r"\(0, 1\], got 0.0"):
        FixedNoiseLabeld("label", SEG_CLASSES, noise_fraction=0.0)


def test_fresh_is_the_default_and_draws_what_it_always_drew():
    labels, forget = true_maps(), FORGET.bool()
    generator = torch.Generator().manual_seed(5)
    draws = torch.randint(0, SEG_CLASSES, labels[forget].shape, generator=generator)
    replace = torch.rand(labels[forget].shape, generator=generator) < 0.5
    expected = labels.clone()
    expected[forget] = torch.where(replace, draws, labels[forget])
    for handler in (NoisyLabel(SEG_CLASSES, 0.5, seed=5), NoisyLabel(SEG_CLASSES, 0.5, seed=5, noise="fresh")):
        assert torch.equal(noisy_batch(handler, labels), expected)


def test_flip_changes_every_replaced_voxel_to_one_of_the_other_classes():
    labels, forget = true_maps(), FORGET.bool()
    every = noisy_batch(NoisyLabel(SEG_CLASSES, noise="flip", seed=1), labels)
    assert (every[forget] != labels[forget]).all()
    assert torch.equal(every[~forget], labels[~forget])
    shift = (every[forget] - labels[forget]) % SEG_CLASSES  # 1 or 2: the two other classes, about equally often
    assert abs((shift == 1).float().mean().item() - 0.5) < 0.02
    part = noisy_batch(NoisyLabel(SEG_CLASSES, noise_fraction=0.25, noise="flip", seed=1), labels)
    assert abs((part[forget] != labels[forget]).float().mean().item() - 0.25) < 0.02  # fresh would change 1/6
    assert torch.equal(part[~forget], labels[~forget])


def test_background_only_turns_foreground_voxels_into_background():
    labels, forget = true_maps(torch.uint8), FORGET.bool()
    every = noisy_batch(NoisyLabel(SEG_CLASSES, noise="background", seed=1), labels)
    assert (every[forget] == 0).all() and every.dtype == torch.uint8
    assert torch.equal(every[~forget], labels[~forget])
    part = noisy_batch(NoisyLabel(SEG_CLASSES, noise_fraction=0.5, noise="background", seed=1), labels)
    changed = part[forget] != labels[forget]
    assert (part[forget][changed] == 0).all()
    assert not changed[labels[forget] == 0].any()
    assert abs(changed[labels[forget] > 0].float().mean().item() - 0.5) < 0.02


def fixed_item(identity: str, forget: int = 1) -> dict:
    labels = MetaTensor(true_maps(torch.uint8)[0], affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    return {"label": labels, "forget": forget, ITEM_IDENTITY_KEY: identity}


def test_fixed_noise_is_one_map_per_forget_item_the_same_every_epoch_and_after_a_resume():
    first_item, other_item, retain_item = fixed_item("a" * 64), fixed_item("b" * 64), fixed_item("c" * 64, forget=0)
    true_map = first_item["label"].clone()
    transform = FixedNoiseLabeld("label", SEG_CLASSES, noise_fraction=0.5, seed=7)
    first = transform(first_item)
    assert torch.equal(transform(first_item)["label"], first["label"])  # the next epoch
    torch.manual_seed(1)  # a resumed run: a fresh process, a new transform and no saved state
    assert torch.equal(FixedNoiseLabeld("label", SEG_CLASSES, 0.5, seed=7)(first_item)["label"], first["label"])
    assert not torch.equal(FixedNoiseLabeld("label", SEG_CLASSES, 0.5, seed=8)(first_item)["label"], first["label"])
    assert not torch.equal(transform(other_item)["label"], first["label"])
    assert first[FIXED_NOISE_KEY] == 1 and torch.equal(first_item["label"], true_map)  # the input stays
    assert abs((first["label"] != true_map).float().mean().item() - 0.5 * (1 - 1 / SEG_CLASSES)) < 0.03
    assert isinstance(first["label"], MetaTensor) and first["label"].dtype == torch.uint8
    assert torch.equal(first["label"].affine, true_map.affine)
    retained = transform(retain_item)
    assert retained["label"] is retain_item["label"] and retained[FIXED_NOISE_KEY] == 0
    with pytest.raises(KeyError, match="item_sha256"):
        transform({"label": true_map, "forget": 1})


def test_fixed_maps_are_cached_by_the_dataset_and_left_alone_by_the_handler(make_seg_trainer):
    items = [{**item, "subject": str(index)} for index, item in enumerate(segmentation_items(count=8, forget_every=2))]

    def run() -> list[dict]:
        handler = NoisyLabel(SEG_CLASSES, noise="fixed", seed=2)
        transforms = Compose([handler.label_transform(), RandGaussianNoised("image", prob=1.0)])
        dataset = CacheDataset(items, with_item_identities(transforms, b"salt", "."), progress=False)
        return run_and_record(make_seg_trainer(items=dataset, handlers=[handler], epochs=2))

    first, second = run()
    forget = first["forget"].bool()
    truth = torch.stack([item["label"] for item in items])
    assert torch.equal(first["label"][forget], second["label"][forget])  # the same map in both epochs
    assert torch.equal(first["label"][~forget], truth[~forget])
    assert (first["label"][forget] != truth[forget]).any()
    assert not torch.equal(first["label"][0], first["label"][2])  # each subject has its own map
    assert not torch.equal(first["image"], second["image"])  # the random transform after it still runs each epoch
    assert torch.equal(run()[0]["label"], first["label"])  # a resumed run draws the same maps


def test_fixed_noise_in_the_wrong_place_is_refused():
    with pytest.raises(ValueError, match="only noise='fixed' draws its maps in the data pipeline, not noise='flip'"):
        NoisyLabel(SEG_CLASSES, noise="flip").label_transform()
    labels = true_maps()
    with pytest.raises(ValueError, match="without their fixed noise map"):
        noisy_batch(NoisyLabel(SEG_CLASSES, noise="fixed"), labels)
    with pytest.raises(ValueError, match="without their fixed noise map"):
        noisy_batch(NoisyLabel(SEG_CLASSES, noise="fixed"), labels, **{FIXED_NOISE_KEY: torch.tensor([1, 0, 0, 1])})
    assert noisy_batch(NoisyLabel(SEG_CLASSES, noise="fixed"), labels, **{FIXED_NOISE_KEY: FORGET}) is labels
    with pytest.raises(ValueError, match="already carry a fixed noise map"):
        noisy_batch(NoisyLabel(SEG_CLASSES), labels, **{FIXED_NOISE_KEY: FORGET})


@pytest.mark.parametrize(("strategy", "fraction"), [("noisy_label", 0.5), ("learn_noise", 1.0)])
def test_the_bundle_draws_fixed_maps_on_the_whole_volume_before_the_crop(strategy, fraction):
    def transforms(**overrides) -> list:
        return config_value("mrbrains18_med3d_segmentation", "train#transforms", "unlearn", strategy, **overrides)

    names = [type(transform).__name__ for transform in transforms(noise="fixed")]
    fixed = transforms(noise="fixed", seed=3)[names.index("FixedNoiseLabeld")]
    # after the foreground indices (patches are sampled from the true anatomy, as for the other modes), before the crop
    assert names.index("FgBgToIndicesd") + 1 == names.index("FixedNoiseLabeld") < names.index("RandCropByPosNegLabeld")
    assert (fixed.noise_fraction, fixed.seed, fixed.keys) == (fraction, 3, ("label",))
    assert "FixedNoiseLabeld" not in [type(transform).__name__ for transform in transforms()]
