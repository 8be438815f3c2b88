"""Spiking models and building blocks: neurons (LIF, I-LIF), GAC and the GAC-coded
MS-ResNet, E-3DSNN (spconv), SpikePoint, and the activity / energy report."""

from .e3dsnn import E3DSNN, E3DSNNSeg
from .energy import activity_report, format_report
from .gac import GAC
from .gac_resnet import GACResNet
from .neurons import ILIF, LIF
from .spikepoint import SpikePoint

__all__ = ["E3DSNN", "E3DSNNSeg", "GAC", "GACResNet", "ILIF", "LIF", "SpikePoint",
           "activity_report", "format_report"]
