from __future__ import annotations

import math

from search import Guard, guard_reason


def h(mark: int, d: float, g: float) -> dict[str, float]:
    return {"mark": mark, "d_loss": d, "g_loss": g}


def test_guard_names_nan_divergence_growth_and_collapse() -> None:
    guard = Guard(max_loss=50.0, grow_evals=3, collapse_loss=1e-3, collapse_evals=2)
    assert guard_reason([h(1, 1.0, 1.0), h(2, 1.2, 0.9)], guard) is None
    assert "g_loss is nan" in (guard_reason([h(1, 1.0, math.nan)], guard) or "")
    assert "above max_loss=50" in (guard_reason([h(1, 1.0, 80.0)], guard) or "")
    growing = [h(i, 0.5, g) for i, g in enumerate([1.0, 2.0, 4.0, 8.0])]
    assert "grew for 3 evaluations" in (guard_reason(growing, guard) or "")
    assert guard_reason(growing[:3], guard) is None  # not yet k growth steps
    collapsed = [h(1, 1.0, 1.0), h(2, 1e-4, 9.0), h(3, 5e-5, 9.5)]
    assert "discriminator collapse" in (guard_reason(collapsed, guard) or "")
    assert guard_reason(collapsed, Guard(enabled=False)) is None
