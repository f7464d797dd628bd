"""pycma plumbing: one CMA-ES per search space, each on its own seeded random stream, with one BLAS thread."""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def new_es(
    x0: np.ndarray,
    sigma: float,
    popsize: int,
    seed: int,
    index: int,
    maxiter: int,
    bounds: float | None = None,
    stds: np.ndarray | None = None,
) -> Any:
    """`cma.CMAEvolutionStrategy(x0, sigma, {popsize, maxiter, ...})` drawing from Generator(PCG64([seed, index])).

    pycma's default is numpy's *global* RNG, reseeded by every new ES; with one ES per layer (BBTv2) the streams
    would interleave and anything else touching np.random would shift them. A private stream per ES makes each
    ES a pure function of its own ask/tell history, which is what exact resume replays.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycma warns at import when matplotlib is missing
        import cma

    rng = np.random.Generator(np.random.PCG64([seed, index]))
    opts: dict[str, Any] = {
        "popsize": popsize,
        "maxiter": maxiter,
        "seed": np.nan,  # seeding happens through `randn`: pycma must not touch the global RNG
        "randn": lambda *shape: rng.standard_normal(shape),
        "verbose": -9,
        "verb_log": 0,
        "verb_disp": 0,
    }
    if bounds is not None:
        opts["bounds"] = [-bounds, bounds]
    if stds is not None:
        opts["CMA_stds"] = stds
    return cma.CMAEvolutionStrategy(x0, sigma, opts)


@contextmanager
def single_threaded_numpy_blas() -> Iterator[None]:
    """Run numpy's (pycma's) linear algebra on one BLAS thread; torch has its own pool and is unaffected.

    Why: on a loaded 2-core machine numpy's multi-threaded OpenBLAS made the 500×500 eigendecomposition pycma
    runs every few generations ~100× slower (5 s instead of 50 ms) in our measurements.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        get, set_ = _numpy_openblas_thread_functions()
        before = get() if get is not None else None
        if set_ is not None:
            set_(1)
        try:
            yield
        finally:
            if set_ is not None:
                set_(before)
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _numpy_openblas_thread_functions() -> tuple[Callable[[], int] | None, Callable[[int], None] | None]:
    """get/set num_threads of the OpenBLAS bundled in numpy's wheels (Linux), or (None, None) elsewhere."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("*openblas*")):
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", "_64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    return get, set_
    return None, None
