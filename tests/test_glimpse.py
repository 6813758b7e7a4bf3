"""Glimpses through a spatial transformer (probseg.methods.cellsegmenter.glimpse): crop then paste back is the identity inside the box."""

import numpy as np
import torch

from probseg.methods.cellsegmenter.glimpse import crop_glimpses, paste_glimpses


def test_crop_copies_the_box_and_paste_puts_it_back():
    image = torch.from_numpy(np.random.default_rng(0).random((2, 20, 30)).astype(np.float32))
    boxes = torch.tensor([[3.0, 4.0, 11.0, 16.0], [0.0, 0.0, 20.0, 30.0]])
    g0 = crop_glimpses(image, boxes[:1], (8, 12))
    np.testing.assert_allclose(g0[0].numpy(), image[:, 3:11, 4:16].numpy(), atol=1e-5)
    pasted = paste_glimpses(crop_glimpses(image, boxes[:1], (8, 12)), boxes[:1], (20, 30))[0]
    inside = torch.zeros(20, 30, dtype=torch.bool)
    inside[3:11, 4:16] = True
    np.testing.assert_allclose(pasted[:, inside].numpy(), image[:, inside].numpy(), atol=1e-5)
    # Outside, a pixel more than a pixel away from the box reads nothing.
    far = torch.ones(20, 30, dtype=torch.bool)
    far[2:12, 3:17] = False
    assert float(pasted[:, far].abs().max()) == 0.0
    whole = crop_glimpses(image, boxes[1:], (20, 30))[0]
    np.testing.assert_allclose(whole.numpy(), image.numpy(), atol=1e-5)


def test_gradients_reach_the_box():
    image = torch.from_numpy(np.random.default_rng(1).random((1, 16, 16)).astype(np.float32))
    boxes = torch.tensor([[2.0, 3.0, 10.5, 12.0]], requires_grad=True)
    crop_glimpses(image, boxes, (6, 6)).sum().backward()
    assert boxes.grad is not None and bool(torch.isfinite(boxes.grad).all()) and float(boxes.grad.abs().sum()) > 0
