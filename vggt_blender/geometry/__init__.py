"""Camera maths and the one derivation of points from depth and cameras (numpy only)."""

# The camera decoding shared by both model families, at the package level (the parity checks look for it here).
from .cameras import pose_encoding_to_extrinsics_intrinsics  # noqa: E402,F401
