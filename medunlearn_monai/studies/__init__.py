"""Studies that run many workflows of a bundle to audit unlearning: U-LiRA shadow pairs, easy/hard requests, and the
several-seed measurement protocol with its noise floor."""

from medunlearn_monai.studies.difficulty import run_difficulty_study
from medunlearn_monai.studies.protocol import run_protocol
from medunlearn_monai.studies.ulira import run_ulira_study

__all__ = ["run_difficulty_study", "run_protocol", "run_ulira_study"]
