"""load_model / save_checkpoint: formats, detection and clear errors on bad files."""
import numpy as np
import pytest
import torch

from rtmo_train import build_model, load_model, preset, save_checkpoint


@pytest.fixture(scope='module')
def mmpose_state_dict(parity_dir):
    ckpt = torch.load(parity_dir / 'rtmo-s_coco_seed1.pth', map_location='cpu',
                      weights_only=True)
    return ckpt['state_dict']


@pytest.fixture(scope='module')
def small_state_dict():
    """An rtmo-t state dict: the smallest real RTMO layout, quick to write."""
    torch.manual_seed(0)
    return build_model(preset('t')).state_dict()


def test_missing_file(tmp_path):
    path = tmp_path / 'absent.pth'
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        load_model(path)


def test_garbage_file(tmp_path):
    path = tmp_path / 'garbage.pth'
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match='garbage.pth.*not a readable PyTorch checkpoint'):
        load_model(path)


def test_not_a_checkpoint_dict(tmp_path):
    tensor, other = tmp_path / 'tensor.pth', tmp_path / 'other.pth'
    torch.save(torch.zeros(3), tensor)
    torch.save({'weights': {}}, other)
    with pytest.raises(ValueError, match='tensor.pth'):
        load_model(tensor)
    with pytest.raises(ValueError, match='other.pth.*neither'):
        load_model(other)
    torch.save({'state_dict': {'backbone.foo': torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match='other.pth.*not an RTMO state dict'):
        load_model(other)


def test_wrong_keys_listed_in_one_error(small_state_dict, tmp_path):
    sd = dict(small_state_dict)
    del sd['neck.encoder.0.layers.0.norms.1.bias']
    sd['head.extra.weight'] = torch.zeros(2)
    path = tmp_path / 'keys.pth'
    torch.save({'state_dict': sd}, path)
    with pytest.raises(ValueError) as err:
        load_model(path)
    msg = str(err.value)
    assert 'keys.pth' in msg and 'RTMO-t' in msg
    assert 'missing keys: neck.encoder.0.layers.0.norms.1.bias' in msg
    assert 'unexpected keys: head.extra.weight' in msg


def test_shape_mismatch(small_state_dict, tmp_path):
    sd = dict(small_state_dict, **{'head.dcc.x_fc.weight': torch.zeros(128, 64)})
    path = tmp_path / 'shape.pth'
    torch.save({'state_dict': sd}, path)
    with pytest.raises(ValueError, match=r'shape mismatches: head\.dcc\.x_fc\.weight: '
                                         r'checkpoint \(128, 64\) vs model \(128, 128\)'):
        load_model(path)
    # forcing a keypoint count the weights do not have is a shape error too
    torch.save({'state_dict': small_state_dict}, path)
    with pytest.raises(ValueError, match='out_kpt_vis'):
        load_model(path, num_keypoints=14)


def test_mmpose_extras_ignored(mmpose_state_dict, tmp_path):
    """data_preprocessor.* is dropped and ema_state_dict ignored, as mmpose does."""
    sd = dict(mmpose_state_dict, **{'data_preprocessor.mean': torch.zeros(3, 1, 1),
                                    'data_preprocessor.std': torch.ones(3, 1, 1)})
    path = tmp_path / 'with_extras.pth'
    torch.save({'state_dict': sd, 'ema_state_dict': {'junk': torch.zeros(1)},
                'meta': {'epoch': 600}}, path)
    model = load_model(path)
    assert not model.training and model.cfg.variant == 's'
    assert torch.equal(model.state_dict()['head.dcc.pos_enc'],
                       mmpose_state_dict['head.dcc.pos_enc'])


def test_save_checkpoint_round_trip(small_state_dict, tmp_path):
    model = build_model(preset('t', input_size=(320, 320)))
    model.load_state_dict(small_state_dict)
    path = save_checkpoint(model, tmp_path / 'ckpts' / 'rtmo_t.pth', epoch=7)
    assert [p.name for p in path.parent.iterdir()] == ['rtmo_t.pth']  # no temp file left
    raw = torch.load(path, weights_only=True)
    assert raw['format'] == 'rtmo_train/1' and raw['epoch'] == 7
    assert raw['config']['input_size'] == [320, 320]
    loaded = load_model(path)
    assert loaded.cfg == model.cfg and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert load_model(path, input_size=(416, 416)).cfg.input_size == (416, 416)
    with pytest.raises(ValueError, match='reserved'):
        save_checkpoint(model, tmp_path / 'x.pth', config={})
