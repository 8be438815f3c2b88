"""spconv on CPU-only torch.

spconv 2.x's CPU wheel runs forward passes, but its backward functions ask
`torch.cuda.current_stream()` for a stream handle and fail when CUDA is absent.
`enable()` replaces `spconv.pytorch.ops.get_current_stream` with a function that
returns stream 0 when CUDA is unavailable (the CPU kernels ignore it), and the real
stream otherwise. Import `evpipe.models.spconv_compat` (or call `enable()`) before
training spconv models on CPU. Use float32: float64 on CPU is not deterministic.
"""

from __future__ import annotations

import torch

_patched = False


def enable() -> None:
    """Patch spconv once per process; harmless when CUDA is available."""
    global _patched
    if _patched:
        return
    from spconv.pytorch import ops

    original = ops.get_current_stream

    def get_current_stream() -> int:
        return original() if torch.cuda.is_available() else 0

    ops.get_current_stream = get_current_stream
    _patched = True


enable()
