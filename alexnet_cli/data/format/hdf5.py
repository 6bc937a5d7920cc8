"""Reading HDF5 objects as data: every shape, type and string checked before use, so a damaged
or foreign file is a one-line InputError, never a crash or a silent coercion."""

from __future__ import annotations

import h5py
import numpy as np

from alexnet_cli.errors import InputError

STRING = h5py.string_dtype("utf-8")


def checked_array(group: h5py.Group, name: str, shape: tuple, dtype) -> np.ndarray:
    """A dataset read as data, its shape and dtype checked before use."""
    if name not in group:
        raise InputError(f"{group.file.filename}: missing '{group.name}/{name}'; rerun `alexnet prep`")
    ds = group[name]
    if not isinstance(ds, h5py.Dataset) or ds.shape != shape or not np.can_cast(ds.dtype, dtype, "same_kind"):
        raise InputError(
            f"{group.file.filename}: '{ds.name}' has shape {getattr(ds, 'shape', None)} "
            f"of {getattr(ds, 'dtype', None)}, "
            f"expected {shape} of {np.dtype(dtype)}; "
            "the file is damaged, rerun `alexnet prep`"
        )
    return ds[()].astype(dtype)


def strings(ds: h5py.Dataset) -> list[str]:
    """A 1-D dataset of strings, read as data (anything else is damage, not something to coerce)."""
    if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or h5py.check_string_dtype(ds.dtype) is None:
        raise InputError(
            f"{ds.file.filename}: '{ds.name}' is not a list of strings; "
            "the file is damaged, rerun `alexnet prep`"
        )
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in ds[()]]


def plain(value):
    """HDF5 attribute -> plain Python value (numpy scalars and bytes are not JSON-friendly)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
