"""backtester: alert backtests on intraday bars, parallelised over date-range clusters.

    >>> import backtester
    >>> result = backtester.run("configs/rsi.yaml", write=False)   # doctest: +SKIP
    >>> result.alerts.head()                                        # doctest: +SKIP
"""

from .errors import BacktestError, ConfigError, DataError

__version__ = "0.1.0"
__all__ = ["BacktestError", "ConfigError", "DataError", "run", "prepare", "__version__"]


def run(*args, **kwargs):
    """See `backtester.api.run`."""
    from .api import run as _run

    return _run(*args, **kwargs)


def prepare(*args, **kwargs):
    """See `backtester.api.prepare`."""
    from .api import prepare as _prepare

    return _prepare(*args, **kwargs)
