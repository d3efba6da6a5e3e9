"""MONAI Deploy app: segment MRBrainS18-layout NIfTI subjects with the mrbrains18_med3d_segmentation bundle.

The SDK's ``MonaiBundleInferenceOperator`` reads ``inference.json`` and ``metadata.json`` from the TorchScript
model (``python -m monai.bundle ckpt_export`` embeds them) and runs the bundle's preprocessing, inferer and
postprocessing as written, without ``LoadImage``/``SaveImage``; the two small operators here read the subjects and
write the label maps around it.

Run: ``python deploy/mrbrains18_seg_app -i <MRBrainS18 folder> -o <output folder> -m <model.ts>``
(or ``monai-deploy exec deploy/mrbrains18_seg_app ...``, or the ``HOLOSCAN_INPUT_PATH`` / ``HOLOSCAN_OUTPUT_PATH``
/ ``HOLOSCAN_MODEL_PATH`` environment variables).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application, ConditionType, Fragment, Image, IOType, Operator, OperatorSpec
from monai.deploy.operators.monai_bundle_inference_operator import (
    BundleConfigNames,
    IOMapping,
    MonaiBundleInferenceOperator,
)
from nifti_io import find_subjects, load_subject, write_segmentation


class SubjectLoaderOperator(Operator):
    """Emit one subject per call as an SDK ``Image`` (channel-first array and MONAI metadata) on ``image``.

    Args:
        fragment: the application.
        subjects: items from :func:`nifti_io.find_subjects`, emitted in order.
    """

    def __init__(self, fragment: Fragment, *args: Any, subjects: list[dict[str, Any]], **kwargs: Any):
        self.subjects = list(subjects)
        self.emitted = 0
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("image")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        array, metadata = load_subject(self.subjects[self.emitted])
        self.emitted += 1
        op_output.emit(Image(array, metadata=metadata), "image")


class SegmentationWriterOperator(Operator):
    """Write each label map received on ``seg_image`` as ``<output_dir>/<subject>_seg.nii.gz``.

    Args:
        fragment: the application.
        output_dir: folder for the NIfTI files.
    """

    def __init__(self, fragment: Fragment, *args: Any, output_dir: Path, **kwargs: Any):
        self.output_dir = Path(output_dir)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("seg_image").condition(ConditionType.MESSAGE_AVAILABLE)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        image = op_input.receive("seg_image")
        path = write_segmentation(image.asnumpy(), image.metadata(), self.output_dir)
        logging.info("wrote %s", path)


class MRBrainS18SegmentationApp(Application):
    """Loader -> the bundle's inference operator -> NIfTI writer, once per subject in the input folder."""

    def compose(self) -> None:
        app_context = Application.init_app_context(self.argv)
        subjects = find_subjects(app_context.input_path)
        loader = SubjectLoaderOperator(self, CountCondition(self, len(subjects)), subjects=subjects, name="loader")
        segmenter = MonaiBundleInferenceOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
            app_context=app_context,
            bundle_config_names=BundleConfigNames(config_names=["inference"]),
            bundle_path=Path(app_context.model_path),
            name="segmenter",
        )
        writer = SegmentationWriterOperator(self, output_dir=Path(app_context.output_path), name="writer")
        self.add_flow(loader, segmenter, {("image", "image")})
        self.add_flow(segmenter, writer, {("pred", "seg_image")})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    MRBrainS18SegmentationApp().run()
