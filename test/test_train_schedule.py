"""Pure checks of the training recipe: LR schedule, AdamW groups, EMA formula, config I/O."""
import math

import pytest
import torch

from rtmo_train.config import ModelConfig
from rtmo_train.ema import ExpMomentumEMA, ema_momentum
from rtmo_train.model.rtmo import build_model
from rtmo_train.optim import LRSchedule, RTMOScheduler, build_optimizer, lr_at, param_groups
from rtmo_train.train_config import TrainConfig, apply_overrides, tiny_preset, train_preset

COCO = LRSchedule()
CROWDPOSE = LRSchedule(cosine1_tmax=350, restart_epoch=349, cosine2_tmax=320, flat_epoch=670)
E = 4  # iterations per epoch used for the reference values below


def lr(epoch, it=0, base=4e-3, schedule=COCO):
    return lr_at(epoch * E + it, base, schedule, E)


# Reference values: mmengine 0.10.7's own schedulers (QuadraticWarmupLR, CosineAnnealingLR,
# mmpose's ConstantLR) stepped as ParamSchedulerHook does, with the rtmo-s COCO / rtmo-s
# CrowdPose param_scheduler lists, 4 iterations per epoch: lr of the first iteration.
@pytest.mark.parametrize('epoch,it,expected', [
    (0, 0, 1.0e-05), (1, 0, 2.5e-04), (4, 3, 4.0e-03), (5, 0, 4.0e-03), (100, 0, 3.019066e-03),
    (279, 0, 2.043037e-04), (280, 0, 5.082384e-04), (281, 1, 5.082378e-04),
    (400, 0, 4.032769e-04), (579, 0, 2.000338e-04), (580, 0, 2.000132e-04),
    (599, 3, 2.000132e-04)])
def test_coco_schedule_matches_mmengine(epoch, it, expected):
    assert lr(epoch, it) == pytest.approx(expected, rel=1e-5)


def test_schedule_spec_numbers():
    # spec 4.4: warmup reaches 4e-3 at epoch 5, ~2.04e-4 at epoch 279, ~5.1e-4 at epoch 280,
    # and the floor 2e-4 once the second cosine has run out (epoch 580 on)
    assert lr(4, E - 1) == pytest.approx(4e-3) and lr(5) == pytest.approx(4e-3)
    assert lr(279) == pytest.approx(2.04e-4, rel=2e-3)
    assert lr(280) == pytest.approx(5.1e-4, rel=5e-3)
    assert all(lr(e) == pytest.approx(2.0e-4, rel=1e-3) for e in range(580, 600))
    # monotone warmup, monotone decays
    values = [lr_at(s, 4e-3, COCO, E) for s in range(600 * E)]
    assert all(a < b for a, b in zip(values[:5 * E - 1], values[1:5 * E]))
    assert all(a >= b for a, b in zip(values[5 * E:280 * E - 1], values[5 * E + 1:280 * E]))
    assert all(a >= b for a, b in zip(values[281 * E:-1], values[281 * E + 1:]))


def test_crowdpose_schedule_and_encoder_floor():
    # mmengine reference as above, rtmo-s CrowdPose list, 1 iteration per epoch
    for epoch, expected in ((348, 2.037492e-04), (349, 5.093730e-04), (350, 5.093730e-04),
                            (351, 5.093656e-04), (699, 2.000075e-04)):
        assert lr_at(epoch, 4e-3, CROWDPOSE, 1) == pytest.approx(expected, rel=1e-5)
    # encoder group: base 4e-3 * 0.05 = 2e-4 = eta_min, so mmengine keeps it flat, then x2.5
    assert lr(100, base=2e-4) == pytest.approx(2e-4)
    assert lr(280, base=2e-4) == pytest.approx(5e-4)


def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig('tiny', deepen=0.33, widen=0.125, input_size=(160, 160)))


def test_param_groups_follow_mmpose():
    model = tiny_model()
    groups = {g['name']: g for g in param_groups(model, 4e-3, 0.05)}
    ids = {name: {id(p) for p in g['params']} for name, g in groups.items()}
    named = dict(model.named_parameters())
    assert sum(len(v) for v in ids.values()) == len(named)  # every parameter exactly once
    for name, p in named.items():
        where = next(k for k, v in ids.items() if id(p) in v)
        norm = '.bn.' in name or '.norms.' in name or 'pose_to_kpts.1.' in name
        no_decay = norm or name.endswith('.bias')
        assert where.endswith('_no_decay') == no_decay, name
        assert where.startswith('encoder') == name.startswith('neck.encoder.'), name
    assert id(named['neck.encoder.0.layers.0.self_attn.attn.in_proj_bias']) in ids['encoder']
    assert groups['encoder']['lr'] == pytest.approx(2e-4)
    assert groups['base']['weight_decay'] == 0.05 and groups['base_no_decay']['weight_decay'] == 0


def test_scheduler_sets_group_lrs_and_resumes():
    model = tiny_model()
    opt = build_optimizer(model, 4e-3, 0.05)
    sched = RTMOScheduler(opt, COCO, E)
    for _ in range(7 * E):
        opt.step()
        sched.step()
    assert [g['lr'] for g in opt.param_groups] == [
        lr_at(7 * E, g['initial_lr'], COCO, E) for g in opt.param_groups]
    other = RTMOScheduler(build_optimizer(model, 4e-3, 0.05), COCO, E)
    other.load_state_dict(sched.state_dict())
    assert other.get_last_lr() == sched.get_last_lr()
    with pytest.raises(ValueError, match='iterations per epoch'):
        RTMOScheduler(opt, COCO, E + 1).load_state_dict(sched.state_dict())


def test_ema_formula():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = ExpMomentumEMA(model, momentum=2e-4, gamma=2000)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema.update(model)  # update 0 copies
    assert torch.equal(ema.module[0].weight, model[0].weight)
    values = []
    for _ in range(3):
        with torch.no_grad():
            model[0].weight.fill_(3.0)
            model[1].running_mean.fill_(2.0)
        ema.update(model)
        values.append(float(ema.module[0].weight[0, 0]))
    expected, avg = [], 1.0
    for n in (1, 2, 3):
        m = (1 - 2e-4) * math.exp(-(1 + n) / 2000) + 2e-4
        assert ema_momentum(n) == pytest.approx(m)
        avg = avg * (1 - m) + 3.0 * m
        expected.append(avg)
    assert values == pytest.approx(expected, rel=1e-6)
    assert float(ema.module[1].running_mean[0]) > 0  # buffers are averaged (update_buffers)
    assert int(ema.module[1].num_batches_tracked) == 0  # integer buffers: copied at update 0


def test_config_presets_round_trip(tmp_path):
    for cfg in (train_preset('s'), train_preset('l', 'body7'), train_preset('m', 'crowdpose'),
                tiny_preset()):
        cfg.to_yaml(tmp_path / 'c.yaml')
        assert TrainConfig.from_yaml(tmp_path / 'c.yaml') == cfg
    s = train_preset('s')
    assert (s.lr, s.weight_decay, s.clip_grad, s.epochs) == (4e-3, 0.05, 0.1, 600)
    assert s.batch_size == 32 and train_preset('m').batch_size == 16
    assert (s.loss_switch_epoch, s.stage2_epoch) == (280, 579)
    assert s.loss_at(280).oks_weight == 10 and s.loss_at(279).oks_weight == 30
    assert s.loss_at(579).use_aux_loss and not s.loss_at(578).use_aux_loss
    crowd = train_preset('s', 'crowdpose')
    assert (crowd.epochs, crowd.stage2_epoch, crowd.model.num_keypoints) == (700, 669, 14)
    cfg = apply_overrides(tiny_preset(), ['epochs=3', 'schedule.min_lr=1e-5', 'amp=true'])
    assert (cfg.epochs, cfg.schedule.min_lr, cfg.amp) == (3, 1e-5, True)
    with pytest.raises(ValueError, match='unknown field'):
        apply_overrides(cfg, ['epoch=3'])
    with pytest.raises(ValueError, match='unknown TrainConfig fields'):
        TrainConfig.from_dict({'lr': 1e-3, 'learning_rate': 1})


def test_dcc_lr_mult_gives_the_dcc_groups_of_its_own():
    model = tiny_model()
    assert {g['name'] for g in param_groups(model, 4e-3, 0.05)}.isdisjoint({'dcc'})  # mmpose
    groups = {g['name']: g for g in param_groups(model, 2e-3, 0.05, dcc_lr_mult=0.25)}
    dcc = {id(p) for p in model.head.dcc.parameters()}
    assert {id(p) for p in groups['dcc']['params'] + groups['dcc_no_decay']['params']} == dcc
    assert groups['dcc']['lr'] == pytest.approx(5e-4) and groups['base']['lr'] == 2e-3
    assert groups['dcc_no_decay']['weight_decay'] == 0 and groups['dcc']['weight_decay'] == 0.05
