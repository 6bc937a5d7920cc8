"""`--decode gpu`: the training GPU decodes the stored JPEGs, for machines with few CPU cores
per GPU (at the CPU decode bound, 13,000 images/s need about 8 loader cores per GPU).

Loader workers then only read each image's stored bytes and draw its augmentation
(StoredImages with decode=False); the main process hands a batch's JPEGs to nvJPEG in one
batched call, straight from the workers' shared buffer, and cuts and reflects the patches on
the GPU (augment.crop_flip_batch). The batch that leaves here is the one the CPU path makes
(uint8 NHWC, the same draws), on the device, with nvJPEG's pixels: its IDCT is not
libjpeg-turbo's, so pixels may differ by a few levels (benchmarks/gpu_check.sh records the
largest difference on the images it trains on).

Why torchvision's decode_jpeg(device="cuda"): it is already installed wherever this project
trains (no wheel to carry to a GPU machine without internet), it decodes a list in one
batched nvJPEG call on the GPU's hardware JPEG engines (A100, H100, H200) and falls back to
nvJPEG's CUDA decoder elsewhere. NVIDIA's nvimgcodec would need its wheel and nvJPEG's
libraries on every GPU machine; DALI brings a whole pipeline of its own, which would replace
this loader rather than feed it. torchvision 0.29 deprecates its image decoders for
TorchCodec's (from torchcodec 0.16), whose decode_jpeg(device="cuda") is the replacement to
take when torchvision drops them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from alexnet_cli.data import augment
from alexnet_cli.errors import InputError

DECODES = ("cpu", "gpu")

# JPEG byte strings (CPU uint8 tensors) -> their images, [3, H, W] uint8 each, on the device
DecodeJpegs = Callable[[Sequence[torch.Tensor]], Sequence[torch.Tensor]]


def nvjpeg(device: torch.device) -> DecodeJpegs:
    """torchvision's batched nvJPEG decode onto `device`; an InputError (one line) where it
    cannot run."""
    if device.type != "cuda" or not torch.cuda.is_available():
        raise InputError(f"--decode gpu needs a CUDA device (nvJPEG); this run is on {device}: drop it")
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError as e:
        raise InputError(f"--decode gpu needs torchvision's nvJPEG decoder ({e}): install it") from None

    def decode(jpegs: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders (see above)
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(list(jpegs), mode=ImageReadMode.RGB, device=device)

    return decode


class GpuDecoder:
    """A loader's `take` (loader.batch_loader): a batch of stored JPEGs -> the batch the CPU
    path makes, decoded and, for training, cut and reflected on the device."""

    def __init__(self, device: torch.device, decode_jpegs: DecodeJpegs | None = None):
        self.decode_jpegs = decode_jpegs or nvjpeg(device)

    def __call__(self, batch: dict[str, Any], space: torch.Tensor) -> dict[str, Any]:
        ends = batch.pop("offsets").tolist()
        # Views into the workers' shared buffer, valid during this call only: the decode has
        # read them when it returns (torchvision's contract for its inputs).
        jpegs = [space[start:end] for start, end in zip(ends[:-1], ends[1:], strict=True)]
        try:
            images = torch.stack(list(self.decode_jpegs(jpegs)))  # [n, 3, H, W]
        except RuntimeError as e:  # nvJPEG names no image: the CPU decoder names it and its shard
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise InputError(
                f"a stored JPEG of images {batch['indices'].min()}-{batch['indices'].max()} of the split "
                f"did not decode on the GPU ({first}); rerun with --decode cpu to name the damaged shard"
            ) from None
        out = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
        del out["indices"]
        if "top" in out:
            out["images"] = augment.crop_flip_batch(images, out["top"], out["left"], out["flip"])
        else:  # whole images, NHWC like the CPU path's (a view: transforms.network_input undoes it)
            out["images"] = images.permute(0, 2, 3, 1)
        return out
