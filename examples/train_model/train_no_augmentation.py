"""Run ``mtt train`` with metatrain's random O(3) (rotational) augmentation disabled.

metatrain 2026.4.1 has no option to switch the augmentation off for PET: the PET
trainer (``metatrain/pet/trainer.py``) always builds an
``metatrain.utils.augmentation.O3Augmenter`` and puts its bound method
``apply_random_augmentations`` into the training collate function (validation is
never augmented). This wrapper replaces ``O3Augmenter.apply_random_augmentations``
at run time (before training starts, nothing in site-packages is modified) by an
identity that returns the systems, targets and extra data unchanged, and then runs
metatrain's normal command line entry point (``metatrain.__main__.main``, the
function behind the ``mtt`` executable).

Usage (same arguments as ``mtt train``)::

    python train_no_augmentation.py options.yaml -o model.pt [-r key=value ...]

Note: with ``num_workers: 0`` the collate function runs in this process, so the
patch is effective; it also applies to forked data-loader workers. The number of
(skipped) augmentation calls is logged to stderr at exit as a check.
"""

import atexit
import sys

from metatrain.utils.augmentation import O3Augmenter

_N_CALLS = [0]


def _no_augmentation(self, systems, targets, extra_data=None):
    _N_CALLS[0] += 1
    return systems, targets, (extra_data if extra_data is not None else {})


O3Augmenter.apply_random_augmentations = _no_augmentation


@atexit.register
def _report():
    print(
        "train_no_augmentation.py: O3Augmenter.apply_random_augmentations was "
        f"replaced by the identity; it was called {_N_CALLS[0]} times in the main "
        "process (training batches, no rotation applied)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    from metatrain.__main__ import main

    sys.argv = ["mtt", "train", *sys.argv[1:]]
    main()
