"""Threat-model comparison experiments: what each adversary learns, measured by real attacks.

This package sits above :mod:`secfl.fl` and :mod:`secfl.protocols` (it uses torch). The pieces:

- :mod:`secfl.protocols.exposure` (torch-free, re-exported here): each protocol's declaration of
  the coalitions that can read an individual update, and the table of ``protocols/README.md``.
- :mod:`secfl.threats.adversary`: threat models as data (named coalitions, optional DP).
- :mod:`secfl.threats.views`: a recorded round, a coalition's view (the union of its members'
  received bytes, its own inputs and keys, the revealed aggregate) and the adversary's best
  estimate of one client's update from it.
- :mod:`secfl.threats.attacks`: iDLG label recovery, Inverting Gradients, PSNR / SSIM,
  loss-threshold membership inference.
- :mod:`secfl.threats.experiment`: :func:`run_threats` — the protocol × threat-model matrix
  that ``secfl threats`` writes as Markdown, JSON and PNG.
- :mod:`secfl.threats.active`: :func:`run_active` — the active attacks (a malicious server or a
  relay against the real parties), each measured as recovered or refused
  (``secfl threats --active``).

Typical use::

    from secfl.threats import ThreatConfig, run_threats
    report = run_threats(ThreatConfig(protocols=("plaintext", "secagg"), batch_sizes=(1,), clients=4))
    report.cell("plaintext", "server", 1).psnr
    report.write("runs/threats")
"""

from secfl.protocols.exposure import (
    EXPOSURES,
    Coalition,
    Deployment,
    Exposure,
    exposure_table,
    individual_update_exposed,
)
from secfl.threats.active import ActiveOutcome, Outcome, run_active
from secfl.threats.adversary import DEFAULT_THREAT_MODELS, THREAT_MODELS, ThreatModel, threat_model
from secfl.threats.experiment import Cell, ThreatConfig, ThreatReport, run_threats
from secfl.threats.views import (
    AdversaryView,
    Estimate,
    RoundRecord,
    adversary_view,
    corrupt_parties,
    estimate_update,
    run_round,
)

__all__ = [
    "Coalition",
    "Deployment",
    "Exposure",
    "EXPOSURES",
    "individual_update_exposed",
    "exposure_table",
    "ThreatModel",
    "THREAT_MODELS",
    "DEFAULT_THREAT_MODELS",
    "threat_model",
    "RoundRecord",
    "AdversaryView",
    "Estimate",
    "run_round",
    "corrupt_parties",
    "adversary_view",
    "estimate_update",
    "ThreatConfig",
    "ThreatReport",
    "Cell",
    "run_threats",
    "ActiveOutcome",
    "Outcome",
    "run_active",
]
