"""Lab set-up the harness does itself: the PC/SC daemon with virtual readers."""

from harness.lab.pcscd import LabError, Pcscd, VirtualSlot, virtual_slots

__all__ = ["LabError", "Pcscd", "VirtualSlot", "virtual_slots"]
