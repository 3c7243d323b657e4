"""Model configs, networks, model packages and the model registry (Resources/models.json).

Names load on first use: the registry alone (`cacscoring models`) must not import torch.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "ModelPackage": ".package",
    "Registry": ".registry",
    "build_network": ".networks",
    "contract_labels": ".networks",
    "dynunet_kernels_strides": ".networks",
    "list_models": ".registry",
    "load_package": ".package",
    "make_config": ".networks",
    "resolve_device": ".package",
    "save_package": ".package",
    "validate_config": ".networks",
    "verify_checksums": ".package",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
