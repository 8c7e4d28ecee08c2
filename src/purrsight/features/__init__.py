"""Every path from media to frozen features: raw encoder outputs and the Phase 1 aligner
heads' unit vectors, computed or read from the feature cache (:class:`FeatureSource`).

``source.py`` the FeatureSource; ``raw.py`` one pass through the encoders; ``aligned.py``
the frozen heads (:func:`~purrsight.features.aligned.apply_head`); ``encoders.py`` encoders
built on first use; ``keys.py`` and ``cache.py`` the cache's keys and its store.
"""

from purrsight.features.source import FeatureSource

__all__ = ["FeatureSource"]
