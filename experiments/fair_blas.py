"""Fair baselines for the benchmarks: import this before NumPy.

Some machines pin ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` for old OpenBLAS builds; current NumPy wheels
run slower with them, which would make scikit-learn look slower than it is. The benchmarks drop both from
their own process (tests and CI keep them) and print the BLAS library and kernel in use, so a table says
what scikit-learn ran on.
"""
import os

UNSET = [name for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.pop(name, None) is not None]


def describe_blas() -> str:
    """One line: the BLAS libraries NumPy/SciPy loaded (threadpoolctl), with kernel and threads."""
    from threadpoolctl import threadpool_info

    import numpy  # noqa: F401  (loads its BLAS)

    parts = [f"{info.get('internal_api')} {info.get('version')} ({info.get('architecture', '?')}, "
             f"{info.get('num_threads')} threads)" for info in threadpool_info() if info.get("user_api") == "blas"]
    unset = f"; unset for this run: {', '.join(UNSET)}" if UNSET else ""
    return "BLAS: " + ("; ".join(parts) or "none found") + unset
