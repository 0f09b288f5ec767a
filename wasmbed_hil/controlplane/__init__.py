"""The Wasmbed control plane: the services around the Device, Application and Gateway custom
resources (wasmbed.github.io/v1)."""
