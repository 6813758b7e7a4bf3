"""Helper process for the multi-process tests in test_proofreading_session.py.

``python _proofread_worker.py IMAGE.npy`` opens (or creates) the proofreading
session of the ``.npy`` image and applies edits until it is killed. After
each edit is saved it prints ``<edit number> <row> <col> <value>`` and
flushes, so the test knows exactly which edits were confirmed before it sent
SIGKILL. Every fourth step undoes and redoes too, so undo, redo and apply all
get interrupted at some point.

``python _proofread_worker.py IMAGE.npy --hold N`` applies N such edits,
prints ``holding`` and then keeps the session open (and locked) until it is
killed.

A refused open (the session is locked by another process, or damaged) prints
its one-line message on stderr, as the CLI would, and exits with status 3.
"""

import sys
import time

import numpy as np

from probseg.core.errors import ProbsegError
from probseg.io.images import read_image
from probseg.proofreading.edits import paint
from probseg.proofreading.session import Session


def _step(session: Session, number: int) -> tuple[int, int]:
    height, width = session.shape
    row, col = divmod(number, width)
    mask = np.zeros(session.shape, dtype=bool)
    mask[row % height, col] = True
    session.apply(paint(session.labels, mask, number))
    if number % 4 == 0:
        session.undo()
        session.redo()
    return row % height, col


def main(image_path: str, hold: int | None = None) -> None:
    image = read_image(image_path)
    try:
        session = Session.open(image_path, image, initial_labels=np.zeros(image.shape, dtype=np.int32))
    except ProbsegError as exc:
        print(exc, file=sys.stderr, flush=True)
        sys.exit(3)
    for notice in session.notices:
        print("notice:", notice, file=sys.stderr, flush=True)
    number = len(session.history)
    todo = hold
    while todo is None or todo > 0:
        number += 1
        row, col = _step(session, number)
        print(number, row, col, number, flush=True)
        if todo is not None:
            todo -= 1
    print("holding", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], int(args[2]) if len(args) == 3 and args[1] == "--hold" else None)
