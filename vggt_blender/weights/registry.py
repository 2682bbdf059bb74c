"""The official VGGT checkpoints: where they live, their licences, and where we keep them locally.

Plain data (no torch, no network): the Blender preferences, the CLI and the worker all read it.
See docs/CHECKPOINTS.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import CheckpointError

# Where checkpoints are downloaded from: Hugging Face, or a mirror/proxy with the same URL layout
# (`$HF_ENDPOINT`, the variable huggingface_hub itself honours).
HUB_ENV = "HF_ENDPOINT"
DEFAULT_HUB = "https://huggingface.co"


def hub_endpoint() -> str:
    value = os.environ.get(HUB_ENV, "").strip()
    return (value or DEFAULT_HUB).rstrip("/")


# 1,256,537,516 fp32 parameters (spec §8) + a little pickle/zip overhead.
VGGT_1B_PARAMETERS = 1_256_537_516
VGGT_1B_APPROX_BYTES = 5_030_000_000
# VGGT-Omega-1B: 1,143,814,185 fp32 parameters (the official state dict's 1,411 tensors).
VGGT_OMEGA_1B_PARAMETERS = 1_143_814_185
VGGT_OMEGA_1B_APPROX_BYTES = 4_580_000_000

FAIR_NC_LICENCE = "FAIR Noncommercial Research License (non-commercial research only)"
OMEGA_LICENCE_URL = "https://huggingface.co/facebook/VGGT-Omega/blob/main/LICENSE"


@dataclass(frozen=True)
class Checkpoint:
    name: str                 # our short name, also the folder name in the cache
    repo_id: str              # Hugging Face model repository
    filename: str             # file in that repository (a raw state dict)
    licence: str
    licence_url: str
    gated: bool               # needs a Hugging Face token of an account that accepted the licence
    config: str = "vggt-1b"   # config preset the weights belong to (VGGTConfig or VGGTOmegaConfig)
    family: str = "vggt"      # model family: "vggt" or "vggt-omega" (model/family.py FAMILIES)
    approx_bytes: int = VGGT_1B_APPROX_BYTES
    parameters: int = VGGT_1B_PARAMETERS
    # The published file's sha256 and exact size when we know them (None: taken from the server's
    # X-Linked-Etag / X-Linked-Size at download time, which Hugging Face sends for LFS files).
    sha256: str | None = None
    size: int | None = None

    @property
    def url(self) -> str:
        return f"{hub_endpoint()}/{self.repo_id}/resolve/main/{self.filename}"

    @property
    def page_url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"

    @property
    def size_text(self) -> str:
        return f"about {self.approx_bytes / 1e9:.2f} GB"

    def describe(self) -> str:
        """One paragraph for confirm dialogs and `download`: what, how big, which licence, gated or not."""
        text = (f"{self.name}: {self.repo_id}/{self.filename} ({self.size_text}, "
                f"{self.parameters:,} parameters). Licence: {self.licence} — {self.licence_url}")
        if self.gated:
            text += (f". Gated: accept the licence at {self.page_url} with your Hugging Face account, then give "
                     f"a read token (HF_TOKEN or --token)")
        return text


CHECKPOINTS: dict[str, Checkpoint] = {
    "vggt-1b": Checkpoint(
        name="vggt-1b",
        repo_id="facebook/VGGT-1B",
        filename="model.pt",
        licence="CC BY-NC 4.0 (non-commercial)",
        licence_url="https://creativecommons.org/licenses/by-nc/4.0/",
        gated=False,
    ),
    "vggt-1b-commercial": Checkpoint(
        name="vggt-1b-commercial",
        repo_id="facebook/VGGT-1B-Commercial",
        # The commercial repository names its raw state dict after the checkpoint, not model.pt.
        filename="vggt_1B_commercial.pt",
        licence="VGGT License v1 (commercial use allowed under its Acceptable Use Policy)",
        licence_url="https://huggingface.co/facebook/VGGT-1B-Commercial/blob/main/LICENSE",
        gated=True,
    ),
    "vggt-omega-1b-512": Checkpoint(
        name="vggt-omega-1b-512",
        repo_id="facebook/VGGT-Omega",
        filename="vggt_omega_1b_512.pt",
        licence=FAIR_NC_LICENCE,
        licence_url=OMEGA_LICENCE_URL,
        gated=True,
        config="vggt-omega-1b-512",
        family="vggt-omega",
        approx_bytes=VGGT_OMEGA_1B_APPROX_BYTES,
        parameters=VGGT_OMEGA_1B_PARAMETERS,
    ),
    "vggt-omega-1b-256-text": Checkpoint(
        name="vggt-omega-1b-256-text",
        repo_id="facebook/VGGT-Omega",
        filename="vggt_omega_1b_256_text.pt",
        licence=FAIR_NC_LICENCE,
        licence_url=OMEGA_LICENCE_URL,
        gated=True,
        config="vggt-omega-1b-256-text",
        family="vggt-omega",
        # The same model plus the small text-alignment readout (its extra tensors are a few MB).
        approx_bytes=VGGT_OMEGA_1B_APPROX_BYTES,
        parameters=VGGT_OMEGA_1B_PARAMETERS,
    ),
}
DEFAULT_CHECKPOINT = "vggt-1b"


def get_checkpoint(name: str) -> Checkpoint:
    """The registry entry for `name`; an unknown name raises CheckpointError listing the known ones."""
    try:
        return CHECKPOINTS[name]
    except KeyError:
        known = ", ".join(sorted(CHECKPOINTS))
        raise CheckpointError(f"unknown checkpoint '{name}' (known: {known})") from None


__all__ = ["HUB_ENV", "hub_endpoint", "Checkpoint", "CHECKPOINTS", "DEFAULT_CHECKPOINT", "get_checkpoint",
           "VGGT_1B_PARAMETERS", "VGGT_1B_APPROX_BYTES", "VGGT_OMEGA_1B_PARAMETERS", "VGGT_OMEGA_1B_APPROX_BYTES"]
