"""Every RTMO variant (t/s/m/l, 17 or 14 keypoints) matches mmpose's state-dict layout.

The reference key lists (../shared/notes/rtmo_state_dict_keys/*.tsv) were dumped from
mmpose 1.3.2 models of each variant: equality of keys and shapes means official checkpoints
of every variant load with ``load_state_dict`` and no key map.
"""
from dataclasses import replace
import pathlib

import pytest
import torch

from rtmo_train import build_model, load_model, preset, save_checkpoint
from rtmo_train.checkpoint import detect_config
from rtmo_train.config import ModelConfig

KEYS_DIR = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'notes' / \
    'rtmo_state_dict_keys'
# spec section 1.1: parameters of each variant (all, incl. training-only layers), millions
PARAMS_M = {'t': 6.830, 's': 9.869, 'm': 22.526, 'l': 44.693}


@pytest.fixture(scope='module', params=['t', 's', 'm', 'l'])
def variant_model(request):
    """A randomly initialised model per variant, built once (no forward pass on m/l)."""
    return request.param, build_model(preset(request.param))


def reference_keys(variant):
    path = KEYS_DIR / f'rtmo_{variant}_state_dict_keys.tsv'
    if not path.exists():
        pytest.skip(f'state-dict key lists not found in {KEYS_DIR}')
    return dict(line.rstrip('\n').split('\t') for line in path.read_text().splitlines())


def test_state_dict_equals_mmpose_key_list(variant_model):
    variant, model = variant_model
    ours = {k: str(tuple(v.shape)) for k, v in model.state_dict().items()}
    ref = reference_keys(variant)
    assert sorted(set(ref) - set(ours)) == [] and sorted(set(ours) - set(ref)) == []
    assert {k for k in ref if ours[k] != ref[k]} == set()


def test_parameter_count(variant_model):
    variant, model = variant_model
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - PARAMS_M[variant]) < 5e-4


def test_detect_config(variant_model):
    variant, model = variant_model
    cfg = detect_config(model.state_dict())
    assert cfg.variant == variant
    assert cfg.num_keypoints == 17
    assert cfg.input_size == ((416, 416) if variant == 't' else (640, 640))
    assert detect_config(model.state_dict(), input_size=(512, 384)).input_size == (512, 384)


@pytest.mark.parametrize('variant', ['t', 'l'])
def test_crowdpose_14_keypoints_detected(variant):
    sd = build_model(preset(variant, num_keypoints=14)).state_dict()
    assert sd['head.head_module.out_kpt_vis.0.weight'].shape[0] == 14
    assert sd['head.dcc.pos_enc'].shape == (14, 128)
    cfg = detect_config(sd)
    assert (cfg.variant, cfg.num_keypoints) == (variant, 14)


def test_load_and_run_unseen_variant(tmp_path):
    """An mmpose-format rtmo-t CrowdPose checkpoint loads and predicts 14 keypoints at 416."""
    torch.manual_seed(0)
    source = build_model(preset('t', num_keypoints=14)).eval()
    path = tmp_path / 'rtmo-t_crowdpose.pth'
    torch.save({'state_dict': source.state_dict(), 'meta': {}}, path)
    model = load_model(path)
    assert (model.cfg.variant, model.cfg.num_keypoints, model.cfg.input_size) == \
        ('t', 14, (416, 416))
    inputs = torch.rand(1, 3, 416, 416, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        out = model(inputs)
    assert [tuple(x.shape) for x in out.kpt_vis] == [(1, 14, 26, 26), (1, 14, 13, 13)]
    res = model.predict_network(inputs, score_thr=0.0, max_detections=3)[0]
    assert res['keypoints'].shape == (3, 14, 2) and res['keypoint_scores'].shape == (3, 14)


def test_config_round_trip_and_validation():
    cfg = preset('m', num_keypoints=14)
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    assert (cfg.stage_blocks, cfg.rep_blocks, cfg.head_channels) == ((2, 6, 6, 2), 2, 384)
    with pytest.raises(ValueError, match='multiples of 32'):
        preset('s', input_size=(640, 500))
    with pytest.raises(ValueError, match='unknown RTMO variant'):
        preset('x')


def test_narrow_neck_saved_loaded_and_detected(tmp_path):
    """A 96-wide neck: ~1 M parameters, kept by save/load, detected from the weights of an
    older file without the field and of an mmpose-layout file."""
    cfg = ModelConfig('tiny', deepen=0.33, widen=0.125, input_size=(256, 256),
                      neck_channels=96)
    assert preset('s').neck_channels == 256 and cfg.rep_hidden == 12
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert 0.9e6 < sum(p.numel() for p in model.parameters()) < 1.1e6
    assert model.neck.encoder[0].layers[0].ffn.layers[1].in_features == 4 * 96
    path = save_checkpoint(model, tmp_path / 'tiny.pth')
    assert load_model(path).cfg == cfg
    old = torch.load(path, weights_only=True)
    del old['config']['neck_channels']  # written before the field existed
    torch.save(old, tmp_path / 'old.pth')
    assert load_model(tmp_path / 'old.pth').cfg.neck_channels == 96
    narrow_t = build_model(replace(preset('t'), neck_channels=128)).state_dict()
    assert detect_config(narrow_t).neck_channels == 128
    inputs = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        out = load_model(path)(inputs)
    assert [tuple(x.shape) for x in out.cls] == [(1, 1, 16, 16), (1, 1, 8, 8)]
    with pytest.raises(ValueError, match='multiple of 8'):
        ModelConfig(neck_channels=100)
