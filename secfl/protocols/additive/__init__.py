"""``additive`` — additive secret sharing across S ≥ 2 non-colluding aggregation servers.

Parties, one module each: the clients (:mod:`.client`) and the aggregation servers
(:mod:`.aggregator`, party ids ``server_id(0) … server_id(S−1)``). Messages: :mod:`.messages`;
options and the public round rules: :mod:`.options`; the server side across sites (the
coordinator plays server 0 and relays to servers 1..S−1): :mod:`.stages`; the protocol object and
the in-process round: :mod:`.protocol`.

Rounds (spec: ``protocols/additive.md``):
  0. *Setup.* Each server ``j`` draws a fresh X25519 key and sends ``ADD_SERVER_KEY`` to every
     client.
  1. *Share.* Client ``c`` encodes ``(x, n)`` as ``d + 1`` integers mod ``2**k``
     (:class:`~secfl.crypto.encoding.WeightedEncoder`: the weight is the last element) and
     splits them into S additive shares: S − 1 expanded from fresh 32-byte seeds by AES-CTR, the
     residual ``codes − Σ PRG(seed)`` a full vector. The vector goes to server ``c mod S`` (the
     load is spread), a seed to every other server. Each share travels in one ``ADD_SHARE``
     message, sealed with AES-256-GCM under ``HKDF(X25519(e_c, pk_j))`` (``e_c`` a per-round
     ephemeral client key whose public half rides in the message, HPKE-style), the associated
     data binding protocol, round, client, server, share kind and length.
  2. *Accumulate.* Each server opens its share, expands a seed, and adds it to a running sum
     (it keeps the 32-byte seed, never the vector). A client's share is committed only when all
     its shares opened; the vector holder commits last, so no server ever has to remove a
     vector.
  3. *Agree.* Servers exchange ``ADD_INCLUDED_SET``; the included set is the intersection. A seed
     share of a client outside it is re-expanded and subtracted.
  4. *Reveal.* Servers 1..S−1 send ``ADD_PARTIAL_SUM`` (with the included-set digest) to
     server 0, which adds the partial sums mod ``2**k`` and decodes the weighted mean.

Security: every share a server sees is uniform mod ``2**k`` and independent of the update unless
it also holds the other S − 1 shares: any coalition of up to S − 1 servers (and any number of
clients) learns nothing beyond the aggregate; all S servers together read every update. A
partial sum is likewise uniform. Weights are shared with the update, so no server sees one.
Dropouts are free (a client that never uploads is simply not summed); a server that drops
aborts the round. Semi-honest servers are assumed: a malicious server can bias the result.
Across sites the shares for servers 1..S−1 travel through the coordinator sealed end to end.
"""

from secfl.protocols.additive.aggregator import COORDINATOR, AdditiveAggregator
from secfl.protocols.additive.client import AdditiveClient
from secfl.protocols.additive.messages import (
    AddIncludedSet,
    AddPartialSum,
    AddServerKey,
    AddShare,
    AddShareBatch,
    AddUpload,
    AddUploadRequest,
    ShareKind,
    share_ad,
)
from secfl.protocols.additive.options import MAX_SERVERS, AdditiveOptions
from secfl.protocols.additive.protocol import Additive
from secfl.protocols.additive.stages import STAGES, AdditiveCoordinator

__all__ = [
    "AdditiveOptions",
    "ShareKind",
    "AddServerKey",
    "AddShare",
    "AddIncludedSet",
    "AddPartialSum",
    "AddUploadRequest",
    "AddUpload",
    "AddShareBatch",
    "Additive",
    "AdditiveAggregator",
    "AdditiveClient",
    "AdditiveCoordinator",
    "COORDINATOR",
    "MAX_SERVERS",
    "STAGES",
    "share_ad",
]
