"""Give every DataLoader worker its own random stream for the item transform.

torch seeds its own generator, Python's ``random`` and numpy's global generator in each
worker (``base_seed + worker_id``, with a new ``base_seed`` every epoch). MONAI's random
transforms and albumentations' ``Compose`` draw from generators they own, made when they were
built; each worker gets a pickled copy of the same state. Without a reseed, worker 0 and worker 1
flip, rotate and crop their items alike, and with ``persistent_workers=False`` every epoch
repeats the one before: a fraction of the augmentation the training asked for, with no error.
MONAI's own DataLoader reseeds in a ``worker_init_fn`` (``monai.data.utils.set_rnd``);
medload's datasets do it on the first item each worker transforms, from the seed torch gave
that worker, so any DataLoader (and ``ds.loader``) gets distinct, repeatable streams.
"""

from __future__ import annotations

from typing import Any

__all__ = ["seed_transform"]

# MONAI's seeds are numpy RandomState seeds: below 2**32.
_SEED_RANGE = 2**32


def seed_transform(transform: Any, seed: int) -> bool:
    """Reseed the random generators ``transform`` owns from ``seed``; False if it owns none medload knows.

    Knows albumentations transforms and compositions (``set_random_seed``), MONAI
    ``Randomizable`` transforms and ``Compose`` (``set_random_state(seed=...)``), and medload's
    adapters (:class:`~medload.datasets.MonaiTransform` and the others), which hold the
    library's transform as ``transform``. Transforms that draw from torch's, numpy's global or
    Python's generator (TorchIO, torchvision v2, plain functions) need nothing: torch seeds
    those in each worker.

    Examples
    --------
    >>> from monai.transforms import RandFlipd
    >>> flip = RandFlipd(keys=["image"], prob=0.5)
    >>> seed_transform(flip, 7), int(flip.R.randint(1000)) == int(RandFlipd(keys=["image"], prob=0.5).set_random_state(7).R.randint(1000))
    (True, True)
    >>> seed_transform(lambda item: item, 7)
    False
    """
    seed = int(seed) % _SEED_RANGE
    if type(transform).__module__ == "medload.datasets.adapters":
        return seed_transform(transform.transform, seed)
    set_seed = getattr(transform, "set_random_seed", None)
    if callable(set_seed):  # albumentations: Compose, OneOf, every BasicTransform
        set_seed(seed)
        return True
    set_state = getattr(transform, "set_random_state", None)
    if callable(set_state):  # MONAI: Randomizable, Compose (which seeds each of its transforms in turn)
        set_state(seed=seed)
        return True
    return False


class WorkerSeeds:
    """Reseeds a dataset's transform once per DataLoader worker (and worker epoch), before its first item.

    Examples
    --------
    >>> seeds = WorkerSeeds()
    >>> seeds.check(lambda item: item)  # in the main process: the user's own seeding stands
    """

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done: int | None = None

    def check(self, transform: Any) -> None:
        """In a worker whose seed this transform was not yet given: reseed it from torch's seed for the worker."""
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is None or info.seed == self._done:
            return
        seed_transform(transform, info.seed)
        self._done = info.seed

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a copy sent to a worker starts unseeded

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._done = None
