"""Checkpoints: the registry of official files, finding them on disk, downloading them (all stdlib), and
`loading` (torch), which only the engine imports."""
