"""``additive`` options and the public, round-wide rules every party computes alike."""

from __future__ import annotations

from dataclasses import dataclass

from secfl.crypto.encoding import check_quantization_options
from secfl.crypto.prg import Prg, derive_seed
from secfl.errors import ConfigError
from secfl.protocols.network import server_id

__all__ = [
    "AdditiveOptions", "MAX_SERVERS", "KDF_LABEL", "holder", "dither", "check_client_ids", "STAGES", "KEYS_STAGE",
    "UPLOAD_STAGE", "SEEDS_STAGE", "VECTORS_STAGE", "REVEAL_STAGE",
]

MAX_SERVERS = 64
#: HKDF label of the key that seals a client's share for one aggregation server
KDF_LABEL = "secfl/additive/share-key"


@dataclass(frozen=True)
class AdditiveOptions:
    """Options of ``additive``.

    ``servers``: S ≥ 2 aggregators (privacy holds unless all S collude).
    ``clip_range`` r: updates are clamped to ±r before quantization.
    ``bits``: quantization width; ``None`` picks the largest width (≤ 30) whose sum over this
    round's clients cannot wrap mod ``2**modulus_bits``; an explicit width that can wrap is refused.
    ``modulus_bits`` k: arithmetic mod ``2**k``; a share element takes ``ceil(k/8)`` bytes on the
    wire (32 → 4 bytes/parameter).
    ``max_weight`` W: public bound on a client's weight; a client refuses a larger one. The
    revealed mean's error bound grows with ``W / mean weight`` (see ``protocols/additive.md``).
    """

    servers: int = 2
    clip_range: float = 8.0
    bits: int | None = None
    modulus_bits: int = 32
    max_weight: float = 4096.0

    def __post_init__(self) -> None:
        if isinstance(self.servers, bool) or not isinstance(self.servers, int) or not 2 <= self.servers <= MAX_SERVERS:
            raise ConfigError(f"additive.servers must be an integer in [2, {MAX_SERVERS}], got {self.servers!r}")
        check_quantization_options("additive", self.clip_range, self.bits, self.modulus_bits, self.max_weight)


def holder(client: int, servers: int) -> int:
    """Index of the aggregation server that receives ``client``'s vector share (``client mod S``:
    the large messages are spread over the servers; every party computes the same rule)."""
    return client % servers


def dither(seed: bytes | None, rnd: int, client: int) -> Prg:
    """The rounding dither of ``client`` in round ``rnd``: seeded from the round's public seed when
    there is one (the dither is not secret), else fresh."""
    if seed is None:
        return Prg()
    return Prg(derive_seed(seed, "additive/dither", rnd, client))


def check_client_ids(clients: tuple[int, ...] | list[int]) -> None:
    if any(not 0 <= c < server_id(0) for c in clients):
        raise ConfigError("client ids must be in [0, 2**31)")


# the stages of a round across sites, in order (see :mod:`secfl.protocols.additive.stages`)
KEYS_STAGE = "additive.keys"
UPLOAD_STAGE = "additive.upload"
SEEDS_STAGE = "additive.seeds"
VECTORS_STAGE = "additive.vectors"
REVEAL_STAGE = "additive.reveal"
STAGES = (KEYS_STAGE, UPLOAD_STAGE, SEEDS_STAGE, VECTORS_STAGE, REVEAL_STAGE)
