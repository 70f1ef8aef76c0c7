"""Federated learning on torch: data, partitioning, models, local training, FedAvg, model <-> vector."""
