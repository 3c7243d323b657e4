"""Model configs, networks, model packages and the model registry (Resources/models.json)."""

from .networks import build_network, contract_labels, dynunet_kernels_strides, make_config, validate_config
from .package import ModelPackage, load_package, resolve_device, save_package, verify_checksums
from .registry import Registry, list_models

__all__ = [
    "ModelPackage",
    "Registry",
    "build_network",
    "contract_labels",
    "dynunet_kernels_strides",
    "list_models",
    "load_package",
    "make_config",
    "resolve_device",
    "save_package",
    "validate_config",
    "verify_checksums",
]
