import logging

logger = logging.getLogger(__name__)


def resolve_device(device="auto"):
    """Turn a ``device`` parameter into a :class:`torch.device`.

    Parameters
    ----------
    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA when available, then Apple MPS, then the CPU.
        Any string torch accepts (``"cpu"``, ``"cuda"``, ``"cuda:1"``) is
        used as given.

    Returns
    -------
    device : torch.device

    Raises
    ------
    ValueError
        If the string is not a device torch recognizes, or names a CUDA device
        on a machine without one.
    """
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"Invalid device={device!r}: {exc}. Use 'auto', 'cpu', 'cuda' or "
            "'cuda:N'."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but torch finds no CUDA device "
            f"(torch {torch.__version__}). Use device='cpu' or device='auto'."
        )
    return resolved
