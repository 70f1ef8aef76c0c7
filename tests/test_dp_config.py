"""DPConfig: validated on construction, errors name the field, enums accept their values."""

from __future__ import annotations

import pytest

from secfl.dp import DPConfig, DPMode, MechanismKind
from secfl.errors import ConfigError


def test_defaults_and_enum_coercion():
    cfg = DPConfig(clip=1.0, epsilon=4.0)
    assert cfg.delta == 1e-5 and cfg.mode is DPMode.DISTRIBUTED and cfg.mechanism is MechanismKind.GAUSSIAN
    assert cfg.min_honest == 1 and cfg.accountant == "rdp"
    cfg = DPConfig(clip=1, noise_multiplier=2, mode="central", mechanism="skellam")
    assert cfg.mode is DPMode.CENTRAL and cfg.mechanism is MechanismKind.SKELLAM and cfg.mechanism.integer
    assert isinstance(cfg.clip, float) and cfg.noise_multiplier == 2.0
    with pytest.raises(AttributeError):
        cfg.clip = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("kwargs,field", [
    (dict(clip=0.0, epsilon=1.0), "clip"),
    (dict(clip=float("nan"), epsilon=1.0), "clip"),
    (dict(clip=1.0), "exactly one of epsilon"),
    (dict(clip=1.0, epsilon=1.0, noise_multiplier=1.0), "exactly one of epsilon"),
    (dict(clip=1.0, epsilon=-1.0), "epsilon"),
    (dict(clip=1.0, epsilon=float("inf")), "epsilon"),
    (dict(clip=1.0, noise_multiplier=0.0), "noise_multiplier"),
    (dict(clip=1.0, epsilon=1.0, delta=1.0), "delta"),
    (dict(clip=1.0, epsilon=1.0, delta=0.0), "delta"),
    (dict(clip=1.0, epsilon=1.0, mode="local"), "mode"),
    (dict(clip=1.0, epsilon=1.0, mechanism="laplace"), "mechanism"),
    (dict(clip=1.0, epsilon=1.0, min_honest=0), "min_honest"),
    (dict(clip=1.0, epsilon=1.0, min_honest=True), "min_honest"),
    (dict(clip=1.0, epsilon=1.0, accountant="prv"), "accountant"),
    (dict(clip=1.0, epsilon=1.0, accountant="pld", mechanism="skellam"), "pld"),
    (dict(clip=1.0, epsilon=1.0, wrap_probability=1.5), "wrap_probability"),
])
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        DPConfig(**kwargs)
