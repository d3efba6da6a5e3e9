"""MONAI Label app serving the mrbrains18_med3d_segmentation bundle through MONAI Label's ``BundleInferTask``.

Shaped after the ``monaibundle`` sample app of MONAI Label 0.8.5 (``MyApp`` with bundles named by ``--conf models``
and looked up in this folder's ``model/``), less what this bundle does not use: no SAM2 inferers (``sam2`` is not
installed), no trainers (``BundleTrainTask`` reads ``configs/train.json`` alone, and our train workflow is the config
list ``common.json`` + ``train.json``; train with ``medunlearn run``), no epistemic scoring. Two shims make MONAI
Label 0.8.5 run beside this project's pins, both explained below: a stand-in for ``torchvision.utils`` while
``monailabel.transform.post`` imports, and ``image_path`` held aside while ``Spacingd`` (MONAI >= 1.6.0) runs.

Start (``--conf zoo_source local`` keeps MONAI Label from asking the model zoo for its bundle list on start-up)::

    monailabel start_server --app deploy/monailabel_app --studies <studies> \
        --conf models mrbrains18_med3d_segmentation --conf zoo_source local

with ``model/mrbrains18_med3d_segmentation/`` (``configs/`` and ``models/model.pt`` or ``models/model.ts``) in the
app folder and one 4-D NIfTI per subject in ``<studies>`` (T1, IR, FLAIR stacked last, see ``make_studies.py``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import types
from collections.abc import Iterator

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import get_bundle_models

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _torchvision_utils_placeholder() -> Iterator[None]:
    """Let ``monailabel.transform.post`` import without torchvision, which this project does not install.

    That module (imported by ``monailabel.tasks.infer.bundle`` for its ``Restored`` transform) runs
    ``from torchvision.utils import make_grid, save_image`` at import time; only its 2-D PNG dump transform
    (``DumpImagePrediction2Dd``) calls them, never ``BundleInferTask`` or ``Restored``. While it imports, a placeholder
    ``torchvision.utils`` whose two functions raise stands in; it is removed again afterwards, so MONAI still finds
    torchvision missing. With a working torchvision installed, nothing is replaced.
    """
    if "monailabel.transform.post" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        yield
        return

    def unavailable(*args, **kwargs):
        raise ImportError("torchvision is not installed beside this MONAI Label app (deploy/monailabel_app/main.py)")

    package, utils = types.ModuleType("torchvision"), types.ModuleType("torchvision.utils")
    utils.make_grid = utils.save_image = unavailable
    package.utils = utils
    sys.modules.update({"torchvision": package, "torchvision.utils": utils})
    try:
        yield
    finally:
        for name in ("torchvision.utils", "torchvision"):
            sys.modules.pop(name, None)


with _torchvision_utils_placeholder():
    from monailabel.tasks.infer.bundle import BundleInferTask


class BundleInferTaskForMonai16(BundleInferTask):
    """MONAI Label's ``BundleInferTask``, holding the request's ``image_path`` aside during the bundle's preprocessing.

    ``BasicInferTask`` puts the image's path, a string, under ``image_path`` beside ``image``. Since MONAI 1.6.0,
    ``Spacingd`` copies a NIfTI image's metadata into every other entry whose name starts with ``image_`` by calling
    ``.update`` on it, so on a string it raises ``AttributeError: 'str' object has no attribute 'update'``; MONAI
    Label 0.8.5 predates that. The path is restored for the writer (which takes the label file's extension from it).
    """

    def run_pre_transforms(self, data, transforms):
        image_path = data.pop("image_path", None)
        data = super().run_pre_transforms(data, transforms)
        if image_path is not None:
            data["image_path"] = image_path
        return data


class MyApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.model_dir = os.path.join(app_dir, "model")
        self.models = get_bundle_models(app_dir, conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"MONAILabel - medunlearn-monai bundles ({monailabel.__version__})",
            description="MRBrainS18 brain-tissue segmentation (Med3D) from the medunlearn-monai bundles",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, path in self.models.items():
            task = BundleInferTaskForMonai16(path, self.conf)
            if not task.is_valid():  # no configs/inference.json, or neither models/model.pt nor models/model.ts
                logger.warning(f"--- Skipping bundle {name} at {path}: BundleInferTask found it invalid")
                continue
            logger.info(f"+++ Adding Inferer:: {name} => {task}")
            infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        return {}

    def init_strategies(self) -> dict[str, Strategy]:
        strategies: dict[str, Strategy] = {"random": Random(), "first": First()}
        logger.info(f"Active Learning Strategies:: {list(strategies.keys())}")
        return strategies
