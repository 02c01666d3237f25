"""Write a small checkpoint holding a PET's weights *at* one epoch of training.

metatrain writes ``outputs/<date>/<time>/model_<i>.ckpt`` after the 0-based
epoch ``i`` (with ``checkpoint_interval: 1``). Such a file (about 2.7 MB for the
tiny PET) carries the optimizer and scheduler states too, and both
``mtt export`` and ``metatrain.utils.io.load_model`` read its
``best_model_state_dict`` (the best validation epoch so far), not the weights
at epoch ``i``. This script loads the current weights (``context="restart"``)
and saves ``model.get_checkpoint()`` (weights only, current = best), so that
loading the output, eagerly or for export, gives the model after ``i + 1``
epochs.

Usage::

    python epoch_checkpoint.py run/outputs/*/*/model_3.ckpt epoch_004.ckpt

Prints ``epoch best_epoch`` of the source checkpoint.
"""

import sys

import metatomic.torch  # noqa: F401 (registers the TorchScript classes in the checkpoint)
import torch
from metatrain.utils.io import model_from_checkpoint


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: python epoch_checkpoint.py SOURCE.ckpt DEST.ckpt")
    source, dest = sys.argv[1], sys.argv[2]
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    print(checkpoint["epoch"], checkpoint["best_epoch"])
    model = model_from_checkpoint(checkpoint, context="restart")
    small = model.get_checkpoint()
    small["epoch"] = small["best_epoch"] = checkpoint["epoch"]
    small["best_model_state_dict"] = small["model_state_dict"]
    torch.save(small, dest)


if __name__ == "__main__":
    main()
