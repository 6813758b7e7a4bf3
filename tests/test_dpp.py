"""The DPP prior and the intersection-over-minimum NMS of CellSegmenter (probseg.methods.cellsegmenter.dpp)."""

import itertools

import numpy as np
import pytest
import torch

from probseg.methods.cellsegmenter.dpp import box_iomin, dpp_log_prob, grid_positions, nms_top_k, rbf_kernel


def _kernel(rho=1.3, length=0.8):
    return rbf_kernel(grid_positions((2, 3), dtype=torch.float64), torch.tensor(rho, dtype=torch.float64),
                      torch.tensor(length, dtype=torch.float64))


def test_log_prob_matches_brute_force_and_sums_to_one():
    kernel = _kernel()
    n = kernel.shape[0]
    sets = torch.tensor(list(itertools.product([False, True], repeat=n)))
    log_p = dpp_log_prob(sets, kernel)
    k = kernel.numpy()
    z = np.linalg.det(k + np.eye(n))
    for chosen, lp in zip(sets.numpy(), log_p.numpy()):
        idx = np.flatnonzero(chosen)
        direct = (np.linalg.det(k[np.ix_(idx, idx)]) if len(idx) else 1.0) / z
        assert np.exp(lp) == pytest.approx(direct, rel=1e-9)
    assert float(torch.exp(log_p).sum()) == pytest.approx(1.0, rel=1e-9)


def test_neighbours_repel_and_the_kernel_parameters_get_gradients():
    rho = torch.tensor(1.0, requires_grad=True)
    length = torch.tensor(1.0, requires_grad=True)
    kernel = rbf_kernel(grid_positions((1, 4)), rho, length)
    near = dpp_log_prob(torch.tensor([True, True, False, False]), kernel)
    far = dpp_log_prob(torch.tensor([True, False, False, True]), kernel)
    assert float(far) > float(near)
    (near + far).backward()
    assert rho.grad is not None and length.grad is not None and torch.isfinite(rho.grad) and torch.isfinite(length.grad)


def test_iomin_is_one_for_a_box_inside_another_where_iou_is_small():
    big = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    small = torch.tensor([[2.0, 2.0, 5.0, 5.0], [20.0, 20.0, 30.0, 30.0], [8.0, 8.0, 12.0, 12.0]])
    np.testing.assert_allclose(box_iomin(big, small).numpy(), [[1.0, 0.0, 0.25]])


def _survivors(boxes, scores, threshold, k):
    chosen, kept = nms_top_k(boxes[None], scores[None], threshold, k)
    return chosen[0][kept[0]].tolist()


def test_nms_top_k_keeps_the_best_of_overlapping_boxes_by_iomin():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],    # 0: big, low score
                          [2.0, 2.0, 5.0, 5.0],      # 1: inside 0, best score
                          [20.0, 20.0, 30.0, 30.0],  # 2: apart
                          [8.0, 8.0, 12.0, 12.0]])   # 3: a quarter of it inside 0
    scores = torch.tensor([0.5, 0.9, 0.7, 0.6])
    assert _survivors(boxes, scores, 0.3, 4) == [1, 2, 3]  # 0 holds 1, which scores higher
    scores[0] = 0.95
    assert _survivors(boxes, scores, 0.3, 4) == [0, 2, 3]  # 3 overlaps 0 by a quarter of its area
    assert _survivors(boxes, scores, 0.2, 4) == [0, 2]
    assert _survivors(boxes, scores, 0.3, 2) == [0, 2]


def test_nms_pads_with_dropped_boxes_after_the_survivors():
    boxes = torch.tensor([
        [0, 0, 10, 10], [1, 1, 9, 9],  # the second lies inside the first: IoMin 1
        [20, 20, 30, 30], [25, 25, 35, 35],  # IoMin 0.25
        [0, 20, 10, 30], [5, 20, 15, 30],  # IoMin 0.5
    ], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.95, 0.5, 0.6, 0.8, 0.7])
    assert _survivors(boxes, scores, 0.2, 6) == [1, 4, 3]
    assert _survivors(boxes, scores, 0.3, 6) == [1, 4, 3, 2]
    assert _survivors(boxes, scores, 0.5, 6) == [1, 4, 5, 3, 2]
    chosen, kept = nms_top_k(boxes[None], scores[None], 0.3, k=6)
    assert chosen[0].tolist()[4:] == [0, 5] and kept[0].tolist() == [True] * 4 + [False] * 2
    chosen, kept = nms_top_k(boxes[None], scores[None], 0.3, k=2)
    assert chosen[0].tolist() == [1, 4] and kept[0].all()
