"""Add-on preferences: the inference runtime, the weights, device and precision, and the runtime status."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import runtime
from .vggt_blender import options as opt
from .vggt_blender.weights.registry import get_checkpoint
from .operators import runtime as runtime_ops
from .registration import register_classes, unregister_classes


class VGGT_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    inference_source: EnumProperty(
        name="Run On",
        items=(
            ("LOCAL", "Local Runtime", "Run the model on this computer, in the inference runtime below"),
            ("SERVER", "Server", "Send the photos to a reconstruction server (python -m vggt_blender serve)"),
        ),
        default="LOCAL",
    )
    server_url: StringProperty(name="Server URL", default="http://127.0.0.1:8765",
                               description="Address of the reconstruction server, e.g. http://gpu-box:8765")
    server_token: StringProperty(name="Token", subtype="PASSWORD",
                                 description="The server's access token (empty: VGGT_SERVER_TOKEN)")

    runtime_source: EnumProperty(
        name="Runtime",
        items=(
            ("INSTALLED", "Private Runtime", "A Python environment with torch installed by this add-on"),
            ("CUSTOM", "Existing Python", "A Python 3.10+ interpreter that already has torch"),
        ),
        default="INSTALLED",
    )
    python_path: StringProperty(
        name="Python", subtype="FILE_PATH",
        description="Interpreter with torch, numpy, pillow and safetensors (e.g. a conda/venv python)",
    )
    weights_path: StringProperty(
        name="Weights", subtype="FILE_PATH",
        description="VGGT checkpoint (model.pt or .safetensors); empty: VGGT_WEIGHTS or the default cache folder",
    )
    # The model: which official checkpoint is looked for (and downloaded). A weights file set above wins, and its
    # keys decide the family (VGGT or VGGT-Omega).
    checkpoint: EnumProperty(
        name="Model",
        items=opt.CHECKPOINT_ITEMS,
        default=opt.DEFAULT_CHECKPOINT,
    )
    hf_token: StringProperty(
        name="Hugging Face Token", subtype="PASSWORD",
        description="Only for the gated checkpoints: VGGT-1B Commercial and VGGT-Omega (or set HF_TOKEN)",
    )
    model_config: StringProperty(
        name="Model Config", default=opt.DEFAULT_CONFIG or "",
        description="Model configuration preset name or JSON file (advanced; tests use a tiny model); empty: "
                    "the model's own",
    )
    device: EnumProperty(
        name="Device",
        items=opt.DEVICE_ITEMS,
        default=opt.DEFAULT_DEVICE,
    )
    precision: EnumProperty(
        name="Precision",
        items=opt.PRECISION_ITEMS,
        default=opt.DEFAULT_PRECISION,
    )
    fast_path: EnumProperty(
        name="Memory-Lean Path",
        items=opt.FAST_PATH_ITEMS,
        default=opt.DEFAULT_FAST_PATH,
        description="The memory-lean inference path (bf16/fp16 weights, layers the heads read, heads per chunk)",
    )

    keep_worker: BoolProperty(
        name="Keep Model Loaded", default=True,
        description="Keep the inference runtime running between reconstructions, with the model in memory "
                    "(the next run starts at once; the memory stays in use until Blender closes)",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout

        box = layout.box()
        box.row().prop(self, "inference_source", expand=True)
        if self.inference_source == "SERVER":
            from .operators.server import draw_server

            draw_server(box, self)
            return

        box = layout.box()
        box.label(text="Inference Runtime", icon="CONSOLE")
        box.row().prop(self, "runtime_source", expand=True)
        if self.runtime_source == "CUSTOM":
            box.prop(self, "python_path")
        else:
            row = box.row(align=True)
            row.operator("vggt.install_runtime", icon="IMPORT")
            box.label(text=f"Location: {runtime.runtime_venv_dir()}")
            if not bpy.app.online_access:
                box.label(text="Online access is off (Preferences > System > Network): installing needs it",
                          icon="INFO")
        runtime_ops.draw_task(box, "install")
        row = box.row(align=True)
        row.label(text=runtime.status_line(self), icon="CHECKMARK" if _runtime_ok(self) else "ERROR")
        row.operator("vggt.check_runtime", text="Check", icon="FILE_REFRESH")

        box = layout.box()
        box.label(text="Model Weights", icon="FILE_BLEND")
        box.prop(self, "weights_path")
        row = box.row(align=True)
        row.prop(self, "checkpoint", text="")
        row.operator("vggt.download_weights", icon="URL")
        if get_checkpoint(self.checkpoint).gated:
            box.prop(self, "hf_token")
        runtime_ops.draw_task(box, "download")

        box = layout.box()
        box.label(text="Inference", icon="SETTINGS")
        box.prop(self, "device")
        box.prop(self, "precision")
        box.prop(self, "fast_path")
        box.prop(self, "model_config")
        box.prop(self, "keep_worker")


def _runtime_ok(prefs) -> bool:
    # Only a probe of the current settings counts (status_line's rule): a stale "ok" must not show a tick.
    info = runtime.current_status_info(prefs)
    return bool(info) and "error" not in info and "torch_error" not in info and bool(info.get("weights"))


classes = (VGGT_AddonPreferences,)


def register() -> None:
    register_classes(classes)


def unregister() -> None:
    unregister_classes(classes)
