"""Every path from media to frozen features: raw encoder outputs and the Phase 1 aligner
heads' unit vectors, computed or read from the feature cache."""
