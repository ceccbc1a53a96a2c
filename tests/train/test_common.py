from __future__ import annotations

import pytest

pytest.importorskip("torch")


def test_weight_average_follows_the_warmed_up_decay_exactly() -> None:
    import torch

    from kdserve.core.errors import ConfigError
    from kdserve.train.common import WeightAverage

    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    average = WeightAverage(model, decay=0.5)
    assert average.model is not model and not any(p.requires_grad for p in average.model.parameters())
    with torch.no_grad():
        model.weight.fill_(3.0)
    average.update(model)  # step 1: d = min(0.5, 2 / 11) = 2/11 -> 1 * 2/11 + 3 * 9/11
    assert average.model.weight.item() == pytest.approx(29 / 11, abs=1e-6)
    with torch.no_grad():
        model.weight.fill_(5.0)
    average.update(model)  # step 2: d = min(0.5, 3 / 12) = 1/4
    assert average.model.weight.item() == pytest.approx(29 / 11 / 4 + 5 * 3 / 4, abs=1e-6)
    for _ in range(20):  # d reaches 0.5 from step 8 on: the average closes half the gap per step
        average.update(model)
    assert average.model.weight.item() == pytest.approx(5.0, abs=1e-4)
    assert average.model.bias.item() == 0.0 and model.weight.item() == 5.0  # the trained model untouched
    with pytest.raises(ConfigError, match="decay must be in"):
        WeightAverage(model, decay=1.0)
