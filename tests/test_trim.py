"""Trimming: removing a unit equals masking its outgoing activation, and the model really shrinks."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from train.export import export, flops_per_second, task_model
from train.nets import FrameNet, NetConfig, build, count_nonzero
from train.trim import (
    Group,
    apply_plan,
    dense_widths,
    groups,
    importance,
    landing_rate,
    mask_landing_rate,
    plan,
    remove_units,
    update_masks,
    width,
    width_floor,
)

torch.manual_seed(0)


def _net(gru: int = 0, salience: bool = False) -> FrameNet:
    if salience:  # the pitch variant: harmonic stacking, frequency-preserving convs, 1x1 head
        cfg = NetConfig(20, 17, conv2d=[(6, 3, 3, 1), (5, 3, 1, 1)], shifts=[-4, 0, 4, 7], out_bins=16, lookahead=1)
    else:
        cfg = NetConfig(20, 3, conv2d=[(6, 3, 3, 2), (5, 3, 3, 2)], conv1d=[(12, 3)], gru=gru, dense=[10],
                        lookahead=1)
    net = FrameNet(cfg)
    for m in net.modules():  # non-trivial BN statistics so that eval-mode BN is not the identity
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def _masked_forward(net: FrameNet, g: Group, units: list[int], x: torch.Tensor) -> torch.Tensor:
    """The dense net with the units' outgoing activations forced to zero (hooks)."""
    if g.kind == "gru":
        return _gru_masked_forward(net, units, x)
    bn = {"conv2d": net.bn2d, "conv1d": net.bn1d, "dense": net.bnd}[g.kind][g.index]
    # zero the BN output of the unit; relu(0) = 0 = a removed channel
    def hook(m, i, out):
        out = out.clone()
        out[:, units] = -1.0  # after ReLU this is exactly 0
        return out

    h = bn.register_forward_hook(hook)
    y, _ = net(x, torch.zeros(0))
    h.remove()
    return y


def _gru_masked_forward(net: FrameNet, units: list[int], x: torch.Tensor) -> torch.Tensor:
    """Run the GRU step by step with the units' hidden state forced to zero at every step."""
    gru = net.rnn.gru
    cell = torch.nn.GRUCell(gru.input_size, gru.hidden_size)
    cell.load_state_dict({"weight_ih": gru.weight_ih_l0, "weight_hh": gru.weight_hh_l0,
                          "bias_ih": gru.bias_ih_l0, "bias_hh": gru.bias_hh_l0})
    orig = net.rnn.forward

    def masked(z, h):
        seq = z.transpose(1, 2)
        hh = torch.zeros(z.shape[0], gru.hidden_size)
        outs = []
        for t in range(seq.shape[1]):
            hh = cell(seq[:, t], hh)
            hh[:, units] = 0.0
            outs.append(hh)
        return torch.stack(outs, 2), hh.unsqueeze(0)

    net.rnn.forward = masked
    try:
        y, _ = net(x, torch.zeros(0))
    finally:
        net.rnn.forward = orig
    return y


@pytest.mark.parametrize("gru,salience", [(0, False), (7, False), (0, True)])
def test_removing_units_equals_masking_them(gru, salience):
    net = _net(gru, salience)
    x = torch.randn(2, 20, 30)
    for g in groups(net):
        units = [0, 2]
        with torch.no_grad():
            expected = _masked_forward(net, g, units, x)
            trimmed = copy.deepcopy(net)
            remove_units(trimmed, g, units)
            got, _ = trimmed(x, torch.zeros(0))
        assert torch.allclose(got, expected, atol=1e-5), (g, (got - expected).abs().max())
        assert sum(p.numel() for p in trimmed.parameters()) < sum(p.numel() for p in net.parameters())
    assert any(g.kind == "gru" for g in groups(net)) == bool(gru)


def test_trimmed_bundle_is_smaller_in_bytes_and_flops(tmp_path):
    net = build("drums", width=0.25).eval()
    dense = export("drums", net, tmp_path / "dense.ts", {})
    small = copy.deepcopy(net)
    for g, idx in plan(small, importance(small, "magnitude"), 0.5, "global").items():
        remove_units(small, g, idx)
    trimmed = export("drums", small, tmp_path / "trim.ts", {})
    assert trimmed["params"] < 0.6 * dense["params"]
    assert trimmed["flops_per_second"] < dense["flops_per_second"]
    assert os.path.getsize(tmp_path / "trim.ts") < os.path.getsize(tmp_path / "dense.ts")
    assert flops_per_second(task_model("drums", small)) == trimmed["flops_per_second"]
    assert trimmed["bytes"] == os.path.getsize(tmp_path / "trim.ts")


@pytest.mark.parametrize("scope", ["global", "local"])
def test_plan_removes_about_the_rate_and_keeps_min_width(scope):
    net = build("onset", width=0.25)
    before = sum(p.numel() for p in net.parameters())
    for _ in range(6):
        for g, idx in plan(net, importance(net, "batchnorm"), 0.2, scope).items():
            remove_units(net, g, idx)
    after = sum(p.numel() for p in net.parameters())
    assert after < 0.5 * before
    for conv in net.conv1d:
        assert conv.out_channels >= 2


@pytest.mark.parametrize("scope", ["global", "local"])
def test_landing_rate_removes_just_enough_to_reach_the_target(scope):
    net = build("drums", width=0.5)
    scores = importance(net, "magnitude")
    count = lambda n: sum(p.numel() for p in n.parameters())  # noqa: E731

    def left(rate: float) -> int:
        n = copy.deepcopy(net)
        apply_plan(n, plan(n, scores, rate, scope))
        return count(n)

    dense = count(net)
    goal = int(0.7 * dense)
    r = landing_rate(net, scores, 0.5, scope, goal)
    assert 0 < r < 0.5 and left(r) <= goal < left(r - 1e-4)  # reaches the goal, and no smaller rate does
    assert count(net) == dense  # the net itself is untouched
    assert landing_rate(net, scores, 0.2, scope, goal) == 0.2  # the round's rate does not reach it: unchanged


def test_mask_landing_rate_leaves_the_goal_in_non_zero_weights():
    net = build("onset", width=0.25)
    nonzero = lambda: sum(int((p != 0).sum()) for p in net.parameters())  # noqa: E731
    goal = int(0.9 * nonzero())
    masks = update_masks(net, None, mask_landing_rate(net, None, 0.2, goal))
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    assert goal - 2 <= nonzero() <= goal
    assert mask_landing_rate(net, masks, 0.2, goal - 10**6) == 0.2


def test_information_and_activation_criteria_rank_every_unit():
    net = build("chord", width=0.25).eval()
    x = torch.randn(4, net.cfg_dict["n_features"], net.receptive_field + 20)
    y = torch.randint(0, 25, (4, 21))
    for crit in ("activation", "information"):
        s = importance(net, crit, [(x, y)], task="chord")
        assert set(s) == set(groups(net))
        for v in s.values():
            assert len(v) > 0 and np.all(np.isfinite(v))


def test_masks_remove_the_rate_of_remaining_weights():
    net = build("onset", width=0.25)
    masks = update_masks(net, None, 0.2)
    tot = sum(m.numel() for m in masks.values())
    kept = sum(float(m.sum()) for m in masks.values())
    assert abs(kept / tot - 0.8) < 0.01
    masks = update_masks(net, masks, 0.2)
    kept = sum(float(m.sum()) for m in masks.values())
    assert abs(kept / tot - 0.64) < 0.02


def test_salience_output_stage_is_never_trimmed():
    net = build("pitch", width=0.5)
    last = net.conv2d[-1].out_channels
    before = sum(p.numel() for p in net.parameters())
    for crit in ("batchnorm", "magnitude", "batchnorm"):
        for g, idx in plan(net, importance(net, crit), 0.6, "global").items():
            remove_units(net, g, idx)
    assert net.conv2d[-1].out_channels == last
    assert sum(p.numel() for p in net.parameters()) < 0.3 * before
    # on request it is trimmed too, its units weighed by the head's weight on them: a unit the head ignores goes
    with torch.no_grad():
        net.head.weight[0, 3] = 0.0
    scores = importance(net, "batchnorm", with_output_stage=True)
    out = Group("conv2d", len(net.conv2d) - 1)
    assert np.argmin(scores[out]) == 3 and scores[out][3] == 0.0
    removal = plan(net, {out: scores[out]}, 0.2, "global")
    assert 3 in removal[out]


def test_width_floor_keeps_a_fraction_of_every_dense_layer():
    net = build("drums", width=0.5)
    widths = dense_widths(net)
    floor = width_floor(widths, 0.25)
    for _ in range(12):
        for g, idx in plan(net, importance(net, "batchnorm"), 0.3, "global", floor=floor).items():
            remove_units(net, g, idx)
    for g in groups(net):
        assert width(net, g) >= math.ceil(0.25 * widths[f"{g.kind}:{g.index}"])
    assert min(width(net, g) / widths[f"{g.kind}:{g.index}"] for g in groups(net)) < 0.3  # the floor was reached


@pytest.mark.parametrize("task", ["pitch", "onset", "drums", "chord", "instrument"])
@pytest.mark.parametrize("criterion", ["magnitude", "batchnorm"])
def test_a_plan_applied_as_masks_equals_the_plan_applied_by_removal(task, criterion):
    """Mask mode with any criterion silences the units trim mode removes: same outputs, and as many
    non-zero parameters as the trimmed net has parameters. Twice, as a lottery does over rounds."""
    from train.fit import apply_masks
    from train.trim import as_groups, dense_widths, masked_units, unit_masks, without_masked

    torch.manual_seed(0)
    net = build(task, width=0.25).eval()
    with torch.no_grad():  # trained-looking statistics, so a unit left half-silenced would show
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.bias.normal_()
    widths, units, masked = dense_widths(net), None, copy.deepcopy(net)
    x = torch.randn(2, net.cfg_dict["n_features"], net.receptive_field + 6)
    for _ in range(2):
        alive = without_masked(masked, units)
        units = masked_units(plan(alive, importance(alive, criterion), 0.3, "global"), units, widths)
        masked = copy.deepcopy(net)
        apply_masks(masked, unit_masks(masked, as_groups(units)))
        trimmed = without_masked(net, units)
        with torch.no_grad():
            assert torch.allclose(masked(x, torch.zeros(0))[0], trimmed(x, torch.zeros(0))[0], atol=1e-5)
        assert count_nonzero(masked) == sum(p.numel() for p in trimmed.parameters())
    assert sum(p.numel() for p in trimmed.parameters()) < 0.7 * sum(p.numel() for p in net.parameters())
