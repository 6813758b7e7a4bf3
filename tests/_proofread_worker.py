"""Helper process for the kill test in test_proofreading_session.py.

Opens (or creates) the proofreading session of the ``.npy`` image given on
the command line and applies edits until it is killed. After each edit is
saved it prints ``<edit number> <row> <col> <value>`` and flushes, so the
test knows exactly which edits were confirmed before it sent SIGKILL.
Every fourth step undoes and redoes too, so undo, redo and apply all get
interrupted at some point.
"""

import sys

import numpy as np

from probseg.io import read_image
from probseg.proofreading.edits import paint
from probseg.proofreading.session import Session


def main(image_path: str) -> None:
    image = read_image(image_path)
    session = Session.open(image_path, image, initial_labels=np.zeros(image.shape, dtype=np.int32))
    height, width = session.shape
    number = len(session.history)
    while True:
        number += 1
        row, col = divmod(number, width)
        mask = np.zeros(session.shape, dtype=bool)
        mask[row % height, col] = True
        session.apply(paint(session.labels, mask, number))
        if number % 4 == 0:
            session.undo()
            session.redo()
        print(number, row % height, col, number, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
