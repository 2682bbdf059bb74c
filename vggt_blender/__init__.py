"""vggt_blender: the bundled VGGT inference module and all pure logic of the extension.

Importable without Blender and without torch: only the modules that run the model import torch.
"""

__version__ = "0.1.0"
