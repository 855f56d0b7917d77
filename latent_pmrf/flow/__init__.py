"""Posterior-Mean Rectified Flow in latent or pixel space (paper Sec. 2.2-3.1)."""

from .early_branching import sample_early_branching
from .pipeline import RestorationPipeline, load_restoration
from .rectified_flow import flow_matching_loss, interpolate, stratified_uniform
from .sampler import sample_euler
from .spaces import LatentSpace, PixelSpace, source_sample

__all__ = ["LatentSpace", "PixelSpace", "RestorationPipeline", "flow_matching_loss", "interpolate",
           "load_restoration", "sample_early_branching", "sample_euler", "source_sample",
           "stratified_uniform"]
