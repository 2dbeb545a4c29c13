"""The synthetic-people generator: deterministic, valid COCO, truthful visibility flags."""
import json

import numpy as np
import pytest

from rtmo_train.data.coco import CocoKeypointDataset
from rtmo_train.data.synthetic import (
    compose,
    figure_joints,
    make_dataset,
    random_appearance,
    random_pose,
    render_people,
    render_sequence,
)


def test_render_people_is_deterministic_by_seed():
    a_img, a = render_people(np.random.default_rng(5), 320, 240, 4)
    b_img, b = render_people(np.random.default_rng(5), 320, 240, 4)
    c_img, _ = render_people(np.random.default_rng(6), 320, 240, 4)
    assert a_img.shape == (240, 320, 3) and a_img.dtype == np.uint8
    np.testing.assert_array_equal(a_img, b_img)
    assert len(a) == len(b) >= 1
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p['keypoints'], q['keypoints'])
    assert not np.array_equal(a_img, c_img)
    empty_img, empty = render_people(np.random.default_rng(1), 64, 48, 0)
    assert empty == [] and empty_img.shape == (48, 64, 3)


def test_annotations_are_consistent_with_the_image():
    for seed in range(6):
        _, persons = render_people(np.random.default_rng(seed), 320, 240, 5)
        for p in persons:
            k = p['keypoints']
            assert k.shape == (17, 3) and set(np.unique(k[:, 2])) <= {0, 1, 2}
            assert p['num_keypoints'] == int((k[:, 2] > 0).sum()) >= 1
            inside = k[k[:, 2] > 0]
            assert (inside[:, 0] >= 0).all() and (inside[:, 0] <= 319).all()
            assert (inside[:, 1] >= 0).all() and (inside[:, 1] <= 239).all()
            assert (k[k[:, 2] == 0] == 0).all()  # unlabelled: 0, 0, 0 as in COCO
            x, y, w, h = p['bbox']
            assert w > 0 and h > 0 and x + w <= 320 and y + h <= 240
            assert (inside[:, 0] >= x - 1).all() and (inside[:, 0] <= x + w + 1).all()
            assert 0 < p['area'] <= w * h


def one_figure(pelvis, size=120):
    rng = np.random.default_rng(3)
    app = random_appearance(rng, size)
    pose = dict(random_pose(rng), l_sho=20, r_sho=20, l_elb=0, r_elb=0, l_hip=10, r_hip=10,
                l_knee=0, r_knee=0)
    return app, figure_joints(app, pose, pelvis)


def test_visibility_flags_follow_occlusion_and_borders():
    background = np.full((240, 320, 3), 90, np.uint8)
    rng = np.random.default_rng(0)
    app, joints = one_figure((160, 130))
    _, (clear,) = compose(background, [(app, joints)], [], rng)
    assert (clear['keypoints'][:, 2] == 2).all()  # nothing in the way
    wrist = joints['keypoints'][9]
    blocker = ('ellipse', (tuple(wrist), (6, 6), 0.0), 0, (0, 255, 0))
    img, (hidden,) = compose(background, [(app, joints)], [blocker], rng)
    assert hidden['keypoints'][9, 2] == 1 and hidden['keypoints'][10, 2] == 2
    assert img[int(wrist[1]), int(wrist[0]), 1] > 200  # the green blocker is what shows
    in_front = one_figure((160, 135), size=125)
    _, (back, front) = compose(background, [(app, joints), in_front], [], rng)
    assert (front['keypoints'][:, 2] == 2).all() and (back['keypoints'][:, 2] == 1).any()
    _, (cut,) = compose(background, [one_figure((160, 215))], [], rng)
    assert (cut['keypoints'][15:17, 2] == 0).all() and (cut['keypoints'][:5, 2] == 2).all()


def test_make_dataset_writes_loadable_coco(tmp_path):
    coco_api = pytest.importorskip('xtcocotools.coco')
    path = make_dataset(str(tmp_path / 'a'), 5, seed=9, width=160, height=120)
    again = make_dataset(str(tmp_path / 'b'), 5, seed=9, width=160, height=120)
    assert open(path).read().replace('/a', '') == open(again).read().replace('/b', '')
    assert (tmp_path / 'a' / 'images' / '000004.jpg').read_bytes() == \
        (tmp_path / 'b' / 'images' / '000004.jpg').read_bytes()
    coco = coco_api.COCO(path)
    assert len(coco.getImgIds()) == 5
    cat = coco.loadCats(1)[0]
    assert len(cat['keypoints']) == 17 and cat['keypoints'][0] == 'nose'
    assert cat['skeleton'][0] == [16, 14] and min(min(e) for e in cat['skeleton']) == 1
    data = json.load(open(path))
    assert data['annotations'], 'five images should hold some people'
    ds = CocoKeypointDataset(path, tmp_path / 'a' / 'images', include_empty=True)
    assert len(ds) == 5 and ds.load(0)['img'].shape == (120, 160, 3)


def test_render_sequence_moves_people_smoothly_in_and_out():
    frames = list(render_sequence(4, 200, 160, 120))
    assert len(frames) == 200 and frames[0][0].shape == (120, 160, 3)
    first = list(render_sequence(4, 3, 160, 120))
    np.testing.assert_array_equal(first[2][0], frames[2][0])
    ids_per_frame = [{p['track_id'] for p in persons} for _, persons in frames]
    all_ids = set().union(*ids_per_frame)
    assert len(all_ids) >= 2
    assert any(ids_per_frame[0] - ids for ids in ids_per_frame)  # someone leaves or
    assert any(ids - ids_per_frame[0] for ids in ids_per_frame)  # someone enters
    for (_, prev), (_, cur) in zip(frames, frames[1:]):
        before = {p['track_id']: p['keypoints'] for p in prev}
        for p in cur:
            if p['track_id'] in before:
                both = (p['keypoints'][:, 2] > 0) & (before[p['track_id']][:, 2] > 0)
                step = np.abs(p['keypoints'][both, :2] - before[p['track_id']][both, :2])
                assert step.size == 0 or step.max() < 15  # pixels per frame


def test_make_dataset_people_count_and_size(tmp_path):
    """max_people and height_range bound the people per image and their size."""
    path = make_dataset(str(tmp_path), 12, seed=4, width=160, height=120, max_people=2,
                        height_range=(0.5, 0.6))
    data = json.load(open(path))
    per_image = [sum(a['image_id'] == im['id'] for a in data['annotations'])
                 for im in data['images']]
    assert max(per_image) <= 2 and sum(per_image) >= 6
    # boxes of whole figures: 60..72 px tall standing, less with bent knees or a lean
    tall = [a['bbox'][3] for a in data['annotations'] if a['num_keypoints'] == 17]
    assert tall and min(tall) > 0.5 * 120 * 0.6 and max(tall) < 0.6 * 120 * 1.3
