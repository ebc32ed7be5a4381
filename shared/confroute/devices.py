"""The torch device and dtype of a local model loaded by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from confroute.errors import ConfigurationError

if TYPE_CHECKING:
    import torch

__all__ = ["pick_device", "pick_dtype"]


def pick_device(device: str) -> str:
    """The torch device for ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ConfigurationError: CUDA was asked for and is not available.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError(f"device={device!r} was asked for but CUDA is not available.")
    return device


def pick_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """The torch dtype for ``"auto"`` (bf16 where supported), a dtype name, or a dtype.

    Raises:
        ConfigurationError: An unknown dtype name.
    """
    import torch

    if not isinstance(dtype, str):
        return dtype
    if dtype == "auto":
        if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    try:
        value = getattr(torch, dtype)
    except AttributeError as error:
        raise ConfigurationError(
            f"Unknown dtype {dtype!r}; use 'auto', 'bfloat16', 'float16' or 'float32'."
        ) from error
    if not isinstance(value, torch.dtype):
        raise ConfigurationError(f"{dtype!r} is not a torch dtype.")
    return value
