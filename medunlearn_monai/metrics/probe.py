"""Linear probe on a network's frozen features: do they still hold what its head forgot?

After "Are We Truly Forgetting?" (arXiv 2503.06991): a logistic regression fitted on the features
of data the model may keep (retain and validation items) and scored on the forget items recovers
the forget accuracy of a model whose unlearning only moved its head.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

logger = logging.getLogger(__name__)
MAX_ITER = 1000
MAX_FIT_ITEMS = 20_000  # a full TissueMNIST retain set (~150k items) would take minutes to fit, not seconds

Split = tuple[np.ndarray, np.ndarray]  # features (items x dims) and labels


class LayerInputs:
    """Keeps what the layer named ``layer`` in ``network.named_modules()`` receives, at every forward pass.

    A shard ensemble (a network whose ``members`` each have the layer, see
    :class:`medunlearn_monai.sisa.ShardEnsemble`) is probed on its members' features side by side: one
    item's row is the concatenation of what every member's layer received.

    Raises:
        ValueError: when the network (or one of its members) has no such layer.
    """

    def __init__(self, network: torch.nn.Module, layer: str):
        members = getattr(network, "members", None)
        networks = list(members) if isinstance(members, torch.nn.ModuleList) else [network]
        self._batches: list[list[torch.Tensor]] = [[] for _ in networks]
        for index, member in enumerate(networks):
            try:
                module = member.get_submodule(layer)
            except AttributeError as error:
                raise ValueError(f"the network has no layer {layer!r} to probe.") from error
            module.register_forward_hook(self._keeper(index))

    def _keeper(self, index: int):
        def keep(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self._batches[index].append(inputs[0].detach().flatten(1).float().cpu())

        return keep

    def clear(self) -> None:
        """Forget the inputs kept so far."""
        self._batches = [[] for _ in self._batches]

    def take(self) -> np.ndarray:
        """The inputs kept since the last clear or take, one row per item; clears them."""
        if not self._batches[0]:
            self.clear()
            return np.empty((0, 0), dtype=np.float32)
        features = torch.cat([torch.cat(batches) for batches in self._batches], dim=1).numpy()
        self.clear()
        return features


def probe_accuracy(
    fit: Split, scored: Mapping[str, Split], multilabel: bool = False, seed: int = 0
) -> dict[str, float]:
    """Accuracy on each ``scored`` split of logistic-regression probes fitted on the ``fit`` features and labels.

    Single-label: one multinomial probe over the class labels. Multi-label (labels 0/1, NaN unknown):
    one binary probe per observation on its known labels, and a split's accuracy is the mean over
    observations of the accuracy on its known labels; an observation with one known label value in
    ``fit`` cannot be probed and is left out, as is a split without any scored observation.
    Features are standardised; at most :data:`MAX_FIT_ITEMS` fit items are used, drawn with ``seed``.
    """
    features, labels = _sample(*fit, seed)
    if not multilabel:
        probe = _fit(features, labels.reshape(-1), seed)
        return {split: float(probe.score(x, y.reshape(-1))) for split, (x, y) in scored.items()}
    accuracies: dict[str, list[float]] = {split: [] for split in scored}
    for column in range(labels.shape[1]):
        known = ~np.isnan(labels[:, column])
        if np.unique(labels[known, column]).size < 2:
            logger.info("Observation %d has one known label value among the probe's fit items: not probed.", column)
            continue
        probe = _fit(features[known], labels[known, column], seed)
        for split, (x, y) in scored.items():
            known_here = ~np.isnan(y[:, column])
            if known_here.any():
                accuracies[split].append(probe.score(x[known_here], y[known_here, column]))
    return {split: float(np.mean(values)) for split, values in accuracies.items() if values}


def _sample(features: np.ndarray, labels: np.ndarray, seed: int) -> Split:
    if len(features) <= MAX_FIT_ITEMS:
        return features, labels
    rows = np.sort(np.random.default_rng(seed).choice(len(features), MAX_FIT_ITEMS, replace=False))
    return features[rows], labels[rows]


def _fit(features: np.ndarray, labels: np.ndarray, seed: int) -> Pipeline:
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER, random_state=seed))
    # One BLAS thread: 20,000 items fitted in 5 s, where two threads on two busy cores took 52 s (measured).
    with threadpool_limits(limits=1, user_api="blas"):
        return probe.fit(features, labels)
