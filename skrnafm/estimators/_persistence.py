"""Safe saving and loading of fitted torch regressors.

``joblib.dump`` works on every skrnafm estimator, but unpickling runs code
named in the file, so a pickle from an untrusted source is unsafe to load.
The format here stores no code: one safetensors file contains the network
weights and fitted arrays, and its header contains the estimator class name,
its parameters and the fitted metadata as JSON. Loading looks the class
name up among the regressors of :mod:`skrnafm.estimators` only, rebuilds
the network from the stored state and loads the weights.
"""

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.utils.validation import check_is_fitted

from ..exceptions import SkrnafmWarning
from ..utils import resolve_device

logger = logging.getLogger(__name__)

__all__ = ["load_model", "save_model"]

FORMAT_NAME = "skrnafm-model"
FORMAT_VERSION = 1

_NETWORK_PREFIX = "network."
_ARRAY_PREFIX = "fitted."


def save_model(estimator, path):
    """Save a fitted torch regressor to a safetensors file that stores no code.

    Parameters
    ----------
    estimator : BaseTorchRegressor
        A fitted regressor from :mod:`skrnafm.estimators`.
    path : str or os.PathLike
        File to write, conventionally with the ``.safetensors`` suffix.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Raises
    ------
    TypeError
        If a parameter cannot be written as JSON (for example a
        ``RandomState`` instance as ``random_state``).
    """
    from ._base import BaseTorchRegressor

    if not isinstance(estimator, BaseTorchRegressor):
        raise TypeError(
            f"save_model expects a skrnafm torch regressor, got {type(estimator).__name__}. "
            "Use joblib.dump for other estimators."
        )
    check_is_fitted(estimator)
    path = Path(path)

    params = estimator.get_params(deep=False)
    params = {name: _json_param(name, value) for name, value in params.items()}

    tensors = {}
    for name, value in estimator.network_.state_dict().items():
        tensors[_NETWORK_PREFIX + name] = value.detach().to("cpu")
    arrays = estimator._fitted_arrays()
    for name, value in arrays.items():
        tensors[_ARRAY_PREFIX + name] = torch.from_numpy(np.ascontiguousarray(value))
    tensors = _unshare(tensors)

    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "class": type(estimator).__name__,
        "params": json.dumps(params),
        "fitted": json.dumps(estimator._fitted_metadata()),
        "array_dtypes": json.dumps({name: str(np.asarray(v).dtype) for name, v in arrays.items()}),
        "torch_version": torch.__version__,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, os.fspath(path), metadata=metadata)
    logger.info("saved %s to %s", type(estimator).__name__, path)
    return path


def load_model(path, *, device=None, extra_classes=()):
    """Load a regressor written by ``save`` without unpickling anything.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``BaseTorchRegressor.save``.
    device : str or torch.device, default=None
        Device for the network. None uses the model's ``device`` parameter,
        and falls back to the CPU with a warning when that device is not
        available here.
    extra_classes : sequence of type, default=()
        Further ``BaseTorchRegressor`` subclasses the file may name, for
        models defined outside skrnafm. Only classes passed here or exported
        by :mod:`skrnafm.estimators` are constructed.

    Returns
    -------
    estimator : BaseTorchRegressor
        The fitted regressor, ready to ``predict``.

    Raises
    ------
    ValueError
        If the file is not a skrnafm model file or names an unknown class.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {path}")

    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ValueError(f"{path} is not a readable safetensors model file: {exc}") from exc

    if metadata.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{path} is not a skrnafm model file (format={metadata.get('format')!r}). "
            "Write one with estimator.save(path)."
        )
    if int(metadata.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{path} uses model format version {metadata['format_version']}, newer than the "
            f"version {FORMAT_VERSION} this skrnafm reads. Upgrade skrnafm."
        )

    cls = _estimator_class(metadata["class"], path, extra_classes)
    params = json.loads(metadata["params"])
    estimator = cls(**params)

    dtypes = json.loads(metadata["array_dtypes"])
    arrays = {
        name[len(_ARRAY_PREFIX) :]: tensors[name].numpy().astype(dtypes[name[len(_ARRAY_PREFIX) :]], copy=False)
        for name in tensors
        if name.startswith(_ARRAY_PREFIX)
    }
    estimator._restore_fitted(arrays, json.loads(metadata["fitted"]))

    target = _load_device(estimator, device)
    network = estimator._build_network(estimator.n_tokens_, estimator.token_dim_, estimator.n_genes_)
    state = {name[len(_NETWORK_PREFIX) :]: value for name, value in tensors.items() if name.startswith(_NETWORK_PREFIX)}
    network.load_state_dict(state, strict=True)
    estimator.network_ = network.to(target).eval()
    return estimator


def _json_param(name, value):
    """Return ``value`` if JSON can store it, else raise naming the parameter."""
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "fit"):
        raise TypeError(
            f"Parameter {name}={value!r} is an estimator, which the safe format cannot store "
            "because it stores no code. Use joblib.dump for this model."
        )
    try:
        json.dumps(value)
    except TypeError as exc:
        raise TypeError(
            f"Parameter {name}={value!r} cannot be saved in the safe format: {exc}. "
            "Set it to an int, float, str, list or dict (for random_state, an int), "
            "or use joblib.dump."
        ) from None
    return value


def _unshare(tensors):
    """Copy tensors that share storage, which safetensors cannot write."""
    seen = set()
    result = {}
    for name, tensor in tensors.items():
        tensor = tensor.contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if tensor.numel() and key in seen:
            tensor = tensor.clone()
        seen.add(key)
        result[name] = tensor
    return result


def _estimator_class(name, path, extra_classes):
    """Look a class name up among the public regressors and ``extra_classes``."""
    import skrnafm.estimators as estimators

    from ._base import BaseTorchRegressor

    for cls in extra_classes:
        if cls.__name__ == name and isinstance(cls, type) and issubclass(cls, BaseTorchRegressor):
            return cls
    if name not in estimators.__all__:
        raise ValueError(
            f"{path} names an unknown estimator class {name!r}. Pass the class in "
            "extra_classes if it is defined outside skrnafm."
        )
    cls = getattr(estimators, name)
    if not (isinstance(cls, type) and issubclass(cls, BaseTorchRegressor)):
        raise ValueError(f"{path} names {name!r}, which is not a skrnafm torch regressor.")
    return cls


def _load_device(estimator, device):
    """Return the device to load onto, falling back to the CPU with a warning."""
    if device is not None:
        return resolve_device(device)
    try:
        return resolve_device(estimator.device)
    except ValueError:
        warnings.warn(
            f"The model was saved with device={estimator.device!r}, which is not available here; "
            "loading it on the CPU and setting device='cpu'.",
            SkrnafmWarning,
            stacklevel=3,
        )
        estimator.device = "cpu"
        return torch.device("cpu")
