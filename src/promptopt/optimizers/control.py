"""Discrete-time feedback-control math: a PID controller, oscillation detection and step-response metrics.

Pure Python, no promptopt imports, so it can be tested (and reused) on its own. Time is measured in
controller *ticks* (one tick = one sample period, dt = 1), the convention of digital control.

PID (positional form, backward-Euler integral)::

    I_t = clamp(I_{t-1} + e_t)                      # anti-windup: |Ki * I_t| <= integral_limit
    D_t = a * D_{t-1} + (1 - a) * (e_t - e_{t-1})  # first-order low-pass on the error difference
    u_t = Kp * e_t + Ki * I_t + Kd * D_t

The first tick has no previous error, so its difference is 0 (no derivative kick). With
``output_limits`` the integral is also *conditionally* frozen while the output is saturated and the
error would push it further into saturation (the "clamping" anti-windup method); ``u`` itself is
returned unclipped, so the caller sees how hard the controller pushes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ControlStep:
    """One controller update: the error it saw, the three terms and their sum ``u``."""

    error: float
    p: float
    i: float
    d: float
    u: float
    integral: float
    """Accumulated error (after the anti-windup clamp)."""
    derivative: float
    """Filtered error difference."""
    saturated: bool = False
    """The output was outside ``output_limits`` (so the integral may have been frozen)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PID:
    """A discrete PID controller with an anti-windup clamp and a filtered derivative.

    Args:
        kp, ki, kd: the gains (>= 0). A P controller is ``ki = kd = 0``, a PI controller ``kd = 0``.
        integral_limit: bound on the integral *term*, ``|ki * I| <= integral_limit`` (None: unbounded).
        derivative_filter: the low-pass coefficient ``a`` in [0, 1); 0 uses the raw difference, values
            near 1 smooth heavily (the filter's time constant is about ``1 / (1 - a)`` ticks).
        output_limits: (low, high) of the actuator; enables conditional integration (see module doc).

    Example:
        >>> pid = PID(kp=1.0, ki=0.5)
        >>> [round(pid.update(e).u, 3) for e in (0.4, 0.2, 0.1)]
        [0.6, 0.5, 0.45]
    """

    def __init__(
        self,
        kp: float,
        ki: float = 0.0,
        kd: float = 0.0,
        *,
        integral_limit: float | None = None,
        derivative_filter: float = 0.0,
        output_limits: tuple[float, float] | None = None,
    ) -> None:
        for name, value in (("kp", kp), ("ki", ki), ("kd", kd)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"gain {name} must be a finite number >= 0, got {value!r}")
        if integral_limit is not None and integral_limit < 0:
            raise ValueError(f"integral_limit must be >= 0 or None, got {integral_limit!r}")
        if not 0.0 <= derivative_filter < 1.0:
            raise ValueError(f"derivative_filter must be in [0, 1), got {derivative_filter!r}")
        if output_limits is not None and output_limits[0] > output_limits[1]:
            raise ValueError(f"output_limits must be (low, high) with low <= high, got {output_limits!r}")
        self.kp, self.ki, self.kd = kp, ki, kd
        self.integral_limit = integral_limit
        self.derivative_filter = derivative_filter
        self.output_limits = output_limits
        self.reset()

    def reset(self) -> None:
        self.integral = 0.0
        self.derivative = 0.0
        self.prev_error: float | None = None
        self.ticks = 0

    def _clamp_integral(self, value: float) -> float:
        if self.integral_limit is None or self.ki == 0:
            return value
        bound = self.integral_limit / self.ki
        return max(-bound, min(bound, value))

    def update(self, error: float) -> ControlStep:
        """Advance one tick with the measured ``error`` (setpoint - output) and return the control step."""
        if not math.isfinite(error):
            raise ValueError(f"error must be finite, got {error!r}")
        diff = 0.0 if self.prev_error is None else error - self.prev_error
        a = self.derivative_filter
        derivative = a * self.derivative + (1.0 - a) * diff
        integral = self._clamp_integral(self.integral + error)
        u = self.kp * error + self.ki * integral + self.kd * derivative
        saturated = False
        if self.output_limits is not None:
            low, high = self.output_limits
            saturated = u > high or u < low
            if (u > high and error > 0) or (u < low and error < 0):
                # conditional integration: do not integrate further into saturation
                integral = self._clamp_integral(self.integral)
                u = self.kp * error + self.ki * integral + self.kd * derivative
        self.integral, self.derivative, self.prev_error = integral, derivative, error
        self.ticks += 1
        return ControlStep(
            error=error,
            p=self.kp * error,
            i=self.ki * integral,
            d=self.kd * derivative,
            u=u,
            integral=integral,
            derivative=derivative,
            saturated=saturated,
        )


# -- signal analysis ---------------------------------------------------------------------------------


def differences(values: Sequence[float]) -> list[float]:
    """First differences ``x[k+1] - x[k]``."""
    return [b - a for a, b in itertools.pairwise(values)]


def sign_changes(values: Sequence[float], *, deadband: float = 0.0) -> int:
    """How often the sign flips along ``values``; entries with ``|x| <= deadband`` are skipped (they carry
    no direction)."""
    signs = [1 if x > 0 else -1 for x in values if abs(x) > deadband]
    return sum(a != b for a, b in itertools.pairwise(signs))


def is_oscillating(outputs: Sequence[float], *, window: int, min_changes: int, deadband: float = 0.0) -> bool:
    """True when the last ``window`` output changes flip sign at least ``min_changes`` times
    (up, down, up, ... : the loop bounces instead of converging)."""
    if window < 2 or min_changes < 1:
        return False
    diffs = differences(outputs)[-window:]
    return sign_changes(diffs, deadband=deadband) >= min_changes


@dataclass(frozen=True)
class StepResponse:
    """Textbook step-response metrics of an output trajectory ``y_0 .. y_T`` (all in output units)."""

    initial: float
    final: float
    reference: float
    peak: float
    peak_step: int
    overshoot: float
    """Peak beyond the reference, as a fraction of the step ``reference - initial`` (0 if none)."""
    settling_steps: int | None
    """First step after which the output stays within ``band`` of the reference (None: never)."""
    rise_steps: int | None
    """Steps from 10 % to 90 % of the step (None: the output never got to 90 %)."""
    steady_state_error: float
    """``reference - final``."""
    sign_changes: int
    """Sign changes of the output differences (0 for a monotone response)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def overshoot(outputs: Sequence[float], reference: float | None = None) -> float:
    """Fractional overshoot: how far the trajectory peaks beyond ``reference`` (default: its final value),
    relative to the size of the step from the initial value. 0 for a response that never passes it."""
    if not outputs:
        raise ValueError("overshoot needs at least one output")
    ref = outputs[-1] if reference is None else reference
    step = ref - outputs[0]
    if step == 0:
        return 0.0
    beyond = (max(outputs) - ref) if step > 0 else (ref - min(outputs))
    return max(0.0, beyond / abs(step))


def settling_steps(outputs: Sequence[float], reference: float | None = None, *, band: float = 0.02) -> int | None:
    """Index of the first output after which every output is within ``band`` of ``reference`` (default:
    the final value); None when the last output is outside the band."""
    if not outputs:
        raise ValueError("settling_steps needs at least one output")
    ref = outputs[-1] if reference is None else reference
    settled: int | None = None
    for k in range(len(outputs) - 1, -1, -1):
        if abs(outputs[k] - ref) > band + 1e-9:  # scores are multiples of 1/n: compare with slack
            break
        settled = k
    return settled


def rise_steps(
    outputs: Sequence[float], reference: float | None = None, *, low: float = 0.1, high: float = 0.9
) -> int | None:
    """Steps between first reaching ``low`` and ``high`` of the step towards ``reference``."""
    if not outputs:
        raise ValueError("rise_steps needs at least one output")
    ref = outputs[-1] if reference is None else reference
    step = ref - outputs[0]
    if step == 0:
        return 0

    def first(frac: float) -> int | None:
        target = outputs[0] + frac * step
        return next((k for k, y in enumerate(outputs) if (y - target) * (1 if step > 0 else -1) >= 0), None)

    lo, hi = first(low), first(high)
    return None if lo is None or hi is None else hi - lo


def step_response(outputs: Sequence[float], reference: float | None = None, *, band: float = 0.02) -> StepResponse:
    """All metrics at once (``reference`` defaults to the final value)."""
    if not outputs:
        raise ValueError("step_response needs at least one output")
    ref = outputs[-1] if reference is None else reference
    step = ref - outputs[0]
    peak_step = max(range(len(outputs)), key=lambda k: outputs[k] if step >= 0 else -outputs[k])
    return StepResponse(
        initial=outputs[0],
        final=outputs[-1],
        reference=ref,
        peak=outputs[peak_step],
        peak_step=peak_step,
        overshoot=overshoot(outputs, ref),
        settling_steps=settling_steps(outputs, ref, band=band),
        rise_steps=rise_steps(outputs, ref),
        steady_state_error=ref - outputs[-1],
        sign_changes=sign_changes(differences(outputs)),
    )
