"""An emulated kube-apiserver for custom resources and the core endpoints clients touch.

Modules: ``errors`` (Status bodies), ``selectors`` (label/field selectors), ``patch`` (merge
and JSON patch), ``schema`` (openAPIV3Schema validation, pruning, defaults), ``registry``
(served resource types, CRD conversion), ``store`` (objects, resourceVersions, history),
``objects`` (CRUD semantics), ``jsoncopy`` (deep copies of JSON documents), ``watch`` (watch
streams), ``discovery`` (discovery documents), ``handlers`` (the aiohttp app), ``server``
(ApiServer) and ``cli`` (``main``).
"""

from __future__ import annotations

from .cli import main
from .errors import ApiError
from .server import ApiServer

__all__ = ["ApiError", "ApiServer", "main"]
