"""Inference cost of a model on CPU: parameters, FLOPs, latency and peak memory.

Every measurement runs the model in eval mode under ``torch.inference_mode`` on one input of
a given shape, e.g. (1, 3, 584, 565), filled with seeded Gaussian noise in the dtype of the
model's parameters. The model's train/eval flags and torch's thread count are restored after.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import multiprocessing
import pickle
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import MeddistillError


@dataclass
class ModelCost:
    """Cost of one forward pass, as reported by ``meddistill bench``.

    Attributes:
        params: number of parameters, trainable and frozen (buffers such as BatchNorm
            running statistics excluded).
        gflops: forward FLOPs / 1e9, see :func:`count_flops`.
        latency_ms: median wall-clock time of a forward pass, milliseconds.
        latency_ms_iqr: 25th and 75th percentiles of that time, milliseconds.
        peak_memory_mb: peak resident-memory increase during a forward pass, MiB;
            NaN where it cannot be measured (see :func:`measure_peak_memory`).
        threads: torch intra-op threads used for latency and memory.
        input_shape: shape of the input, e.g. (1, C, H, W).
    """

    params: int
    gflops: float
    latency_ms: float
    latency_ms_iqr: tuple[float, float]
    peak_memory_mb: float
    threads: int
    input_shape: tuple[int, ...]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelCost:
        """The inverse of ``dataclasses.asdict`` after a JSON round trip (lists back to tuples)."""
        return cls(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()})


def _example_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    """Seeded noise of ``input_shape`` in the model's floating dtype, channels-last when the
    model's convolutions are (as the keypoint methods run them)."""
    dtypes = [p.dtype for p in model.parameters() if p.is_floating_point()]
    dtype = dtypes[0] if dtypes else torch.get_default_dtype()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(tuple(input_shape), generator=generator, dtype=dtype)
    # a weight with several input channels and a spatial kernel shows the layout unambiguously
    kernels = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1]
    if x.dim() == 4 and kernels and not kernels[0].is_contiguous():
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _check_threads(threads: int) -> None:
    if threads < 1:
        raise MeddistillError(f"threads must be at least 1, got {threads}")


@contextlib.contextmanager
def _inference(model: nn.Module, threads: int | None = None) -> Iterator[None]:
    """Eval mode, inference mode and ``threads`` intra-op threads, each restored on exit."""
    if threads is not None:
        _check_threads(threads)
    # per module, since a training model may hold frozen submodules in eval mode
    modes = {module: module.training for module in model.modules()}
    previous_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        model.eval()
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(previous_threads)
        for module, training in modes.items():
            module.training = training


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, trainable and frozen (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> float:
    """FLOPs of one forward pass on an input of ``input_shape``, e.g. (1, C, H, W).

    Counted with ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add as
    2 FLOPs and only counts convolutions, matrix products and attention: elementwise operations
    (activations, normalisation, additions, interpolation) are not included.
    """
    x = _example_input(model, input_shape)
    with _inference(model), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


def measure_latency(
    model: nn.Module, input_shape: Sequence[int], threads: int = 1, warmup: int = 3, repeats: int = 20
) -> tuple[float, float, float]:
    """Wall-clock time of a forward pass with ``threads`` intra-op threads.

    Runs ``warmup`` untimed passes, then times ``repeats`` passes one by one.

    Returns:
        (median, 25th percentile, 75th percentile) in milliseconds.
    """
    if repeats < 1:
        raise MeddistillError(f"repeats must be at least 1, got {repeats}")
    x = _example_input(model, input_shape)
    seconds = []
    with _inference(model, threads):
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            seconds.append(time.perf_counter() - start)
    q25, median, q75 = np.percentile(np.array(seconds) * 1e3, [25, 50, 75])
    return float(median), float(q25), float(q75)


_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _proc_status_kib(field: str) -> int:
    """A memory field of /proc/self/status (e.g. VmRSS, VmHWM), KiB."""
    return int(re.search(rf"^{field}:\s+(\d+) kB", _PROC_STATUS.read_text(), re.MULTILINE).group(1))


def peak_memory_increase(run: Callable[[], object]) -> float:
    """Peak resident-memory increase while ``run()`` runs, MiB (NaN off Linux).

    Resets the kernel's high-water mark (VmHWM) to the current RSS first, after handing freed
    heap pages back to the OS so ``run`` cannot reuse them unseen. Call it in a process that
    has already run ``run`` once: the first call also loads kernels and starts thread pools.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    try:
        # "5" lowers the peak-RSS mark VmHWM to the current RSS (Linux >= 4.0)
        _PROC_CLEAR_REFS.write_text("5")
        baseline = _proc_status_kib("VmRSS")
    except OSError:
        return float("nan")
    run()
    return (_proc_status_kib("VmHWM") - baseline) / 1024


def _forward_peak_rss_mib(model_pickle: bytes, input_shape: tuple[int, ...], threads: int) -> float:
    """Run in a fresh process: peak RSS increase of the second forward pass, MiB (NaN off Linux)."""
    model = pickle.loads(model_pickle)
    del model_pickle
    x = _example_input(model, input_shape)
    with _inference(model, threads):
        model(x)
        return peak_memory_increase(lambda: model(x))


def measure_peak_memory(model: nn.Module, input_shape: Sequence[int], threads: int = 1) -> float:
    """Peak resident-memory increase during a forward pass, MiB.

    torch's CPU allocator is invisible to ``tracemalloc``, so this reads the kernel's own count
    of resident pages. The model is pickled to a fresh 'spawn' process (its class must be
    importable there) so that the parent's freed heap cannot absorb the allocations, and the
    process's RSS high-water mark is reset just before one measured pass (after an unmeasured
    warm-up pass). ``getrusage``'s ``ru_maxrss`` is not used: a spawned child inherits the
    parent's peak in it, hiding any forward pass smaller than the parent. Includes everything
    the pass touches: activations, library workspaces and reorder buffers. Linux only; NaN
    elsewhere. Takes a few seconds, mostly to import torch in the child.
    """
    _check_threads(threads)
    model_pickle = pickle.dumps(model)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        job = pool.submit(_forward_peak_rss_mib, model_pickle, tuple(input_shape), threads)
        return job.result()


def measure_cost(
    model: nn.Module, input_shape: Sequence[int], threads: int = 1, warmup: int = 3, repeats: int = 20
) -> ModelCost:
    """All of :class:`ModelCost` for one input of ``input_shape``, e.g. (1, C, H, W)."""
    median, q25, q75 = measure_latency(model, input_shape, threads, warmup, repeats)
    return ModelCost(
        params=count_parameters(model),
        gflops=count_flops(model, input_shape) / 1e9,
        latency_ms=median,
        latency_ms_iqr=(q25, q75),
        peak_memory_mb=measure_peak_memory(model, input_shape, threads),
        threads=threads,
        input_shape=tuple(input_shape),
    )
