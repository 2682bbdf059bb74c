"""Camera maths and the one derivation of points from depth and cameras (numpy only)."""
