"""Training data for RTMO: COCO-format datasets, augmentation pipelines, batching.

``coco``        CocoKeypointDataset: one record per image (sample contract documented there)
``combined``    CombinedDataset, KeypointMapping: body7-style mixing with keypoint mapping
``transforms``  Mosaic, RandomAffine, MixUp, HSVAugment, RandomFlip, FilterAnnotations, ...
``pipeline``    AugmentConfig, augment_preset, build_pipeline(stage, cfg, dataset)
``batch``       TrainDataset, collate, BatchRandomResize, build_train_loader
``masks``       COCO segmentations (polygons, RLE) -> masks, for the stage-2 ignore mask
``synthetic``   synthetic people (COCO-17) for tests, demos and CPU training
"""
import importlib

# resolved lazily: only ``batch`` needs torch, and the bag tools use ``synthetic`` without it
_EXPORTS = {
    'BatchRandomResize': 'batch', 'TrainDataset': 'batch', 'build_train_loader': 'batch',
    'collate': 'batch', 'CocoKeypointDataset': 'coco', 'CombinedDataset': 'combined',
    'KeypointMapping': 'combined', 'AugmentConfig': 'pipeline', 'apply_pipeline': 'pipeline',
    'augment_preset': 'pipeline', 'build_pipeline': 'pipeline',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)
    globals()[name] = value
    return value
