"""Running the app under uvicorn: one process, or `workers` processes over one store (each rebuilds the app from
the settings in its environment and picks up store updates on its own)."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from typing import Any

from ragtune.errors import InputError
from ragtune.server.app import SETTINGS_ENVIRONMENT, ServeSettings, app_from_settings
from ragtune.store import open_store

METRICS_DIRECTORY_ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"


def serve_forever(settings: ServeSettings, host: str, port: int, workers: int = 1, access_log: bool = False) -> None:
    import uvicorn

    if workers < 1:
        raise InputError("--workers must be at least 1")
    log_config = _log_config(access_log)
    if workers == 1:
        uvicorn.run(app_from_settings(settings), host=host, port=port, log_level="warning", access_log=False,
                    log_config=log_config)  # fmt: skip
        return
    open_store(settings.store).close()  # a missing or corrupt store fails here, before any worker starts
    metrics_directory = tempfile.mkdtemp(prefix="ragtune-metrics-")
    os.environ[SETTINGS_ENVIRONMENT] = settings.to_environment()
    os.environ[METRICS_DIRECTORY_ENVIRONMENT] = metrics_directory  # workers' metrics summed by /metrics
    try:
        uvicorn.run("ragtune.server.app:app_from_environment", factory=True, workers=workers, host=host, port=port,
                    log_level="warning", access_log=False, log_config=log_config)  # fmt: skip
    finally:
        shutil.rmtree(metrics_directory, ignore_errors=True)


def _log_config(access_log: bool) -> dict[str, Any]:
    """uvicorn's logging, plus the `ragtune.access` JSON lines on stderr when asked for (in every worker)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["ragtune_plain"] = {"format": "%(message)s"}
    config["handlers"]["ragtune_access"] = {"class": "logging.StreamHandler", "formatter": "ragtune_plain",
                                            "stream": "ext://sys.stderr"}  # fmt: skip
    config["loggers"]["ragtune.access"] = {"handlers": ["ragtune_access"], "propagate": False,
                                           "level": "INFO" if access_log else "WARNING"}  # fmt: skip
    return config
