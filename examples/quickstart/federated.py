"""A federated run from Python: 10 clients, breast-cancer, logistic regression."""

import secfl

config = secfl.ExperimentConfig.from_dict({
    "protocol": "plaintext",
    "model": "logreg",
    "clients": 10,
    "rounds": 10,
    "data": {"name": "breast-cancer"},
    "partition": {"kind": "dirichlet", "alpha": 1.0},
})
result = secfl.Experiment(config).run()
for r in result.rounds:
    print(f"round {r.round:2d}  accuracy {r.accuracy:.3f}  up {r.bytes_up_per_client:,.0f} B/client")
print("final", result.final)
