"""Re-export the bundled demo model with the fused inference graph, from weights read out of it.

    git worktree add /tmp/rtmo-02a2bad 02a2bad
    python scripts/fuse_bundled_model.py --old-checkout /tmp/rtmo-02a2bad [--skip-ap]

Why
---
``rtmo_ros/models/rtmo_tiny_synthetic.onnx`` was exported before ``RTMO.deploy()`` fused the
stem and the FPN inputs and before ``DCC.predict`` factored the bin logits; on RTMO-tiny at 320
the fused graph runs in ~0.64x the time (the DCC costs the same at every model size, so it is a
large part of a tiny model's run). Its checkpoint is lost, so the weights are read out of the
graph, as ``scripts/rebatch_bundled_model.py`` did.

How
---
1. Recover: in a checkout of the last commit with the previous exporter (02a2bad), run that
   commit's ``rebatch_bundled_model`` probe on the bundled graph: a deployed model holding its
   weights, whose re-export must reproduce every initializer and Constant of the graph; its
   state dict is saved to a temporary file.
2. Fuse: a model of the json's config, fused the previous way (every ``fuse()`` but those of
   ``Focus`` and ``HybridEncoder``, which this change added), takes that state dict
   (strict), then ``deploy()`` adds the new fusions; ``export_onnx(dynamic_batch=True)``.
3. Verify, and print the figures: on rendered frames the new graph finds the same people as
   the bundled one, with dets and keypoints within ``TOLERANCE`` network-input pixels; at batch 4
   each image equals its batch-1 result; unless --skip-ap, the held-out COCO AP of both graphs
   through ``PoseEstimator`` must agree to 1e-3.
4. Write the graph and update the json's bytes, sha256 and export note.
"""
import argparse
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
from rebatch_bundled_model import BUNDLED, frames, held_out_ap, max_diff, model_config, session

TOLERANCE = 0.01  # network-input pixels (and score units): 5x below the mmpose parity tolerance
RECOVER = '''
import pathlib, sys, torch
sys.path.insert(0, 'scripts')
import rebatch_bundled_model as rb
data = pathlib.Path(sys.argv[1]).read_bytes()
info = __import__('json').loads(pathlib.Path(sys.argv[1]).with_suffix('.json').read_text())
cfg = rb.model_config(info)
proto, inits, consts = rb.read_graph(data)
maps, _ = rb.probe_maps(cfg, rb.batch_dim(proto) is None, proto, inits, consts)
model, _ = rb.recover(cfg, maps, inits)
init, const, _, _ = rb.check_reexport(rb.export(model, rb.batch_dim(proto) is None),
                                      proto, inits, consts)
assert init <= 1e-6 and const == 0, (init, const)
torch.save(model.state_dict(), sys.argv[2])
print(f'recovered: re-export max |diff| initializers {init:.3g}, Constants {const:.3g}')
'''


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--old-checkout', required=True,
                        help='a checkout of commit 02a2bad (the previous exporter)')
    parser.add_argument('--frames', type=int, default=32, help='frames compared at batch 1')
    parser.add_argument('--skip-ap', action='store_true',
                        help='do not re-measure the held-out AP of both graphs (~1 min)')
    return parser.parse_args(argv)


def recover_state_dict(old_checkout, path):
    """Step 1 in the old checkout's interpreter path; returns the saved state dict."""
    import torch

    subprocess.run([sys.executable, '-c', RECOVER, str(BUNDLED), str(path)],
                   cwd=old_checkout, check=True,
                   env={**os.environ, 'PYTHONPATH': str(old_checkout)})
    return torch.load(path, map_location='cpu', weights_only=True)


def fused_model(cfg, state):
    """Step 2: the previous fusions, the recovered weights, then the new fusions."""
    import torch

    from rtmo_train.model.backbone import Focus
    from rtmo_train.model.neck import HybridEncoder
    from rtmo_train.model.rtmo import build_model

    model = build_model(cfg).eval()
    with torch.no_grad():
        for module in list(model.modules()):
            if module is not model and hasattr(module, 'fuse') and not isinstance(
                    module, (Focus, HybridEncoder)):
                module.fuse()
    model.load_state_dict(state)
    return model.deploy()


def compare(old_data, new_data, inputs):
    """Step 3 without AP: people counts and max |diff| at batch 1 and batch 4."""
    old, new = session(old_data), session(new_data)
    before = [old.run(None, {'input': x[None]}) for x in inputs]
    after = [new.run(None, {'input': x[None]}) for x in inputs]
    people = [int((d[..., 4] > 0).sum()) for d, _ in before]
    picks = np.linspace(0, len(inputs) - 1, 4).round().astype(int).tolist()
    dets, kpts = new.run(None, {'input': np.stack([inputs[i] for i in picks])})
    return dict(
        frames=len(inputs), persons=sum(people),
        count_mismatch=sum(p != int((d[..., 4] > 0).sum()) for p, (d, _) in zip(people, after)),
        dets=max_diff((a[0], b[0]) for a, b in zip(before, after)),
        keypoints=max_diff((a[1], b[1]) for a, b in zip(before, after)),
        batch4=max(max_diff((d, after[i][0][0]) for d, i in zip(dets, picks)),
                   max_diff((k, after[i][1][0]) for k, i in zip(kpts, picks))))


def main(argv=None):
    from rtmo_train.export import export_onnx

    args = parse_args(argv)
    old_data = BUNDLED.read_bytes()
    json_path = BUNDLED.with_suffix('.json')
    info = json.loads(json_path.read_text())
    cfg = model_config(info)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        model = fused_model(cfg, recover_state_dict(args.old_checkout, tmp / 'recovered.pt'))
        export_onnx(model, tmp / 'new.onnx', dynamic_batch=True)
        new_data = (tmp / 'new.onnx').read_bytes()
        figures = compare(old_data, new_data, frames(args.frames, cfg.input_size))
        print(f'[fuse] {figures["frames"]} frames: {figures["persons"]} people, '
              f'{figures["count_mismatch"]} frames with another count, max |diff| dets '
              f'{figures["dets"]:.3g}, keypoints {figures["keypoints"]:.3g}; batch 4 vs batch 1 '
              f'{figures["batch4"]:.3g}')
        if figures['count_mismatch'] or max(
                figures[k] for k in ('dets', 'keypoints', 'batch4')) > TOLERANCE:
            raise SystemExit(f'outputs differ by more than {TOLERANCE}: nothing written')
        if not args.skip_ap:
            ap_old, ap_new = held_out_ap(BUNDLED, tmp), held_out_ap(tmp / 'new.onnx', tmp)
            figures.update(ap_old=ap_old['AP'], ap_new=ap_new['AP'])
            print(f'[fuse] held-out AP: bundled {ap_old["AP"]:.6f}, fused {ap_new["AP"]:.6f}')
            if abs(ap_old['AP'] - ap_new['AP']) > 1e-3:
                raise SystemExit('held-out AP changed: nothing written')
    BUNDLED.write_bytes(new_data)
    info['onnx'].update(bytes=len(new_data), sha256=hashlib.sha256(new_data).hexdigest(),
                        fused_note=fused_note(old_data, figures))
    json_path.write_text(json.dumps(info, indent=1, default=float) + '\n')
    print(f'[fuse] wrote {BUNDLED} ({len(new_data)} bytes) and {json_path.name}')
    return 0


def fused_note(old_data, figures):
    """The json's account of this re-export."""
    ap = (f'; held-out AP re-measured {figures["ap_new"]:.4f} (previous graph '
          f'{figures["ap_old"]:.4f})' if 'ap_new' in figures else '')
    return (f'then re-exported with the fused inference graph (stem, FPN inputs, factored DCC) '
            f'by scripts/fuse_bundled_model.py from the weights of the graph with sha256 '
            f'{hashlib.sha256(old_data).hexdigest()}: on {figures["frames"]} rendered frames the '
            f'same {figures["persons"]} people, max |diff| dets {figures["dets"]:.1e}, keypoints '
            f'{figures["keypoints"]:.1e} px; batch 4 equals batch 1 to {figures["batch4"]:.1e}'
            f'{ap}.')


if __name__ == '__main__':
    sys.exit(main())
