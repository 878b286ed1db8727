"""Federated training: the `federated` step trains the current model on data held at several sites,
which never leaves them. Flower (flwr) carries the weights and aggregates them; it runs in its own
virtualenv (requirements-federated.txt), as the coordinator (coordinator.py) beside the engine and as
one client (site_client.py) per site worker."""
