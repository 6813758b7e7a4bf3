"""Proofreading: guide a person to the parts of a segmentation worth checking, and learn from the checks.

>>> from probseg.proofreading import proofreading_queue, retrain_from_review
>>> queue = proofreading_queue(uncertainty, labels, patch=64)
>>> queue[0].rect, queue[0].score, queue[0].labels
>>> result = retrain_from_review(image, session.labels, session.reviewed_mask(), model)
"""

from probseg.proofreading.queue import QueueEntry, proofreading_queue
from probseg.proofreading.retrain import (
    RetrainResult,
    merge_retrained,
    reranked_queue,
    retrain_from_review,
    review_labels,
)

__all__ = ["QueueEntry", "proofreading_queue", "RetrainResult", "merge_retrained", "reranked_queue",
           "retrain_from_review", "review_labels"]
