"""Reference outputs made by mmpose 1.3.2 itself (OpenCV 5) for the parity tests.

A manual tool, not part of ``make test``; only its small npz outputs are committed, under
``test/references/``. Three steps, in two environments:

1. ``letterbox`` (scratch venv with OpenCV 5.0): ``cv2.warpAffine`` of mmpose's
   ``BottomupResize('fit')`` matrix on deterministic synthetic images at several input sizes
   -> ``letterbox_opencv5.npz`` (the sha256 of each warped image, the matrices, one crop).
   ``test/test_letterbox_exact.py`` holds ``letterbox_image`` to it bit for bit.
2. ``weights`` (project venv): a seeded ``rtmo_train`` initialisation of each variant, made
   non-trivial as in notes/rtmo-spec.md section 6 (BN affine, GAU and positional encoding
   away from their init, DCC bin logits a tenth of torch's default spread, BN statistics
   from two batches of synthetic images, box outputs scaled to a spread of 0.15, out_cls
   biases shifted so that about 2 % of the priors score above 0.1), saved as mmpose
   checkpoints in WORKDIR. The statistics are computed in float64 so that the float32
   weights are the same on any CPU; ``test/test_mmpose_inference_parity.py`` rebuilds them
   with ``seeded_state_dict``.
3. ``reference`` (scratch venv with mmpose): mmpose's own test pipeline (``LoadImage``,
   ``BottomupResize`` at each input size, ``PackPoseInputs``) and ``model.test_step`` on each
   case -> ``mmpose_inference.npz`` (detections in image pixels, the sha256 of the tensor
   mmpose fed its backbone, versions, seeds and the sha256 of each state dict).

Scratch venv: the recipe in ``scripts/check_loss_against_mmpose.py``, plus
``opencv-python-headless==5.0.0.93`` (what mmpose 1.3.2 gets from PyPI today: OpenCV 5.0).

Usage::

    /tmp/mmref/bin/python scripts/make_mmpose_references.py letterbox
    .venv/bin/python scripts/make_mmpose_references.py weights /tmp/rtmo_refs
    /tmp/mmref/bin/python scripts/make_mmpose_references.py reference /tmp/rtmo_refs
"""
import argparse
import hashlib
from pathlib import Path
import sys

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REFS = REPO / 'test' / 'references'
LETTERBOX_NPZ = REFS / 'letterbox_opencv5.npz'
INFERENCE_NPZ = REFS / 'mmpose_inference.npz'
PAD = 114

# (width, height) of the synthetic test images: landscape, VGA, portrait, odd, NTSC, degenerate
LETTERBOX_IMAGES = ((1920, 1080), (640, 480), (480, 640), (333, 777), (720, 480), (1, 1),
                    (3, 1000), (1000, 3), (97, 13))
LETTERBOX_INPUTS = ((320, 320), (416, 416), (640, 640), (800, 800), (640, 384))
INFERENCE_IMAGES = ((1920, 1080), (640, 480), (480, 640), (333, 777))

SEED = 14  # weight seed (issue 14)
# name -> (variant, keypoints, mmpose config, native input size)
MODELS = {
    't_body7': ('t', 17, 'body_2d_keypoint/rtmo/body7/rtmo-t_8xb32-600e_body7-416x416.py', 416),
    's_coco': ('s', 17, 'body_2d_keypoint/rtmo/coco/rtmo-s_8xb32-600e_coco-640x640.py', 640),
    'm_coco': ('m', 17, 'body_2d_keypoint/rtmo/coco/rtmo-m_16xb16-600e_coco-640x640.py', 640),
    'l_crowdpose': ('l', 14,
                    'body_2d_keypoint/rtmo/crowdpose/rtmo-l_16xb16-700e_crowdpose-640x640.py',
                    640),
}
# (model, input size, images): every variant at its native size, t and s at other sizes
INFERENCE_CASES = (
    ('t_body7', 416, INFERENCE_IMAGES),
    ('t_body7', 320, INFERENCE_IMAGES),
    ('t_body7', 640, INFERENCE_IMAGES),
    ('s_coco', 640, INFERENCE_IMAGES),
    ('s_coco', 416, INFERENCE_IMAGES),
    ('s_coco', 800, INFERENCE_IMAGES[:2]),
    ('m_coco', 640, INFERENCE_IMAGES[:2]),
    ('l_crowdpose', 640, INFERENCE_IMAGES[:1]),  # rtmo-l: ~8 s per image on 2 CPU cores
)


def synthetic_image(width, height, seed=0):
    """A deterministic (height, width, 3) uint8 BGR test image (numpy only).

    Noise (every sub-pixel weight matters), smooth gradients and flat 8x8 blocks (exact
    half-grey-level ties under bilinear weights of 1/2, 1/4 ...), in vertical bands.
    """
    rng = np.random.default_rng([seed, width, height])
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    y, x = np.mgrid[0:height, 0:width]
    ramp = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     (x + y) % 256], axis=-1).astype(np.uint8)
    blocks = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    blocks = blocks.repeat(8, 0).repeat(8, 1)[:height, :width]
    band = (x * 3 // max(width, 1))[..., None]  # 0, 1, 2 from left to right
    return np.where(band == 0, noise, np.where(band == 1, ramp, blocks)).astype(np.uint8)


def sha256(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def case_key(width, height, in_w, in_h):
    return f'{width}x{height}_to_{in_w}x{in_h}'


# ---- step 1: the letterbox under OpenCV 5 ---------------------------------------------------

def letterbox(args):
    """OpenCV 5's warp of mmpose's matrix (checked against mmpose's own) for each case."""
    import cv2
    sys.path.insert(0, str(REPO))
    from rtmo_ros.engine.preprocess import mmpose_warp_matrix
    if not cv2.__version__.startswith('5.'):
        sys.exit(f'run this step with OpenCV 5 (found {cv2.__version__})')
    out = dict(opencv_version=np.array(cv2.__version__), numpy_version=np.array(np.__version__))
    for w, h in LETTERBOX_IMAGES:
        img = synthetic_image(w, h)
        for in_w, in_h in LETTERBOX_INPUTS:
            key = case_key(w, h, in_w, in_h)
            matrix = mmpose_warp_matrix((h, w), (in_w, in_h))
            np.testing.assert_array_equal(matrix, mmpose_own_matrix(w, h, in_w, in_h))
            warped = cv2.warpAffine(img, matrix, (in_w, in_h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD,) * 3)
            out[f'sha256/{key}'] = np.array(sha256(warped))
            out[f'matrix/{key}'] = matrix
    import mmpose
    out['matrices_checked_against'] = np.array(f'mmpose {mmpose.__version__} get_warp_matrix')
    # one stored crop, to show where a failure is: the top-left content corner of the t case
    warped = cv2.warpAffine(synthetic_image(720, 480), mmpose_warp_matrix((480, 720), (416, 416)),
                            (416, 416), flags=cv2.INTER_LINEAR, borderValue=(PAD,) * 3)
    out['crop/720x480_to_416x416'] = warped[60:124, :64]
    REFS.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(LETTERBOX_NPZ, **out)
    print(f'wrote {LETTERBOX_NPZ} ({LETTERBOX_NPZ.stat().st_size} bytes)')


def mmpose_own_matrix(width, height, in_w, in_h):
    """The matrix mmpose's BottomupResize('fit') computes, by mmpose's own functions."""
    sys.path.insert(0, str(REPO / 'scripts'))
    from check_loss_against_mmpose import import_mmpose_models
    import_mmpose_models()
    from mmpose.datasets.transforms import BottomupResize
    from mmpose.structures.bbox import get_warp_matrix
    resize = BottomupResize(input_size=(in_w, in_h), size_factor=32, pad_val=(PAD,) * 3)
    actual, padded = resize._get_input_size((width, height), (in_w, in_h))
    center = np.array([width / 2, height / 2], dtype=np.float32)
    scale = np.array([width * padded[0] / actual[0], height * padded[1] / actual[1]],
                     dtype=np.float32)
    return get_warp_matrix(center=center, scale=scale, rot=0, output_size=padded)


# ---- step 2: seeded weights (project venv) --------------------------------------------------

def seeded_state_dict(variant, num_keypoints, seed=SEED):
    """The float32 state dict of a seeded, perturbed rtmo_train RTMO (mmpose key layout).

    Statistics come from float64 forward passes on synthetic images and the two calibration
    factors are rounded, so that float noise (threads, CPU) cannot change a float32 weight.
    """
    import torch

    from rtmo_train import build_model, preset
    torch.manual_seed(seed)
    model = build_model(preset(variant, num_keypoints=num_keypoints)).double()
    _perturb(model, seed)
    batches = [torch.from_numpy(np.stack([synthetic_image(256, 256, seed + 2 * i + j)
                                          for j in range(2)])).permute(0, 3, 1, 2).double()
               for i in range(2)]
    _recalibrate_bn(model, batches)
    model.eval()
    head = model.head.head_module
    with torch.no_grad():
        # box outputs (dx, dy, log w, log h in strides) of spread ~0.15: boxes of a few
        # strides, not exp(large) boxes clamped to an image corner with keypoints far outside
        raw = torch.cat([b.flatten(2) for b in model(batches[0]).bbox], 2)
        factor = round(0.15 / float(raw.std()), 3)
        for conv in head.out_bbox:
            conv.weight.mul_(factor)
            conv.bias.mul_(factor)
        logits = torch.cat([c.flatten() for c in model(batches[0]).cls])
        # about 2 % of the priors above p = 0.1 (score_thr); rounded like the factor above
        shift = round(float(torch.logit(torch.tensor(0.1, dtype=torch.float64))
                            - torch.quantile(logits, 0.98)), 3)
        for conv in head.out_cls:
            conv.bias.add_(shift)
    return {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}


def _perturb(model, seed):
    """check_loss_against_mmpose.perturb (BN affine U(0.5, 1.5) / N(0, 0.1); GAU gamma, beta
    and pos_enc N(0, 0.5): spec 6), then the DCC's bin logits scaled by a tenth."""
    import torch
    sys.path.insert(0, str(REPO / 'scripts'))
    from check_loss_against_mmpose import perturb
    perturb(model, seed)
    dcc = model.head.dcc
    with torch.no_grad():
        # bin logits of torch's default init spread ~60: the softmax over the bins is nearly
        # one-hot and a keypoint jumps between bins on float noise; a tenth keeps it smooth
        for fc in (dcc.x_fc, dcc.y_fc):
            fc.weight.mul_(0.1)
            fc.bias.mul_(0.1)


def _recalibrate_bn(model, batches):
    """BN running statistics = the cumulative average over ``batches`` (train mode)."""
    import torch
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for bn in bns:
        bn.momentum = 0.1


def state_dict_sha256(state_dict):
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def weights(args):
    import torch
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name, (variant, kpts, config, _) in MODELS.items():
        sd = seeded_state_dict(variant, kpts)
        torch.save(dict(state_dict=sd, meta=dict(seed=SEED, config=config,
                                                 sha256=state_dict_sha256(sd))),
                   workdir / f'{name}.pth')
        print(name, state_dict_sha256(sd)[:16])


# ---- step 3: mmpose's inference (scratch venv) ----------------------------------------------

def mmpose_model(name, workdir, input_size):
    """mmpose's model of ``name`` with the seeded weights, its test pipeline at input_size."""
    import torch
    sys.path.insert(0, str(REPO / 'scripts'))
    from check_loss_against_mmpose import import_mmpose_models, load_config
    build = import_mmpose_models()
    from mmcv.transforms import Compose
    import mmpose.datasets.transforms  # noqa: F401  registers LoadImage, BottomupResize, ...
    cfg = load_config(MODELS[name][2])
    cfg.model.test_cfg.input_size = (input_size, input_size)
    model = build(cfg.model)
    ckpt = torch.load(Path(workdir) / f'{name}.pth', map_location='cpu', weights_only=True)
    missing = model.load_state_dict(ckpt['state_dict'], strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys, missing
    model.eval()
    pipeline = []
    for step in cfg.val_pipeline:
        step = dict(step)
        if step['type'] == 'BottomupResize':
            step['input_size'] = (input_size, input_size)
        pipeline.append(step)
    return model, Compose(pipeline), ckpt['meta']['sha256']


def run_mmpose(model, pipeline, image):
    """mmpose's ``inference_bottomup`` without mmpose.apis (it imports torchvision)."""
    from mmengine.dataset import pseudo_collate
    import torch
    seen = {}

    def keep_input(_module, inputs):
        seen['input'] = inputs[0].detach().numpy().copy()  # returns None: input unchanged

    hook = model.backbone.register_forward_pre_hook(keep_input)
    try:
        with torch.no_grad():
            sample = model.test_step(pseudo_collate([pipeline(dict(img=image.copy()))]))[0]
    finally:
        hook.remove()
    pred = sample.pred_instances
    return dict(bboxes=np.asarray(pred.bboxes, np.float32),
                bbox_scores=np.asarray(pred.bbox_scores, np.float32),
                keypoints=np.asarray(pred.keypoints, np.float32),
                keypoint_scores=np.asarray(pred.keypoint_scores, np.float32)), seen['input']


def reference(args):
    import cv2
    import mmcv
    import mmengine
    import mmpose
    import torch
    torch.set_num_threads(args.threads)
    out = dict(mmpose_version=np.array(mmpose.__version__),
               mmcv_version=np.array(mmcv.__version__),
               mmengine_version=np.array(mmengine.__version__),
               opencv_version=np.array(cv2.__version__), torch_version=np.array(torch.__version__),
               numpy_version=np.array(np.__version__), seed=np.array(SEED))
    for name, size, images in INFERENCE_CASES:
        model, pipeline, digest = mmpose_model(name, args.workdir, size)
        out[f'state_dict_sha256/{name}'] = np.array(digest)
        for w, h in images:
            key = f'{name}/{size}/{w}x{h}'
            pred, net_input = run_mmpose(model, pipeline, synthetic_image(w, h))
            for field, value in pred.items():
                out[f'{key}/{field}'] = value
            out[f'{key}/input_sha256'] = np.array(sha256(net_input[0]))
            print(key, len(pred['bbox_scores']), 'detections')
    REFS.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(INFERENCE_NPZ, **out)
    print(f'wrote {INFERENCE_NPZ} ({INFERENCE_NPZ.stat().st_size} bytes)')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='cmd', required=True)
    sub.add_parser('letterbox', help='OpenCV 5 warps (scratch venv)')
    wt = sub.add_parser('weights', help='seeded checkpoints (project venv)')
    wt.add_argument('workdir')
    ref = sub.add_parser('reference', help="mmpose's inference (scratch venv)")
    ref.add_argument('workdir')
    ref.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    {'letterbox': letterbox, 'weights': weights, 'reference': reference}[args.cmd](args)


if __name__ == '__main__':
    main()
