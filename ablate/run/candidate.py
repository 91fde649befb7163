"""A candidate: one configuration of a study, resolved once in the driver.

What a trial trains (its :class:`~ablate.models.Architecture`, with the data set's class
count), what its paper-scale cost column measures, and the configuration key its repeats
share, all worked out from the study and the trial's params in one place. The driver
stores it and sends its JSON to the Ray worker, which re-validates it once at that
boundary; nothing downstream resolves builder keys again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ablate.models import Architecture, architecture_from_json, resolve_architecture
from ablate.run.keys import key_from_resolved
from ablate.study import Study

__all__ = ["Candidate", "data_classes", "detection_data"]


def detection_data(study: Study) -> Path:
    """The data YAML a detection study trains on: the user's, or the cached synthetic set."""
    from ablate.data.detection import default_detection_data

    return Path(study.data.path) if study.data.name == "yolo" else default_detection_data()


def data_classes(study: Study) -> int:
    """How many classes the study's data set has (the head every trained candidate gets)."""
    if study.task == "detect":
        from ablate.data.detection import check_detection_data

        return check_detection_data(detection_data(study)).nc
    from ablate.data import num_classes_of

    return num_classes_of(study.data.name, study.data.path)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One configuration: the model that trains, its paper-scale twin, and its key.

    Attributes:
        params: the trial's params (grid cell or sampled values), plain values.
        arch: the model that trains, at ``data.image_size`` with the data set's classes.
        paper: the model whose params and FLOPs fill the paper's cost column (at
            ``paper_resolution``; a ``base`` keeps its own classes), or None.
        key: the configuration key (:func:`ablate.run.keys.key_of`); every repeat of the
            configuration shares it.
    """

    params: Mapping[str, Any]
    arch: Architecture
    paper: Architecture | None
    key: str

    @classmethod
    def of(cls, study: Study, params: Mapping[str, Any], *, classes: int | None = None) -> Candidate:
        """Resolve the candidate of ``params`` (each architecture once).

        Args:
            study: the study the params belong to.
            params: a grid cell or sampled values.
            classes: the data set's class count when the caller knows it already
                (:func:`data_classes`; looked up otherwise).

        Raises:
            ConfigError: the keys do not resolve (an unknown option, a value of the wrong type).
        """
        params = dict(params)
        canonical = resolve_architecture(study.candidate(params), study.task)
        train = dataclasses.asdict(study.train_for(params))
        key = key_from_resolved(canonical.to_dict(), train)
        n = data_classes(study) if classes is None else classes
        arch = canonical.with_classes(n)
        raw_paper = study.paper_candidate(params)
        paper = None
        if raw_paper is not None:
            if study.base is None:  # the trained model at the paper's resolution
                paper = resolve_architecture({**arch.to_dict(), "img_size": raw_paper["img_size"]}, study.task)
            else:
                paper = resolve_architecture(raw_paper, study.task)
        return cls(params=params, arch=arch, paper=paper, key=key)

    def to_json(self) -> dict[str, Any]:
        """The plain form a Ray worker receives."""
        return {"params": dict(self.params), "arch": self.arch.to_json(),
                "paper": self.paper.to_json() if self.paper is not None else None, "key": self.key}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        """The candidate a driver sent, its architectures validated again (the Ray boundary)."""
        paper = data.get("paper")
        return cls(params=dict(data["params"]), arch=architecture_from_json(data["arch"]),
                   paper=architecture_from_json(paper) if paper is not None else None, key=str(data["key"]))
