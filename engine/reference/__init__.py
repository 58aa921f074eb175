"""Readable numpy implementations: the truth the native kernels are tested against, and the
fallback path when no native kernel accepts an input (float64 gradient checks, CREMA_KERNELS=reference)."""
