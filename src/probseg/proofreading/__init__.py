"""Proofreading: guide a person to the parts of a segmentation worth checking.

>>> from probseg.proofreading import proofreading_queue
>>> queue = proofreading_queue(uncertainty, labels, patch=64)
>>> queue[0].rect, queue[0].score, queue[0].labels
"""

from probseg.proofreading.queue import QueueEntry, proofreading_queue

__all__ = ["QueueEntry", "proofreading_queue"]
