"""What does each adversary learn? Declarations, one view by hand, then the measured matrix.

    python examples/threats/run.py            # small: 4 clients, batch 1, short attack (~1 min)
    python examples/threats/run.py --full     # the issue's setting: 10 clients, batches 1 and 8
"""

import argparse

import numpy as np

from secfl.protocols import available
from secfl.threats import (
    Coalition,
    ThreatConfig,
    adversary_view,
    corrupt_parties,
    estimate_update,
    exposure_table,
    individual_update_exposed,
    run_round,
    run_threats,
)

parser = argparse.ArgumentParser()
parser.add_argument("--full", action="store_true", help="10 clients, batch sizes 1 and 8, 300 attack steps")
parser.add_argument("--out", default="runs/threats-example")
args = parser.parse_args()

# 1. Threat models as data: who can read one client's update, per protocol.
print(exposure_table(), "\n")
for coalition in (Coalition(servers=1), Coalition(servers=1, clients="t"), Coalition(clients="n-1")):
    verdicts = {p: individual_update_exposed(p, coalition) for p in available()}
    print(f"{coalition.describe():<35}", "  ".join(f"{p}: {'yes' if v else 'no'}" for p, v in verdicts.items()))

# 2. One round by hand: record every party's view, then ask what the server alone can extract.
rng = np.random.default_rng(0)
updates = [rng.normal(scale=0.1, size=1000) for _ in range(5)]
print("\nthe server's best guess of client 0's update (cosine with the truth):")
for name in available():
    record = run_round(name, updates, options={"clip_range": 1.0} if name != "plaintext" else None)
    view = adversary_view(record, corrupt_parties(record, Coalition(servers=1), target=0), target=0)
    guess = estimate_update(view)
    cos = float(guess.vector @ updates[0] / (np.linalg.norm(guess.vector) * np.linalg.norm(updates[0])))
    print(f"  {name:<15} {cos:+.3f}  from {len(view.deliveries)} messages ({view.view_bytes:,} bytes): {guess.source}")

# 3. The measured matrix: real attacks (label recovery, Inverting Gradients, membership inference).
if args.full:
    config = ThreatConfig(clients=10, batch_sizes=(1, 8), attack_steps=300)
else:
    config = ThreatConfig(clients=4, batch_sizes=(1,), attack_steps=100, nonmembers=50,
                          threat_models=("client", "server", "server+client", "server+n-1", "server+n-1+dp"))
report = run_threats(config, progress=print)
files = report.write(args.out)
print("\n" + report.markdown())
print("wrote", ", ".join(str(f) for f in files))
