"""Training data for RTMO: COCO-format datasets, augmentation pipelines, batching.

``coco``        CocoKeypointDataset: one record per image (sample contract documented there)
``combined``    CombinedDataset, KeypointMapping: body7-style mixing with keypoint mapping
``transforms``  Mosaic, RandomAffine, MixUp, HSVAugment, RandomFlip, FilterAnnotations, ...
``pipeline``    AugmentConfig, augment_preset, build_pipeline(stage, cfg, dataset)
``batch``       TrainDataset, collate, BatchRandomResize, build_train_loader
``masks``       COCO segmentations (polygons, RLE) -> masks, for the stage-2 ignore mask
``synthetic``   synthetic people (COCO-17) for tests, demos and CPU training
"""
from rtmo_train.lazy import lazy_getattr

# resolved lazily: only ``batch`` needs torch, and the bag tools use ``synthetic`` without it
_EXPORTS = {
    'BatchRandomResize': 'batch', 'TrainDataset': 'batch', 'build_train_loader': 'batch',
    'collate': 'batch', 'CocoKeypointDataset': 'coco', 'CombinedDataset': 'combined',
    'KeypointMapping': 'combined', 'AugmentConfig': 'pipeline', 'apply_pipeline': 'pipeline',
    'augment_preset': 'pipeline', 'build_pipeline': 'pipeline',
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
