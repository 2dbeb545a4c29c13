"""ByteTrack-style tracker: ids follow people across crossings, gaps and dropped frames."""
import numpy as np

from rtmo_ros.perception.tracker import Tracker, box_iou

FPS = 30.0


def box(cx, cy, w=100.0, h=250.0):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def walker(x0, speed, y=240.0, w=100.0, h=250.0):
    """A person walking sideways at ``speed`` px/s: box at time t."""
    return lambda t: box(x0 + speed * t, y, w, h)


def run(tracker, people, stamps, visible=None, scores=None, noise=2.0, seed=0):
    """Ids (frames, people) for boxes of ``people`` at ``stamps``; -2 where a person is hidden.

    Detections are fed in a shuffled order each frame, so the test also checks that the result
    stays aligned with the input.
    """
    rng = np.random.default_rng(seed)
    out = np.full((len(stamps), len(people)), -2, np.int64)
    for f, t in enumerate(stamps):
        shown = [p for p in range(len(people)) if visible is None or visible(p, t)]
        order = rng.permutation(shown).astype(int)
        boxes = np.array([people[p](t) for p in order]).reshape(-1, 4)
        boxes += rng.normal(0, noise, boxes.shape)
        s = np.array([0.9 if scores is None else scores(p, t) for p in order])
        ids = tracker.update(boxes, s, t)
        assert ids.dtype == np.int64 and ids.shape == (len(order),)
        out[f, order] = ids
    return out


def stamps(n, start=1700000000.0, step=1 / FPS):
    return start + step * np.arange(n)


def test_two_people_crossing_keep_their_ids():
    # boxes pass right through each other (IoU up to ~0.8) at 200 px/s each
    people = [walker(100, 200, y=240), walker(540, -200, y=250, w=90, h=230)]
    ids = run(Tracker(), people, stamps(66))
    assert (ids[:, 0] == ids[0, 0]).all() and (ids[:, 1] == ids[0, 1]).all()
    assert ids[0, 0] != ids[0, 1]


def test_crossing_with_the_rear_person_hidden_keeps_both_ids():
    # the detector usually sees only the front person while they overlap (NMS)
    people = [walker(100, 200, y=240), walker(540, -200, y=250, w=90, h=230)]
    t0 = stamps(66)[0]

    def visible(p, t):
        return p == 0 or abs((t - t0) - 1.1) > 0.2
    ids = run(Tracker(), people, stamps(66), visible=visible)
    assert (ids[:, 0] == ids[0, 0]).all()
    rear = ids[:, 1][ids[:, 1] != -2]
    assert (rear == rear[0]).all() and rear[0] != ids[0, 0]


def test_person_hidden_for_half_a_second_keeps_the_id():
    people = [walker(100, 150), walker(500, 0)]
    t0 = stamps(1)[0]

    def visible(p, t):
        return p == 1 or not 1.0 <= t - t0 < 1.5
    ids = run(Tracker(buffer_s=1.0), people, stamps(75), visible=visible)
    walking = ids[:, 0][ids[:, 0] != -2]
    assert (walking == walking[0]).all()


def test_person_hidden_longer_than_the_buffer_gets_a_new_id():
    people = [walker(300, 0), walker(600, 0, w=80)]
    t0 = stamps(1)[0]

    def visible(p, t):
        return p == 1 or not 1.0 <= t - t0 < 2.5
    ids = run(Tracker(buffer_s=1.0), people, stamps(100), visible=visible)
    before, after = ids[:30, 0], ids[-10:, 0]
    assert (before == before[0]).all() and (after == after[0]).all()
    assert after[0] not in set(ids[:75].ravel())
    assert (ids[:, 1] == ids[0, 1]).all()


def test_dropped_frames_keep_the_ids():
    # 0.3 s gaps at 200 px/s: a box moves 60 px (IoU with the last box ~0.25 without a
    # motion model)
    people = [walker(100, 200, y=200), walker(500, -150, y=300)]
    t = np.concatenate([stamps(15), stamps(15, start=1700000000.0 + 0.8, step=0.3)])
    ids = run(Tracker(), people, t)
    assert (ids == ids[0]).all()


def test_stamps_going_backwards_reset_once_and_never_reuse_ids():
    tracker = Tracker()
    people = [walker(100, 100), walker(500, -100)]
    first = run(tracker, people, stamps(20))
    looped = run(tracker, people, stamps(20))      # the bag starts again
    assert tracker.resets == 1
    assert set(looped[0]).isdisjoint(first.ravel())
    assert (looped == looped[0]).all() and looped.min() > first.max()


def test_low_score_continues_a_track_but_never_starts_one():
    people = [walker(100, 100), walker(500, 0)]

    def scores(p, t):
        elapsed = t - 1700000000.0
        if p == 0:
            return 0.9 if elapsed < 0.5 else 0.3      # tracked, then half hidden
        return 0.3 if elapsed < 1.0 else 0.9          # only low scores at first
    ids = run(Tracker(), people, stamps(45), scores=scores)
    assert (ids[:, 0] == ids[0, 0]).all() and ids[0, 0] >= 0
    assert (ids[:30, 1] == -1).all()
    assert (ids[30:, 1] == ids[30, 1]).all() and ids[30, 1] > ids[0, 0]


def test_person_reappearing_half_hidden_gets_the_id_back():
    tracker = Tracker()
    assert tracker.update([box(100, 100)], [0.9], 0.0).tolist() == [0]
    assert tracker.update(np.zeros((0, 4)), [], 0.1).tolist() == []      # hidden 0.2 s
    assert tracker.update([box(101, 101)], [0.3], 0.2).tolist() == [0]   # back, low score


def test_score_below_low_thr_is_never_tracked():
    tracker = Tracker(low_thr=0.1)
    assert tracker.update([box(100, 100)], [0.9], 0.0).tolist() == [0]
    assert tracker.update([box(102, 100)], [0.05], 0.033).tolist() == [-1]


def test_score_between_high_and_new_threshold_continues_but_does_not_start():
    tracker = Tracker(high_thr=0.5, new_thr=0.7)
    assert tracker.update([box(100, 100), box(400, 100)], [0.8, 0.6], 0.0).tolist() == [0, -1]
    assert tracker.update([box(101, 100)], [0.6], 0.033).tolist() == [0]


def test_new_people_in_one_frame_get_consecutive_ids_in_input_order():
    tracker = Tracker()
    ids = tracker.update([box(100, 100), box(300, 100), box(500, 100)], [0.9, 0.8, 0.7], 5.0)
    assert ids.tolist() == [0, 1, 2]


def test_nobody_gives_an_empty_id_array():
    ids = Tracker().update(np.zeros((0, 4)), np.zeros(0), 0.0)
    assert ids.dtype == np.int64 and ids.shape == (0,)


def test_box_iou_of_known_boxes():
    iou = box_iou(np.array([[0, 0, 10, 10.]]), np.array([[0, 0, 10, 10.], [5, 0, 15, 10],
                                                          [20, 20, 30, 30]]))
    assert np.allclose(iou, [[1.0, 1 / 3, 0.0]])
