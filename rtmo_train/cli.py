"""``rtmo-train``: train, resume, fine-tune and evaluate RTMO from a YAML ``TrainConfig``.

    rtmo-train fit CONFIG [--resume CKPT] [--set key=value ...]
    rtmo-train eval CONFIG CKPT [--set key=value ...] [--max-images N]
    rtmo-train preset NAME [DATASET] [-o FILE]      # write a preset as YAML to start from

CONFIG is a YAML file of ``rtmo_train.train_config.TrainConfig`` fields, or a preset name
(``tiny``, ``s`` with ``--dataset coco``...). Distributed: ``torchrun --nproc_per_node=N
$(which rtmo-train) fit CONFIG``.
"""
import argparse
import json
import os
import sys

from .train_config import TrainConfig, apply_overrides, train_preset


def load_config(spec, overrides=(), dataset='coco'):
    """A ``TrainConfig`` from a YAML path or preset name, with ``key=value`` overrides."""
    if os.path.isfile(spec) or spec.endswith(('.yaml', '.yml')):
        cfg = TrainConfig.from_yaml(spec)
    else:
        cfg = train_preset(spec, dataset)
    return apply_overrides(cfg, overrides) if overrides else cfg


def parse_args(argv=None):
    """Command-line interface (see the module docstring)."""
    parser = argparse.ArgumentParser(prog='rtmo-train', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    fit = sub.add_parser('fit', help='train (or resume) from a config')
    fit.add_argument('config', help='YAML TrainConfig, or a preset: tiny, t, s, m, l')
    fit.add_argument('--resume', help='training checkpoint (latest.pth) to continue from')
    ev = sub.add_parser('eval', help='COCO keypoint AP of a checkpoint on the val set')
    ev.add_argument('config', help='YAML TrainConfig (its val_ann/val_images are used)')
    ev.add_argument('checkpoint', help='rtmo_train checkpoint or mmpose .pth')
    ev.add_argument('--max-images', type=int, default=0, help='first N val images only')
    ev.add_argument('--json', help='also write the metrics to this JSON file')
    pre = sub.add_parser('preset', help='print or write a preset config as YAML')
    pre.add_argument('config', help='tiny, t, s, m or l')
    pre.add_argument('-o', '--output', help='YAML file to write (default: stdout)')
    for p in (fit, ev, pre):
        p.add_argument('--dataset', default='coco',
                       help='dataset of a preset: coco, body7, crowdpose (default coco)')
        p.add_argument('--set', dest='overrides', action='append', default=[],
                       metavar='KEY=VALUE', help='override a field, e.g. epochs=10, '
                       'schedule.min_lr=1e-4 (repeatable)')
    return parser.parse_args(argv)


def main(argv=None):
    """Entry point of the ``rtmo-train`` console script; returns the exit status."""
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides, args.dataset)
    except (FileNotFoundError, ValueError) as exc:
        print(f'rtmo-train: {exc}', file=sys.stderr)
        return 2
    if args.command == 'preset':
        if args.output:
            cfg.to_yaml(args.output)
        else:
            import yaml
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end='')
        return 0
    if args.command == 'fit':
        from .train import fit
        result = fit(cfg, resume=args.resume)
        print(f'done: best AP {result["best_ap"]:.4f} at epoch {result["best_epoch"]}, '
              f'checkpoints in {result["output_dir"]}')
        return 0
    from .train import evaluate_checkpoint
    metrics = evaluate_checkpoint(cfg, args.checkpoint, args.max_images)
    print(json.dumps(metrics, indent=1))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(metrics, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
