"""Sorting metrics on hand-made logits, and the sorting data they score."""
import torch

from dab.suite.metrics import all_or_none_accuracy, per_element_accuracy
from dab.suite.rng import step_generator
from dab.suite.sorting_data import sort_batch


def one_hot_logits(pred: list[list[int]], t: int) -> torch.Tensor:
    """Logits [B, T, T] whose argmax at position t is pred[b][t]."""
    return torch.nn.functional.one_hot(torch.tensor(pred), t).float() * 5.0 - 1.0


def test_metrics_on_hand_made_logits():
    target = torch.tensor([[0, 1, 2], [2, 0, 1], [1, 2, 0], [0, 2, 1]])
    logits = one_hot_logits([[0, 1, 2],    # all right
                             [2, 0, 0],    # 2 of 3 right
                             [0, 1, 2],    # none right
                             [0, 2, 1]],   # all right
                            3)
    assert all_or_none_accuracy(logits, target).item() == 0.5
    assert abs(per_element_accuracy(logits, target).item() - 8 / 12) < 1e-7


def test_metrics_perfect_and_zero():
    target = torch.tensor([[1, 0], [0, 1]])
    right = one_hot_logits(target.tolist(), 2)
    wrong = one_hot_logits((1 - target).tolist(), 2)
    assert all_or_none_accuracy(right, target).item() == 1.0
    assert per_element_accuracy(right, target).item() == 1.0
    assert all_or_none_accuracy(wrong, target).item() == 0.0
    assert per_element_accuracy(wrong, target).item() == 0.0


def test_one_wrong_position_spoils_all_or_none_but_not_per_element():
    target = torch.arange(5).repeat(2, 1)  # [[0..4], [0..4]]
    pred = target.clone()
    pred[1, 4] = 3
    logits = one_hot_logits(pred.tolist(), 5)
    assert all_or_none_accuracy(logits, target).item() == 0.5
    assert abs(per_element_accuracy(logits, target).item() - 0.9) < 1e-7


def test_sort_batch_targets_are_argsort():
    x, y = sort_batch(16, 7, torch.Generator().manual_seed(0), "cpu")
    assert x.shape == (16, 7) and y.shape == (16, 7) and y.dtype == torch.int64
    assert ((x >= 0) & (x < 1)).all()
    gathered = torch.gather(x, 1, y)
    assert (gathered[:, 1:] >= gathered[:, :-1]).all()  # x[y[t]] is the t-th smallest
    assert torch.equal(y.sort(dim=1).values, torch.arange(7).expand(16, 7))  # a permutation


def test_step_generator_depends_only_on_seed_and_step():
    a = torch.rand(4, generator=step_generator(3, 17, "cpu"))
    b = torch.rand(4, generator=step_generator(3, 17, "cpu"))
    c = torch.rand(4, generator=step_generator(3, 18, "cpu"))
    d = torch.rand(4, generator=step_generator(4, 17, "cpu"))
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)
