"""What a run trains on: the images and classes as they are when it starts, and their split."""

from collections import Counter
from dataclasses import dataclass, replace

from transferapp.engine.config import TrainConfig
from transferapp.engine.data import Sample, development_split
from transferapp.library import grouping, readiness
from transferapp.models import Image, TrainingRun
from transferapp.storage import blobs


@dataclass
class Snapshot:
    """The images and classes as they are when the run starts; later changes belong to the next run."""

    samples: list[Sample]
    classes: list[str]
    given_val: set[str]
    sha256s: set[str]
    test_keys: set[str]  # imported test/ folders or images set aside: only ever scored

    def trainable(self) -> list[Sample]:
        return [s for s in self.samples if s.key not in self.test_keys]

    def held_out(self) -> list[Sample]:
        return [s for s in self.samples if s.key in self.test_keys]

    def hold_out_whole_groups(self, groups: list[list[int]]) -> int:
        """A group (near-identical images, one patient, one folder) with a test image in it is held
        out whole: a copy of a test image in training would make the test figure measure memory.
        Returns how many images were pulled into the test set."""
        before = len(self.test_keys)
        for group in groups:
            keys = {str(pk) for pk in group}
            if keys & self.test_keys:
                self.test_keys |= keys
        return len(self.test_keys) - before

    def counts(self, held_out: bool = False) -> dict[str, int]:
        """Images per class (all of them, or only those held out for testing)."""
        per_label = Counter(s.label for s in (self.held_out() if held_out else self.samples))
        return {name: per_label[i] for i, name in enumerate(self.classes)}


def take_snapshot(run: TrainingRun, local: bool = True) -> Snapshot:
    """One query of images joined to their classes, so a class created or emptied meanwhile cannot
    make the rows disagree; the classes are those that have images. Each sample's path is a local
    file (fetched from the bucket in bucket mode), or with `local=False` its storage name."""
    rows = list(Image.objects.filter(project_id=run.project_id).order_by("pk")
                .values_list("pk", "file", "split", "sha256", "label__name"))
    classes = sorted({row[4] for row in rows})
    index = {name: i for i, name in enumerate(classes)}
    names = [row[1] for row in rows]
    paths = [str(path) for path in blobs.media_paths(names)] if local else names
    samples = [Sample(path=path, label=index[row[4]], key=str(row[0])) for path, row in zip(paths, rows)]
    given_val = {str(pk) for pk, _, split, _, _ in rows if split == "val"}
    test_keys = {str(pk) for pk, _, split, _, _ in rows if split == "test"}
    return Snapshot(samples, classes, given_val, {row[3] for row in rows}, test_keys)


def split_for_run(project, samples, given_val: set[str], config: TrainConfig, groups: list[list[int]]):
    """(train, val, a sentence saying how the split was made) for the results page; `groups` are
    library.readiness.split_groups(), kept on one side."""
    train, val = _split(samples, given_val, groups, config)
    if given_val and {s.key for s in val} == given_val:
        broken = readiness.groups_broken_by_imported_split(project=project)
        note = f" {len(broken)} group(s) of related images sit on both sides of it." if broken else ""
        return train, val, "The train/validation split imported with the images was used as given." + note
    if not val:
        return train, val, (f"None: with fewer than {config.small_data_below} images in the smallest class, every image "
                            "trained the model, and each figure is an out-of-fold estimate (every image scored by a "
                            "model that did not train on it).")
    rule = grouping.describe(project.group_by, project.group_folder_level)
    kept = f"{rule} and near-identical images" if rule else "near-identical images"
    how = (f"A stratified split made by the run (seed {config.seed}, {round(config.val_fraction * 100)}% of each class for "
           f"validation) that keeps {kept} on one side.")
    return train, val, how


def _split(samples, given_val: set[str], groups: list[list[int]], config: TrainConfig):
    """An imported train/val split is honoured when every class has images on both sides; otherwise
    the run makes its own stratified split (fixed by the seed) that keeps each group (related
    images, near-duplicates) on one side, so that validation never sees a copy of a training image."""
    val = [s for s in samples if s.key in given_val]
    train = [s for s in samples if s.key not in given_val]
    every_class = {s.label for s in samples}
    if val and {s.label for s in val} == every_class and {s.label for s in train} == every_class:
        return train, val
    return grouped_split(samples, groups, config)


def grouped_split(samples: list[Sample], groups: list[list[int]], config: TrainConfig):
    return development_split(with_split_groups(samples, groups), config)


def with_split_groups(samples: list[Sample], groups: list[list[int]]) -> list[Sample]:
    """The samples tagged with their group (library.readiness.split_groups(): related images, near-identical
    copies), which the engine keeps whole in its split and in every cross-validation fold."""
    leader = {str(member): str(group[0]) for group in groups if len(group) > 1 for member in group}
    return [replace(s, group=leader[s.key]) if s.key in leader else s for s in samples]
