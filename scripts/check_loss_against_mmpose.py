"""Cross-check ``rtmo_train``'s training losses against mmpose 1.3.2 on any RTMO config.

A manual tool, not part of ``make test``. Two steps, in two environments:

1. ``reference`` (scratch venv with mmpose): build the config's model with seeded random
   weights (perturbed as in notes/rtmo-spec.md section 6, except the BN running statistics:
   the train-mode loss uses batch statistics), make a random 2-image batch,
   run mmpose's ``RTMOHead.loss`` in train mode, and write ``PREFIX.pth`` (an mmpose-format
   checkpoint) and ``PREFIX_loss.npz`` (the batch, the targets, mmpose's loss entries).
2. ``compare`` (the project's venv): ``load_model(PREFIX.pth).loss(...)`` on the same batch,
   printed beside the mean of each mmpose entry (what mmengine logs and backpropagates).

Scratch venv (never install mmpose into the project's .venv)::

    python3 -m venv /tmp/mmref
    /tmp/mmref/bin/pip install TORCH_WHEEL_OR_SPEC numpy mmengine mmcv-lite==2.2.0 scipy \
        json_tricks munkres six 'setuptools<81'   # torch: the pin in requirements/python.txt
    /tmp/mmref/bin/pip install --no-deps mmpose==1.3.2 mmdet==3.3.0
    # mmdet 3.3.0 refuses mmcv 2.2.0; RTMO only needs its pure-Python utilities:
    sed -i "s/^mmcv_maximum_version = '2.2.0'/mmcv_maximum_version = '2.2.1'/" \
        /tmp/mmref/lib/python3.11/site-packages/mmdet/__init__.py

Usage (one CPU thread is plenty: rtmo-l takes about 15 s per step; keep the outputs out of
the repository, the checkpoints are large)::

    /tmp/mmref/bin/python scripts/check_loss_against_mmpose.py reference \
        body_2d_keypoint/rtmo/coco/rtmo-m_16xb16-600e_coco-640x640.py /tmp/mmref/ckpt/m_coco
    .venv/bin/python scripts/check_loss_against_mmpose.py compare /tmp/mmref/ckpt/m_coco

CONFIG is a path, or relative to mmpose's packaged ``.mim/configs``. ``compare`` exits 1 when
a loss differs by more than 1e-3 relative. loss_mle mixes -log terms of both signs and can sit
near 0 (weight 1e-2/1e-3 for m/l and CrowdPose), so its float32 difference is the largest
(up to ~3e-4 seen); in float64 all five agree to ~1e-13 except loss_cls (~5e-8: rtmo_train
assigns targets in float32 on purpose).
"""
import argparse
from pathlib import Path
import sys
import types

import numpy as np
import torch

LOSS_KEYS = ('loss_cls', 'loss_bbox', 'loss_oks', 'loss_vis', 'loss_mle')
GT_KEYS = ('boxes', 'keypoints', 'keypoints_visible', 'areas')
REL_TOL = 1e-3  # the tolerance test/test_loss_parity.py holds on the shared rtmo-s fixture


def make_batch(size, num_keypoints, seed, num_images=2):
    """Blocky noise images (BGR 0..255, network space) and 1-5 random people per image.

    Keypoints lie inside their box; invisible ones sit at (0, 0) as in COCO annotations.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (num_images, 3, size // 16, size // 16))
    images = coarse.repeat(16, axis=2).repeat(16, axis=3).astype(np.float32)
    targets = []
    for _ in range(num_images):
        n = int(rng.integers(1, 6))
        wh = rng.uniform([0.1, 0.2], [0.45, 0.7], (n, 2)) * size
        x0y0 = rng.uniform(0, 1, (n, 2)) * (size - wh)
        boxes = np.concatenate([x0y0, x0y0 + wh], 1)
        kpts = x0y0[:, None] + rng.uniform(0.05, 0.95, (n, num_keypoints, 2)) * wh[:, None]
        vis = (rng.uniform(size=(n, num_keypoints)) < 0.75).astype(np.float32)
        vis[:, 0] = 1  # every person keeps a visible keypoint (FilterAnnotations by_kpt)
        kpts = kpts * vis[..., None]
        areas = wh.prod(1) * rng.uniform(0.4, 0.8, n)  # segmentation area < box area
        targets.append(dict(boxes=boxes.astype(np.float32), keypoints=kpts.astype(np.float32),
                            keypoints_visible=vis, areas=areas.astype(np.float32)))
    return images, targets


def import_mmpose_models():
    """Import mmpose's model registry without the parts RTMO does not use.

    mmpose.apis pulls in torchvision, and edpose_head imports compiled mmcv ops;
    xtcocotools is imported by the dataset modules only. Stub those three.
    """
    ops = types.ModuleType('mmcv.ops')
    ops.MultiScaleDeformableAttention = object
    sys.modules['mmcv.ops'] = ops
    for name, attr in (('coco', 'COCO'), ('cocoeval', 'COCOeval'), ('mask', None)):
        mod = types.ModuleType(f'xtcocotools.{name}')
        if attr:
            setattr(mod, attr, type(attr, (), {}))
        sys.modules[f'xtcocotools.{name}'] = mod
    sys.modules['xtcocotools'] = types.ModuleType('xtcocotools')
    from mmengine.registry import init_default_scope
    from mmpose.models import build_pose_estimator  # importing registers RTMO's modules
    init_default_scope('mmpose')
    return build_pose_estimator


def load_config(config):
    from mmengine.config import Config
    path = Path(config)
    if not path.exists():
        import mmpose
        path = Path(mmpose.__file__).parent / '.mim' / 'configs' / config
    cfg = Config.fromfile(str(path))
    cfg.model.backbone.init_cfg = None  # no download of the pretrained YOLOX backbone
    return cfg


def perturb(model, seed):
    """Non-trivial weights: BN affine, GAU scale/offset and pos_enc away from their init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        dcc = model.head.dcc
        for p in (dcc.gau.gamma, dcc.gau.beta, dcc.pos_enc):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def scale_head(head, scale):
    """Boxes ``scale`` times larger and keypoints spread ``scale``/2 times wider than random
    init gives (a prior-sized box, keypoints at the prior): IoU, OKS, dynamic k and the DCC
    then work away from their degenerate corners. ``scale`` 1 leaves the head as it is."""
    with torch.no_grad():
        for conv in head.head_module.out_bbox:
            conv.bias[2:].add_(float(np.log(scale)))  # decoded wh = exp(raw) * stride
        for conv in head.head_module.out_kpt_reg:
            conv.weight.mul_(max(scale / 2, 1.0))  # decoded kpt = raw * stride + prior


def calibrate_cls(head, feats, frac=0.03):
    """Shift the out_cls biases so that about ``frac`` of the priors score above p=0.1:
    SimOTA's cost and the VariFocal term then see a realistic mix of scores."""
    with torch.no_grad():
        logits = torch.cat([c.flatten() for c in head.forward(feats)[0]])
        shift = float(torch.logit(torch.tensor(0.1)) - torch.quantile(logits, 1 - frac))
        for conv in head.head_module.out_cls:
            conv.bias.add_(shift)


def data_samples(targets, size):
    from mmengine.structures import InstanceData
    from mmpose.structures import PoseDataSample
    samples = []
    for t in targets:
        gt = InstanceData(bboxes=torch.from_numpy(t['boxes']),
                          labels=torch.zeros(len(t['boxes']), dtype=torch.long),
                          keypoints=torch.from_numpy(t['keypoints']),
                          keypoints_visible=torch.from_numpy(t['keypoints_visible']),
                          areas=torch.from_numpy(t['areas']))
        s = PoseDataSample(metainfo=dict(input_size=(size, size)))
        s.gt_instance_labels = gt  # what RTMOHead.loss reads (YOLOXPoseAnnotationProcessor)
        samples.append(s)
    return samples


def reference(args):
    """Step 1, in the scratch venv: checkpoint + batch + mmpose's losses."""
    build = import_mmpose_models()
    cfg = load_config(args.config)
    torch.manual_seed(args.seed)
    model = build(cfg.model)  # torch default init, as mmpose.apis.init_model(checkpoint=None)
    perturb(model, args.seed)
    scale_head(model.head, args.head_scale)
    size = cfg.model.test_cfg.input_size[0]
    num_kpts = cfg.model.head.num_keypoints
    images, targets = make_batch(size, num_kpts, args.seed)
    model.train()  # mmengine trains in train mode: BN uses batch statistics
    with torch.no_grad():
        feats = model.neck(model.backbone(torch.from_numpy(images)))
        calibrate_cls(model.head, feats)
        losses = model.head.loss(feats, data_samples(targets, size))
    prefix = Path(args.prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(config=str(args.config))),
               f'{prefix}.pth')
    arrays = {f'loss__{k}': np.atleast_1d(v.detach().numpy()) for k, v in losses.items()}
    arrays.update({f'img{b}_{k}': t[k] for b, t in enumerate(targets) for k in GT_KEYS})
    np.savez(f'{prefix}_loss.npz', inputs=images, **arrays)
    print({k: float(v.mean()) for k, v in losses.items()})


def compare(args):
    """Step 2, in the project venv: our loss beside mmpose's mean per entry."""
    from rtmo_train import load_model
    ref = dict(np.load(f'{args.prefix}_loss.npz'))
    model = load_model(f'{args.prefix}.pth')
    inputs = torch.from_numpy(ref['inputs'])
    targets = [{k: ref[f'img{b}_{k}'] for k in GT_KEYS} for b in range(inputs.shape[0])]
    with torch.no_grad():
        ours = model.loss(inputs, targets)
    print(f'{args.prefix}: {sum(len(t["boxes"]) for t in targets)} people, num positives '
          f'ours {float(ours["num_samples"]):g}, mmpose {float(ref["loss__num_samples"].mean()):g}'
          f', mean matched OKS ours {float(ours["overlaps"]):.4f}, '
          f'mmpose {float(ref["loss__overlaps"].mean()):.4f}')
    print(f'{"loss":10} {"ours":>14} {"mmpose":>14} {"rel diff":>10}')
    worst = 0.0
    for key in LOSS_KEYS:
        a, b = float(ours[key]), float(ref[f'loss__{key}'].mean())
        rel = abs(a - b) / max(abs(b), 1e-12)
        worst = max(worst, rel)
        print(f'{key:10} {a:14.7g} {b:14.7g} {rel:10.2e}')
    return 0 if worst <= REL_TOL else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='cmd', required=True)
    ref = sub.add_parser('reference', help='run mmpose (scratch venv)')
    ref.add_argument('config', help='mmpose RTMO config (path or under .mim/configs)')
    ref.add_argument('prefix', help='writes PREFIX.pth and PREFIX_loss.npz')
    ref.add_argument('--seed', type=int, default=1)
    ref.add_argument('--head-scale', type=float, default=6.0,
                     help='box/keypoint spread of the random head (1: spec section 6 recipe)')
    cmp_ = sub.add_parser('compare', help='run rtmo_train (project venv)')
    cmp_.add_argument('prefix', help='PREFIX given to the reference step')
    args = parser.parse_args()
    sys.exit(reference(args) if args.cmd == 'reference' else compare(args))


if __name__ == '__main__':
    main()
