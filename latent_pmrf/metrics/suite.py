"""One metric loop: the metrics of ``latent-pmrf evaluate`` and of the convergence callback (paper
Fig. 1 and 3) are a :class:`MetricSuite`, fed batch by batch.

Images reach it as (B, 3, H, W) floats in [0, 1] on the 8-bit grid (``base.to_unit_8bit`` of a
network's output; an image file as read). Per-image metrics keep every image's value (the per-image
CSV) and aggregate at ``compute``. Set metrics (FID, FD-/MMD-DINOv2) keep the restored images'
features and compare them with a fixed reference set's, computed once by ``set_reference`` (and
kept across ``reset``), optionally cached on disk; metrics of one suite that share a backbone
(FD- and MMD-DINOv2) embed each image once.

Under DDP each rank feeds its own shard of the images, then ``gather`` (and ``set_reference``'s
``all_gather``) hands every rank the concatenation of all ranks' per-image values and features in
rank order: with contiguous shards in rank order that is the 1-process array, so ``compute``
returns the 1-process numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from .base import FeatureMetric, ImageMetric
from .registry import build_metrics

Metric = ImageMetric | FeatureMetric
AllGather = Callable[[object], list]  # obj -> every rank's obj, in rank order


def all_ranks(obj: object) -> list:
    """Every rank's ``obj`` in rank order (``torch.distributed.all_gather_object``); ``[obj]``
    outside a process group. A collective: every rank must call it."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


class MetricSuite:
    """``names``: registered metric names, built on ``device`` unless in ``built`` (tests inject
    untrained backbones). ``reference_stats``: fixed reference statistics of a set metric by name,
    e.g. FID against FFHQ-70k's Inception (mu, sigma)."""

    def __init__(self, names: Sequence[str], device: str | torch.device = "cpu", *,
                 built: Mapping[str, Metric] | None = None,
                 reference_stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None):
        objs = dict(built or {})
        objs.update(build_metrics([n for n in names if n not in objs], device))
        self.metrics: dict[str, Metric] = {n: objs[n] for n in names}
        self._image_metrics = {n: m for n, m in self.metrics.items() if isinstance(m, ImageMetric)}
        self._set_metrics = {n: m for n, m in self.metrics.items() if isinstance(m, FeatureMetric)}
        self._embedders: dict[int, FeatureMetric] = {}  # id(backbone) -> the first set metric on it
        for metric in self._set_metrics.values():
            self._embedders.setdefault(id(metric.backbone), metric)
        self._reference_stats = dict(reference_stats or {})
        self._reference: dict[int, np.ndarray] = {}  # id(backbone) -> reference-set features
        self.reset()

    @property
    def needs_reference(self) -> bool:
        """Whether a set metric still lacks its reference set (``set_reference`` supplies it)."""
        return bool(self._missing_reference())

    def _missing_reference(self) -> dict[int, FeatureMetric]:
        wanted = {id(m.backbone) for n, m in self._set_metrics.items() if n not in self._reference_stats}
        return {k: m for k, m in self._embedders.items() if k in wanted and k not in self._reference}

    def set_reference(self, images: Iterable[torch.Tensor], cache_dir: Path | None = None, set_key: str = "",
                      all_gather: AllGather | None = None) -> None:
        """Features of the reference set for the set metrics that lack them, kept until the suite
        is discarded. With ``cache_dir``, ``<cache_dir>/<feature kind>-<set_key>.npy`` is read
        where present and written otherwise; ``images`` (batches) are iterated only if some
        features are not cached, once for all backbones. With ``all_gather`` (e.g. ``all_ranks``;
        every rank calls this) ``images`` are this rank's shard and the reference set is every
        rank's shard, in rank order."""
        missing = self._missing_reference()
        paths = {k: cache_dir / f"{m.feature_kind}-{set_key}.npy" for k, m in missing.items()} if cache_dir else {}
        for key, path in paths.items():
            if path.is_file():
                self._reference[key] = np.load(path)
        to_compute = {k: m for k, m in missing.items() if k not in self._reference}
        if not to_compute:
            return
        features: dict[int, list[np.ndarray]] = {k: [] for k in to_compute}
        for batch in images:
            for key, metric in to_compute.items():
                features[key].append(metric.features(batch))
        if all_gather is not None:
            features = dict(zip(features, _gather_arrays(list(features.values()), all_gather)))
        for key, feats in features.items():
            if not feats:
                raise ValueError("the reference set is empty")
            self._reference[key] = np.concatenate(feats)
            if key in paths:
                _save_npy(paths[key], self._reference[key])

    def update(self, pred: torch.Tensor, gt: torch.Tensor | None = None,
               posterior_mean: torch.Tensor | None = None) -> None:
        """One batch of restored images and, as the metrics need them, their ground truth and
        posterior-mean outputs f(y), all (B, 3, H, W) in [0, 1]."""
        refs = {"none": None, "gt": gt, "posterior_mean": posterior_mean}
        for name, metric in self._image_metrics.items():
            ref = refs[metric.info.reference]
            if ref is None and metric.info.reference != "none":
                raise ValueError(f"metric {name} needs the {metric.info.reference} images of each batch")
            self._values[name].append(np.asarray(metric(pred, ref), np.float64).reshape(-1))
        for key, metric in self._embedders.items():
            self._features[key].append(metric.features(pred))
        self.images += pred.shape[0]

    def gather(self, all_gather: AllGather = all_ranks) -> None:
        """Make every rank's suite hold all ranks' images (each rank updated it with its own shard):
        per-image values and features are concatenated in rank order, so ``per_image`` and
        ``compute`` then give, on every rank, what one process fed all shards in rank order gives.
        A collective: every rank calls it."""
        values, features = self._values, self._features
        gathered = _gather_arrays([*values.values(), *features.values(), [np.array([self.images])]], all_gather)
        self._values = dict(zip(values, gathered[:len(values)]))
        self._features = dict(zip(features, gathered[len(values):-1]))
        self.images = int(sum(count.item() for count in gathered[-1]))

    def per_image(self) -> dict[str, np.ndarray]:
        """Each per-image metric's values, one per image in the order of the updates."""
        return {name: np.concatenate(values) if values else np.zeros(0) for name, values in self._values.items()}

    def compute(self) -> dict[str, float]:
        """Every metric's number over the images since the last ``reset``, in the order of ``names``."""
        if not self.images:
            raise ValueError("no images: call update() before compute()")
        missing = self._missing_reference()
        lacking = [n for n, m in self._set_metrics.items()
                   if n not in self._reference_stats and id(m.backbone) in missing]
        if lacking:
            raise ValueError(f"set metric(s) {', '.join(lacking)} need a reference set: call set_reference() first")
        values = {name: self._image_metrics[name].aggregate(v) for name, v in self.per_image().items()}
        for name, metric in self._set_metrics.items():
            reference = self._reference_stats.get(name)
            if reference is None:
                reference = self._reference[id(metric.backbone)]
            values[name] = metric.distance(np.concatenate(self._features[id(metric.backbone)]), reference)
        return {name: float(values[name]) for name in self.metrics}

    def reset(self) -> None:
        """Forget the restored images (the reference set's features stay)."""
        self.images = 0
        self._values: dict[str, list[np.ndarray]] = {n: [] for n in self._image_metrics}
        self._features: dict[int, list[np.ndarray]] = {k: [] for k in self._embedders}


def _gather_arrays(batches: list[list[np.ndarray]], all_gather: AllGather) -> list[list[np.ndarray]]:
    """For each list of this rank's arrays, every rank's arrays in rank order (one message for all
    lists; keys such as ``id(backbone)`` differ between processes, so lists travel by position)."""
    gathered = all_gather([np.concatenate(arrays) if arrays else None for arrays in batches])
    return [[rank[i] for rank in gathered if rank[i] is not None] for i in range(len(batches))]


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)

    def save(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.save would append ".npy" to a path
            np.save(f, array)

    atomic_write(path, save)
