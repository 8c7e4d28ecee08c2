"""Training code: Lightning modules, MLflow tracking, the jobs. The library packages
(models, data, inference) never import this."""

import warnings

# Known third-party deprecation noise that says nothing about a run.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def route_lightning_logs_to_root() -> None:
    """``import lightning`` adds its own console handler, so with our root handler every
    Lightning line printed twice. Once the application has configured logging, drop
    Lightning's handler and let its records reach the root once."""
    import logging

    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
