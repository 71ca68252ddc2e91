"""TensorFlow Datasets sources, with a clear error when one is not prepared."""

import collections

import tensorflow_datasets as tfds

TfdsSource = collections.namedtuple("TfdsSource", ["tfds_name", "splits"])
TfdsSource.__doc__ = """A TFDS dataset and the TFDS split behind each package split."""

# CelebA-HQ ships one split; its last 3,000 images are the test set, as in Glow.
# 3D Shapes has no held-out split: like the paper, "test" is the training data.
TFDS_SOURCES = {
    "cifar10": TfdsSource("cifar10", {"train": "train", "test": "test"}),
    "imagenet32": TfdsSource("imagenet_resized/32x32", {"train": "train", "test": "validation"}),
    "celebahq256": TfdsSource(
        "celeb_a_hq/256", {"train": "train[:27000]", "test": "train[27000:]"}
    ),
    "shapes3d": TfdsSource("shapes3d", {"train": "train", "test": "train"}),
}


class DatasetNotAvailableError(FileNotFoundError):
    """A TFDS dataset is not prepared locally, and was not or could not be downloaded."""


def _not_available_message(name, builder, data_dir, download_error):
    tfds_name = TFDS_SOURCES[name].tfds_name
    where = f"data_dir={data_dir!r}" if data_dir else "the default TFDS data directory"
    summary = f"Dataset {name!r} (TFDS {tfds_name!r}) is not prepared in {where} "
    if download_error is None:
        summary += f"(looked for {builder.data_dir}), and it is not downloaded (download=False)."
    else:
        summary += (
            f"and downloading and preparing it in {builder.data_dir} failed: "
            f"{type(download_error).__name__}: {download_error}"
        )
    lines = [summary]
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        manual = (
            "It needs a manual download: put the files TFDS asks for into "
            "<manual_dir>, run `tfds build "
            f"{tfds_name} --manual_dir=<manual_dir> --data_dir=<dir>`, then pass "
            "data_dir=<dir> (or set TFDS_DATA_DIR)."
        )
        if download_error is None:  # else TFDS' error above quotes its instructions
            manual += " TFDS says:\n" + builder.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()
        lines.append(manual)
    else:
        if download_error is None:
            start = "download=True downloads and prepares it, as tfds.load does; or prepare it"
        else:
            start = "Try again, or prepare it"
        lines.append(
            f"{start} with `tfds build {tfds_name} --data_dir=<dir>` (on a machine with "
            "internet access; copy <dir> here if that is another one) and pass "
            "data_dir=<dir> (or set TFDS_DATA_DIR)."
        )
    lines.append(
        "The built-in offline dataset needs nothing: name='synthetic_shapes'; "
        "a directory of your own PNG or JPEG images works too: name='<directory>'."
    )
    return "\n".join(lines)


def tfds_examples(name, split, data_dir=None, shuffle_files=False, seed=0, download=False):
    """The TFDS examples (dicts of features) of one of `TFDS_SOURCES`.

    Args:
        name: a key of `TFDS_SOURCES`.
        split: "train" or "test".
        data_dir: TFDS data directory (default: TFDS's own default).
        shuffle_files: whether to read the files in a shuffled order.
        seed: the file shuffling seed.
        download: whether to download and prepare the dataset in `data_dir`
            first if it is not prepared there, as `tfds.load` does
            (`builder.download_and_prepare()`; datasets with a manual
            download, like CelebA-HQ, are prepared only from files already
            in TFDS' manual directory). Off here, so that a bare call never
            starts a download; `load_images` turns it on by default.

    Returns:
        A `tf.data.Dataset` of feature dicts.

    Raises:
        DatasetNotAvailableError: the dataset is not prepared in `data_dir`
            and `download` is False, or downloading or preparing it failed.
    """
    source = TFDS_SOURCES[name]
    builder = tfds.builder(source.tfds_name, data_dir=data_dir)
    if download:
        try:
            builder.download_and_prepare()  # returns at once when already prepared
        except Exception as error:  # network, disk, checksum, manual-file errors alike
            message = _not_available_message(name, builder, data_dir, error)
            raise DatasetNotAvailableError(message) from error
    try:
        return builder.as_dataset(
            split=source.splits[split],
            shuffle_files=shuffle_files,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
    except AssertionError as error:
        # TFDS asserts that the prepared files exist before reading them.
        if "could not find data" not in str(error):
            raise
        message = _not_available_message(name, builder, data_dir, download_error=None)
        raise DatasetNotAvailableError(message) from None
