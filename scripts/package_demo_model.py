"""Package a trained tiny checkpoint as the bundled demo model, with its measurements.

    python scripts/package_demo_model.py [--checkpoint work_dirs/rtmo-tiny_synthetic/best.pth]

1. exports the checkpoint (its EMA weights) to ``rtmo_ros/models/rtmo_tiny_synthetic.onnx``
   with a dynamic batch axis (input (B, 3, 320, 320)), so one engine call serves several
   cameras (the graph bundled before was batch 1 and was converted by
   ``scripts/rebatch_bundled_model.py``);
2. measures COCO keypoint AP (xtcocotools) on the held-out synthetic set twice: the PyTorch
   checkpoint (``rtmo-train eval``) and the exported ONNX through the engine (ONNX Runtime, CPU),
   which is what the node runs;
3. writes ``rtmo_ros/models/rtmo_tiny_synthetic.json``: the recipe (data, training and export
   commands, seeds), sizes, sha256 and both measurements.
"""
import argparse
import hashlib
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
MODELS = REPO / 'rtmo_ros' / 'models'
DATA_COMMAND = (
    'python -c "from rtmo_train.data.synthetic import make_dataset as m; kw = dict(max_people=3, '
    "height_range=(0.3, 0.9)); m('data/synthetic/train', 3000, 1, 320, 240, **kw); "
    "m('data/synthetic/val', 100, 2, 320, 240, **kw)\"")
# the run that made the bundled model: the preset's 26 epochs, then resumes at constant lr steps
# (after the schedule's flat_epoch the lr is schedule.min_lr, so each resume sets it)
RESUME = ('rtmo-train fit configs/tiny_synthetic.yaml '
          '--resume work_dirs/rtmo-tiny_synthetic/latest.pth')
TRAIN_COMMANDS = (
    'OMP_NUM_THREADS=2 rtmo-train fit configs/tiny_synthetic.yaml',
    f'{RESUME} --set epochs=33 --set val_every_epoch_from=26',
    f'{RESUME} --set epochs=58 --set val_every_epoch_from=33 --set schedule.min_lr=8e-4',
    f'{RESUME} --set epochs=64 --set val_every_epoch_from=33 --set schedule.min_lr=4e-4',
)
# tried after them, no gain (the best checkpoint stayed epoch 63): 3 epochs at min_lr 2e-4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--checkpoint', default='work_dirs/rtmo-tiny_synthetic/best.pth')
    parser.add_argument('--config', default='configs/tiny_synthetic.yaml')
    parser.add_argument('--name', default='rtmo_tiny_synthetic')
    return parser.parse_args(argv)


def onnx_metrics(onnx_path, cfg):
    """AP of the exported graph through ``PoseEstimator`` (ONNX Runtime) on cfg's val set."""
    return engine_metrics(onnx_path, cfg.path(cfg.val_ann), cfg.path(cfg.val_images))


def engine_metrics(onnx_path, ann, images):
    """(COCO keypoint metrics, image count) of ``onnx_path`` through ``PoseEstimator`` (ONNX
    Runtime) on the COCO set ``ann`` / ``images`` (also scripts/rebatch_bundled_model.py's)."""
    from rtmo_ros.engine import PoseEstimator
    from rtmo_train.data.coco import CocoKeypointDataset
    from rtmo_train.evaluation import evaluate_keypoints, pose_results

    dataset = CocoKeypointDataset(str(ann), str(images), include_empty=True)
    results = []
    with PoseEstimator(str(onnx_path), backend='onnxruntime') as est:
        for i in range(len(dataset)):
            sample = dataset.load(i)
            p = est(sample['img'])
            results += pose_results(sample['image_id'], p.boxes, p.scores, p.keypoints,
                                    p.keypoint_scores)
    return evaluate_keypoints(str(ann), results), len(dataset)


def training_summary(checkpoint):
    """Best epoch (0-based), epochs run, and the training time up to the best epoch."""
    import torch

    state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    log = pathlib.Path(checkpoint).parent / 'log.jsonl'
    epochs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    best = state.get('best_epoch')
    seconds = sum(e.get('epoch_time', 0.0) for e in epochs if best is None or e['epoch'] <= best)
    val_ap = {e['epoch'] + 1: round(e['val/AP'], 4) for e in epochs if 'val/AP' in e}
    return dict(best_epoch=best, epochs_run=len(epochs),
                train_seconds_to_best_excluding_validation=round(seconds, 1),
                val_ap_by_epoch_1_based=val_ap)


def main(argv=None):
    args = parse_args(argv)
    from rtmo_train.checkpoint import load_model
    from rtmo_train.export import export_onnx
    from rtmo_train.train import evaluate_checkpoint
    from rtmo_train.train_config import TrainConfig

    cfg = TrainConfig.from_yaml(args.config)
    onnx_path = MODELS / f'{args.name}.onnx'
    model = load_model(args.checkpoint).eval()
    export_onnx(model, onnx_path, dynamic_batch=True)
    print(f'[package] exported {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB)')
    torch_metrics = evaluate_checkpoint(cfg, args.checkpoint, verbose=False)
    ort_metrics, n = onnx_metrics(onnx_path, cfg)
    print(f'[package] AP on {n} held-out images: PyTorch {torch_metrics["AP"]:.4f}, '
          f'ONNX Runtime {ort_metrics["AP"]:.4f}')
    info = dict(
        model=f'RTMO-tiny (rtmo_train): CSPDarknet deepen {model.cfg.deepen} widen '
              f'{model.cfg.widen}, HybridEncoder {model.cfg.neck_channels} wide, RTMO head + '
              f'DCC, {model.cfg.num_keypoints} keypoints, input {model.cfg.input_size}',
        config=model.cfg.to_dict(), parameters=sum(p.numel() for p in model.parameters()),
        onnx=dict(file=onnx_path.name, bytes=onnx_path.stat().st_size,
                  sha256=hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
                  export='scripts/package_demo_model.py (rtmo_train.export.export_onnx: '
                         'opset 17, dynamic batch, NMS inside, 50 rows)'),
        weights='EMA weights of the best validation epoch (best.pth)',
        training=training_summary(args.checkpoint),
        evaluation=dict(tool='xtcocotools COCOeval keypoints, maxDets 20, score = box score',
                        held_out_set='data/synthetic/val (seed 2, 100 images)', images=n,
                        pytorch=torch_metrics, onnxruntime=ort_metrics),
        data_generation=DATA_COMMAND, training_commands=TRAIN_COMMANDS,
        seeds={'train images': 1, 'val images': 2, 'TrainConfig.seed': 0},
        hardware='CPU, 2 threads (2-core machine)')
    json_path = MODELS / f'{args.name}.json'
    json_path.write_text(json.dumps(info, indent=1, default=float) + '\n')
    print(f'[package] wrote {json_path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
