"""Peak memory of one benchmark config: host RSS always, device memory where the framework says.

Host: ``getrusage`` gives the process's peak RSS. On Linux, writing ``5`` to
``/proc/self/clear_refs`` resets that high-water mark, so each config gets its own peak
rather than the largest of everything run before it in this process; where the reset is
refused the number is the process peak so far, and the row records that.

Device: PyTorch and TensorFlow keep a resettable allocator peak; JAX reports the peak
since the process started (not resettable); MXNet reports none.
"""

from __future__ import annotations

import resource
import sys
from typing import Any

from .frameworks import is_gpu

MIB = 2**20


def reset_host_peak() -> bool:
    """Reset the host RSS high-water mark; False where the OS does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def host_peak_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MIB if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def reset_device_peak(framework: str, device: str) -> bool:
    """Reset the framework's device peak counter; False where it has none to reset."""
    if not is_gpu(device):
        return False
    if framework == "torch":
        import torch

        torch.cuda.reset_peak_memory_stats()
        return True
    if framework == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.reset_memory_stats("GPU:0")
        return True
    return False


def device_peak_mb(framework: str, device: str) -> float | None:
    """The framework allocator's peak on the device in MiB, or None (CPU, or no such counter)."""
    if not is_gpu(device):
        return None
    try:
        if framework == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / MIB
        if framework == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / MIB
        if framework == "jax":
            import jax

            stats = jax.devices("gpu")[0].memory_stats() or {}
            peak = stats.get("peak_bytes_in_use")
            return None if peak is None else peak / MIB
    except Exception:  # a missing counter must not lose the timing it accompanies
        return None
    return None


def peak_memory(framework: str, device: str, host_reset: bool, device_reset: bool) -> tuple[float, dict[str, Any]]:
    """(peak_mem_mb for the row, details for its settings): device peak on a GPU, else host RSS."""
    host = host_peak_mb()
    dev = device_peak_mb(framework, device)
    details = {"host_peak_rss_mb": host, "host_peak_is_per_config": host_reset,
               "device_peak_mb": dev, "device_peak_is_per_config": device_reset if dev is not None else None}
    if dev is not None and dev > 0:
        details["peak_mem_source"] = "device allocator peak"
        return dev, details
    details["peak_mem_source"] = "host peak RSS" + ("" if host_reset else " (process peak so far)")
    return host, details
