"""Flower's engine as a secfl transport: every party its own process, real gRPC over TLS.

- :mod:`.certs` — ``secfl deploy certs``: a CA and a server certificate.
- :mod:`.transport` — :class:`FlowerTransport`: the grid's messages as a secfl transport.
- :mod:`.server_app` / :mod:`.client_app` — secfl's ServerApp (the experiment's server) and
  ClientApp (a thin relay to the site's own program, since Flower starts it afresh per message).
- :mod:`.site` — the site's program: data, training, and the protocol parties it plays.
- :mod:`.launch` — ``secfl deploy server`` / ``secfl deploy client``: Flower's SuperLink and
  SuperNode processes, started, watched and ended.

Needs the ``flower`` extra (``pip install "secfl[flower]"``). Telemetry is always off.
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
