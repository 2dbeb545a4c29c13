"""Which reliability the image subscription should ask for, from what the publishers offer.

Cameras publish images with the sensor-data profile (best effort) or with the default profile
(reliable). A reliable subscription matches no best-effort publisher (DDS drops the pair
silently); a best-effort subscription matches both, but between processes Fast DDS loses
best-effort samples that need fragmenting (large raw images). ``qos_reliability: auto``
therefore subscribes best effort until a publisher is seen, and reliable only while every
publisher offers reliable. The node re-checks the publishers every second (Humble has no
"matched" event) and re-creates its subscription when the answer changes.

Plain Python: reliabilities are the strings 'reliable' and 'best_effort'.
"""


def reliability_name(policy):
    """'reliable' or 'best_effort' for an rclpy ``ReliabilityPolicy`` (or its name)."""
    name = str(getattr(policy, 'name', policy)).lower()
    # SYSTEM_DEFAULT / UNKNOWN: Fast DDS and Cyclone default to reliable writers; only a
    # best-effort writer keeps a reliable reader from matching
    return 'best_effort' if name == 'best_effort' else 'reliable'


class QosWatch:
    """The subscription's reliability under one ``qos_reliability`` mode.

    ``current``: what the subscription asks for now; ``incompatible_events``: DDS
    incompatible-QoS events counted by the node.
    """

    def __init__(self, mode):
        if mode not in ('auto', 'best_effort', 'reliable'):
            raise ValueError(f'qos_reliability must be auto, best_effort or reliable; got '
                             f'{mode!r}')
        self.mode = mode
        self.current = 'reliable' if mode == 'reliable' else 'best_effort'
        self.incompatible_events = 0

    def choose(self, offered):
        """The reliability to subscribe with, given each publisher's (a list of names)."""
        if self.mode != 'auto':
            return self.mode
        if not offered:
            return self.current  # nobody publishes: keep what we have, no churn
        return 'reliable' if all(o == 'reliable' for o in offered) else 'best_effort'

    def problem(self, offered):
        """A one-sentence warning when some publishers cannot reach the subscription, or ''."""
        if self.current != 'reliable':
            return ''
        lost = sum(o == 'best_effort' for o in offered)
        if not lost:
            return ''
        return (f'incompatible QoS: {lost} of {len(offered)} image publishers offer best_effort '
                f'but the subscription is reliable, so their images never arrive; set '
                'qos_reliability:=auto or best_effort')
