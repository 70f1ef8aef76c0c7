"""``plaintext`` — FedAvg with no protection: the baseline every secure protocol is measured against.

Rounds:
  1. Each client sends ``PlainUpdate(round, sender, weight n_k, update)`` to the server.
  2. The server checks each message (type, round, sender, length, finite values, range) and adds
     ``n_k · update`` to a running float64 sum; no upload is kept after it is folded in.
  3. The server reveals ``Σ n_k x_k / Σ n_k``.

Modules: :mod:`.messages`, :mod:`.client`, :mod:`.server`, :mod:`.stages` (across sites: one stage,
``plaintext.upload``), :mod:`.protocol` (the in-process round).

Security: none. The server (and anyone on the wire without TLS) reads every individual update
and weight; this is the "honest-but-curious server sees everything" reference point of the
threat-model comparisons. Spec: ``protocols/plaintext.md``.
"""

from secfl.protocols.plaintext.client import PlainClient
from secfl.protocols.plaintext.messages import PlainUpdate
from secfl.protocols.plaintext.options import PlaintextOptions, WireDtype
from secfl.protocols.plaintext.protocol import Plaintext
from secfl.protocols.plaintext.server import PlainServer
from secfl.protocols.plaintext.stages import STAGES, PlainCoordinator

__all__ = ["WireDtype", "PlaintextOptions", "PlainUpdate", "Plaintext", "PlainClient", "PlainServer",
           "PlainCoordinator", "STAGES"]
