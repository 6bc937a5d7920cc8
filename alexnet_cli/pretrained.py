"""Pretrained weights by name: `torchvision` is torchvision's IMAGENET1K_V1 AlexNet.

Wherever a checkpoint or a torchvision weights file is accepted, the name `torchvision` may
stand for it. The file comes through torchvision's own weights API: downloaded once (its
SHA-256 prefix checked) into TORCH_HOME's hub cache, then read from there, offline too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

from alexnet_cli.errors import InputError
from alexnet_cli.fileio import os_reason

TORCHVISION = "torchvision"


def is_pretrained(name: str | os.PathLike | None) -> bool:
    """Does `name` name pretrained weights rather than a file? (A file called `torchvision`
    in the current folder is reached as ./torchvision.)"""
    return name is not None and str(name) == TORCHVISION


def torchvision_weights_file() -> Path:
    """torchvision's AlexNet IMAGENET1K_V1 state_dict file in TORCH_HOME, downloaded first if
    it is not there yet. Offline without it: one line saying where to put it."""
    import torch
    from torchvision.models import AlexNet_Weights

    weights = AlexNet_Weights.IMAGENET1K_V1
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if path.is_file():
        return path
    try:
        # The file name carries the first hex digits of its SHA-256: torch checks them on download.
        weights.get_state_dict(progress=sys.stderr.isatty(), check_hash=True, weights_only=True)
    except (URLError, OSError, RuntimeError) as e:  # offline, refused, or a hash mismatch
        raise InputError(
            f"torchvision's AlexNet weights are not in {path} and could not be downloaded "
            f"({os_reason(e)[:160]}); on a machine that is online, download {weights.url} and put it at "
            f"{path} (TORCH_HOME sets the folder)"
        ) from None
    return path
