"""``python deploy/mrbrains18_seg_app ...`` runs the app (the layout ``monai-deploy package`` expects)."""

import logging

from app import MRBrainS18SegmentationApp

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    MRBrainS18SegmentationApp().run()
