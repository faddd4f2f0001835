"""The losses at many classes: ``lossjax check-grads``'s comparison of autodiff with each
closed form, on batteries at K = 2, 100 and 1,000 (its own battery stops at 100), including
rescaled_mse at the (k, M) Hui & Belkin (2021) use for 1,000 classes."""

from __future__ import annotations

import pytest

from lossjax import gradcheck

MANY = ((2, (16,)), (100, (8,)), (1000, (4,)))


@pytest.mark.slow
@pytest.mark.parametrize("loss", [None, "rescaled_mse(k=15,M=30)"])
def test_closed_forms_hold_up_to_1000_classes(monkeypatch, loss):
    monkeypatch.setattr(gradcheck, "CASES", MANY)
    code, text = gradcheck.run(loss)
    assert code == 0, text
    assert "K=1000 batch (4,)" in text
    if loss:
        assert "rescaled_mse(k=15,M=30)" in text
