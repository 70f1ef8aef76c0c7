"""``secagg`` — single-server secure aggregation with dropout recovery (SecAgg+).

Bonawitz et al. (CCS 2017) with the sparse random graph of Bell et al. (CCS 2020). Parties, one
module each: the client (:mod:`.client`) and the server (:mod:`.server`); messages:
:mod:`.messages`; key derivations and masks: :mod:`.masks`; options and the graph:
:mod:`.options`; the server's stage sequence across sites: :mod:`.stages`; the in-process round:
:mod:`.protocol`; a transport whose parties live in worker processes: :mod:`.transport`.

Rounds (spec: ``protocols/secagg.md``; ``RoundSpec.dropouts`` stage names in brackets — a client
listed there goes silent *before* that stage; across sites the stages are ``secagg.<name>``):

  0. [``advertise_keys``] Each client draws two X25519 key pairs — ``c`` (encryption) and ``s``
     (masking) — and sends both public keys (``SA_ADVERTISE_KEYS``). The server builds a random
     k-regular graph over the clients that did (a Harary graph relabelled by a CSPRNG
     permutation) and sends each client its neighbours' keys (``SA_KEY_ROSTER``).
  1. [``share_keys``] Client ``u`` draws a fresh 32-byte self-mask seed ``b_u`` and Shamir-shares
     ``b_u`` and its masking secret key ``s_u`` t-of-k among its neighbours (points ``v + 1``, field
     ``GF(2**31 − 1)``). Each neighbour's pair of shares is sealed with AES-256-GCM under
     ``HKDF(X25519(c_u, c_v))`` (one key per direction, associated data binding round, sender and
     recipient) and sent through the server (``SA_SHARE_KEYS``). The server drops clients left
     with fewer than ``t`` neighbours that shared (repeatedly, until stable) and forwards each
     remaining client the ciphertexts addressed to it (``SA_SHARES_FORWARD``).
  2. [``masked_input``] Client ``u`` encodes ``(x, n)`` as ``d + 1`` integers mod ``2**k`` (the
     weight is the last element) and uploads ``y_u = x_u + PRG(b_u) + Σ_{v>u} PRG(s_uv)
     − Σ_{v<u} PRG(s_uv)`` (``SA_MASKED_INPUT``), over the neighbours ``v`` whose shares it received;
     ``s_uv = HKDF(X25519(s_u, s_v))`` is a full 256-bit seed expanded by AES-256-CTR. The server
     adds ``y_u`` to a running sum as it arrives.
  3. [``unmask``] For each surviving client the server asks its neighbours (``SA_UNMASK_REQUEST``)
     for their share of ``b_u`` if ``u`` sent its masked input, of ``s_u`` if it did not — never
     both: a client asked for both shares of one peer, in one request or across two, refuses
     (:class:`~secfl.errors.DecryptionRefusedError`). With ``t`` shares (``SA_UNMASK_RESPONSE``)
     the server subtracts every survivor's self mask and the dropped clients' pairwise masks,
     leaving ``Σ x_u`` mod ``2**k``, which it decodes to the weighted mean. A client with fewer
     than ``t`` answering neighbours aborts the round with
     :class:`~secfl.errors.InsufficientQuorumError` naming it.

Security (semi-honest server and clients; the spec has the proofs' assumptions): the server sees
masked vectors, uniform mod ``2**k``, and learns only the sum of the survivors' inputs. Breaking
client ``u`` needs ``b_u`` *and* ``s_u`` (or ``u``'s pairwise seeds): the server plus at least ``t``
of ``u``'s ``k`` neighbours, or ``t`` colluding neighbours plus the server's view. Requiring
``t > k/2`` means honest neighbours' one-share-per-peer rule denies a server that lies about
dropouts both secrets. The graph is chosen by the server from CSPRNG randomness; a malicious server
choosing the graph (or impersonating clients — no PKI here) is outside this model.
"""

from secfl.errors import DroppedOutError
from secfl.protocols.secagg import masks as _masks
from secfl.protocols.secagg.client import SecAggClient
from secfl.protocols.secagg.masks import (
    CHUNKS,
    PLAIN_BYTES,
    SEALED_BYTES,
    SHARE_PLAIN,
    UnmaskJob,
    add_masks,
    dither_prg,
    pair_seed,
    unmask_job,
)
from secfl.protocols.secagg.messages import (
    SaAdvertiseKeys,
    SaCheckedUnmaskRequest,
    SaConsistencyRequest,
    SaConsistencySignature,
    SaKeyRoster,
    SaMaskedInput,
    SaShareKeys,
    SaSharesForward,
    SaUnmaskRequest,
    SaUnmaskResponse,
)
from secfl.protocols.secagg.options import (
    MAX_CLIENT_ID,
    SITE_STAGES,
    STAGES,
    SecAggOptions,
    default_neighbours,
    default_threshold,
    harary_graph,
)
from secfl.protocols.secagg.protocol import PhaseClock, SecAgg
from secfl.protocols.secagg.server import SecAggServer
from secfl.protocols.secagg.stages import SecAggCoordinator
from secfl.protocols.secagg.transport import HostTransport

# names of the single-module version, kept for callers (tests, threat experiments)
_Server = SecAggServer
_unmask_job = unmask_job
_CHUNKS, _SHARE_PLAIN, _PLAIN_BYTES, _SEALED_BYTES = CHUNKS, SHARE_PLAIN, PLAIN_BYTES, SEALED_BYTES
_MAX_CLIENT_ID = MAX_CLIENT_ID
_MASK_LABEL, _SHARE_LABEL = _masks._MASK_LABEL, _masks._SHARE_LABEL

__all__ = [
    "STAGES",
    "SITE_STAGES",
    "SecAggOptions",
    "SecAgg",
    "SecAggClient",
    "SecAggServer",
    "SecAggCoordinator",
    "HostTransport",
    "DroppedOutError",
    "PhaseClock",
    "UnmaskJob",
    "add_masks",
    "dither_prg",
    "pair_seed",
    "default_neighbours",
    "default_threshold",
    "harary_graph",
    "SaAdvertiseKeys",
    "SaKeyRoster",
    "SaShareKeys",
    "SaSharesForward",
    "SaMaskedInput",
    "SaUnmaskRequest",
    "SaUnmaskResponse",
    "SaConsistencyRequest",
    "SaConsistencySignature",
    "SaCheckedUnmaskRequest",
]
