"""Parity of the pure-PyTorch RTMO with mmpose 1.3.2 on the shared rtmo-s fixtures."""
import copy

import numpy as np
import pytest
import torch

from rtmo_train import load_model
from rtmo_train.model.dcc import box_center_scale

# ../shared/parity/README.md tolerances
FEATURE_RTOL = 1e-3   # max abs difference relative to the tensor's scale
PIXEL_TOL = 0.05      # final keypoints and boxes, pixels
SCORE_TOL = 1e-3


@pytest.fixture(scope='module')
def model(parity_dir):
    return load_model(parity_dir / 'rtmo-s_coco_seed1.pth')


@pytest.fixture(scope='module')
def io(parity_dir):
    return dict(np.load(parity_dir / 'rtmo-s_coco_seed1_io.npz'))


@pytest.fixture(scope='module')
def features(model, io):
    """Backbone, neck and head outputs on the fixture's network input."""
    with torch.no_grad():
        backbone = model.backbone(torch.from_numpy(io['input']))
        neck = model.neck(backbone)
        head = model.head(neck)
    return backbone, neck, head


def match_by_box(boxes, ref_boxes):
    """Index into ref for each of ``boxes`` (nearest corners); asserts a one-to-one match."""
    assert boxes.shape == ref_boxes.shape
    dist = np.abs(boxes[:, None, :] - ref_boxes[None, :, :]).max(-1)
    idx = dist.argmin(1)
    assert len(set(idx.tolist())) == len(idx), 'instances do not match one-to-one'
    return idx


def assert_close_features(ours, ref, name):
    ours = ours.numpy()
    assert ours.shape == ref.shape, name
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(ours - ref).max() <= FEATURE_RTOL * scale, name


def assert_same_predictions(ours, io):
    idx = match_by_box(ours['boxes'], io['bboxes'])
    assert np.abs(ours['boxes'] - io['bboxes'][idx]).max() <= PIXEL_TOL
    assert np.abs(ours['keypoints'] - io['keypoints'][idx]).max() <= PIXEL_TOL
    assert np.abs(ours['scores'] - io['bbox_scores'][idx]).max() <= SCORE_TOL
    assert np.abs(ours['keypoint_scores'] - io['keypoint_scores'][idx]).max() <= SCORE_TOL
    assert np.all(np.diff(ours['scores']) <= 0), 'scores must be sorted, descending'


def test_loads_fixture_as_rtmo_s(model):
    assert (model.cfg.variant, model.cfg.num_keypoints, model.cfg.input_size) == \
        ('s', 17, (640, 640))
    assert not model.training


# The network input (letterbox) is pinned bit-exact against the fixture's `input` in
# test_engine_estimator.py::test_preprocess_matches_mmpose_input.


def test_backbone_outputs(features, io):
    for i, x in enumerate(features[0]):
        assert_close_features(x, io[f'backbone_{i}'], f'backbone_{i}')


def test_neck_outputs(features, io):
    for i, x in enumerate(features[1]):
        assert_close_features(x, io[f'neck_{i}'], f'neck_{i}')


def test_head_outputs(features, io):
    head = features[2]
    assert head.kpt_offsets is None  # eval mode: no regression branch
    for level in range(2):
        for name, ours in (('cls', head.cls), ('bbox', head.bbox), ('kpt_vis', head.kpt_vis),
                           ('pose_feat', head.pose_vec)):
            key = f'head_{name}_level{level}'
            assert_close_features(ours[level], io[key], key)


def test_predict_network_on_fixture_input(model, io):
    """Network-space predictions, mapped back with mmpose's own formula and metadata."""
    res = model.predict_network(io['input'])[0]
    size, center, scale = io['input_size'], io['input_center'], io['input_scale']

    def to_image(xy):  # mmpose add_pred_to_datasample
        return xy / size * scale + center - scale / 2

    boxes = np.clip(res['boxes'], 0, np.tile(size, 2))
    ours = dict(res, boxes=to_image(boxes.reshape(-1, 2, 2)).reshape(-1, 4),
                keypoints=to_image(res['keypoints']))
    assert_same_predictions(ours, io)


def test_predict_image_end_to_end(model, io):
    ours = model.predict(io['image_bgr'])
    assert ours['keypoints'].shape == io['keypoints'].shape
    assert_same_predictions(ours, io)


def test_max_detections_and_empty(model, io):
    top = model.predict_network(io['input'], max_detections=5)[0]
    assert top['boxes'].shape == (5, 4)
    none = model.predict_network(io['input'], score_thr=1.0)[0]
    assert none['boxes'].shape == (0, 4) and none['keypoints'].shape == (0, 17, 2)
    assert none['keypoint_scores'].shape == (0, 17) and none['scores'].shape == (0,)


def test_deploy_fusion_keeps_predictions(model, io):
    fused = copy.deepcopy(model).deploy()
    assert not any(k.endswith('running_mean') for k in fused.state_dict())
    ref = model.predict_network(io['input'])[0]
    ours = fused.predict_network(io['input'])[0]
    idx = match_by_box(ours['boxes'], ref['boxes'])
    assert np.abs(ours['keypoints'] - ref['keypoints'][idx]).max() < 0.01
    assert np.abs(ours['scores'] - ref['scores'][idx]).max() < 1e-4


def test_fused_focus_is_the_space_to_depth_then_conv(model, io):
    """deploy() turns the stem's space-to-depth + 3x3 conv into one 6x6 stride-2 conv."""
    fused = copy.deepcopy(model.backbone.stem)
    fused.fuse()
    fused.fuse()  # idempotent, as deploy() needs
    assert fused.conv.conv.weight.shape[1:] == (3, 6, 6) and not fused.space_to_depth
    x = torch.from_numpy(io['input'])
    with torch.no_grad():
        ref, ours = model.backbone.stem(x), fused(x)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_fused_fpn_inputs_equal_the_concatenated_convs(model, features, io):
    """deploy() runs each FPN block's input convs without the concatenation: the lateral half
    before the upsampling, input_proj of C3/C4 folded in (it no longer runs)."""
    fused = copy.deepcopy(model).deploy()
    ran = []
    for i in range(3):
        fused.neck.input_proj[i].register_forward_hook(lambda *_, i=i: ran.append(i))
    with torch.no_grad():
        ours = fused.neck(fused.backbone(torch.from_numpy(io['input'])))
    assert ran == [2]  # only C5's projection, for the transformer
    for level, (x, ref) in enumerate(zip(ours, features[1])):
        assert x.shape == ref.shape
        assert (x - ref).abs().max() <= 1e-5 * ref.abs().max(), level


@pytest.mark.parametrize('fine_split', [True, False], ids=['192-256-bins', 'odd-bins'])
def test_factored_bin_logits_equal_mmpose_form(model, features, fine_split):
    """The DCC's inference form (fc folded into the tokens, angle-sum sines) equals mmpose's
    bin logits and keypoints up to float rounding, also where bins do not split by 16."""
    dcc = model.head.dcc
    flat = model.head.flatten(features[2])
    pose_vecs, boxes, priors = flat.pose_vecs[0, :40], flat.boxes[0, :40], flat.priors[:40]
    center, scale = box_center_scale(boxes)
    tokens = dcc.keypoint_tokens(pose_vecs)
    bins = dcc.x_bins if fine_split else torch.linspace(-0.5, 0.5, 99)
    args = (tokens, bins, scale[..., :1], (center - priors)[..., :1], dcc.x_fc)
    with torch.no_grad():
        ref, ours = dcc.bin_logits(*args), dcc.factored_bin_logits(*args)
        kpts = dcc.forward(pose_vecs, boxes, priors).keypoints()
        fast = dcc.predict(pose_vecs, boxes, priors)
    assert ours.shape == ref.shape == (40, 17, bins.shape[0])
    assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert (fast - kpts).abs().max() <= 1e-3  # pixels


def test_predict_requires_eval_mode(parity_dir, io):
    model = load_model(parity_dir / 'rtmo-s_coco_seed1.pth').train()
    with pytest.raises(RuntimeError, match='eval'):
        model.predict_network(io['input'])
    out = model(torch.from_numpy(io['input'][:, :, :64, :64]).repeat(2, 1, 1, 1))
    assert [x.shape[1] for x in out.kpt_offsets] == [34, 34]  # training returns offsets


def test_nms_is_strict_and_handles_degenerate_boxes():
    from rtmo_train.nms import nms
    # IoU of these two is exactly 0.5: suppressed only when the threshold is below it
    boxes = torch.tensor([[0.0, 0.0, 4.0, 3.0], [0.0, 1.0, 4.0, 4.0], [9.0, 9.0, 9.0, 9.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1, 2]
    assert nms(boxes, scores, 0.49).tolist() == [0, 2]
    assert nms(boxes[:0], scores[:0], 0.5).numel() == 0
