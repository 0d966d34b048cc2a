"""Sound bounds on every activation over an input box: interval arithmetic, then linear
relaxations back-substituted to the input (DeepPoly, Singh et al. 2019 / CROWN, Zhang et al.
2018), optionally tightened further by LP (``robex.verify.milp.tighten_with_lp``).

Written by hand (auto_LiRPA is not a dependency): the relaxations are the standard ones --
ReLU with l < 0 < u: upper y <= u (x - l) / (u - l), lower y >= a x with a = 1 if u > -l else 0;
max-pool (DeepPoly): lower y >= x_j* with j* = argmax_i l_i, upper y <= x_j* when that input
dominates (l_j* >= u_i for all i != j*) and y <= max_i u_i otherwise. Everything runs in float64
so that the bounds stay sound for the float32 network up to rounding far below the tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robex.verify.network import Operation, maxpool_windows

Bounds = tuple[torch.Tensor, torch.Tensor]  # flattened (lower, upper) of one op's output


@dataclass
class NetworkBounds:
    """``outputs[k]`` bounds the output of operation k; ``box`` is the input box (flattened)."""

    box: Bounds
    outputs: list[Bounds]

    def input_of(self, k: int) -> Bounds:
        return self.box if k == 0 else self.outputs[k - 1]

    def unstable_count(self, operations: list[Operation]) -> int:
        count = 0
        for k, operation in enumerate(operations):
            if operation.kind == "relu":
                lower, upper = self.input_of(k)
                count += int(((lower < 0) & (upper > 0)).sum())
        return count


def _double(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    weight = module.weight.detach().double()
    bias = module.bias.detach().double() if module.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64, device=weight.device)
    return weight, bias


def _affine_forward(operation: Operation, x: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
    """Apply the affine op in float64 to a batch of flattened inputs (B, in_size)."""
    weight, bias = _double(operation.module)
    b = bias if with_bias else None
    if isinstance(operation.module, nn.Linear):
        return F.linear(x, weight, b)
    module = operation.module
    y = F.conv2d(x.view(-1, *operation.in_shape), weight, b, stride=module.stride, padding=module.padding)
    return y.flatten(1)


def _affine_transpose(operation: Operation, coefficients: torch.Tensor) -> torch.Tensor:
    """Lambda W for Lambda (K, out_size): the transposed layer, i.e. a vector-Jacobian product."""
    weight, _ = _double(operation.module)
    if isinstance(operation.module, nn.Linear):
        return coefficients @ weight
    module = operation.module
    out = coefficients.view(-1, *operation.out_shape)
    stride, padding = module.stride, module.padding
    kernel = weight.shape[-2:]
    output_padding = tuple(
        operation.in_shape[1 + i] - ((operation.out_shape[1 + i] - 1) * stride[i] - 2 * padding[i] + kernel[i]) for i in range(2)
    )
    return F.conv_transpose2d(out, weight, stride=stride, padding=padding, output_padding=output_padding).flatten(1)


def interval_bounds(operations: list[Operation], lower: torch.Tensor, upper: torch.Tensor) -> NetworkBounds:
    """Interval arithmetic (exact for the first affine layer over a box)."""
    box = (lower.flatten().double(), upper.flatten().double())
    low, high = box
    outputs: list[Bounds] = []
    for operation in operations:
        if operation.kind == "affine":
            center, radius = (high + low) / 2, (high - low) / 2
            weight, _ = _double(operation.module)
            mid = _affine_forward(operation, center.unsqueeze(0))[0]
            if isinstance(operation.module, nn.Linear):
                spread = F.linear(radius.unsqueeze(0), weight.abs())[0]
            else:
                module = operation.module
                spread = F.conv2d(radius.view(1, *operation.in_shape), weight.abs(), stride=module.stride, padding=module.padding).flatten()
            low, high = mid - spread, mid + spread
        elif operation.kind == "relu":
            low, high = low.clamp_min(0), high.clamp_min(0)
        elif operation.kind == "maxpool":
            windows = torch.as_tensor(maxpool_windows(operation), device=low.device)
            low, high = low[windows].max(dim=1).values, high[windows].max(dim=1).values
        outputs.append((low, high))
    return NetworkBounds(box, outputs)


def maxpool_upper_chord(window_low: torch.Tensor, window_high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear upper bound y <= slope * x_top + intercept of y = max_i x_i over each window's box.

    ``window_low``/``window_high`` (..., K) bound the K inputs of each window; returns the index
    (..., ) of the input ``top`` with the largest upper bound, and the line's slope and intercept.
    Why it holds: every other input is at most u2 = max_{i != top} u_i, so max_i x_i <= max(x_top, u2),
    a convex function of x_top alone, hence below its chord over [l_top, u_top]. The chord ends at
    (l_top, max(l_top, u2)) and (u_top, u_top): it is never above the constant max_i u_i (DeepPoly's
    upper bound for a window no input dominates), equals it only at x_top = u_top, and is y <= x_top
    exactly when top dominates (l_top >= u2). Unlike the constant, it passes the bound's dependence
    on x_top back to the layers before the pool, so their relaxations and splits can tighten it.
    """
    top_high, top = window_high.max(dim=-1)
    top_low = window_low.gather(-1, top.unsqueeze(-1)).squeeze(-1)
    second_high = window_high.scatter(-1, top.unsqueeze(-1), float("-inf")).max(dim=-1).values
    floor = torch.maximum(top_low, second_high)
    width = top_high - top_low
    slope = torch.where(width > 0, (top_high - floor) / width.clamp_min(1e-30), torch.zeros_like(width))
    return top, slope, floor - slope * top_low


def backsubstitute_upper(operations: list[Operation], bounds: NetworkBounds, last: int, coefficients: torch.Tensor) -> torch.Tensor:
    """Upper bound of Lambda . h_last over the box, for each row of Lambda (K, out_size of op ``last``).

    DeepPoly/CROWN back-substitution: replace each op by the relaxation whose direction matches
    the sign of the running coefficient, down to the input, then concretise on the box. With a
    max-pool among the ops, the pass runs twice -- upper line the chord (``maxpool_upper_chord``) and
    DeepPoly's constant max_i u_i -- and each row keeps the smaller bound: the chord is pointwise
    below the constant, but the greedy pass then relaxes x_top through earlier layers, which can end
    above the intersected bound u_top the constant uses (measured: 1 of 12 small test boxes).
    """
    if not any(operations[k].kind == "maxpool" for k in range(last + 1)):
        return _backsubstitute_once(operations, bounds, last, coefficients, maxpool_upper_chord)
    return torch.minimum(_backsubstitute_once(operations, bounds, last, coefficients, maxpool_upper_chord),
                         _backsubstitute_once(operations, bounds, last, coefficients, maxpool_upper_constant))


def maxpool_upper_constant(window_low: torch.Tensor, window_high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DeepPoly's max-pool upper bound in the chord's form: y <= x_top where the input with the
    largest upper bound dominates (l_top >= every other u_i), else the constant y <= max_i u_i."""
    top_high, top = window_high.max(dim=-1)
    top_low = window_low.gather(-1, top.unsqueeze(-1)).squeeze(-1)
    second_high = window_high.scatter(-1, top.unsqueeze(-1), float("-inf")).max(dim=-1).values
    dominant = top_low >= second_high
    return top, dominant.to(top_high.dtype), torch.where(dominant, torch.zeros_like(top_high), top_high)


def _backsubstitute_once(operations: list[Operation], bounds: NetworkBounds, last: int, coefficients: torch.Tensor, maxpool_line) -> torch.Tensor:
    lam = coefficients.double()
    constant = torch.zeros(lam.shape[0], dtype=torch.float64, device=lam.device)
    for k in range(last, -1, -1):
        operation = operations[k]
        if operation.kind == "affine":
            _, bias = _double(operation.module)
            if isinstance(operation.module, nn.Conv2d):
                bias = bias.repeat_interleave(operation.out_size // bias.numel())
            constant = constant + lam @ bias
            lam = _affine_transpose(operation, lam)
        elif operation.kind == "relu":
            low, high = bounds.input_of(k)
            active, unstable = low >= 0, (low < 0) & (high > 0)
            upper_slope = torch.where(unstable, high / (high - low).clamp_min(1e-30), active.double())
            upper_intercept = torch.where(unstable, -upper_slope * low, torch.zeros_like(low))
            lower_slope = torch.where(unstable, (high > -low).double(), active.double())
            positive, negative = lam.clamp_min(0), lam.clamp_max(0)
            constant = constant + positive @ upper_intercept
            lam = positive * upper_slope + negative * lower_slope
        elif operation.kind == "maxpool":
            low, high = bounds.input_of(k)
            windows = torch.as_tensor(maxpool_windows(operation), device=lam.device)
            window_low, window_high = low[windows], high[windows]
            # lower line: y >= x_j for the input with the largest lower bound; upper line: the chord
            chosen = windows.gather(1, window_low.argmax(dim=1, keepdim=True)).squeeze(1)
            top, slope, intercept = maxpool_line(window_low, window_high)
            top = windows.gather(1, top.unsqueeze(1)).squeeze(1)
            positive, negative = lam.clamp_min(0), lam.clamp_max(0)
            constant = constant + positive @ intercept
            lam = torch.zeros(lam.shape[0], operation.in_size, dtype=torch.float64, device=lam.device)
            lam = lam.index_add_(1, chosen, negative).index_add_(1, top, positive * slope)
        # flatten: same flattened order, nothing to do
    box_low, box_high = bounds.box
    return constant + lam.clamp_min(0) @ box_high + lam.clamp_max(0) @ box_low


def _unfold_patches(maps: torch.Tensor, size: tuple[int, int], stride: int, padding: int, grid: tuple[int, int]) -> torch.Tensor:
    """Patches of (C, H, W) maps at origins pos * stride - padding for every pos of ``grid``:
    returns (grid_h * grid_w, C, size_h, size_w); outside the map reads 0 (zero padding)."""
    channels, height, width = maps.shape
    pad_bottom = max(0, (grid[0] - 1) * stride + size[0] - padding - height)
    pad_right = max(0, (grid[1] - 1) * stride + size[1] - padding - width)
    padded = F.pad(maps.unsqueeze(0), (padding, pad_right, padding, pad_bottom))
    patches = F.unfold(padded, kernel_size=size, stride=stride)  # (1, C*h*w, positions)
    rows = (padded.shape[-2] - size[0]) // stride + 1
    cols = (padded.shape[-1] - size[1]) // stride + 1
    patches = patches.view(channels, size[0], size[1], rows, cols)[:, :, :, : grid[0], : grid[1]]
    return patches.permute(3, 4, 0, 1, 2).reshape(grid[0] * grid[1], channels, size[0], size[1])


def _conv_chain(operations: list[Operation], last: int) -> bool:
    return all(op.kind == "relu" or (op.kind == "affine" and isinstance(op.module, nn.Conv2d)) for op in operations[: last + 1])


def patch_backsubstitute_upper(operations: list[Operation], bounds: NetworkBounds, last: int, sign: float) -> torch.Tensor:
    """Upper bounds of sign * h_last for EVERY neuron of conv op ``last`` when every op before it
    is a Conv2d or ReLU: the same back-substitution as :func:`backsubstitute_upper`, but each
    neuron's coefficients live only on its receptive-field patch, so the cost is
    neurons x patch size instead of neurons x image size (written by hand for speed)."""
    operation = operations[last]
    out_channels, out_h, out_w = operation.out_shape
    positions = out_h * out_w
    weight, bias = _double(operation.module)
    device = weight.device
    neurons = torch.arange(out_channels * positions, device=device)
    channel_of, position_of = neurons // positions, neurons % positions
    lam = torch.zeros(len(neurons), out_channels, 1, 1, dtype=torch.float64, device=device)
    lam[neurons, channel_of, 0, 0] = sign
    constant = sign * bias[channel_of]
    stride, padding = 1, 0
    for k in range(last, -1, -1):
        op = operations[k]
        if op.kind == "affine":
            weight, bias = _double(op.module)
            if k != last:
                valid = _unfold_patches(torch.ones(1, *op.out_shape[1:], dtype=torch.float64, device=device), lam.shape[-2:], stride, padding, (out_h, out_w))[position_of]
                constant = constant + (lam * valid * bias.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
            lam = F.conv_transpose2d(lam, weight, stride=op.module.stride)
            stride, padding = stride * op.module.stride[0], padding * op.module.stride[0] + op.module.padding[0]
        else:  # relu
            low, high = (t.view(op.in_shape) for t in bounds.input_of(k))
            active, unstable = low >= 0, (low < 0) & (high > 0)
            upper_slope = torch.where(unstable, high / (high - low).clamp_min(1e-30), active.double())
            upper_intercept = torch.where(unstable, -upper_slope * low, torch.zeros_like(low))
            lower_slope = torch.where(unstable, (high > -low).double(), active.double())
            grab = lambda maps: _unfold_patches(maps, lam.shape[-2:], stride, padding, (out_h, out_w))[position_of]  # noqa: E731
            positive, negative = lam.clamp_min(0), lam.clamp_max(0)
            constant = constant + (positive * grab(upper_intercept)).sum(dim=(1, 2, 3))
            lam = positive * grab(upper_slope) + negative * grab(lower_slope)
    box_low, box_high = (t.view(operations[0].in_shape) for t in bounds.box)
    grab = lambda maps: _unfold_patches(maps, lam.shape[-2:], stride, padding, (out_h, out_w))[position_of]  # noqa: E731
    return constant + (lam.clamp_min(0) * grab(box_high)).sum(dim=(1, 2, 3)) + (lam.clamp_max(0) * grab(box_low)).sum(dim=(1, 2, 3))


def linear_bounds(operations: list[Operation], lower: torch.Tensor, upper: torch.Tensor, chunk: int = 1024) -> NetworkBounds:
    """Interval bounds, with every affine layer after the first replaced by back-substituted
    bounds (intersected with the interval ones, so never looser)."""
    bounds = interval_bounds(operations, lower, upper)
    seen_affine = False
    for k, operation in enumerate(operations):
        if operation.kind == "affine":
            if seen_affine:
                low, high = bounds.outputs[k]
                size = operation.out_size
                new_low, new_high = low.clone(), high.clone()
                if _conv_chain(operations, k):
                    new_high = torch.minimum(high, patch_backsubstitute_upper(operations, bounds, k, 1.0))
                    new_low = torch.maximum(low, -patch_backsubstitute_upper(operations, bounds, k, -1.0))
                for start in range(0, size if not _conv_chain(operations, k) else 0, chunk):
                    stop = min(size, start + chunk)
                    eye = torch.eye(size, dtype=torch.float64, device=low.device)[start:stop]
                    upper_part = backsubstitute_upper(operations, bounds, k, torch.cat([eye, -eye]))
                    new_high[start:stop] = torch.minimum(high[start:stop], upper_part[: stop - start])
                    new_low[start:stop] = torch.maximum(low[start:stop], -upper_part[stop - start :])
                # rounding can cross the two bounds by ~1e-15 for constant neurons
                bounds.outputs[k] = (torch.minimum(new_low, new_high), new_high)
            seen_affine = True
        else:
            bounds.outputs[k] = _propagate_one(operation, bounds.input_of(k), bounds.outputs[k])
    return bounds


def _propagate_one(operation: Operation, source: Bounds, current: Bounds) -> Bounds:
    low, high = source
    if operation.kind == "relu":
        return low.clamp_min(0), high.clamp_min(0)
    if operation.kind == "maxpool":
        windows = torch.as_tensor(maxpool_windows(operation), device=low.device)
        return low[windows].max(dim=1).values, high[windows].max(dim=1).values
    if operation.kind == "flatten":
        return low, high
    return current


def refresh_after(operations: list[Operation], bounds: NetworkBounds, first: int) -> NetworkBounds:
    """Recompute bounds of every op after ``first`` (e.g. after LP tightening of op ``first``)."""
    for k in range(first + 1, len(operations)):
        operation = operations[k]
        if operation.kind == "affine":
            low, high = bounds.outputs[k]
            size = operation.out_size
            eye = torch.eye(size, dtype=torch.float64, device=low.device)
            upper_part = backsubstitute_upper(operations, bounds, k, torch.cat([eye, -eye]))
            new_low, new_high = torch.maximum(low, -upper_part[size:]), torch.minimum(high, upper_part[:size])
            bounds.outputs[k] = (torch.minimum(new_low, new_high), new_high)
        else:
            bounds.outputs[k] = _propagate_one(operation, bounds.input_of(k), bounds.outputs[k])
    return bounds


def margin_spec(num_classes: int, target: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Rows F_c - F_t for every c != t, then (F_a + F_b)/2 - F_t for every pair a < b.

    The pair rows are what makes the bound multi-label aware: c_t leaves the top-2 only where
    two other classes beat it at the same point, and min(F_a, F_b) <= (F_a + F_b)/2.
    """
    others = [c for c in range(num_classes) if c != target]
    pairs = [(a, b) for i, a in enumerate(others) for b in others[i + 1 :]]
    spec = torch.zeros(len(others) + len(pairs), num_classes, dtype=torch.float64)
    for row, c in enumerate(others):
        spec[row, c], spec[row, target] = 1.0, -1.0
    for row, (a, b) in enumerate(pairs, start=len(others)):
        spec[row, a], spec[row, b], spec[row, target] = 0.5, 0.5, -1.0
    return spec, pairs


@dataclass
class MarginBounds:
    """Bounds on m_c = F_c - F_t (c != t) and the resulting bound on the multi-label objective
    max_x 2nd-max_{c != t} m_c(x) (Sect. 3, the verifier's objective)."""

    classes: list[int]
    lower: np.ndarray
    upper: np.ndarray
    objective_upper: float


def margin_bounds(operations: list[Operation], bounds: NetworkBounds, target: int) -> MarginBounds:
    """Upper bound of the second-max objective: max over pairs of min(U_a, U_b, U_ab)."""
    num_classes = operations[-1].out_size
    spec, pairs = margin_spec(num_classes, target)
    spec = spec.to(bounds.box[0].device)
    upper = backsubstitute_upper(operations, bounds, len(operations) - 1, spec).cpu().numpy()
    lower = -backsubstitute_upper(operations, bounds, len(operations) - 1, -spec[: num_classes - 1]).cpu().numpy()
    classes = [c for c in range(num_classes) if c != target]
    single = dict(zip(classes, upper[: len(classes)]))
    # interval bounds of F can be tighter than the relaxation for single margins in rare cases
    out_low, out_high = (t.cpu().numpy() for t in bounds.outputs[-1])
    for i, c in enumerate(classes):
        single[c] = min(single[c], out_high[c] - out_low[target])
        lower[i] = max(lower[i], out_low[c] - out_high[target])
    pair_upper = [min(single[a], single[b], u) for (a, b), u in zip(pairs, upper[len(classes) :])]
    return MarginBounds(classes, lower, np.array([single[c] for c in classes]), float(max(pair_upper)))
