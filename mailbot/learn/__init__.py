"""The learning loop: the small model learns from the cloud model's answers and from people.

`mailbot learn` (and the worker, on a schedule) builds each head's training set from the
seed data, labelled files, people's labels and the teacher's, trains a candidate, compares
it with the head in service on recent labelled mail and promotes it when it is not worse.
"""

from mailbot.learn.dataset import Example, TrainingSet, build_training_set
from mailbot.learn.loop import HeadOutcome, Learner, run_learning
from mailbot.learn.versions import Rollback, rollback

__all__ = [
    "Example",
    "HeadOutcome",
    "Learner",
    "Rollback",
    "TrainingSet",
    "build_training_set",
    "rollback",
    "run_learning",
]
