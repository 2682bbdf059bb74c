"""The inference engine (torch, Pillow): device choice and photos -> reconstruction. Never imported by Blender."""
