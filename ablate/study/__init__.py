"""Studies: the one declaration of the study and search-space files (and their JSON Schema), the
typed objects they load into with file:line errors, search spaces, and the feasibility checks
against the model builders."""

from ablate.study.declaration import SpaceFile, StudyFile, json_schema
from ablate.study.feasibility import arch_api
from ablate.study.load import check_study, load_study, study_from_dict, study_to_dict, validate_study
from ablate.study.schema import (
    LABEL,
    OBJECTIVES,
    RECIPE_NAMES,
    SCALES,
    TRAIN_KEYS,
    TRAINING_METRICS,
    DataSpec,
    Objective,
    ProxySpec,
    Resources,
    SamplerSpec,
    SchedulerSpec,
    Study,
    TrainSpec,
)
from ablate.study.space_file import load_space, space_from_dict, space_to_dict

__all__ = ["OBJECTIVES", "TRAINING_METRICS", "TRAIN_KEYS", "RECIPE_NAMES", "LABEL", "SCALES", "Objective", "DataSpec",
           "TrainSpec", "SamplerSpec", "SchedulerSpec", "Resources", "ProxySpec", "Study", "load_space",
           "space_from_dict", "space_to_dict", "load_study", "study_from_dict", "study_to_dict", "validate_study",
           "arch_api", "check_study", "StudyFile", "SpaceFile", "json_schema"]
