"""What ``medunlearn tune`` may search: one default range per known hyperparameter, narrowed or fixed by the user.

The ranges are Optuna distributions. A strategy declares its hyperparameters in its config's
``hyperparameters`` block; only those names can be tuned for it. By default the search covers the
learning rate, the number of epochs and the strategy's own forgetting knobs; momentum, weight decay
and batch size keep the strategy's values unless named in ``--search`` (with few trials, every extra
dimension makes the search sparser, and the literature tunes the former).
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


class SearchSpaceError(ValueError):
    """A search space that names an unknown hyperparameter or gives an invalid range."""


@dataclass(frozen=True)
class Hyperparameter:
    """How one hyperparameter is searched.

    Args:
        default: the range searched when the user gives none (an Optuna distribution).
        limits: the smallest and largest values that make sense at all; user ranges must stay inside.
        searched_by_default: whether the range applies without the user naming the hyperparameter.
    """

    default: BaseDistribution
    limits: tuple[float, float]
    searched_by_default: bool = True


KNOWN_HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "learning_rate": Hyperparameter(FloatDistribution(1e-4, 1e-1, log=True), (1e-8, 10.0)),
    "unlearn_epochs": Hyperparameter(IntDistribution(1, 10), (1, 10_000)),
    "saliency_ratio": Hyperparameter(FloatDistribution(0.1, 0.9), (0.01, 1.0)),
    "forget_weight": Hyperparameter(FloatDistribution(0.1, 3.0), (0.0, 100.0)),
    "noise_fraction": Hyperparameter(FloatDistribution(0.1, 1.0), (0.0, 1.0)),
    "forget_repeats": Hyperparameter(IntDistribution(1, 10), (1, 1000)),
    "epochs_per_group": Hyperparameter(IntDistribution(1, 4), (1, 1000)),
    "min_epochs": Hyperparameter(IntDistribution(0, 3), (0, 1000), searched_by_default=False),
    "selection_weight": Hyperparameter(FloatDistribution(1.0, 50.0, log=True), (1e-3, 1000.0)),
    "dampening_constant": Hyperparameter(FloatDistribution(0.1, 5.0, log=True), (1e-3, 100.0)),
    "max_steps_epochs": Hyperparameter(IntDistribution(1, 5), (0, 10_000)),
    "kl_weight": Hyperparameter(FloatDistribution(0.1, 10.0, log=True), (0.0, 100.0)),
    "ce_weight": Hyperparameter(FloatDistribution(0.1, 10.0, log=True), (0.0, 100.0)),
    "temperature": Hyperparameter(FloatDistribution(1.0, 8.0), (0.01, 100.0)),
    "l1_weight": Hyperparameter(FloatDistribution(1e-5, 1e-2, log=True), (1e-12, 1.0)),
    "momentum": Hyperparameter(FloatDistribution(0.0, 0.95), (0.0, 0.999), searched_by_default=False),
    "weight_decay": Hyperparameter(FloatDistribution(1e-6, 1e-2, log=True), (0.0, 1.0), searched_by_default=False),
    "batch_size": Hyperparameter(CategoricalDistribution((16, 32, 64, 128)), (1, 65_536), searched_by_default=False),
    # Noisy Label's noise mode (MRBrainS18): a choice among names, so its limits do not apply.
    "noise": Hyperparameter(
        CategoricalDistribution(("fresh", "fixed", "flip", "background")), (0, 0), searched_by_default=False
    ),
}


@dataclass(frozen=True)
class SearchSpace:
    """The ranges one tuning run searches and the values it holds fixed, by hyperparameter name."""

    distributions: dict[str, BaseDistribution]
    fixed: dict[str, Any] = field(default_factory=dict)

    def contains(self, name: str, value: Any) -> bool:
        """Whether ``value`` lies inside the range of ``name`` (or is its fixed value)."""
        if name in self.fixed:
            return value == self.fixed[name]
        distribution = self.distributions[name]
        if isinstance(distribution, CategoricalDistribution):
            return value in distribution.choices
        number_types = (int,) if isinstance(distribution, IntDistribution) else (int, float)
        if isinstance(value, bool) or not isinstance(value, number_types):
            return False
        return distribution.low <= value <= distribution.high

    def describe(self) -> dict[str, str]:
        """Human-readable ranges for logging, e.g. ``{"learning_rate": "log-uniform [0.001, 0.1]"}``."""
        described = {name: describe_distribution(distribution) for name, distribution in self.distributions.items()}
        return {**described, **{name: f"fixed {value}" for name, value in self.fixed.items()}}


def describe_distribution(distribution: BaseDistribution) -> str:
    """``log-uniform [low, high]``, ``uniform [low, high]``, ``integer [low, high]`` or ``one of [...]``."""
    if isinstance(distribution, CategoricalDistribution):
        return f"one of {list(distribution.choices)}"
    if isinstance(distribution, IntDistribution):
        return f"integer [{distribution.low}, {distribution.high}]"
    kind = "log-uniform" if distribution.log else "uniform"
    return f"{kind} [{distribution.low:g}, {distribution.high:g}]"


def parse_search(search: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """The user's ``--search`` as a dict: a mapping, or its text as a Python or JSON literal.

    Raises:
        SearchSpaceError: when the text is not a literal mapping of names.
    """
    if search is None or search == "":
        return {}
    if isinstance(search, str):
        try:
            search = ast.literal_eval(search)
        except (ValueError, SyntaxError):
            try:
                search = json.loads(search)
            except json.JSONDecodeError as error:
                raise SearchSpaceError(
                    f"--search {search!r} is not a mapping literal such as \"{{'learning_rate': [0.001, 0.1]}}\"."
                ) from error
    if not isinstance(search, Mapping) or not all(isinstance(name, str) for name in search):
        raise SearchSpaceError(f"--search must map hyperparameter names to ranges or values, got {search!r}.")
    return dict(search)


def build_search_space(
    declared: Iterable[str],
    search: Mapping[str, Any] | str | None = None,
    held: Iterable[str] = (),
    strategy: str = "the strategy",
) -> SearchSpace:
    """The search space for a strategy that declares ``declared``, with the user's ``search`` applied.

    An entry of ``search`` is a ``[low, high]`` range (a list of choices for ``batch_size``), which
    keeps the default's scale (log-uniform for the learning rate), or a single value, which fixes
    the hyperparameter. Names in ``held`` (set by other overrides) are left out of the search.

    Raises:
        SearchSpaceError: for a name that is not a known hyperparameter, one ``strategy`` does not
            declare, one both searched and held, or an invalid range or value.
    """
    declared = list(declared)
    search = parse_search(search)
    held = set(held)
    for name in search:
        if name not in KNOWN_HYPERPARAMETERS:
            raise SearchSpaceError(
                f"unknown hyperparameter {name!r} in --search; known: {', '.join(KNOWN_HYPERPARAMETERS)}."
            )
        if name not in declared:
            raise SearchSpaceError(
                f"{strategy} does not declare {name!r}; its hyperparameters are {', '.join(declared) or 'none'}."
            )
        if name in held:
            raise SearchSpaceError(f"{name!r} is set both by --{name} and in --search; give it in one place.")
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    for name in declared:
        known = KNOWN_HYPERPARAMETERS.get(name)
        if known is None or name in held:
            continue
        if name in search:
            entry = _user_entry(name, search[name], known)
            if isinstance(entry, BaseDistribution):
                distributions[name] = entry
            else:
                fixed[name] = entry
        elif known.searched_by_default:
            distributions[name] = known.default
    if not distributions:
        raise SearchSpaceError(f"nothing to search for {strategy}: every tunable hyperparameter is fixed or held.")
    return SearchSpace(distributions, fixed)


def _user_entry(name: str, entry: Any, known: Hyperparameter) -> BaseDistribution | int | float:
    """A user's range as a distribution of the default's kind, or a single value to fix."""
    default = known.default
    integer = isinstance(default, IntDistribution) or (
        isinstance(default, CategoricalDistribution) and all(isinstance(choice, int) for choice in default.choices)
    )
    values = list(entry) if isinstance(entry, (list, tuple)) else [entry]
    names = isinstance(default, CategoricalDistribution) and all(isinstance(choice, str) for choice in default.choices)
    for value in values:
        if names and value not in default.choices:
            raise SearchSpaceError(f"--search {name}: {value!r} is not one of {', '.join(default.choices)}.")
        if not names:
            _check_value(name, value, integer, known.limits)
    if not isinstance(entry, (list, tuple)):
        return values[0]
    if isinstance(default, CategoricalDistribution):
        if not values or len(set(values)) != len(values):
            raise SearchSpaceError(f"--search {name}: give a list of distinct choices, got {entry!r}.")
        return CategoricalDistribution(tuple(values))
    if len(values) != 2 or not values[0] < values[1]:
        raise SearchSpaceError(
            f"--search {name}: give a range [low, high] with low < high (or a single value to fix it), got {entry!r}."
        )
    low, high = values
    if isinstance(default, IntDistribution):
        return IntDistribution(low, high)
    if default.log and low <= 0:
        raise SearchSpaceError(f"--search {name} is searched on a log scale: its low end must be above 0, got {low}.")
    return FloatDistribution(float(low), float(high), log=default.log)


def _check_value(name: str, value: Any, integer: bool, limits: tuple[float, float]) -> None:
    number_types = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, number_types) or not math.isfinite(value):
        kind = "an integer" if integer else "a number"
        raise SearchSpaceError(f"--search {name}: {value!r} is not {kind}.")
    low, high = limits
    if not low <= value <= high:
        raise SearchSpaceError(f"--search {name}: {value} is outside the values that make sense, [{low:g}, {high:g}].")
