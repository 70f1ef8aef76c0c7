"""Exposure declarations: the README table, the rules, and declared == measured on real views.

No torch here: the measured side runs real protocol rounds on small random vectors and checks
whether each coalition's estimate (from its recorded view) *is* the target's update.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from secfl.errors import ConfigError
from secfl.protocols import PROTOCOLS, get_protocol
from secfl.protocols.exposure import (
    EXPOSURES,
    TABLE_BEGIN,
    TABLE_END,
    Coalition,
    Deployment,
    Via,
    default_deployment,
    exposing_breach,
    exposure_table,
    individual_update_exposed,
    readme_block,
)

ROOT = Path(__file__).resolve().parent.parent


AVAILABLE = list(PROTOCOLS)  # a protocol that fails to load fails these tests; it never drops out


def test_every_protocol_has_a_declaration() -> None:
    assert set(EXPOSURES) == set(PROTOCOLS)


def test_readme_table_is_generated_from_the_declarations() -> None:
    text = (ROOT / "protocols" / "README.md").read_text()
    assert TABLE_BEGIN in text and TABLE_END in text, "protocols/README.md lost the generated-table markers"
    committed = text[text.index(TABLE_BEGIN): text.index(TABLE_END) + len(TABLE_END)]
    assert committed == readme_block(), (
        "protocols/README.md's table differs from secfl.protocols.exposure.exposure_table(); regenerate it:\n"
        + readme_block())


def test_table_lists_each_protocol_once() -> None:
    rows = [line for line in exposure_table().splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == list(EXPOSURES)


@pytest.mark.parametrize(("protocol", "coalition", "expected"), [
    ("plaintext", Coalition(servers=1), True),
    ("plaintext", Coalition(clients=1), False),
    ("ckks", Coalition(servers=1), False),
    ("ckks", Coalition(servers=1, clients=1), True),
    ("ckks", Coalition(servers=1, members=1), True),
    ("ckks", Coalition(clients=3), False),  # clients hold the key but never see another's ciphertext
    ("ckks-threshold", Coalition(servers=1, members=2), False),
    ("ckks-threshold", Coalition(servers=1, members=3), True),
    ("ckks-threshold", Coalition(members="all"), False),  # no ciphertext without the server
    ("additive", Coalition(servers=1), False),
    ("additive", Coalition(servers="S"), True),
    ("secagg", Coalition(servers=1, clients=4), False),
    ("secagg", Coalition(servers=1, clients="t"), True),
    ("secagg", Coalition(clients=8), False),
])
def test_declared_rules(protocol: str, coalition: Coalition, expected: bool) -> None:
    assert individual_update_exposed(protocol, coalition) is expected


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_subtraction_breaches_every_protocol(protocol: str) -> None:
    dep = default_deployment(protocol, 10)
    b = exposing_breach(protocol, Coalition(clients="n-1"), dep)
    assert b is not None and b.via is Via.SUBTRACTION
    assert not individual_update_exposed(protocol, Coalition(clients=8), dep)


def test_symbols_resolve_against_the_deployment() -> None:
    dep = Deployment(10, servers=3, members=5, threshold=3)
    assert Coalition(servers="S", clients="n-1", members="t").resolve(dep) == (3, 9, 3)
    assert Coalition(servers="all", members="all").resolve(dep) == (3, 0, 5)
    with pytest.raises(ConfigError):
        Coalition(clients="everyone")
    with pytest.raises(ConfigError):
        Coalition(servers=-1)
    with pytest.raises(ConfigError):
        Deployment(0)


# ----------------------------------------------------------------------------------------------
# declared == measured, on recorded views


def _record(protocol: str, n: int = 5, dim: int = 64, dp_noise: float = 0.0, seed: int = 1):  # type: ignore[no-untyped-def]
    from secfl.threats.views import run_round

    rng = np.random.default_rng(seed)
    updates = [rng.normal(scale=0.1, size=dim).astype(np.float32).astype(np.float64) for _ in range(n)]
    weights = [float(w) for w in rng.integers(1, 9, size=n)]
    inputs = updates
    if dp_noise:
        from secfl.crypto.prg import Prg
        from secfl.dp import GaussianMechanism

        mech = GaussianMechanism(noise_multiplier=dp_noise, clip=1.0)
        inputs = [u + mech.client_share(dim, Prg()) for u in updates]
        weights = [1.0] * n
    opts: dict[str, object] = {}
    fields = get_protocol(protocol).Options.__dataclass_fields__
    if "clip_range" in fields:
        opts["clip_range"] = float(2 ** np.ceil(np.log2(max(np.abs(v).max() for v in inputs))))
    if "max_weight" in fields:
        opts["max_weight"] = max(weights)
    return run_round(protocol, inputs, weights, options=opts, seed=seed), updates


COALITIONS = [
    Coalition(servers=1), Coalition(clients=1), Coalition(servers=1, clients=1), Coalition(servers=1, clients="t"),
    Coalition(servers="all", members="t"), Coalition(servers="all", members="all"), Coalition(clients="n-1"),
    Coalition(servers=1, clients="n-1"),
]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("protocol", AVAILABLE)
def test_declared_exposure_matches_what_the_view_yields(protocol: str) -> None:
    from secfl.threats.views import adversary_view, corrupt_parties, estimate_update

    rec, updates = _record(protocol)
    target = 2
    for coalition in COALITIONS:
        declared = exposing_breach(protocol, coalition, rec.deployment) is not None
        est = estimate_update(adversary_view(rec, corrupt_parties(rec, coalition, target), target))
        cos = _cos(est.vector, updates[target])
        rel = float(np.linalg.norm(est.vector - updates[target]) / np.linalg.norm(updates[target]))
        where = f"{protocol} / {coalition.describe()}: {est.source} (cos {cos:+.3f}, rel. error {rel:.2e})"
        if declared:
            assert est.opened and cos > 0.999 and rel < 1e-2, where
        else:
            assert not est.opened, where
            if est.individual:  # ciphertexts, masked inputs, single shares: uncorrelated with the update
                assert abs(cos) < 0.5, where


@pytest.mark.parametrize("protocol", AVAILABLE)
def test_subtraction_exact_without_dp_blunted_with_dp(protocol: str) -> None:
    from secfl.threats.views import adversary_view, corrupt_parties, estimate_update

    target = 4
    rec, updates = _record(protocol, seed=3)
    view = adversary_view(rec, corrupt_parties(rec, Coalition(clients="n-1"), target), target)
    est = estimate_update(view)
    assert est.source.endswith("(subtraction)")
    err = float(np.max(np.abs(est.vector - updates[target])))
    bound = {"plaintext": 1e-9, "additive": 1e-5, "secagg": 1e-5}.get(protocol, 1e-2)  # quantization / CKKS
    assert err < bound, f"{protocol}: subtraction off by {err:.3g}"

    rec, updates = _record(protocol, seed=3, dp_noise=1.0)
    est = estimate_update(adversary_view(rec, corrupt_parties(rec, Coalition(clients="n-1"), target), target))
    assert est.opened  # it did subtract ...
    assert abs(_cos(est.vector, updates[target])) < 0.5  # ... but what is left is mostly noise
    assert np.linalg.norm(est.vector - updates[target]) > 2 * np.linalg.norm(updates[target])


def test_the_target_cannot_attack_itself() -> None:
    from secfl.threats.views import Parties, adversary_view

    rec, _ = _record("plaintext", n=3)
    with pytest.raises(ConfigError):
        adversary_view(rec, Parties(clients=(1,)), 1)


def test_every_registered_protocol_loads() -> None:
    for name in PROTOCOLS:
        assert get_protocol(name).name == name
