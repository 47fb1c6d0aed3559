"""promptopt.optimizers.control: the PID controller, oscillation detection and step-response metrics, on their own."""

from __future__ import annotations

import pytest

from promptopt.optimizers.control import (
    PID,
    differences,
    is_oscillating,
    overshoot,
    rise_steps,
    settling_steps,
    sign_changes,
    step_response,
)


def simulate(pid: PID, *, gain: float = 1.0, steps: int = 60, setpoint: float = 1.0, leak: float = 0.0) -> list[float]:
    """Closed loop with the integrating plant y' = (1 - leak) * y + gain * u."""
    y, ys = 0.0, [0.0]
    for _ in range(steps):
        u = pid.update(setpoint - y).u
        y = (1 - leak) * y + gain * u
        ys.append(y)
    return ys


# -- PID ---------------------------------------------------------------------------------------------------


def test_terms_add_up() -> None:
    pid = PID(kp=2.0, ki=0.5, kd=1.0)
    s1 = pid.update(0.4)
    assert (s1.p, s1.i, s1.d) == pytest.approx((0.8, 0.2, 0.0))  # no derivative kick on the first tick
    s2 = pid.update(0.1)
    assert s2.p == pytest.approx(0.2)
    assert s2.integral == pytest.approx(0.5) and s2.i == pytest.approx(0.25)
    assert s2.d == pytest.approx(-0.3)
    assert s2.u == pytest.approx(s2.p + s2.i + s2.d)


def test_p_only_is_static() -> None:
    pid = PID(kp=3.0)
    assert [pid.update(e).u for e in (0.5, 0.5, -0.2)] == pytest.approx([1.5, 1.5, -0.6])


def test_integral_clamp_bounds_the_i_term() -> None:
    pid = PID(kp=0.0, ki=0.5, integral_limit=0.2)
    steps = [pid.update(1.0) for _ in range(10)]
    assert [s.i for s in steps][:2] == pytest.approx([0.2, 0.2])
    assert max(s.i for s in steps) == pytest.approx(0.2)
    assert pid.integral == pytest.approx(0.4)  # the state is clamped, not just the output
    # ...so it unwinds at once when the error changes sign
    assert pid.update(-0.4).i == pytest.approx(0.0)
    unclamped = PID(kp=0.0, ki=0.5)
    assert [unclamped.update(1.0).i for _ in range(10)][-1] == pytest.approx(5.0)


def test_conditional_integration_freezes_the_integral_in_saturation() -> None:
    pid = PID(kp=1.0, ki=1.0, output_limits=(0.0, 1.0))
    first = pid.update(0.6)  # u = 0.6 + 0.6 would saturate: the integral is not advanced
    assert first.saturated and first.integral == 0.0 and first.u == pytest.approx(0.6)
    small = pid.update(0.2)  # not saturated: integrates
    assert not small.saturated and small.integral == pytest.approx(0.2)


def test_derivative_filter_is_a_first_order_low_pass() -> None:
    raw = PID(kp=0.0, kd=1.0)
    filt = PID(kp=0.0, kd=1.0, derivative_filter=0.5)
    errors = [0.0, 1.0, 1.0, 1.0, 1.0]
    r = [raw.update(e).d for e in errors]
    f = [filt.update(e).d for e in errors]
    assert r == pytest.approx([0.0, 1.0, 0.0, 0.0, 0.0])  # a spike
    assert f == pytest.approx([0.0, 0.5, 0.25, 0.125, 0.0625])  # the same impulse, smoothed and decaying
    assert sum(f) < sum(r) + 1e-9


def test_reset_and_validation() -> None:
    pid = PID(kp=1.0, ki=1.0, kd=1.0)
    pid.update(1.0)
    pid.update(0.5)
    pid.reset()
    assert (pid.integral, pid.derivative, pid.prev_error, pid.ticks) == (0.0, 0.0, None, 0)
    for kwargs in ({"kp": -1.0}, {"kp": 1.0, "ki": float("nan")}, {"kp": 1.0, "derivative_filter": 1.0}):
        with pytest.raises(ValueError):
            PID(**kwargs)
    with pytest.raises(ValueError):
        PID(kp=1.0, output_limits=(1.0, 0.0))
    with pytest.raises(ValueError):
        PID(kp=1.0).update(float("inf"))


# -- textbook closed-loop behaviour -------------------------------------------------------------------------


def test_p_leaves_steady_state_error_on_a_leaky_plant_and_pi_removes_it() -> None:
    p = simulate(PID(kp=1.0), gain=0.5, leak=0.2)
    pi = simulate(PID(kp=1.0, ki=0.2), gain=0.5, leak=0.2)
    # P: equilibrium where leak * y = gain * kp * (1 - y)  ->  y = 0.5 / 0.7
    assert p[-1] == pytest.approx(0.5 / 0.7, abs=1e-6)
    assert pi[-1] == pytest.approx(1.0, abs=1e-3)


def test_gain_sets_the_damping() -> None:
    slow = simulate(PID(kp=0.5))  # y' = 0.5 y + 0.5: overdamped, monotone
    ringing = simulate(PID(kp=1.5))  # y' = -0.5 y + 1.5: overshoots, decaying oscillation
    unstable = simulate(PID(kp=2.5), steps=12)  # |1 - kp| > 1: growing oscillation
    assert step_response(slow, 1.0).overshoot == 0.0 and sign_changes(differences(slow)) == 0
    r = step_response(ringing, 1.0)
    assert r.overshoot == pytest.approx(0.5) and r.peak_step == 1
    assert is_oscillating(ringing[:8], window=6, min_changes=4)
    assert r.settling_steps == step_response(slow, 1.0).settling_steps == 6  # |error| halves every tick in both
    assert abs(unstable[-1] - 1.0) > abs(unstable[1] - 1.0)
    assert is_oscillating(unstable, window=6, min_changes=5)


def test_anti_windup_reduces_overshoot_after_saturation() -> None:
    def run(limit: float | None) -> list[float]:
        pid = PID(kp=0.5, ki=0.3, integral_limit=limit)
        y, ys = 0.0, [0.0]
        for _ in range(40):
            u = max(-0.1, min(0.1, pid.update(1.0 - y).u))  # a slow actuator: the output saturates
            y += u
            ys.append(y)
        return ys

    wound, clamped = run(None), run(0.1)
    assert overshoot(wound, 1.0) > 0.5
    assert overshoot(clamped, 1.0) < overshoot(wound, 1.0) / 3


# -- metrics -----------------------------------------------------------------------------------------------


def test_sign_changes_skip_the_deadband() -> None:
    assert sign_changes([1, -1, 1, -1]) == 3
    assert sign_changes([1, 0, 1, 0, -1]) == 1
    assert sign_changes([0.5, -0.01, 0.4], deadband=0.05) == 0
    assert differences([1, 3, 2]) == [2, -1]


def test_is_oscillating_uses_only_the_window() -> None:
    ys = [0.0, 0.5, 0.7, 0.8, 0.6, 0.8, 0.6, 0.8]
    assert is_oscillating(ys, window=4, min_changes=3)
    assert not is_oscillating(ys[:5], window=4, min_changes=3)
    assert not is_oscillating(ys, window=0, min_changes=3)
    assert not is_oscillating([0.1, 0.2, 0.3, 0.4, 0.5], window=4, min_changes=1)


def test_step_response_metrics() -> None:
    ys = [0.0, 0.6, 1.2, 0.9, 1.05, 0.98, 1.0]
    r = step_response(ys, 1.0, band=0.05)
    assert r.peak == 1.2 and r.peak_step == 2
    assert r.overshoot == pytest.approx(0.2)
    assert r.settling_steps == 4
    assert r.rise_steps == 1  # 10 % reached at step 1, 90 % at step 2
    assert r.steady_state_error == pytest.approx(0.0)
    assert r.sign_changes == 4
    assert settling_steps([0.0, 0.5, 0.8], 1.0, band=0.05) is None  # never settled
    assert settling_steps([0.0, 0.5, 0.8]) == 2  # default reference: the final value
    assert overshoot([0.5, 0.5]) == 0.0
    assert overshoot([1.0, 0.2, 0.5], 0.5) == pytest.approx(0.6)  # a downward step undershooting
    assert rise_steps([0.0, 0.05, 0.5]) is not None
    assert step_response([0.3]).overshoot == 0.0
    with pytest.raises(ValueError):
        step_response([])
