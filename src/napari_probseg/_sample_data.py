"""Sample data for File > Open Sample > probseg: an image plus its ground truth.

The image layers carry the typical object size in their metadata
(``metadata["object_size"]``), the one setting some methods need from the user.
"""

from __future__ import annotations

#: Typical diameter of the synthetic blobs, in pixels.
BLOBS_OBJECT_SIZE = 20.0


def nuclei() -> list[tuple]:
    """Fluorescent nuclei from the 2018 Data Science Bowl (CC0), with their labels."""
    from probseg.evaluation import datasets

    image, labels = datasets.nuclei()
    meta = {"object_size": datasets.NUCLEI_OBJECT_SIZE, "attribution": datasets.NUCLEI_ATTRIBUTION}
    return [
        (image, {"name": "nuclei", "metadata": meta}, "image"),
        (labels, {"name": "nuclei ground truth", "opacity": 0.5, "visible": False, "metadata": meta}, "labels"),
    ]


def touching_blobs() -> list[tuple]:
    """Synthetic touching blobs (256 x 256 px, about 20 px across), with exact labels."""
    from probseg.evaluation import synthetic

    image, labels = synthetic.touching_blobs(shape=(256, 256), object_size=BLOBS_OBJECT_SIZE, seed=0)
    meta = {"object_size": BLOBS_OBJECT_SIZE, "attribution": "synthetic, probseg.evaluation.synthetic.touching_blobs(seed=0)"}
    return [
        (image, {"name": "touching blobs", "metadata": meta}, "image"),
        (labels, {"name": "touching blobs ground truth", "opacity": 0.5, "visible": False, "metadata": meta}, "labels"),
    ]
