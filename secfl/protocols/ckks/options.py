"""``ckks`` options: the parameter set, the input kind and the upload form (frozen, validated)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from secfl.crypto.ckks import CkksParams, CkksPreset
from secfl.errors import ConfigError
from secfl.protocols.ckks_encoding import InputKind, SlotCodec

__all__ = ["UploadForm", "CkksOptions", "round_codec"]


class UploadForm(str, Enum):
    """How a client's ciphertexts travel.

    SEEDED (default): SEAL's seeded symmetric ciphertexts -- ``c0`` plus the 64-byte PRNG seed
    from which SEAL regenerates ``c1 = a`` on the server: half the bytes, the same client time,
    and a server that loads every ciphertext through SEAL (``Evaluator.add``) instead of adding
    parsed residues (≈ 3× its time: 0.125 against 0.042 s per 10^6-parameter upload). FULL: both
    polynomials, bit-packed.
    """

    SEEDED = "seeded"
    FULL = "full"


@dataclass(frozen=True)
class CkksOptions:
    """Options of the ``ckks`` protocol.

    ``preset``: parameter set (:class:`~secfl.crypto.ckks.CkksPreset`, default ``compact``);
    ``params``: a custom :class:`~secfl.crypto.ckks.CkksParams` (or a dict of its fields),
    overriding the preset; ``scale_bits``: override just the scale.
    ``clip_range``: clients' values must lie within +-clip_range (the overflow check uses it).
    ``max_weight``: public bound on a client's weight n_k; a larger weight is refused.
    ``input``: :class:`InputKind` (``grid``, default; ``quantized``; ``unsafe-float``).
    ``workers``: encryption processes per client, this one included (1: no pool; n: n - 1 pool
    processes -- the client's own -- each loading its secret context once). ``upload``:
    :class:`UploadForm` (default seeded: half the bytes).
    """

    preset: CkksPreset = CkksPreset.COMPACT
    params: CkksParams | None = None
    scale_bits: int | None = None
    clip_range: float = 100.0
    max_weight: float = 1e4
    input: InputKind = InputKind.GRID
    workers: int = 1
    upload: UploadForm = UploadForm.SEEDED

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "upload", UploadForm(self.upload))
        except ValueError:
            allowed = [u.value for u in UploadForm]
            raise ConfigError(f"ckks.upload must be one of {allowed}, got {self.upload!r}") from None
        try:
            object.__setattr__(self, "preset", CkksPreset(self.preset))
        except ValueError:
            allowed = [p.value for p in CkksPreset]
            raise ConfigError(f"ckks.preset must be one of {allowed}, got {self.preset!r}") from None
        allowed_inputs = [k.value for k in (InputKind.GRID, InputKind.QUANTIZED, InputKind.UNSAFE_FLOAT)]
        if self.input in (InputKind.FLOAT, InputKind.FLOAT.value):
            raise ConfigError("ckks.input='float' would reveal the noisy CKKS decryption, from which the server can"
                              " recover the key (Li-Micciancio); use 'grid' (the default: noise removed exactly) or,"
                              " knowingly, 'unsafe-float'")
        try:
            object.__setattr__(self, "input", InputKind(self.input))
        except ValueError:
            raise ConfigError(f"ckks.input must be one of {allowed_inputs}, got {self.input!r}") from None
        if isinstance(self.params, dict):
            fields = {"poly_degree", "coeff_bits", "scale_bits", "complex_packing"}
            unknown = sorted(set(self.params) - fields)
            if unknown:
                raise ConfigError(f"ckks.params has unknown field(s) {unknown}; allowed: {sorted(fields)}")
            object.__setattr__(self, "params", CkksParams(**self.params))
        if self.params is not None and not isinstance(self.params, CkksParams):
            raise ConfigError(f"ckks.params must be CkksParams, a dict of its fields, or None; got {self.params!r}")
        if self.scale_bits is not None and (not isinstance(self.scale_bits, int) or isinstance(self.scale_bits, bool)):
            raise ConfigError(f"ckks.scale_bits must be an integer or None, got {self.scale_bits!r}")
        for name in ("clip_range", "max_weight"):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not (math.isfinite(value) and value > 0):
                raise ConfigError(f"ckks.{name} must be a finite number > 0, got {value!r}")
        if self.max_weight < 1:
            raise ConfigError(f"ckks.max_weight must be >= 1 (weights are sample counts), got {self.max_weight}")
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            raise ConfigError(f"ckks.workers must be an integer >= 1, got {self.workers!r}")
        self.resolved_params()  # validate now (security bound)

    def resolved_params(self) -> CkksParams:
        """The parameter set in force (custom params, else the preset; scale override applied)."""
        base = self.params if self.params is not None else CkksParams.from_preset(self.preset)
        if self.scale_bits is None:
            return base
        return CkksParams(base.poly_degree, base.coeff_bits, self.scale_bits, base.complex_packing)

    def max_abs(self) -> float:
        """Largest |value| a client encrypts before any grid lift (the overflow check's max|value|)."""
        if self.input is InputKind.QUANTIZED:
            return float(self.max_weight) * float(self.clip_range)
        return max(float(self.clip_range), 1.0)  # a_k <= 1 travels in the weight slot


def round_codec(opt: CkksOptions, params: CkksParams, dim: int, clients: int) -> SlotCodec:
    """The slot codec of a round with ``clients`` participants: every party computes the same one
    from public values (clients encode with it, the key holder decodes with it). Refuses a set
    that overflows (``InsecureParametersError``) or, for quantized input, cannot round exactly."""
    codec = SlotCodec.for_round(opt, dim, clients, lambda m: params.sum_error_bound(clients, m, symmetric=True),
                                lambda m: params.check_overflow(clients, m))
    params.check_overflow(clients, codec.max_abs())  # InsecureParametersError names the bound
    if opt.input is InputKind.QUANTIZED:
        bound = params.sum_error_bound(clients, codec.max_abs(), symmetric=True)
        if bound >= 0.5:
            raise ConfigError(
                f"ckks quantized input rounds the decrypted sums to integers, which needs the error bound"
                f" below 0.5; with {clients} clients it is {bound:.3g} (raise scale_bits or pick a larger preset)"
            )
    return codec
