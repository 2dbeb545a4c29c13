"""``rtmo-train`` end to end: preset -> fit (1 short epoch, validation) -> eval, and errors."""
import json

import torch

from rtmo_train.cli import main
from rtmo_train.data.synthetic import make_dataset


def test_preset_fit_eval(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        make_dataset(str(tmp_path / 'train'), 6, seed=5, width=160, height=128)
        make_dataset(str(tmp_path / 'val'), 2, seed=6, width=160, height=128)
        cfg = tmp_path / 'tiny.yaml'
        assert main(['preset', 'tiny', '-o', str(cfg)]) == 0
        sets = ['--set', f'data_root={tmp_path}', '--set', f'output_dir={tmp_path}/run',
                '--set', 'epochs=1', '--set', 'batch_size=2', '--set', 'progress=false',
                '--set', 'model.input_size=[160,160]', '--set', 'augment.input_size=160',
                '--set', 'augment.random_size_range=[160,160]', '--set', 'tensorboard=false',
                '--set', 'model.widen=0.125']
        assert main(['fit', str(cfg), *sets]) == 0
        out = capsys.readouterr().out
        assert 'name: rtmo-tiny_synthetic' in out and 'val/AP' in out  # resolved config, val
        run = tmp_path / 'run'
        assert {'latest.pth', 'best.pth', 'config.yaml', 'log.jsonl'} <= {
            p.name for p in run.iterdir()}
        ckpt = torch.load(run / 'latest.pth', weights_only=True)
        assert ckpt['format'] == 'rtmo_train/1' and ckpt['epoch'] == 0
        assert ckpt['train_config']['epochs'] == 1 and 'raw_model' in ckpt
        assert set(ckpt['rng']) >= {'python', 'numpy', 'torch'}
        assert main(['eval', str(run / 'config.yaml'), str(run / 'best.pth'),
                     '--json', str(tmp_path / 'm.json')]) == 0
        metrics = json.loads((tmp_path / 'm.json').read_text())
        assert 0.0 <= metrics['AP'] <= 1.0 and metrics['num_images'] == 2
    finally:
        torch.set_num_threads(threads)


def test_errors_are_one_line(tmp_path, capsys):
    assert main(['fit', str(tmp_path / 'missing.yaml')]) == 2
    assert 'training config not found' in capsys.readouterr().err
    assert main(['fit', 'tiny', '--set', 'epochz=3']) == 2
    assert "unknown field 'epochz'" in capsys.readouterr().err
