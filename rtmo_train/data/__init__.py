"""Training data for RTMO: COCO-format datasets, augmentation pipelines, batching.

``coco``        CocoKeypointDataset: one record per image (sample contract documented there)
``combined``    CombinedDataset, KeypointMapping: body7-style mixing with keypoint mapping
``transforms``  Mosaic, RandomAffine, MixUp, HSVAugment, RandomFlip, FilterAnnotations, ...
``pipeline``    AugmentConfig, augment_preset, build_pipeline(stage, cfg, dataset)
``batch``       TrainDataset, collate, BatchRandomResize, build_train_loader
``masks``       COCO segmentations (polygons, RLE) -> masks, for the stage-2 ignore mask
``synthetic``   synthetic people (COCO-17) for tests, demos and CPU training
"""
from rtmo_train.data.batch import BatchRandomResize, TrainDataset, build_train_loader, collate
from rtmo_train.data.coco import CocoKeypointDataset
from rtmo_train.data.combined import CombinedDataset, KeypointMapping
from rtmo_train.data.pipeline import AugmentConfig, apply_pipeline, augment_preset, build_pipeline

__all__ = ['AugmentConfig', 'BatchRandomResize', 'CocoKeypointDataset', 'CombinedDataset',
           'KeypointMapping', 'TrainDataset', 'apply_pipeline', 'augment_preset',
           'build_pipeline', 'build_train_loader', 'collate']
