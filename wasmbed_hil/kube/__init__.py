"""Kubernetes side of the control plane: resources, the emulated API server, controllers."""
