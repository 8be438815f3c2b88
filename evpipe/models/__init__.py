"""Spiking models and building blocks: neurons, GAC, spconv compatibility."""

from .gac import GAC
from .neurons import LIF

__all__ = ["GAC", "LIF"]
