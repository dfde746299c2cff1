"""Read weight files and load them into a module with errors that name
the file, the missing and unexpected keys, and the shape mismatches."""

import hashlib
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# Files looked for, in this order, when ``weights`` is a directory
# (Hugging Face and timm checkpoints use these names).
WEIGHT_FILE_NAMES = (
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
    "model.pt",
    "checkpoint.pth",
)

# Wrappers that training scripts put around the state dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "teacher", "module")

# How many key names an error message lists before "...".
_MAX_LISTED = 5


def resolve_weights_file(weights):
    """Return the weight file for ``weights``, a file or a directory.

    Raises
    ------
    FileNotFoundError
        If the path does not exist or the directory contains none of the
        usual weight file names.
    """
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in WEIGHT_FILE_NAMES:
            candidate = path / name
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"No weight file found in directory {str(path)!r}; expected one of "
            f"{', '.join(WEIGHT_FILE_NAMES)}. Pass the file itself as weights=."
        )
    raise FileNotFoundError(f"Weights not found: {str(path)!r} does not exist.")


def read_state_dict(path):
    """Read a state dict from a ``.safetensors`` or torch pickle file.

    Torch files are read with ``weights_only=True``, so a checkpoint cannot
    run code when it loads. A state dict nested under ``"state_dict"``,
    ``"model"`` and similar keys is unwrapped, and a ``"module."`` prefix
    left by DataParallel is removed.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"Could not read weight file {str(path)!r}: {exc}. Expected a torch "
                "state dict (.pth/.bin/.pt) or a .safetensors file."
            ) from exc

    for key in _NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(
            f"Weight file {str(path)!r} does not contain a state dict of tensors "
            f"(found {type(state).__name__}). Save it with torch.save(model.state_dict(), path)."
        )
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def _listed(names):
    names = sorted(names)
    shown = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f", ... ({len(names)} in all)"
    return shown


def load_checked_state_dict(module, state, *, source, ignore_unexpected=()):
    """Load ``state`` into ``module`` strictly, or raise a readable error.

    Parameters
    ----------
    module : torch.nn.Module
    state : dict of str to Tensor
    source : str
        Where the weights came from (a file path), named in the error.
    ignore_unexpected : tuple of str, default=()
        Key prefixes in ``state`` that may be absent from ``module`` (for
        example a classifier head the encoder does not use).

    Raises
    ------
    ValueError
        If keys are missing or unexpected, or shapes differ. The message
        names ``source`` and lists the first few offending keys.
    """
    expected = module.state_dict()
    if ignore_unexpected:
        prefixes = tuple(ignore_unexpected)
        state = {
            key: value
            for key, value in state.items()
            if key in expected or not key.startswith(prefixes)
        }
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys: {_listed(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_listed(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches: {_listed(mismatched)}")
        raise ValueError(
            f"Weights in {source!r} do not match the {type(module).__name__} "
            f"architecture; {'; '.join(problems)}. Check that the file belongs to "
            "this model name and variant."
        )
    module.load_state_dict(state, strict=True)


def fingerprint_module(module):
    """Return a hex digest of every parameter and buffer of ``module``.

    Two encoders with the same digest compute the same features, whatever
    file their weights came from, so the digest goes into the cache key.
    """
    digest = hashlib.blake2b(digest_size=16)
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        data = tensor.detach().cpu().contiguous()
        if data.dtype == torch.bfloat16:
            data = data.view(torch.int16)
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()
