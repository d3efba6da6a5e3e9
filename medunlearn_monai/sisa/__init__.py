"""Exact unlearning at a fraction of retraining's cost: sharded, isolated, sliced training (SISA)."""

from medunlearn_monai.sisa.ensemble import ShardEnsemble
from medunlearn_monai.sisa.plan import ShardPlan, shard_dir
from medunlearn_monai.sisa.training import ShardedTraining, ShardedTrainingError

__all__ = ["ShardEnsemble", "ShardPlan", "ShardedTraining", "ShardedTrainingError", "shard_dir"]
