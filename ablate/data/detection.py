"""Detection data: user data YAMLs checked before training, and the generated default set.

:func:`check_detection_data` validates any ultralytics data YAML before training, one clear
line per problem; it never downloads, and refuses YAMLs that ask for a download. The
generated, seeded YOLO-format set that is the offline default lives in
:mod:`ablate.data.synth_det` (files and cache) and :mod:`ablate.data.synth_image` (drawing);
its public names are re-exported here, where the CLI, the runner and ``ablate.data`` import
them, so that "detection data" stays one import whichever kind a study uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.data.folders import iter_files
from ablate.data.synth_det import SHAPES, default_detection_data, generate_synth_det, synth_det_cache_dir
from ablate.errors import ConfigError, DataError

__all__ = [
    "SHAPES",
    "DetectionDataInfo",
    "generate_synth_det",
    "default_detection_data",
    "check_detection_data",
    "synth_det_cache_dir",
]

# Ultralytics' image suffixes (ultralytics.data.utils.IMG_FORMATS), without importing it.
IMG_FORMATS = frozenset({"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif",
                         "tiff", "webp"})
_SUFFIXES = tuple(f".{ext}" for ext in sorted(IMG_FORMATS))


@dataclass(frozen=True)
class DetectionDataInfo:
    """A checked ultralytics data YAML, with every path resolved.

    Attributes:
        yaml: The data YAML.
        root: The data set root (``path:``, resolved).
        names: Class names in index order.
        train: Resolved ``train:`` entries (folders or image-list files).
        val: Resolved ``val:`` entries.
        n_train: Training images found.
        n_val: Validation images found.
    """

    yaml: Path
    root: Path
    names: tuple[str, ...]
    train: tuple[Path, ...]
    val: tuple[Path, ...]
    n_train: int
    n_val: int

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)

    def to_yaml_dict(self) -> dict[str, Any]:
        """A data YAML mapping with absolute paths and no ``download:``, valid from any working directory."""
        def one(paths: tuple[Path, ...]) -> str | list[str]:
            return str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]

        return {"path": str(self.root), "train": one(self.train), "val": one(self.val),
                "names": dict(enumerate(self.names))}


def check_detection_data(path: str | os.PathLike[str]) -> DetectionDataInfo:
    """Check an ultralytics data YAML before any training; nothing is downloaded.

    Paths resolve as ultralytics resolves them: ``train``/``val`` relative to ``path:``, which
    defaults to the YAML's folder; a relative ``path:`` is looked up in the working directory
    and then, unlike ultralytics, next to the YAML (ultralytics would try its own datasets
    folder). Use :meth:`DetectionDataInfo.to_yaml_dict` to hand ultralytics the resolved paths.

    Raises:
        DataError: The file, the root or a split is missing, or a split has no images or no labels.
        ConfigError: The YAML does not parse, lacks ``train``, ``val`` or ``names``, has invalid
            names, or names a ``download:`` (ablate never downloads).
    """
    from ablate.yaml_read import read_yaml

    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(f"{file}: data YAML not found")
    if file.is_dir():
        raise DataError(f"{file}: is a folder, allowed: a data YAML file (ultralytics format)")
    # The reader every user YAML goes through: size, encoding, depth, alias and duplicate-key limits.
    data, paths = read_yaml(file, str(file))
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: a data YAML must be a mapping with train, val and names, got "
                          f"{type(data).__name__}")
    lines = {p[0]: n for p, n in paths.items() if len(p) == 1}

    def where(key: str) -> str:
        return f"{file}:{lines[key]}: {key}" if key in lines else f"{file}: {key}"

    for key in ("train", "val", "names"):
        if data.get(key) in (None, "", []):
            hint = " (ultralytics' 'validation' key: rename it to 'val')" if key == "val" and "validation" in data \
                else ""
            allowed = "a list of class names or a mapping {0: name, ...}" if key == "names" else \
                "a folder of images, an image-list .txt file, or a list of them, relative to path:"
            raise ConfigError(f"{where(key)}: required key is missing{hint}, allowed: {allowed}")
    if data.get("download"):
        raise ConfigError(f"{where('download')}: ablate never downloads data; put the images where train: and "
                          f"val: point and remove the download: key")
    names = _names(data["names"], where("names"))
    if data.get("nc") is not None and data["nc"] != len(names):
        raise ConfigError(f"{where('nc')}: nc: {data['nc']!r} does not match the {len(names)} names")
    root = _root(data.get("path"), file, where("path"))
    train, n_train = _split(data["train"], root, where("train"))
    val, n_val = _split(data["val"], root, where("val"))
    return DetectionDataInfo(yaml=file.absolute(), root=root, names=names, train=train, val=val,
                             n_train=n_train, n_val=n_val)


def _names(raw: Any, where: str) -> tuple[str, ...]:
    if isinstance(raw, dict):
        if sorted(raw, key=str) != sorted(range(len(raw)), key=str):
            raise ConfigError(f"{where}: keys must be the class indices 0..{len(raw) - 1}, "
                              f"got {', '.join(map(repr, raw))}")
        raw = [raw[i] for i in range(len(raw))]
    if not isinstance(raw, list) or not raw or not all(isinstance(n, (str, int)) for n in raw):
        raise ConfigError(f"{where}: allowed: a non-empty list of class names or a mapping {{0: name, ...}}, "
                          f"got {raw!r}")
    return tuple(str(n) for n in raw)


def _root(raw: Any, file: Path, where: str) -> Path:
    if raw in (None, ""):
        return file.parent.absolute().resolve()
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: allowed: a folder path, got {raw!r}")
    given = Path(os.path.expanduser(raw))
    tried = [given] if given.is_absolute() else [Path.cwd() / given, file.parent.absolute() / given]
    for candidate in tried:
        if candidate.is_dir():
            return candidate.resolve()
    raise DataError(f"{where}: folder not found: {raw!r} (looked at {', '.join(map(str, tried))})")


def _split(raw: Any, root: Path, where: str) -> tuple[tuple[Path, ...], int]:
    entries = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(e, str) and e for e in entries):
        raise ConfigError(f"{where}: allowed: a folder or image-list file path, or a list of them, got {raw!r}")
    resolved, images = [], []
    for entry in entries:
        p = (root / os.path.expanduser(entry)).resolve()
        if not p.exists() and entry.startswith("../"):  # ultralytics' own fallback
            p = (root / entry[3:]).resolve()
        if not p.exists():
            raise DataError(f"{where}: {p} does not exist, allowed: a folder of images or an image-list .txt file")
        found = _images(p, where)
        if not found:
            raise DataError(f"{where}: {p} has no images ({', '.join(sorted(IMG_FORMATS))})")
        resolved.append(p)
        images += found
    # Ultralytics trains an image without a label file as background; a split without a
    # single one has nothing to learn or score, so at least one label file per split.
    if not any(os.path.isfile(label) for label in _label_paths(images)):
        raise DataError(f"{where}: none of the {len(images)} images has a label file (ultralytics reads "
                        f"labels/.../NAME.txt for images/.../NAME.jpg), e.g. {_label_paths(images[:1])[0]}")
    return tuple(resolved), len(images)


def _images(p: Path, where: str) -> list[str]:
    """Image files of a folder (recursively) or listed in a text file, as ultralytics finds them.

    A folder is walked as ultralytics' recursive ``glob`` walks it (links followed, names
    starting with ``.`` skipped), but each real folder once: a link back to a folder above
    it is refused, since ultralytics would follow it without end (a hang in training).
    """
    if p.is_dir():
        def loop(link: str, folder: str) -> None:
            raise DataError(f"{where}: {link} is a symbolic link back to {os.path.realpath(link)}, a folder above it: "
                            f"ultralytics' recursive search would follow it without end; remove the link")

        try:
            found = list(iter_files(p, _SUFFIXES, on_loop=loop))
        except DataError as err:
            if str(err).startswith(where):
                raise
            raise DataError(f"{where}: {err}") from None
    else:
        try:
            lines = p.read_text(encoding="utf-8-sig").strip().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{where}: {p}: cannot read the image list ({' '.join(str(err).split())}), allowed: a "
                            f"UTF-8 text file with one image path per line") from None
        parent = str(p.parent) + os.sep
        found = [x.replace("./", parent, 1) if x.startswith("./") else x for x in (s.strip() for s in lines)]
        found = [x for x in found if os.path.isfile(x)]
    return sorted(x for x in found if x.rpartition(".")[-1].lower() in IMG_FORMATS)


def _label_paths(images: list[str]) -> list[str]:
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return [sb.join(x.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt" for x in images]
