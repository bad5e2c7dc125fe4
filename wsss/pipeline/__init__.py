"""`wsss run`: ordered stages with fingerprints, skipping, invalidation and resume."""
