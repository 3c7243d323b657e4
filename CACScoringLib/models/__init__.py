"""Model configs, networks, model packages and the model registry (Resources/models.json)."""

from .networks import build_network, contract_labels, dynunet_kernels_strides, make_config, validate_config

__all__ = ["build_network", "contract_labels", "dynunet_kernels_strides", "make_config", "validate_config"]
