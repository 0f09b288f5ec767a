"""The test bench: everything that stands in for the world around the product.

Handles on gateways and devices (`gateway`, `device`, `loop`), device backends and the
machines behind them (`backends`, `machines`, `link`), the virtual device (`virtual`), the
emulated Kubernetes API server (`apiserver`), the in-process platform (`platform`,
`devicemanager`) and the firmware build (`firmware`). The bench may import the product
(protocol, pki, gateway, kube, controlplane); the product never imports the bench. The
contracts in .importlinter keep it so (docs/architecture.md).

Import the submodule you need: this package re-exports nothing, so importing one small piece
(say `bench.errors`) does not load emulators or the WebAssembly runtime.
"""
