"""The EMA teacher: phi_new = m phi + (1 - m) theta for every parameter (constant m, or the warm-up
m_t = min(m, 1 - 1/(t + 1))); the teacher never gets gradients."""

from __future__ import annotations

import torch
from boxseg.train.ema import ModelEMA
from torch import nn


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def test_teacher_starts_as_exact_copy_without_grad():
    student = _net()
    student(torch.randn(1, 3, 8, 8))
    ema = ModelEMA(student, 0.999)
    for (n1, p1), (n2, p2) in zip(student.state_dict().items(), ema.teacher.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert all(not p.requires_grad for p in ema.teacher.parameters())
    assert ema.teacher is not student


def test_one_step_formula_and_buffers_copied():
    student = _net()
    x = torch.randn(2, 3, 8, 8)
    student(x)
    ema = ModelEMA(student, 0.999, warmup=False)
    phi = {k: v.clone() for k, v in ema.teacher.named_parameters()}
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    student.train()
    student(x).square().sum().backward()  # also moves the BN running stats
    opt.step()
    ema.update(student)
    theta = dict(student.named_parameters())
    for k, p in ema.teacher.named_parameters():
        torch.testing.assert_close(p, 0.999 * phi[k] + 0.001 * theta[k].detach(), rtol=0, atol=1e-7)
        if (theta[k] - phi[k]).abs().max() > 1e-3:  # (a conv bias before BN gets ~no gradient)
            assert not torch.equal(p, phi[k]), k
    for (k, b_t), (_, b_s) in zip(ema.teacher.named_buffers(), student.named_buffers()):
        assert torch.equal(b_t, b_s), k


def test_teacher_receives_no_gradient_and_unwraps_wrappers():
    student = _net()
    x = torch.randn(2, 3, 8, 8)
    student(x)
    ema = ModelEMA(student, 0.9)
    loss = ema.teacher(x).sum() + student(x).sum()
    loss.backward()
    assert all(p.grad is None for p in ema.teacher.parameters())

    class Wrapper(nn.Module):  # stands in for DistributedDataParallel (has .module)
        def __init__(self, m: nn.Module) -> None:
            super().__init__()
            self.module = m

    ema2 = ModelEMA(Wrapper(student), 0.5, warmup=False)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in ema2.teacher.named_parameters()}
    ema2.update(Wrapper(student))
    for k, p in ema2.teacher.named_parameters():
        torch.testing.assert_close(p, 0.5 * before[k] + 0.5 * dict(student.named_parameters())[k].detach())
    state = ema2.state_dict()
    ema3 = ModelEMA(_net_built(), 0.1)
    ema3.load_state_dict(state)
    assert ema3.momentum == 0.5 and ema3.updates == 1


def _net_built() -> nn.Module:
    m = _net()
    m(torch.randn(1, 3, 8, 8))
    return m


def _perturb(net: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g))


def test_warmup_makes_the_early_teacher_the_mean_of_the_iterates():
    """With the warm-up (the default) the teacher after t updates (t < 1/(1-m)) is the plain mean of the student's
    iterates 1..t: nothing of its random start is left. A constant m keeps m^t of the start."""
    student = _net()
    student(torch.randn(1, 3, 8, 8))
    start = {k: v.detach().clone() for k, v in student.named_parameters()}
    ema, const = ModelEMA(student, 0.99), ModelEMA(student, 0.99, warmup=False)
    assert [ema.current_momentum() for _ in range(1)] == [0.0]
    iterates = []
    for t in range(5):
        _perturb(student, t)
        iterates.append({k: v.detach().clone() for k, v in student.named_parameters()})
        ema.update(student)
        const.update(student)
    for k, p in ema.teacher.named_parameters():
        torch.testing.assert_close(p, torch.stack([it[k] for it in iterates]).mean(0), rtol=0, atol=1e-5)
    # The constant-momentum teacher is still ~95% its start (0.99^5).
    k, p = next(iter(const.teacher.named_parameters()))
    assert (p - start[k]).abs().max() < (ema.teacher.get_parameter(k) - start[k]).abs().max()
    assert ema.updates == 5 and ema.current_momentum() == 1 - 1 / 6


def test_warmup_momentum_reaches_the_configured_value_and_survives_a_state_round_trip():
    student = _net()
    student(torch.randn(1, 3, 8, 8))
    ema = ModelEMA(student, 0.9)
    seq = []
    for _ in range(12):
        seq.append(ema.current_momentum())
        ema.update(student)
    assert seq[:3] == [0.0, 0.5, 1 - 1 / 3] and seq[-1] == 0.9 and max(seq) == 0.9
    other = ModelEMA(student, 0.5, warmup=False)
    other.load_state_dict(ema.state_dict())
    assert (other.momentum, other.warmup, other.updates) == (0.9, True, 12)
