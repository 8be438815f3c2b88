"""PKU spike camera (Vidar) recordings: a folder of headerless bit-packed `.dat` files
(formats.md §9), e.g. SpikeCV's recVidarReal2019 (400x250 at 20 kHz, scene folders
classA/ classB/). The geometry is not stored in the files: `width` x `height` (default
400x250) must match the camera.

Layout: `<root>/**/*.dat` (split `all`), or `<root>/train/**/*.dat` and
`<root>/test/**/*.dat`. When every file of the split lies in a sub-folder (none directly
in the split folder), the first-level sub-folder is the class: label = its index among
the sorted class folder names (of both train/ and test/ when those exist).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError, DatasetError, FormatError
from ..io import iter_spike_frames, read_spike_frames
from ..io.spikecam import _frame_bytes
from .base import DATASETS, Loader, require_dir

LAYOUT = ("<root>/**/*.dat (--split all) or <root>/{train,test}/**/*.dat; class = first "
          "sub-folder when every file lies in one")


def _positive_int(name: str, value, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ConfigError(f"{name} must be an int >= {0 if allow_zero else 1}, got {value!r}")
    return value


@DATASETS.register("spikecam")
class SpikeCamLoader(Loader):
    """One item per `.dat` file; `records(item)` yields the whole file as one record, or
    with `clip_frames` N one record per N-frame clip (the last may be shorter), streamed
    with `iter_spike_frames` (memory: one clip, N * H * W bytes).

    Records: `id` = the file's path below the split folder without `.dat` (plus `_<k>`,
    the clip number, when clipping), `spikes` uint8 [T, H, W] of 0/1 (row 0 at the top,
    SpikeCV `flipud`), `frame_start` int (index of the first frame in the file) and, for
    class sub-folders, `label` int. `class_folders` forces labels on or off.
    """

    name = "spikecam"
    kind = "spikes"
    splits = ("all", "train", "test")
    cli_options = {
        "width": (int, "spike camera frame width, px (default 400)"),
        "height": (int, "spike camera frame height, px (default 250)"),
        "clip_frames": (int, "cut each file into clips of N frames, one sample each "
                             "(default 0: one sample per file)"),
        "class_folders": (bool, "first-level sub-folders are classes (default: when no file "
                                "lies directly in the split folder)"),
    }

    def __init__(self, root, split: str = "all", width: int = 400, height: int = 250,
                 clip_frames: int = 0, class_folders: bool | None = None):
        width, height = _positive_int("width", width), _positive_int("height", height)
        _frame_bytes(width, height)
        super().__init__(root, split, width=width, height=height,
                         clip_frames=_positive_int("clip_frames", clip_frames, True),
                         class_folders=None if class_folders is None else bool(class_folders))

    def _split_dir(self) -> Path:
        require_dir(self.root, "spike camera root", LAYOUT)
        if self.split == "all":
            return self.root
        return require_dir(self.root / self.split, f"split folder {self.split}/ (use "
                           "--split all for a folder without train/ and test/)", LAYOUT)

    def class_names(self) -> list[str]:
        """Sorted class folder names (of train/ and test/ together when they exist), or []
        without class folders."""
        split_dir = self._split_dir()
        labelled = self.options["class_folders"]
        if labelled is None:
            labelled = not any(p.is_file() for p in split_dir.glob("*.dat"))
        if not labelled:
            return []
        if any(p.is_file() for p in split_dir.glob("*.dat")):
            raise DatasetError("class_folders is on but .dat files lie directly in the split "
                               f"folder; expected layout: {LAYOUT}", path=split_dir)
        tops = [self.root / s for s in ("train", "test") if (self.root / s).is_dir()]
        if self.split == "all" or not tops:
            tops = [split_dir]
        return sorted({p.name for top in tops for p in top.iterdir() if p.is_dir()})

    def items(self) -> list[tuple[str, int | None]]:
        """(path below the root, label or None) of every `.dat` file, sorted by path."""
        split_dir = self._split_dir()
        files = sorted(p for p in split_dir.rglob("*.dat") if p.is_file())
        if not files:
            raise DatasetError(f"no .dat files; expected layout: {LAYOUT}", path=split_dir)
        classes = self.class_names()
        index = {c: i for i, c in enumerate(classes)}
        return [(p.relative_to(self.root).as_posix(),
                 index[p.relative_to(split_dir).parts[0]] if classes else None) for p in files]

    def item_id(self, item) -> str:
        rel = Path(item[0])
        if self.split != "all":
            rel = rel.relative_to(self.split)
        return rel.with_suffix("").as_posix()

    def source_files(self, item) -> list[Path]:
        return [self.root / item[0]]

    def describe(self) -> dict:
        return {**self.options, "classes": self.class_names()}

    def records(self, item) -> Iterator[dict]:
        rel, label = item
        path = self.root / rel
        w, h, n = self.options["width"], self.options["height"], self.options["clip_frames"]
        base = self.item_id(item)
        clips = (iter_spike_frames(path, w, h, frames_per_chunk=n) if n
                 else iter([read_spike_frames(path, w, h)]))
        start = 0
        for k, spikes in enumerate(clips):
            if not len(spikes):
                break
            record = {"id": f"{base}_{k}" if n else base, "spikes": spikes,
                      "frame_start": start}
            if label is not None:
                record["label"] = label
            yield record
            start += len(spikes)
        if not start:
            raise FormatError(f"no whole {w}x{h} frame ({_frame_bytes(w, h)} bytes) in the "
                              f"file", path=path)
