"""``ckks-threshold`` options (frozen, validated) and the round's public slot codec."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from secfl.crypto.threshold import MAX_MEMBERS, ThresholdParams, ThresholdPreset
from secfl.errors import ConfigError
from secfl.protocols.ckks_encoding import InputKind, SlotCodec

__all__ = ["CkksThresholdOptions", "round_codec"]


@dataclass(frozen=True)
class CkksThresholdOptions:
    """Options of ``ckks-threshold``.

    ``quorum``: (t, n) — n members hold shares of the key, any t decrypt (1 <= t <= n).
    ``quorum_dropouts``: member indices that are offline whenever a decryption is requested
    (they still took part in key generation).
    ``preset`` / ``params`` (a :class:`ThresholdParams` or a dict of its fields) / ``scale_bits``:
    the parameter set. ``stat_security_bits`` (>= 30) and ``max_decryptions`` (τ: ciphertexts
    decrypted under one key before it is regenerated) size the flooding noise; when given they
    override the parameter set's. ``clip_range``, ``max_weight``, ``input``: as for ``ckks``.
    ``flooding``: ``heuristic`` (the ``standard`` preset's) or ``statistical`` (the ``statistical``
    preset's; :class:`~secfl.crypto.threshold.Flooding` states each guarantee exactly).
    ``min_clients``: members decrypt only an aggregate of at least this many distinct, signed
    client uploads (1 would let the server have one client's update decrypted alone).
    """

    quorum: tuple[int, int] = (3, 5)
    quorum_dropouts: tuple[int, ...] = ()
    preset: ThresholdPreset = ThresholdPreset.STANDARD
    params: ThresholdParams | None = None
    scale_bits: int | None = None
    stat_security_bits: int | None = None
    max_decryptions: int | None = None
    clip_range: float = 100.0
    max_weight: float = 1e4
    input: InputKind = InputKind.FLOAT
    min_clients: int = 2
    flooding: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.min_clients, bool) or not isinstance(self.min_clients, int) or self.min_clients < 1:
            raise ConfigError(f"ckks-threshold.min_clients must be an integer >= 1, got {self.min_clients!r}")
        q = self.quorum
        ok = isinstance(q, (tuple, list)) and len(q) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                  for v in q)
        if not ok or not 1 <= q[0] <= q[1] <= MAX_MEMBERS:
            raise ConfigError(f"ckks-threshold.quorum must be (t, n) with 1 <= t <= n <= {MAX_MEMBERS}, got {q!r}")
        object.__setattr__(self, "quorum", (int(q[0]), int(q[1])))
        try:
            drops = tuple(sorted({int(j) for j in self.quorum_dropouts}))
        except (TypeError, ValueError):
            raise ConfigError(f"ckks-threshold.quorum_dropouts must be member indices, got {self.quorum_dropouts!r}"
                              ) from None
        if any(not 0 <= j < q[1] for j in drops):
            raise ConfigError(f"ckks-threshold.quorum_dropouts must be member indices in [0, {q[1]}), got {drops}")
        object.__setattr__(self, "quorum_dropouts", drops)
        try:
            object.__setattr__(self, "preset", ThresholdPreset(self.preset))
        except ValueError:
            raise ConfigError(f"ckks-threshold.preset must be one of {[p.value for p in ThresholdPreset]}, got"
                              f" {self.preset!r}") from None
        allowed_inputs = [InputKind.FLOAT.value, InputKind.QUANTIZED.value]
        if self.input not in allowed_inputs:
            raise ConfigError(f"ckks-threshold.input must be one of {allowed_inputs} (its partial decryptions carry"
                              f" flooding noise; the grid of ckks does not apply), got {self.input!r}")
        object.__setattr__(self, "input", InputKind(self.input))
        if isinstance(self.params, Mapping):
            allowed = {"poly_degree", "coeff_bits", "scale_bits", "complex_packing", "stat_security_bits",
                       "max_decryptions", "flooding"}
            unknown = sorted(set(self.params) - allowed)
            if unknown:
                raise ConfigError(f"ckks-threshold.params has unknown field(s) {unknown}; allowed: {sorted(allowed)}")
            object.__setattr__(self, "params", ThresholdParams(**dict(self.params)))  # type: ignore[arg-type]
        if self.params is not None and not isinstance(self.params, ThresholdParams):
            raise ConfigError(f"ckks-threshold.params must be ThresholdParams, a dict of its fields, or None;"
                              f" got {self.params!r}")
        for name in ("clip_range", "max_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise ConfigError(f"ckks-threshold.{name} must be a finite number > 0, got {v!r}")
        if self.max_weight < 1:
            raise ConfigError(f"ckks-threshold.max_weight must be >= 1 (weights are sample counts), got"
                              f" {self.max_weight}")
        self.resolved_params()  # validates the security bound now

    def resolved_params(self) -> ThresholdParams:
        base = self.params if self.params is not None else ThresholdParams.from_preset(self.preset)
        over = {k: v for k, v in (("scale_bits", self.scale_bits), ("stat_security_bits", self.stat_security_bits),
                                  ("max_decryptions", self.max_decryptions), ("flooding", self.flooding))
                if v is not None}
        if not over:
            return base
        fields: dict[str, Any] = {
            "poly_degree": base.poly_degree, "coeff_bits": base.coeff_bits, "scale_bits": base.scale_bits,
            "complex_packing": base.complex_packing, "stat_security_bits": base.stat_security_bits,
            "max_decryptions": base.max_decryptions, "flooding": base.flooding}
        fields.update(over)
        return ThresholdParams(**fields)

    def max_abs(self) -> float:
        if self.input is InputKind.QUANTIZED:
            return float(self.max_weight) * float(self.clip_range)
        return max(float(self.clip_range), 1.0)


def round_codec(opt: CkksThresholdOptions, params: ThresholdParams, dim: int, clients: int) -> SlotCodec:
    """The slot codec of a round with ``clients`` participants, computed by every party from public
    values. Refuses a round that could overflow (``InsecureParametersError`` names the bound) or,
    for quantized input, cannot round the decrypted sums exactly."""
    t, n = opt.quorum
    max_abs = opt.max_abs()
    codec = SlotCodec.for_round(opt, dim, clients)
    params.check_overflow(clients, n, t, max_abs)
    if opt.input is InputKind.QUANTIZED:
        bound = params.sum_error_bound(clients, n, t, max_abs)
        if bound >= 0.5:
            raise ConfigError(f"ckks-threshold quantized input needs the error bound below 0.5; with {clients} clients"
                              f" it is {bound:.3g}")
    return codec
